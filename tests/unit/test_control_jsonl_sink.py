"""The alert followers (the JSON Lines sink, ``lfr up``'s stdout) on the API's event feed.

A real :class:`lfr_actors.api.stream.EventHub` over a real store: the followers take the
events the hub read for the live streams, resume after a restart without gaps or repeats,
and make their last read after the drain asked to stop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lfr_actors.alerts.fusion import AlertEvent, Fuser, FusionConfig
from lfr_actors.api.stream import EventHub
from lfr_actors.cli.status import status_lines
from lfr_actors.control.deployment import Deployment, DeploymentError
from lfr_actors.control.jsonl_sink import (
    CallbackFollower,
    JsonlSink,
    OutputHealth,
    drain_events,
    follow_events,
)
from lfr_actors.messages import Sighting
from lfr_actors.store.alerts import AlertStore
from lfr_actors.testing.doubles import make_sighting
from lfr_actors.topology.loader import load_topology
from tests.disks import fill, small_tmpfs
from tests.topology_files import write_site_topology, write_watchlist

sighting = make_sighting


def events_for(fuser: Fuser, *items: Sighting) -> list[AlertEvent]:
    return [e for s in items if (e := fuser.observe(s)) is not None]


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps({"id": event["event_id"]}).encode()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture
async def hub(db: Path) -> AsyncIterator[EventHub]:
    """The API's hub over a read-only connection, as ``create_app`` builds it."""
    with AlertStore.open_readonly(db) as reader:
        yield EventHub(reader, 0.01, _encode)


async def test_jsonl_sink_writes_each_event_once_and_resumes(db: Path, hub: EventHub) -> None:
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    out = db.parent / "out" / "alerts.jsonl"
    sink = JsonlSink(out)
    await drain_events(hub, [sink])  # no event yet: nothing to do, no file, no error
    assert (sink.written, sink.last_event_id, out.exists()) == (0, 0, False)
    with AlertStore(db) as store:
        for event in events_for(fuser, sighting(1), sighting(2, camera="cam_b", at=1.5)):
            store.apply(event)
        await drain_events(hub, [sink])
        assert sink.written == 2
        await drain_events(hub, [sink])
        assert sink.written == 2
        lines = read_lines(out)
        assert lines[1] == {
            "event": "updated",
            "event_id": 2,
            "id": fuser.open_alerts[0].id,
            "deployment": "dep1",
            "camera": "cam_a",
            "cameras": ["cam_a", "cam_b"],
            "entry_id": "E1",
            "best_distance": 0.3,
            "first_seen": "2023-11-14T22:13:20.000Z",
            "last_seen": "2023-11-14T22:13:21.500Z",
            "sightings": 2,
            "track_id": None,
            "tracks": [],
            "media_index": None,
            "media_time_s": None,
            "test_subject": False,
        }
        assert lines[0]["event"] == "raised" and lines[0]["sightings"] == 1
        # A crash mid-line: the torn line is cut off and that event written again, whole.
        with out.open("ab") as handle:
            handle.write(b'{"event":"updated","event_id":3,"id"')
        for event in events_for(fuser, sighting(3, at=2)):
            store.apply(event)
        resumed = JsonlSink(out)
        assert resumed.last_event_id == 2
        await drain_events(hub, [resumed])
        assert resumed.written == 1
    assert [line["event_id"] for line in read_lines(out)] == [1, 2, 3]
    assert "crop" not in out.read_text()


async def test_jsonl_sink_runs_until_stopped_then_drains(db: Path, hub: EventHub) -> None:
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    out = db.parent / "alerts.jsonl"
    sink = JsonlSink(out)
    stop = asyncio.Event()
    poller = asyncio.create_task(hub.run())
    task = asyncio.create_task(follow_events(hub, [sink], stop, wait_s=0.05))
    try:
        with AlertStore(db) as store:
            store.apply(events_for(fuser, sighting(1))[0])
            for _ in range(200):
                await asyncio.sleep(0.01)
                if out.exists() and out.read_text():
                    break
            assert len(read_lines(out)) == 1
            store.apply(events_for(fuser, sighting(2, at=1))[0])
            stop.set()
            await asyncio.wait_for(task, 5)
    finally:
        poller.cancel()
    assert [line["event_id"] for line in read_lines(out)] == [1, 2]
    assert hub.followers == 0  # the hub stops polling for the sink once it ends


