"""The alert API through aiohttp's test client, over a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.alerts.records import AlertEvent
from lfr_actors.api.app import create_app
from lfr_actors.api.keys import STORE
from lfr_actors.messages import Sighting
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.testing.doubles import SIGHTING_EPOCH, fake_jpeg, make_sighting

pytestmark = pytest.mark.asyncio

T0 = SIGHTING_EPOCH

sighting = make_sighting
PROBLEM = "application/problem+json"


class Writer:
    """The alert actor's side, reduced to a fuser and the writing store."""

    def __init__(self, path: Path) -> None:
        self.store = AlertStore(path)
        self.fuser = Fuser("dep1", FusionConfig(threshold=0.5))

    def add(self, *items: Sighting) -> list[AlertEvent]:
        events = [e for s in items if (e := self.fuser.observe(s)) is not None]
        for event in events:
            self.store.apply(event)
        return events


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture
def writer(db: Path) -> Iterator[Writer]:
    w = Writer(db)
    yield w
    w.store.close()


def admin_headers(db: Path) -> dict[str, str]:
    """A bearer token that every route admits (the role matrix has its own tests)."""
    with Database(db) as store:
        secret = TokenStore(store).create("test admin", Role.ADMIN, by=SYSTEM).secret
    return {"Authorization": f"Bearer {secret}"}


