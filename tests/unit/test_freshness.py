"""Watchlist freshness: entries approved longer ago than watchlist_max_age_h are not searched.

The rule with a clock moved by hand (fresh, stale at the start, stale while running,
fresh again once enrolled and approved anew, no limit); the index left without stale
entries, on a real store file and the real index shard, at the start and while the
reconcile loop runs; the figures in the status, ``lfr status``, the report and the entry
answers; the API's declaration (and its 422s, which store and audit nothing); and the
start's comparison of the topology file with the stored record.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pytest_aiohttp import AiohttpClient
from structlog.testing import capture_logs

from lfr_actors.actors.index import IndexShardActor
from lfr_actors.actors.settings import ShardSettings
from lfr_actors.api.app import create_app
from lfr_actors.api.deployments import render_report_page
from lfr_actors.api.schemas import Report
from lfr_actors.cli.governance import deployment_section
from lfr_actors.cli.status import status_lines
from lfr_actors.control import follow as follow_module
from lfr_actors.control.follow import Reconciler
from lfr_actors.control.live import Live
from lfr_actors.control.paths import DeploymentError, DeploymentPaths
from lfr_actors.control.registration import check_deployment, register_deployment
from lfr_actors.control.status import stale_section
from lfr_actors.index.config import ShardConfig
from lfr_actors.logs import get_logger
from lfr_actors.messages import SearchRequest, SearchResult
from lfr_actors.store.audit import Action, Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.freshness import (
    HOUR_S,
    entry_is_stale,
    entry_stale_at,
    judge,
    searched_entry_ids,
    stale_at,
)
from lfr_actors.store.records import Enrolled, StaleEntry
from lfr_actors.testing.declarations import make_deployment, make_entry
from lfr_actors.testing.doubles import LocalHandle
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.loader import load_topology
from tests.api_helpers import problem
from tests.deployments import write_deployment

T0 = 1_800_000_000.0
DIM = 8
ADDER = Actor("PC Brown", "tok-pc")
APPROVER = Actor("Supt Clarke", "tok-supt")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def templates(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x)).astype(np.float32)


def enrolled(seed: int) -> Enrolled:
    return Enrolled(b"\xff\xd8jpeg", "image/jpeg", templates(seed), {"face_px": 112})


def approve_at(store: Deployments, clock: Clock, at: float, dep: str, entry_id: str) -> None:
    """Add ``entry_id`` (templates seeded by its number) and approve it at ``at``."""
    clock.now = at - 60
    store.add_entry(dep, make_entry(entry_id), enrolled(int(entry_id[1:])), actor=ADDER)
    clock.now = at
    store.approve_entry(dep, entry_id, actor=APPROVER)


# -- the rule ------------------------------------------------------------------------------


def test_the_rule_fresh_stale_at_start_stale_while_running_and_no_limit() -> None:
    start = T0
    # Approved 30 h before a 24 h-limited start: stale at the start, since 6 h before it.
    # Approved 20 h before: fresh at the start, stale 4 h into the run.
    # Approved 1 h before: fresh for 23 h more.
    approvals = [
        ("old", start - 30 * HOUR_S),
        ("day", start - 20 * HOUR_S),
        ("new", start - HOUR_S),
    ]
    at_start = judge(approvals, 24.0, start)
    assert at_start.stale == (StaleEntry("old", start - 30 * HOUR_S, start - 6 * HOUR_S),)
    assert at_start.next_stale_at == start + 4 * HOUR_S  # "day" is next
    just_before = judge(approvals, 24.0, start + 4 * HOUR_S - 0.001)
    assert just_before.stale_ids == ["old"]
    four_hours_in = judge(approvals, 24.0, start + 4 * HOUR_S)  # the moment itself: stale
    assert four_hours_in.stale_ids == ["day", "old"]
    assert four_hours_in.next_stale_at == start + 23 * HOUR_S
    # Enrolled again and approved now (a new entry): fresh, the old one still stale.
    again = judge([*approvals, ("day-2", start + 4 * HOUR_S)], 24.0, start + 4 * HOUR_S)
    assert "day-2" not in again.stale_ids and again.next_stale_at == start + 23 * HOUR_S
    # No limit: nothing is ever stale and nothing will be.
    assert judge(approvals, None, start + 1000 * HOUR_S).stale == ()
    assert judge(approvals, None, start).next_stale_at is None
    assert stale_at(None, 24.0) is None and stale_at(start, None) is None
    assert stale_at(start, 0.5) == start + 1800


def test_only_an_active_entry_is_stale(tmp_path: Path) -> None:
    clock = Clock(T0)
    with Database(tmp_path / "s.sqlite3") as db:
        store = Deployments(db, clock=clock)
        store.create(
            make_deployment("d", T0, T0 + 48 * HOUR_S, watchlist_max_age_h=1.0), actor=ADDER
        )
        approve_at(store, clock, T0, "d", "E1")
        store.add_entry("d", make_entry("E2"), enrolled(2), actor=ADDER)  # pending
        approve_at(store, clock, T0, "d", "E3")
        store.delete_entry("d", "E3", actor=APPROVER)
        later = T0 + 2 * HOUR_S
        e1, e2, e3 = (store.entry("d", e) for e in ("E1", "E2", "E3"))
    assert e1.watchlist_max_age_h == 1.0
    assert entry_stale_at(e1) == T0 + HOUR_S and entry_is_stale(e1, later)
    assert not entry_is_stale(e1, T0 + HOUR_S - 1)
    assert entry_stale_at(e2) is None and not entry_is_stale(e2, later)  # never approved
    assert not entry_is_stale(e3, later)  # deleted: not searched anyway, and not "stale"


# -- the store and the index ---------------------------------------------------------------


def test_loading_the_index_leaves_stale_entries_out_and_destroys_nothing(tmp_path: Path) -> None:
    clock = Clock(T0)
    with Database(tmp_path / "s.sqlite3") as db:
        store = Deployments(db, clock=clock)
        store.create(
            make_deployment("d", T0, T0 + 24 * HOUR_S, watchlist_max_age_h=24.0), actor=ADDER
        )
        store.create(make_deployment("open", T0, T0 + 24 * HOUR_S), actor=ADDER)  # no limit
        approve_at(store, clock, T0 - 30 * HOUR_S, "d", "E1")
        approve_at(store, clock, T0 - 20 * HOUR_S, "d", "E2")
        approve_at(store, clock, T0 - HOUR_S, "d", "E3")
        approve_at(store, clock, T0 - 30 * HOUR_S, "open", "E4")
        clock.now = T0
        loaded = store.load_templates("d")
        assert sorted(loaded.templates) == ["E2", "E3"]
        assert [s.entry_id for s in loaded.stale] == ["E1"]
        assert loaded.next_stale_at == T0 + 4 * HOUR_S
        assert store.searched_entries("d") == ["E2", "E3"]
        clock.now = T0 + 4 * HOUR_S
        assert sorted(store.load_templates("d").templates) == ["E3"]
        assert store.searched_entries("d") == ["E3"]
        assert store.freshness("d").stale_ids == ["E1", "E2"]
        # Another deployment without a limit searches its old entry.
        assert sorted(store.load_templates("open").templates) == ["E4"]
        assert store.freshness("open").stale == ()
        # Nothing destroyed: the stale entries are still active with their templates.
        e1 = store.entry("d", "E1")
        assert (str(e1.state), e1.templates, e1.image_type) == ("active", 1, "image/jpeg")
        assert store.entry_image("d", "E1") is not None
        # A stale entry that is also damaged is named in both lists.
        db.conn.execute(
            "UPDATE watchlist_entries SET embeddings_sha256 = 'x' WHERE id IN ('E1', 'E3')"
        )
        after = store.load_templates("d")
        assert sorted(after.damaged) == ["E1", "E3"]
        assert [s.entry_id for s in after.stale] == ["E1", "E2"]
        assert after.templates == {}
        assert store.searched_entries("d") == []


def test_the_damaged_ids_kept_per_revision_give_the_same_watchlist_searched(
    tmp_path: Path,
) -> None:
    """The deployment's answer counts the watchlist searched without reading templates.

    The damaged ids are checked once per watchlist revision; with them, the count reads
    only ids and approval times and agrees with the full check.
    """
    clock = Clock(T0)
    with Database(tmp_path / "s.sqlite3") as db:
        store = Deployments(db, clock=clock)
        store.create(
            make_deployment("d", T0, T0 + 24 * HOUR_S, watchlist_max_age_h=24.0), actor=ADDER
        )
        approve_at(store, clock, T0 - 30 * HOUR_S, "d", "E1")  # stale
        approve_at(store, clock, T0 - HOUR_S, "d", "E2")
        approve_at(store, clock, T0 - HOUR_S, "d", "E3")
        clock.now = T0

        def both() -> tuple[list[str], list[str]]:
            damaged = store.damaged_ids("d")
            full = store.searched_entries("d", T0)  # from the index's own load
            with db.snapshot() as conn:
                kept = searched_entry_ids(conn, "d", T0, damaged=damaged)
            return full, kept

        assert both() == (["E2", "E3"], ["E2", "E3"])
        # Templates changed on disk: the kept ids stand until the revision moves...
        db.conn.execute("UPDATE watchlist_entries SET embeddings_sha256 = 'x' WHERE id = 'E3'")
        assert store.damaged_ids("d") == frozenset()
        # ...and any change of the watchlist checks them again.
        approve_at(store, clock, T0 - HOUR_S, "d", "E4")
        clock.now = T0
        assert store.damaged_ids("d") == {"E3"}
        assert both() == (["E2", "E4"], ["E2", "E4"])


def test_the_report_counts_and_names_stale_entries(tmp_path: Path) -> None:
    clock = Clock(T0)
    with Database(tmp_path / "s.sqlite3") as db:
        store = Deployments(db, clock=clock)
        store.create(
            make_deployment("d", T0, T0 + 24 * HOUR_S, watchlist_max_age_h=12.0), actor=ADDER
        )
        approve_at(store, clock, T0 - 13 * HOUR_S, "d", "E1")
        approve_at(store, clock, T0 - 12 * HOUR_S, "d", "E2")  # stale from T0 exactly
        approve_at(store, clock, T0 - HOUR_S, "d", "E3")
        clock.now = T0
        report = store.report("d")
        store.close("d", actor=APPROVER, reason="over")
        closed = store.report("d")
    assert report["watchlist_max_age_h"] == 12.0
    assert report["watchlist"]["stale"] == 2
    assert report["watchlist"]["stale_entries"] == ["E1", "E2"]
    assert report["watchlist"]["active"] == 3  # stale entries stay active: computed, not stored
    # Closing destroys the watchlist: nothing is active, so nothing is stale.
    assert (closed["watchlist"]["stale"], closed["watchlist"]["stale_entries"]) == (0, [])
    page = render_report_page(Report.model_validate(report).model_dump(mode="json"))
    assert "<h2>Watchlist freshness</h2>" in page
    assert "<th>Longest time since approval</th><td>12 hours</td>" in page
    assert "<th>Stale entries (not searched)</th><td>2</td>" in page
    assert "<th>Stale entry ids</th><td>E1, E2</td>" in page


class KernelDouble:
    """The kernel as the watchlist step uses it: the index is one real shard actor."""

    def __init__(self, index_id: str, shard: IndexShardActor) -> None:
        self.index_id = index_id
        self.shard = shard

    def handle(self, name: str) -> LocalHandle:
        assert name == self.index_id
        return LocalHandle(self.shard)


def shard_for(tmp_path: Path) -> IndexShardActor:
    config = ShardConfig.from_mapping({"dimension": DIM, "metric": "euclidean"})
    return IndexShardActor(ShardSettings("shard_0", config, str(tmp_path / "snap")))


async def nearest(shard: IndexShardActor, seed: int) -> list[str]:
    """The entries the shard finds for entry ``E{seed}``'s own template."""
    request = SearchRequest(templates(seed), k=3, max_distance=0.1)
    result = SearchResult.decode(await shard.search(request.encode()))
    return [entry_id for entry_id, _ in result.hits[0]]


