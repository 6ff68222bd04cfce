"""Alert events followed from the live stream's feed: printed, and written as JSON Lines.

The API's :class:`lfr_actors.api.stream.EventHub` reads each new stored event once for
every live stream; the followers here (the JSONL sink, and ``lfr up``'s alerts on
stdout) take their events from the same feed, so the store is polled once whatever
follows it. A follower behind the hub's cache (the JSONL sink resuming a file written
by an earlier run) reads the events it missed from the store itself, as a stream
resuming after a long gap does. Only what is already persisted is ever followed, and
a crop never is.

A line::

    {"event": "raised", "event_id": 7, "id": "…", "deployment": "dep1", "camera": "cam_a",
     "cameras": ["cam_a"], "entry_id": "E1", "best_distance": 0.41,
     "first_seen": "2025-01-31T12:00:00.250Z", "last_seen": "…", "sightings": 1,
     "track_id": "cam_a:1.7.0", "tracks": ["cam_a:1.7.0"], "media_index": 1234,
     "media_time_s": 41.2}

``test_subject`` is true for the alert of a test subject (a volunteer measuring live
accuracy, not a suspect). ``best_distance`` is the alert's lowest cosine distance to its
watchlist entry (lower is closer), named as in the API; times are ISO 8601 UTC.
``track_id`` is the face track that raised the alert and ``tracks`` every track fused into
it; ``media_index`` and ``media_time_s`` say where the best face is in a recording (frame
number from 0, seconds), null for live sources and for alerts without tracks. The sink
resumes from the last event id in its output file: after a crash it repairs a torn last
line and carries on without gaps or repeats. The file is created (or tightened) readable
by its owner only (0600), wherever it is: the lines name watchlist entries and where and
when they were seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lfr_actors.api.stream import EventHub
from lfr_actors.fsutil import open_private_append
from lfr_actors.logs import get_logger
from lfr_actors.store.db import store_cause
from lfr_actors.timefmt import iso_utc

_PAGE = 500
_TAIL_BYTES = 1 << 16
_WAIT_S = 1.0
"""Longest a follower waits for the hub before it looks again by itself."""
_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0
"""A failing output is tried again after 1 s, then 2, 4 ... at most 30 s apart."""

log = get_logger("lfr.alerts")


class Follower(Protocol):
    """Takes the stored events after :attr:`position`, in order."""

    name: str
    """What the logs and the status call it (``stdout``, ``alerts_jsonl``)."""
    position: int
    """The id of the last event taken (0 before any)."""

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """Take ``events`` (each after :attr:`position`) and move :attr:`position` on."""
        ...


async def follow_events(
    hub: EventHub,
    followers: list[Follower],
    stop: asyncio.Event,
    *,
    wait_s: float = _WAIT_S,
    health: dict[str, OutputHealth] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Hand each follower every stored event after its position, until ``stop``, then drain.

    While the followers follow, the hub polls the store (as it does for open streams).
    Whether to stop is decided BEFORE each round's reads, and the reads of a round that
    began with ``stop`` set go to the store itself, not the hub's cache: so the round that
    ends this (one that found nothing new) started after ``stop`` was set (after the
    drain's flush) and saw every event committed before the drain asked to stop.

    A follower that fails (its file's disk is full, the store cannot be read, stdout is
    closed) is retried with backoff (:class:`OutputHealth`), from its own position, and
    never stops the others: nothing is lost, since each resumes where it stands. Its
    health is kept in ``health`` (by follower name) for the status.
    """
    if not followers:
        return
    states = {} if health is None else health
    for follower in followers:
        states.setdefault(follower.name, OutputHealth(follower.name))
    hub.followers += 1
    try:
        while True:
            stopping = stop.is_set()
            changed = hub.waiter()
            delivered = False
            for follower in followers:
                state = states[follower.name]
                if not stopping and clock() < state.retry_at:
                    continue
                before = follower.position
                try:
                    events = await _events_after(hub, before, from_store=stopping)
                    if events:
                        await follower.deliver(events)
                except Exception as exc:  # every failure is retried, none is fatal
                    state.failed(exc, clock())
                    continue
                # The events taken (a delivery may stop part way), not the ids moved past.
                state.succeeded(sum(before < e["event_id"] <= follower.position for e in events))
                delivered = delivered or bool(events)
            if stopping and not delivered:
                for follower in followers:
                    states[follower.name].stopped_behind(follower.position)
                return
            if not delivered:
                await first_of(changed, stop, wait_s)
    finally:
        hub.followers -= 1