async def client_for(aiohttp_client: AiohttpClient, db: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("poll_interval_s", 0.02)
    kwargs.setdefault("heartbeat_s", 0.2)
    return await aiohttp_client(create_app(db, **kwargs), headers=admin_headers(db))


async def problem(resp: ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status
    assert resp.content_type == PROBLEM
    body: dict[str, Any] = await resp.json(content_type=PROBLEM)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


async def read_event(resp: ClientResponse, timeout_s: float = 5.0) -> dict[str, str]:
    """The next SSE event (comment and retry lines skipped)."""
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), timeout_s)).decode()
        assert line, "stream ended"
        line = line.rstrip("\n")
        if line == "":
            if "id" in fields:
                return fields
            continue
        if line.startswith(":") or line.startswith("retry:"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


async def event_lines_within(resp: ClientResponse, seconds: float) -> list[str]:
    """The non-comment lines a stream sends in the next ``seconds`` (heartbeats skipped).

    Each read is bounded by the time left. (An outer ``asyncio.timeout`` around a loop of
    ``wait_for`` reads is not: on Python 3.11 a cancellation that lands as a heartbeat
    arrives is swallowed, and the loop then reads heartbeats until the client's own
    300 s timeout.)
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    lines: list[str] = []
    while (left := deadline - loop.time()) > 0:
        try:
            line = (await asyncio.wait_for(resp.content.readline(), left)).decode()
        except TimeoutError:
            break
        assert line, "stream ended"
        text = line.rstrip("\n")
        if text and not text.startswith(":") and not text.startswith("retry:"):
            lines.append(text)
    return lines


async def test_healthz(aiohttp_client: AiohttpClient, db: Path) -> None:
    client = await client_for(aiohttp_client, db)
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_status_from_the_source_or_503(aiohttp_client: AiohttpClient, db: Path) -> None:
    client = await client_for(aiohttp_client, db)
    await problem(await client.get("/v1/status"), 503)

    async def status() -> dict[str, Any]:
        return {"deployment": "dep1", "cameras": {"cam_a": "running"}}

    other = await aiohttp_client(create_app(db, status=status), headers=admin_headers(db))
    resp = await other.get("/v1/status")
    assert resp.status == 200
    assert (await resp.json())["deployment"] == "dep1"


async def test_list_get_and_crop(aiohttp_client: AiohttpClient, db: Path, writer: Writer) -> None:
    events = writer.add(
        sighting(1, entry="E1"), sighting(2, entry="E2", camera="cam_b"), sighting(3, entry="E3")
    )
    client = await client_for(aiohttp_client, db)
    resp = await client.get("/v1/alerts", params={"limit": "2"})
    assert resp.status == 200
    body = await resp.json()
    assert body["last_event_id"] == len(events) == 3  # stream from here to miss nothing
    assert [a["entry_id"] for a in body["alerts"]] == ["E3", "E2"]
    first = body["alerts"][0]
    assert first["first_seen"].endswith("Z") and first["first_seen"].startswith("2023-11-14T")
    assert first["crop_url"] == f"/v1/alerts/{first['id']}/crop.jpg"
    assert first["entry_url"] == "/v1/deployments/dep1/entries/E3"
    assert first["entry_image_url"] == "/v1/deployments/dep1/entries/E3/image"
    assert not any("crop" in k and k != "crop_url" for k in first)
    resp = await client.get("/v1/alerts", params={"limit": "2", "cursor": body["next_cursor"]})
    rest = await resp.json()
    assert [a["entry_id"] for a in rest["alerts"]] == ["E1"]
    assert rest["next_cursor"] is None

    resp = await client.get("/v1/alerts", params={"camera": "cam_b"})
    assert [a["entry_id"] for a in (await resp.json())["alerts"]] == ["E2"]
    resp = await client.get("/v1/alerts", params={"since": "2023-11-14T22:13:21Z"})
    assert [a["entry_id"] for a in (await resp.json())["alerts"]] == []
    resp = await client.get("/v1/alerts", params={"entry": "E1", "until": str(T0 + 1)})
    assert [a["entry_id"] for a in (await resp.json())["alerts"]] == ["E1"]

    alert_id = events[0].alert.id
    resp = await client.get(f"/v1/alerts/{alert_id}")
    assert resp.status == 200
    assert (await resp.json())["entry_id"] == "E1"
    resp = await client.get(f"/v1/alerts/{alert_id}/crop.jpg")
    assert resp.status == 200
    assert resp.content_type == "image/jpeg"
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.read() == fake_jpeg(1)


async def test_not_found_and_method_problems(aiohttp_client: AiohttpClient, db: Path) -> None:
    client = await client_for(aiohttp_client, db)
    body = await problem(await client.get("/v1/alerts/unknown-id"), 404)
    assert "unknown-id" in body["detail"]
    await problem(await client.get("/v1/alerts/unknown-id/crop.jpg"), 404)
    await problem(await client.get("/no/such/route"), 404)
    resp = await client.post("/v1/alerts", data=b"{}")
    await problem(resp, 405)
    assert "GET" in resp.headers["Allow"]


async def test_bad_query_lists_every_bad_parameter(aiohttp_client: AiohttpClient, db: Path) -> None:
    client = await client_for(aiohttp_client, db)
    resp = await client.get(
        "/v1/alerts",
        params={"limit": "0", "since": "yesterday", "until": "2025-01-01T00:00:00", "x": "1"},
    )
    body = await problem(resp, 400)
    assert sorted(p["name"] for p in body["invalid_params"]) == ["limit", "since", "until", "x"]
    resp = await client.get("/v1/alerts", params={"limit": "501"})
    await problem(resp, 400)
    resp = await client.get("/v1/alerts/stream", headers={"Last-Event-ID": "abc"})
    body = await problem(resp, 400)
    assert body["invalid_params"][0]["name"] == "Last-Event-ID"


async def test_unexpected_error_is_a_500_problem_without_details(
    aiohttp_client: AiohttpClient, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await client_for(aiohttp_client, db)

    def broken(alert_id: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app[STORE], "get", broken)
    resp = await client.get("/v1/alerts/x")
    body = await problem(resp, 500)
    text = json.dumps(body)
    assert "secret" not in text and "Traceback" not in text


async def test_stream_sends_live_events_in_order_and_resumes(
    aiohttp_client: AiohttpClient, db: Path, writer: Writer
) -> None:
    writer.add(sighting(1, entry="OLD"))  # before the client connects: not sent live
    client = await client_for(aiohttp_client, db)
    resp = await client.get("/v1/alerts/stream")
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"

    writer.add(sighting(2, at=1), sighting(3, at=2, camera="cam_b"))
    raised, updated = await read_event(resp), await read_event(resp)
    assert (raised["event"], updated["event"]) == ("raised", "updated")
    assert int(updated["id"]) == int(raised["id"]) + 1
    data = json.loads(updated["data"])
    assert data["entry_id"] == "E1" and data["sightings"] == 2
    assert data["cameras"] == ["cam_a", "cam_b"]
    resp.close()  # the client goes away ...

    writer.add(sighting(4, at=3), sighting(5, entry="E2", at=4))  # ... and misses these
    resumed = await client.get("/v1/alerts/stream", headers={"Last-Event-ID": updated["id"]})
    missed = [await read_event(resumed), await read_event(resumed)]
    assert [int(e["id"]) for e in missed] == [int(updated["id"]) + 1, int(updated["id"]) + 2]
    assert [e["event"] for e in missed] == ["updated", "raised"]
    writer.add(sighting(6, entry="E2", at=5))
    live = await read_event(resumed)
    assert int(live["id"]) == int(missed[-1]["id"]) + 1
    assert json.loads(live["data"])["sightings"] == 2

    everything = await client.get("/v1/alerts/stream", params={"after": "0"})
    ids = [int((await read_event(everything))["id"]) for _ in range(6)]
    assert ids == list(range(1, 7))


async def test_streams_behind_the_shared_cache_read_the_store_and_miss_nothing(
    aiohttp_client: AiohttpClient, db: Path, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub keeps only the newest events in memory (3 here); a stream further behind
    # reads the store, then joins the cached tail, each event exactly once and in order.
    monkeypatch.setattr("lfr_actors.api.stream._CACHED_EVENTS", 3)
    client = await client_for(aiohttp_client, db)
    live = await client.get("/v1/alerts/stream", params={"after": "0"})
    writer.add(*(sighting(i, entry=f"E{i}", at=i) for i in range(1, 11)))
    ids = [int((await read_event(live))["id"]) for _ in range(10)]
    assert ids == list(range(1, 11))
    late = await client.get("/v1/alerts/stream", params={"after": "2"})
    assert [int((await read_event(late))["id"]) for _ in range(8)] == list(range(3, 11))
    writer.add(sighting(11, entry="E11", at=11))
    assert int((await read_event(live))["id"]) == 11
    assert int((await read_event(late))["id"]) == 11
    unknown = await client.get("/v1/alerts/stream", params={"deployment": "other"})
    assert (await problem(unknown, 404))["detail"] == "No deployment with id 'other'."
    with Database(db) as database:
        now = time.time()
        record = make_deployment(
            "other",
            now,
            now + 60,
            0.5,
            authorised_by="Supt X",
            purpose="test",
            location="elsewhere",
        )
        Deployments(database).create(record, actor=SYSTEM)
    other = await client.get("/v1/alerts/stream", params={"after": "0", "deployment": "other"})
    writer.add(sighting(12, entry="E12", at=12))
    assert int((await read_event(live))["id"]) == 12
    assert await event_lines_within(other, 1.0) == []  # heartbeats only: dep1's are not other's
    for resp in (live, late, other):
        resp.close()


async def test_stream_heartbeats_and_ends_at_shutdown(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await client_for(aiohttp_client, db, heartbeat_s=0.05)
    resp = await client.get("/v1/alerts/stream")
    lines = [await asyncio.wait_for(resp.content.readline(), 5) for _ in range(4)]
    assert b": heartbeat\n" in lines
    rest = asyncio.create_task(resp.content.read())
    await asyncio.wait_for(client.server.close(), 5)  # not the 60 s graceful timeout
    await asyncio.wait_for(rest, 5)