def reconciler_over(
    tmp_path: Path, db: Database, shard: IndexShardActor, clock: Any, **kwargs: Any
) -> tuple[Reconciler, Live]:
    topology = load_topology(write_deployment(tmp_path / "topo", tmp_path / "none", []))
    live = Live(db=db, actors_started=True)
    reconciler = Reconciler(
        topology,
        live,
        KernelDouble(topology.index.id, shard),  # type: ignore[arg-type]
        DeploymentPaths(tmp_path / "data"),
        lambda: {"alerts": [], "embedders": []},
        clock=clock,
        **kwargs,
    )
    return reconciler, live


async def test_the_running_index_drops_an_entry_the_moment_it_goes_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow_module, "log", get_logger("lfr.deployment"))
    clock = Clock(T0)
    db = Database(tmp_path / "s.sqlite3")
    store = Deployments(db, clock=clock)
    store.create(
        make_deployment("itest", T0, T0 + 24 * HOUR_S, watchlist_max_age_h=24.0), actor=ADDER
    )
    approve_at(store, clock, T0 - 30 * HOUR_S, "itest", "E1")  # stale at the start
    approve_at(store, clock, T0 - 20 * HOUR_S, "itest", "E2")  # stale 4 h in
    approve_at(store, clock, T0 - HOUR_S, "itest", "E3")
    shard = shard_for(tmp_path)
    reconciler, live = reconciler_over(tmp_path, db, shard, clock)
    try:
        clock.now = T0
        with capture_logs() as logs:
            await reconciler.sync_watchlist()  # the start
        assert sorted(shard.index.entries()) == ["E2", "E3"]
        assert await nearest(shard, 1) == [] and await nearest(shard, 2) == ["E2"]
        assert [s.entry_id for s in live.stale] == ["E1"]
        assert live.next_stale_at == T0 + 4 * HOUR_S
        stale_logs = [e for e in logs if e["event"] == "watchlist_entry_stale"]
        assert [(e["entry"], e["indexed"]) for e in stale_logs] == [("E1", False)]
        revision = live.revision
        # A round before the moment changes nothing.
        clock.now = T0 + 4 * HOUR_S - 1
        await reconciler._follow_watchlist()
        assert sorted(shard.index.entries()) == ["E2", "E3"]
        # At the moment: the next round reloads without it (the revision did not change).
        clock.now = T0 + 4 * HOUR_S
        with capture_logs() as logs:
            await reconciler._follow_watchlist()
        assert live.revision == revision
        assert sorted(shard.index.entries()) == ["E3"]
        assert await nearest(shard, 2) == []
        assert [s.entry_id for s in live.stale] == ["E1", "E2"]
        assert live.next_stale_at == T0 + 23 * HOUR_S
        assert [e["entry"] for e in logs if e["event"] == "watchlist_entry_stale"] == ["E2"]
        # The person enrolled again and approved now is searched again (a new entry id).
        approve_at(store, clock, T0 + 4 * HOUR_S, "itest", "E12")
        store.delete_entry("itest", "E2", actor=APPROVER)
        await reconciler._follow_watchlist()
        assert sorted(shard.index.entries()) == ["E12", "E3"]
        assert [s.entry_id for s in live.stale] == ["E1"]
        # The status lists them with their times.
        section = stale_section(reconciler.topology, live)
        assert section["stale_entries"] == 1
        assert section["stale"] == [
            {
                "entry_id": "E1",
                "approved_at": iso_utc(T0 - 30 * HOUR_S),
                "stale_since": iso_utc(T0 - 6 * HOUR_S),
            }
        ]
    finally:
        db.close()