@dataclass
class OutputHealth:
    """How one alert output (the JSONL file, stdout) fares: failures are retried, never fatal.

    A failure logs ``alert_output_failing`` once per outage (and ``alert_output_recovered``
    once it delivers again) and waits before the next try: 1 s, doubling to 30 s.
    """

    name: str
    delivered: int = 0
    """Events this output took since the start."""
    attempts_failed: int = 0
    failing: bool = False
    last_error: str | None = None
    retry_at: float = 0.0
    """When (on the follower's clock) the next try is due."""
    backoff_s: float = 0.0

    def failed(self, exc: Exception, now: float) -> None:
        """Count a failed try and put the next one off."""
        self.attempts_failed += 1
        self.last_error = store_cause(exc)
        self.backoff_s = min(max(_RETRY_FIRST_S, 2 * self.backoff_s), _RETRY_MAX_S)
        self.retry_at = now + self.backoff_s
        if not self.failing:
            self.failing = True
            log.error(
                "alert_output_failing",
                output=self.name,
                reason=self.last_error,
                action="retrying with backoff; nothing is lost, it resumes where it stopped",
            )

    def succeeded(self, taken: int) -> None:
        """Count ``taken`` events delivered (or a read with nothing new)."""
        self.delivered += taken
        self.backoff_s = 0.0
        self.retry_at = 0.0
        if self.failing:
            self.failing = False
            log.info("alert_output_recovered", output=self.name)

    def stopped_behind(self, position: int) -> None:
        """At the end of a drain: say so when this output could not catch up."""
        if self.failing:
            log.error(
                "alert_output_behind_at_stop",
                output=self.name,
                position=position,
                reason=self.last_error,
                action="the events after position are in the store; the next start resumes",
            )

    def as_status(self, position: int) -> dict[str, Any]:
        """The status entry."""
        return {
            "name": self.name,
            "position": position,
            "delivered": self.delivered,
            "attempts_failed": self.attempts_failed,
            "up": not self.failing,
            "last_error": self.last_error,
        }


async def drain_events(hub: EventHub, followers: list[Follower]) -> None:
    """Hand each follower every stored event after its position, then return."""
    done = asyncio.Event()
    done.set()
    await follow_events(hub, followers, done)


async def _events_after(hub: EventHub, after: int, *, from_store: bool) -> list[dict[str, Any]]:
    if not from_store:
        cached = hub.cached_after(after, None)
        if cached is not None:
            return [e.event for e in cached]
    # Behind the cache, or the drain's last reads: from the store.
    return await asyncio.to_thread(hub.store.events_after, after, _PAGE)


async def first_of(a: asyncio.Event, b: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``a`` or ``b`` is set, or ``timeout_s`` has passed, whichever is first."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class CallbackFollower:
    """Calls ``on_event`` with each event after ``position`` (``lfr up`` prints alerts)."""

    def __init__(
        self, on_event: Callable[[dict[str, Any]], None], position: int, name: str = "stdout"
    ) -> None:
        self.on_event = on_event
        self.position = position
        self.name = name

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """Call ``on_event`` for each event, in order, moving on after each call returns.

        At least once: an event whose call raised is offered again on the next try.
        """
        for event in events:
            self.on_event(event)
            self.position = event["event_id"]


def event_line(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON Lines record of one stored event (as returned by ``events_after``)."""
    alert = event["alert"]
    return {
        "event": event["kind"],
        "event_id": event["event_id"],
        "id": alert["id"],
        "deployment": alert["deployment_id"],
        "camera": alert["first_camera_id"],
        "cameras": alert["cameras"],
        "entry_id": alert["entry_id"],
        "best_distance": alert["best_distance"],
        "first_seen": iso_utc(alert["first_seen"]),
        "last_seen": iso_utc(alert["last_seen"]),
        "sightings": alert["sightings"],
        "track_id": alert["track_id"],
        "tracks": alert["tracks"],
        "media_index": alert["media_index"],
        "media_time_s": alert["media_time_s"],
        "test_subject": bool(alert.get("test_subject", False)),
    }


class JsonlSink:
    """Appends alert events to ``out_path``, one line each, resuming after its last line."""

    name = "alerts_jsonl"

    def __init__(self, out_path: Path) -> None:
        self.out_path = Path(out_path)
        self.position = _last_written_event_id(self.out_path)
        """The id of the last event written (0 before any): read from the file at start."""
        self.written = 0
        """Lines written by this sink."""

    @property
    def last_event_id(self) -> int:
        """The id of the last event written (0 before any)."""
        return self.position

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """Append the events after :attr:`position` (durably: fsync) and move on."""
        await asyncio.to_thread(self.write, events)

    def write(self, events: list[dict[str, Any]]) -> int:
        """Append the events after :attr:`position` (durably: fsync); how many were written.

        All or nothing: a write that fails part way (a full disk) is cut back to the file's
        size before it, so a retry never follows a torn line.
        """
        fresh = [e for e in events if e["event_id"] > self.position]
        if not fresh:
            return 0
        payload = "".join(
            json.dumps(event_line(e), separators=(",", ":")) + "\n" for e in fresh
        ).encode()
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        with open_private_append(self.out_path) as out:
            # Straight to the descriptor, past the file object's buffer: nothing of a
            # failed write is left to be flushed (appended) when the file is closed.
            fd = out.fileno()
            size = os.fstat(fd).st_size
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        self.position = fresh[-1]["event_id"]
        self.written += len(fresh)
        return len(fresh)


def _last_written_event_id(path: Path) -> int:
    """The event id of the file's last complete line, cutting off a torn last line first."""
    if not path.is_file():
        return 0
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        start = max(0, size - _TAIL_BYTES)
        handle.seek(start)
        tail = handle.read()
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            if cut < 0 and start > 0:
                raise ValueError(f"{path}: last line is longer than {_TAIL_BYTES} bytes")
            keep = start + cut + 1
            handle.truncate(keep)
            tail = tail[: cut + 1]
        lines = tail.splitlines()
        if not lines:
            return 0
        try:
            return int(json.loads(lines[-1])["event_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: the last line is not an alert event line ({exc}); "
                "move the file aside or fix its last line to resume"
            ) from exc
