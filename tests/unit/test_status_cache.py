"""The status cache: requests read it, one background task fills it; readiness from it.

A request to ``/readyz``, ``/v1/status`` or ``/metrics`` must never call the status
source (which asks every actor) or read the store's counts: these tests count the calls,
they do not time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from structlog.testing import capture_logs

from lfr_actors.api import status as status_module
from lfr_actors.api.app import create_app
from lfr_actors.api.keys import STATUS_CACHE, STORE_HEALTH
from lfr_actors.api.problems import store_write_failure
from lfr_actors.api.status import StatusCache, StoreHealth, not_ready
from lfr_actors.cli.status import cmd_status, status_lines
from lfr_actors.control import Deployment
from lfr_actors.errors import LfrError
from lfr_actors.logs import get_logger
from lfr_actors.store.adjudications import Adjudications
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.tokens import Role
from lfr_actors.topology.loader import load_topology
from tests.api_helpers import bearer, problem, store_with_one_alert
from tests.deployments import write_deployment
from tests.unit.test_metrics_api import realistic_status

HOUR = 3600.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return store_with_one_alert(tmp_path / "alerts.db")


class CountingSource:
    """A status source that counts its calls and how many ran at once."""

    def __init__(self, status: dict[str, Any] | None = None) -> None:
        self.status = status if status is not None else realistic_status()
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self.release: asyncio.Event | None = None

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.release is not None:
                await self.release.wait()
            return self.status
        finally:
            self.running -= 1


async def two_more_gathers(source: CountingSource) -> None:
    """Wait (up to 10 s) until the cache has called ``source`` twice more."""
    calls = source.calls
    for _ in range(500):
        if source.calls >= calls + 2:
            break
        await asyncio.sleep(0.02)
    assert source.calls >= calls + 2


def ready_status(**cameras: str) -> dict[str, Any]:
    status = realistic_status()
    status["deployment"]["state"] = "running"
    status["cameras"] = {
        cam_id: {"state": state, "role": "camera", "frames_processed": 1}
        for cam_id, state in cameras.items()
    }
    return status


# -- requests never call the source --------------------------------------------------


async def test_a_flood_of_health_requests_calls_no_actor_and_reads_no_count(
    aiohttp_client: AiohttpClient, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = CountingSource(ready_status(cam_north="running"))
    counted = {"counts": 0}
    real_counts = AlertStore.counts

    def counting(self: AlertStore) -> dict[str, Any]:
        counted["counts"] += 1
        return real_counts(self)

    monkeypatch.setattr(AlertStore, "counts", counting)
    # One gather at start, then the next only in an hour: every request below must be
    # answered from that one gather.
    app = create_app(db, status=source, status_interval_s=HOUR)
    client = await aiohttp_client(app)
    viewer = bearer(db, Role.VIEWER)
    for _ in range(100):
        assert (await client.get("/readyz")).status == 200
    for _ in range(50):
        resp = await client.get("/v1/status", headers=viewer)
        assert resp.status == 200
        assert (await resp.json())["cameras"]["cam_north"]["state"] == "running"
    for _ in range(50):
        resp = await client.get("/metrics", headers=viewer)
        assert resp.status == 200
        assert "lfr_alerts_stored 1.0" in (await resp.text()).splitlines()
    assert source.calls == 1
    assert counted["counts"] == 1
    assert app[STATUS_CACHE].gathers == 1


async def test_the_gatherer_refreshes_at_its_own_rate(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    source = CountingSource(ready_status(cam_north="running"))
    app = create_app(db, status=source, status_interval_s=0.02)
    client = await aiohttp_client(app, headers=bearer(db, Role.VIEWER))
    assert (await client.get("/readyz")).status == 200
    scrape = await (await client.get("/metrics")).text()
    assert 'lfr_camera_up{camera="cam_north"} 1.0' in scrape.splitlines()
    # Every camera goes down; the next gathers see it without any request asking.
    source.status = ready_status(cam_north="stalled")
    await two_more_gathers(source)
    body = await problem(await client.get("/readyz"), 503)
    assert body["not_ready"] == ["cameras: none running (cam_north stalled)"]
    status = await (await client.get("/v1/status")).json()
    assert status["cameras"]["cam_north"]["state"] == "stalled"
    assert isinstance(status["status_age_s"], float) and status["status_error"] is None
    scrape = await (await client.get("/metrics")).text()  # rendered again after a gather
    assert 'lfr_camera_up{camera="cam_north"} 0.0' in scrape.splitlines()


async def test_at_most_one_gather_is_in_flight(db: Path) -> None:
    source = CountingSource()
    source.release = asyncio.Event()
    with AlertStore.open_readonly(db) as store:
        cache = StatusCache(source, store, interval_s=HOUR)
        gathers = [asyncio.create_task(cache.refresh()) for _ in range(5)]
        for _ in range(500):  # the first reads the store's counts in a thread, then waits
            if source.running:
                break
            await asyncio.sleep(0.01)
        for _ in range(20):
            await asyncio.sleep(0.01)  # time for any other gather to start, if one could
        assert source.running == 1 and source.calls == 1
        source.release.set()
        await asyncio.gather(*gathers)
    assert source.most_at_once == 1
    assert source.calls == 5  # one after the other, never together


# -- staleness and failures -------------------------------------------------------------


async def test_a_stale_status_is_not_ready(db: Path) -> None:
    now = [100.0]
    source = CountingSource(ready_status(cam_north="running"))
    with AlertStore.open_readonly(db) as store:
        cache = StatusCache(source, store, stale_after_s=10.0, clock=lambda: now[0])
        await cache.refresh()
        assert not_ready(cache.snapshot()) == []
        now[0] += 9.0
        assert not_ready(cache.snapshot()) == []
        now[0] += 2.0  # the gatherer is stuck: nothing new for 11 s
        snapshot = cache.snapshot()
        assert snapshot.stale and not snapshot.up
        assert not_ready(snapshot) == ["deployment status: stale, last gathered 11 s ago"]


async def test_a_failing_source_keeps_the_last_status_until_it_is_stale(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_module, "_log", get_logger("lfr_actors.api.status"))
    now = [0.0]
    source = CountingSource(ready_status(cam_north="running"))
    with AlertStore.open_readonly(db) as store:
        cache = StatusCache(source, store, stale_after_s=10.0, timeout_s=0.5, clock=lambda: now[0])
        await cache.refresh()
        source.release = asyncio.Event()  # the next gather hangs
        now[0] += 1.0
        with capture_logs() as logs:
            await cache.refresh()
            await cache.refresh()
        snapshot = cache.snapshot()
        assert snapshot.error == "no answer within 0.5 s"
        assert snapshot.status is not None and not snapshot.stale
        assert [e["event"] for e in logs] == ["status_gather_failed"]  # once, not per gather
        now[0] += 10.0
        assert not_ready(cache.snapshot()) == ["deployment status: stale, last gathered 11 s ago"]


async def test_readyz_when_the_first_gather_failed_names_no_error_text(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("kernel gone at 10.0.0.7")

    client = await aiohttp_client(create_app(db, status=broken))
    body = await problem(await client.get("/readyz"), 503)
    assert body["not_ready"] == ["deployment status: could not be read"]
    assert "kernel gone" not in str(body)
    resp = await client.get("/v1/status", headers=bearer(db, Role.VIEWER))
    detail = (await problem(resp, 503))["detail"]
    assert "could not be read" in detail and "RuntimeError" in detail  # authenticated: why


# -- readiness that means it -----------------------------------------------------------


@pytest.mark.parametrize(
    ("cameras", "expected"),
    [
        ({"a": "running", "b": "stalled"}, []),
        (
            {"a": "stalled", "b": "reconnecting"},
            ["cameras: none running (a stalled, b reconnecting)"],
        ),
        ({"a": "connecting"}, ["cameras: none running (a connecting)"]),
        ({"a": "<script>x</script>"}, ["cameras: none running (a _script_x__script_)"]),
    ],
)
async def test_not_ready_when_no_camera_runs(
    db: Path, cameras: dict[str, str], expected: list[str]
) -> None:
    with AlertStore.open_readonly(db) as store:
        cache = StatusCache(CountingSource(ready_status(**cameras)), store)
        await cache.refresh()
        assert not_ready(cache.snapshot()) == expected


async def test_a_closed_deployment_with_stopped_cameras_is_ready(db: Path) -> None:
    status = ready_status(a="stopped")
    status["deployment"]["state"] = "closed"
    with AlertStore.open_readonly(db) as store:
        cache = StatusCache(CountingSource(status), store)
        await cache.refresh()
        assert not_ready(cache.snapshot()) == []


async def test_not_ready_when_the_alert_actor_cannot_write_the_store(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    status = ready_status(cam_north="running")
    status["alerts"] = {"alerts": {"role": "alerts", "store_error": "disk full"}}
    source = CountingSource(status)
    client = await aiohttp_client(create_app(db, status=source, status_interval_s=0.02))
    body = await problem(await client.get("/readyz"), 503)
    assert body["not_ready"] == ["alert store: cannot be written (alerts)"]
    metrics = await client.get("/metrics", headers=bearer(db, Role.VIEWER))
    assert "lfr_store_writable 0.0" in (await metrics.text()).splitlines()
    # The write succeeds again (or the key is missing: an older actor): ready again.
    source.status = ready_status(cam_north="running")
    await two_more_gathers(source)
    assert (await client.get("/readyz")).status == 200


# -- the API's own writes on a full disk (the real tmpfs test is in tests/faults) -------


def disk_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # type: ignore[attr-defined]
    exc.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    return exc


def test_store_write_failures_are_recognised_through_their_causes() -> None:
    assert store_write_failure(disk_full()) == "disk full"
    assert store_write_failure(OSError(28, "No space left on device")) == "disk full"
    io = sqlite3.OperationalError("disk I/O error")
    io.sqlite_errorcode = 10 | (3 << 8)  # type: ignore[attr-defined] # SQLITE_IOERR_WRITE
    assert store_write_failure(io) == "I/O error"
    try:
        try:
            raise disk_full()
        except sqlite3.OperationalError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert store_write_failure(outer) == "disk full"
    assert store_write_failure(sqlite3.OperationalError("no such table: x")) is None
    assert store_write_failure(ValueError("x")) is None


async def test_a_write_on_a_full_disk_is_503_logged_once_and_recovers(
    aiohttp_client: AiohttpClient, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(db, status=CountingSource(ready_status(cam_north="running")))
    client = await aiohttp_client(app, headers=bearer(db, Role.ADJUDICATOR))
    alert_id = (await (await client.get("/v1/alerts")).json())["alerts"][0]["id"]
    real_decide = Adjudications.decide

    def full(self: Adjudications, *args: Any, **kwargs: Any) -> Any:
        raise disk_full()

    monkeypatch.setattr(Adjudications, "decide", full)
    # A fresh logger: structlog caches one on first use, and capture_logs sees only those
    # bound while it is active (another test may have used the module's logger first).
    monkeypatch.setattr(status_module, "_log", get_logger("lfr_actors.api.status"))
    body = {"decision": "not_a_match", "note": "not the person"}
    with capture_logs() as logs:
        for _ in range(20):
            resp = await client.post(f"/v1/alerts/{alert_id}/adjudication", json=body)
            problem_body = await problem(resp, 503)
            assert resp.headers["Retry-After"] == "30"
    assert problem_body["store_error"] == "disk full"
    assert f"free space in {db.parent}" in problem_body["detail"]
    failures = [e for e in logs if e["event"] == "store_write_failed"]
    assert len(failures) == 1 and failures[0]["log_level"] == "error"
    assert not [e for e in logs if e["event"] == "request_failed"]  # no traceback per request
    assert app[STORE_HEALTH].failing == "disk full"
    ready = await problem(await client.get("/readyz"), 503)
    assert "alert store: cannot be written (api)" in ready["not_ready"]

    monkeypatch.setattr(Adjudications, "decide", real_decide)
    resp = await client.post(f"/v1/alerts/{alert_id}/adjudication", json=body)
    assert resp.status in (200, 201), await resp.text()
    assert app[STORE_HEALTH].failing is None
    assert (await client.get("/readyz")).status == 200


def test_store_health_clears_once_space_returns(tmp_path: Path) -> None:
    health = StoreHealth(tmp_path)
    with capture_logs():
        health.note_failure("disk full", "alert_adjudication")
    assert health.failing == "disk full"
    health.recheck()  # tmp_path's file system has far more than the margin free
    assert health.failing is None


# -- lfr status: why, never a bare "?" -------------------------------------------------


def test_lfr_status_shows_why_an_actor_is_unavailable() -> None:
    status = ready_status(cam_north="running", cam_east="running")
    status["cameras"]["cam_east"] = {
        "unavailable": "GetTimeoutError: stats did not answer in 5 s",
        "role": "camera",
        "restarts": 1,
        "supervisor_error": "RayActorError: the actor died",
    }
    status["embedders"]["embedder"] = {"unavailable": "RayActorError: died", "restarts": 0}
    status["alerts"] = {"store": {"alerts": 3, "sightings": 9}, "alerts": {"restarts": 0}}
    status.update(status_age_s=12.5, status_error="no answer within 8 s", status_stale=True)
    status["store_error"] = "disk full"
    text = "\n".join(status_lines(status))
    east = next(line for line in text.splitlines() if "cam_east" in line)
    assert "unavailable" in east and "?" not in east
    assert "actor unavailable: GetTimeoutError: stats did not answer in 5 s" in east
    assert "supervisor: RayActorError: the actor died" in east
    assert "embedder embedder: restarts 0  actor unavailable: RayActorError: died" in text
    assert "STATUS STALE: figures last gathered 12.5 s ago" in text
    assert "STORE CANNOT BE WRITTEN: disk full" in text
    assert "alerts stored 3  sightings 9" in text


def test_lfr_status_says_the_api_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = argparse.Namespace(url=f"http://127.0.0.1:{port}", file=None, json=False)
    with pytest.raises(LfrError, match=r"^API unreachable: the deployment's API at http"):
        cmd_status(args)


# -- a deployment that is still starting ------------------------------------------------


async def test_a_starting_deployment_shows_its_cameras_starting(
    tmp_path: Path, shared_data: Path
) -> None:
    topology = load_topology(write_deployment(tmp_path, shared_data, ["obama"]))
    deployment = Deployment(topology, None, home=tmp_path / "home")
    status = await deployment.status(store_counts=False)  # `lfr serve`: no cameras to run
    assert status["cameras"] == {}
    deployment.live.cameras_wanted = True  # what run() sets before it starts anything
    status = await deployment.status(store_counts=False)
    assert status["cameras"] == {"cam_stage": {"state": "starting", "role": "camera"}}
    with AlertStore.open_readonly(tmp_path / "alerts.db", create=True) as store:
        cache = StatusCache(CountingSource(status), store)
        await cache.refresh()
        assert not_ready(cache.snapshot()) == ["cameras: none running (cam_stage starting)"]


async def test_the_gatherer_ends_when_cancelled_even_if_a_gather_swallows_it(db: Path) -> None:
    """Python 3.11's wait_for can swallow a cancellation; the API's shutdown must not hang.

    Seen for real: `lfr up` refused at start (Ray unreachable) and then never exited,
    its status task "cancelling" but asleep. Here a gather swallows the cancellation the
    way wait_for can, and the task must still end.
    """
    with AlertStore.open_readonly(db) as store:
        cache = StatusCache(CountingSource(ready_status(cam_north="running")), store)
        swallowed = asyncio.Event()

        async def refresh() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed.set()  # and return as if the gather had finished

        cache.refresh = refresh  # type: ignore[method-assign]
        task = asyncio.create_task(cache.run())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert swallowed.is_set()