async def test_the_reconcile_loop_drops_a_stale_entry_within_about_a_second(
    tmp_path: Path,
) -> None:
    """On the real clock: an entry whose limit runs out 1.5 s from now leaves the index."""
    db = Database(tmp_path / "s.sqlite3")
    now = time.time()
    limit_h = 1.5 / HOUR_S
    store = Deployments(db)
    store.create(
        make_deployment("itest", now - 60, now + 3600, watchlist_max_age_h=limit_h), actor=ADDER
    )
    store.add_entry("itest", make_entry("E1"), enrolled(1), actor=ADDER, approved_by=APPROVER)
    approved_at = store.entry("itest", "E1").approved_at
    assert approved_at is not None
    shard = shard_for(tmp_path)
    reconciler, _ = reconciler_over(tmp_path, db, shard, time.time, interval_s=1.0)
    await reconciler.sync_watchlist()
    assert shard.index.entries() == ["E1"]
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop, [reconciler.steps()[1]]))  # "watchlist"
    try:
        deadline = time.monotonic() + 10
        while shard.index.entries() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        gone_at = time.time()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        db.close()
    late_s = gone_at - (approved_at + 1.5)
    assert shard.index.entries() == [], "the stale entry was never dropped"
    assert 0.0 <= late_s < 1.5, late_s  # one round of the 1 s loop, and the reload
    print(f"stale entry left the index {late_s:.2f} s after it went stale")