async def test_the_followers_take_live_events_from_the_hub_not_a_poll_of_their_own(
    db: Path, hub: EventHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read of the store per hub poll, whatever follows: the feed is the stream's."""
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    reads = 0
    polls = 0
    real_read, real_poll = AlertStore.events_after, EventHub.poll

    def counted_read(self: AlertStore, event_id: int, limit: int = 500) -> list[dict[str, Any]]:
        nonlocal reads
        reads += 1
        return real_read(self, event_id, limit)

    async def counted_poll(self: EventHub) -> None:
        nonlocal polls
        polls += 1
        await real_poll(self)

    monkeypatch.setattr(AlertStore, "events_after", counted_read)
    monkeypatch.setattr(EventHub, "poll", counted_poll)
    printed: list[int] = []
    sink = JsonlSink(db.parent / "alerts.jsonl")
    printer = CallbackFollower(lambda event: printed.append(event["event_id"]), 0)
    stop = asyncio.Event()
    poller = asyncio.create_task(hub.run())
    task = asyncio.create_task(follow_events(hub, [printer, sink], stop, wait_s=0.05))
    try:
        with AlertStore(db) as store:
            for n, item in enumerate((sighting(1), sighting(2, at=1), sighting(3, at=2))):
                store.apply(events_for(fuser, item)[0])
                for _ in range(300):
                    await asyncio.sleep(0.01)
                    if sink.last_event_id == n + 1 and printed[-1:] == [n + 1]:
                        break
            assert (printed, sink.last_event_id) == ([1, 2, 3], 3)
            assert reads == polls  # every read was the hub's: none by a follower
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        poller.cancel()
    assert printed == [1, 2, 3]
    assert [line["event_id"] for line in read_lines(sink.out_path)] == [1, 2, 3]


async def test_the_alert_followers_last_read_starts_after_the_stop(
    db: Path, hub: EventHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain race: a read that began before the last event was stored, and ended after
    the drain asked to stop, must not be the last read (stdout would miss that event)."""
    writer = AlertStore(db)
    fuser = Fuser("dep", FusionConfig(threshold=0.5))
    first = fuser.observe(make_sighting(1))
    assert first is not None
    writer.apply(first)
    await hub.resync()  # the hub has read up to the first event, as at the start of a run
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    printed: list[int] = []
    real = AlertStore.events_after
    calls = 0

    def racing(self: AlertStore, event_id: int, limit: int = 500) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        events = real(self, event_id, limit)
        if calls == 1:  # this read saw what was there; now the last event is stored, and
            # the drain stops
            last = fuser.observe(make_sighting(2, at=1))
            assert last is not None
            writer.apply(last)
            loop.call_soon_threadsafe(stop.set)
        return events

    jsonl = db.parent / "alerts.jsonl"
    printer = CallbackFollower(lambda event: printed.append(event["event_id"]), hub.latest)
    monkeypatch.setattr(AlertStore, "events_after", racing)
    await asyncio.wait_for(follow_events(hub, [printer, JsonlSink(jsonl)], stop), 30)
    writer.close()
    assert printed == [2]
    assert [json.loads(line)["event_id"] for line in jsonl.read_text().splitlines()] == [1, 2]


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached in time")


async def test_a_full_disk_under_the_jsonl_file_loses_nothing_and_holds_back_nothing(
    tmp_path: Path, db: Path, hub: EventHub
) -> None:
    """A real tmpfs filled to the last byte under the JSONL file: stdout carries on, the file
    is never left with a torn line, and once space returns it catches up, each event once."""
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    printed: list[int] = []
    health: dict[str, OutputHealth] = {}
    stop = asyncio.Event()
    with small_tmpfs(tmp_path / "small-disk", "1m") as disk:
        out = disk / "alerts.jsonl"
        sink = JsonlSink(out)
        printer = CallbackFollower(lambda event: printed.append(event["event_id"]), 0)
        poller = asyncio.create_task(hub.run())
        follow = follow_events(hub, [printer, sink], stop, wait_s=0.02, health=health)
        task = asyncio.create_task(follow)
        try:
            with AlertStore(db) as store:
                store.apply(events_for(fuser, sighting(1, entry="E1"))[0])
                await _until(lambda: sink.position == 1)
                filler = fill(disk / "filler")
                written = out.read_bytes()
                # Enough lines that they cannot fit the slack of the file's last page.
                for n in range(2, 40):
                    store.apply(events_for(fuser, sighting(n, entry=f"E{n}", at=n))[0])
                await _until(lambda: printed[-1:] == [39])  # stdout is not held back
                await _until(lambda: health["alerts_jsonl"].attempts_failed >= 1)
                state = health["alerts_jsonl"]
                assert not state.as_status(sink.position)["up"]
                assert state.last_error == "No space left on device"
                assert health["stdout"].as_status(printer.position)["up"]
                assert out.read_bytes() == written  # a failed write is cut back, not torn
                filler.unlink()
                await _until(lambda: sink.position == 39, timeout_s=40)
                assert health["alerts_jsonl"].as_status(sink.position)["up"]
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            poller.cancel()
        ids = [line["event_id"] for line in read_lines(out)]
    assert ids == list(range(1, 40))
    assert printed == list(range(1, 40))
    assert health["alerts_jsonl"].delivered == 39


async def test_an_output_that_raises_is_retried_from_its_own_position(
    db: Path, hub: EventHub
) -> None:
    """Any failure of an output (stdout closed, say) backs off and retries; the others go on."""
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    seen: list[int] = []
    broken = True

    def flaky(event: dict[str, Any]) -> None:
        if broken:
            raise BrokenPipeError(32, "Broken pipe")
        seen.append(event["event_id"])

    flaky_follower = CallbackFollower(flaky, 0, name="flaky")
    sink = JsonlSink(db.parent / "alerts.jsonl")
    health: dict[str, OutputHealth] = {}
    clock = [0.0]
    stop = asyncio.Event()
    poller = asyncio.create_task(hub.run())
    with AlertStore(db) as store:
        store.apply(events_for(fuser, sighting(1, entry="E1"))[0])
        store.apply(events_for(fuser, sighting(2, entry="E2", at=1))[0])
        task = asyncio.create_task(
            follow_events(
                hub,
                [flaky_follower, sink],
                stop,
                wait_s=0.02,
                health=health,
                clock=lambda: clock[0],
            )
        )
        try:
            await _until(lambda: sink.position == 2)
            state = health["flaky"]
            await _until(lambda: state.attempts_failed >= 1)
            assert state.failing and state.last_error == "Broken pipe"
            assert state.retry_at == 1.0  # the first retry waits 1 s (the fake clock's)
            await asyncio.sleep(0.1)
            assert state.attempts_failed == 1  # nothing is tried before it is due
            clock[0] = 1.0
            await _until(lambda: state.attempts_failed == 2)
            assert state.retry_at == 3.0  # then 2 s
            broken = False
            clock[0] = 3.0
            await _until(lambda: not state.failing)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            poller.cancel()
    # At least once: the event whose call raised is offered again, and every one arrives.
    assert seen == [1, 2]
    assert [line["event_id"] for line in read_lines(sink.out_path)] == [1, 2]


def test_a_jsonl_file_that_cannot_be_resumed_refuses_the_start_in_one_line(
    tmp_path: Path,
) -> None:
    out = tmp_path / "alerts.jsonl"
    out.write_text('{"event": "raised"}\n')  # no event id: not written by the sink
    write_watchlist(tmp_path / "w.yaml")
    topology = write_site_topology(
        tmp_path,
        cameras=[{"id": "cam0", "source": {"type": "url", "url": "rtsp://127.0.0.1/0"}}],
        storage={"data_dir": str(tmp_path / "data")},
    )
    deployment = Deployment(load_topology(topology), None, home=tmp_path, alerts_jsonl=out)
    with pytest.raises(DeploymentError) as refused:
        asyncio.run(deployment.start())
    assert str(refused.value).startswith(f"--alerts-jsonl {out}: ")
    assert "the last line is not an alert event line" in str(refused.value)
    # Refused before anything ran: no data folder, no store, no API, the file as it was.
    assert not (tmp_path / "data").exists()
    assert deployment.live.api_url is None
    assert out.read_text() == '{"event": "raised"}\n'


def test_lfr_status_shows_each_alert_output_in_one_line() -> None:
    status: dict[str, Any] = {
        "deployment": {"id": "d", "location": "l", "start": "s", "end": "e", "threshold": 0.6},
        "api": "http://127.0.0.1:8080",
        "uptime_s": 1.0,
        "cameras": {},
        "embedders": {},
        "alert_outputs": [
            OutputHealth("stdout", delivered=4).as_status(4),
            OutputHealth(
                "alerts_jsonl",
                delivered=2,
                attempts_failed=3,
                failing=True,
                last_error="No space left on device",
            ).as_status(2),
        ],
    }
    lines = status_lines(status)
    assert "  alert output stdout up: delivered 4 up to event 4" in lines
    assert (
        "  alert output alerts_jsonl FAILING (retried; nothing is lost): delivered 2 up to "
        "event 2  last error: No space left on device"
    ) in lines