# -- shown ---------------------------------------------------------------------------------


def test_lfr_status_lists_stale_entries_with_their_times() -> None:
    stale = [
        {
            "entry_id": "E1",
            "approved_at": "2026-12-01T08:00:00.000Z",
            "stale_since": "2026-12-02T08:00:00.000Z",
        }
    ]
    deployment = {
        "id": "d",
        "location": "here",
        "start": "s",
        "end": "e",
        "threshold": 0.5,
        "watchlist_entries": 3,
        "watchlist_max_age_h": 24.0,
        "stale_entries": 1,
        "stale": stale,
    }
    status = {"deployment": deployment, "api": "http://x", "uptime_s": 1, "cameras": {}}
    lines = status_lines({**status, "embedders": {}})
    assert (
        "  STALE entries 1 (approved more than 24 h ago; not searched, nothing deleted; "
        "enrol again to refresh):" in lines
    )
    assert (
        "    E1  approved 2026-12-01T08:00:00.000Z  stale since 2026-12-02T08:00:00.000Z" in lines
    )
    fresh = status_lines({**status, "embedders": {}, "deployment": {**deployment, "stale": []}})
    assert not any("STALE" in line for line in fresh)


# -- the API -------------------------------------------------------------------------------


def body(deployment_id: str, **changes: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "id": deployment_id,
        "authorised_by": "Supt Baker",
        "purpose": "testing",
        "location": "a test bench",
        "start": iso_utc(now - 3600),
        "end": iso_utc(now + 3600),
        "threshold": 0.55,
        **changes,
    }


async def test_the_api_declares_the_limit_and_refuses_a_bad_one_storing_nothing(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "s.sqlite3"
    Database(path).close()
    client = await aiohttp_client(create_app(path, auth=False))
    resp = await client.post("/v1/deployments", json=body("fresh", watchlist_max_age_h=24))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["watchlist_max_age_h"] == 24
    resp = await client.post("/v1/deployments", json=body("open"))
    assert (await resp.json())["watchlist_max_age_h"] is None
    got = await (await client.get("/v1/deployments/fresh")).json()
    assert got["watchlist_max_age_h"] == 24
    for bad in (0, -1, 8785, "24", True):
        resp = await client.post("/v1/deployments", json=body("bad", watchlist_max_age_h=bad))
        refused = await problem(resp, 422)
        names = [p["name"] for p in refused["invalid_params"]]
        assert names == ["watchlist_max_age_h"], (bad, refused)
    with Database(path, readonly=True) as db:
        assert Deployments(db).find("bad") is None
        created = [e.subject for e in AuditLog(db).page(action=Action.DEPLOYMENT_CREATE).entries]
    assert sorted(created) == ["fresh", "open"]  # the refusals audited nothing


async def test_entry_answers_carry_the_stale_flag(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "s.sqlite3"
    now = time.time()
    with Database(path) as db:
        clock = Clock(now)
        store = Deployments(db, clock=clock)
        store.create(
            make_deployment("d", now - 60, now + 3600, watchlist_max_age_h=2.0), actor=ADDER
        )
        approve_at(store, clock, now - 3 * HOUR_S, "d", "E1")
        approve_at(store, clock, now - HOUR_S, "d", "E2")
    client = await aiohttp_client(create_app(path, auth=False))
    listed = await (await client.get("/v1/deployments/d/entries")).json()
    flags = {e["id"]: (e["stale"], e["stale_at"]) for e in listed["entries"]}
    assert flags == {
        "E1": (True, iso_utc(now - HOUR_S)),
        "E2": (False, iso_utc(now + HOUR_S)),
    }
    one = await (await client.get("/v1/deployments/d/entries/E1")).json()
    assert one["stale"] is True and one["state"] == "active"
    report = await (await client.get("/v1/deployments/d/report")).json()
    assert report["watchlist"]["stale"] == 1 and report["watchlist"]["stale_entries"] == ["E1"]
    assert report["watchlist_max_age_h"] == 2.0


# -- the start compares the file with the record -------------------------------------------


def _edit(path: Path, **deployment: Any) -> None:
    data = yaml.safe_load(path.read_text())
    data["deployment"].update(deployment)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_start_whose_file_differs_from_the_recorded_limit_is_refused(tmp_path: Path) -> None:
    path = write_deployment(tmp_path, tmp_path / "none", [])
    _edit(path, watchlist_max_age_h=24)
    with Database(tmp_path / "s.sqlite3") as db:
        store = Deployments(db)
        record = register_deployment(store, load_topology(path))
        assert record.watchlist_max_age_h == 24.0
        assert check_deployment(store, load_topology(path)) == record  # the same: runs
        _edit(path, watchlist_max_age_h=12)
        with pytest.raises(DeploymentError) as refused:
            check_deployment(store, load_topology(path))
        assert "deployment watchlist_max_age_h: the store has 24 h, the file 12 h" in str(
            refused.value
        )
        data = yaml.safe_load(path.read_text())
        del data["deployment"]["watchlist_max_age_h"]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with pytest.raises(DeploymentError, match="the store has 24 h, the file no limit"):
            check_deployment(store, load_topology(path))
        assert store.get(record.id).watchlist_max_age_h == 24.0  # the record is untouched


def test_lfr_deployments_topology_prints_the_recorded_limit(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with Database(path) as db:
        Deployments(db).create(
            make_deployment("d", T0, T0 + HOUR_S, watchlist_max_age_h=24.0), actor=ADDER
        )
    out = io.StringIO()
    assert deployment_section(path, "d", out) == 0
    section = yaml.safe_load(out.getvalue())["deployment"]
    assert section["watchlist_max_age_h"] == 24.0
