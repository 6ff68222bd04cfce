"""``GET /v1/alerts/stream``: alert events as Server-Sent Events, with no gap and no repeat.

Each alert event carries its store event id; a client that reconnects with
``Last-Event-ID`` (or ``?after=``) receives every event after that one, then the live
tail. :class:`EventHub` is the one reader of new events for the whole application: it
encodes each event once for every open stream (a measured optimisation: a hundred
streams cost one query and one encoding per event, not a hundred).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lfr_actors import logs
from lfr_actors.api.alerts import MAX_ID, QUEUE_PARAM, QUEUES, alert_body
from lfr_actors.api.auth import require_in_scope, scope_of, unknown_deployment
from lfr_actors.api.keys import DEPLOYMENTS, SETTINGS, STORE
from lfr_actors.api.openapi import Param, media, operation, problem, query
from lfr_actors.api.problems import ProblemError
from lfr_actors.store.alerts import AlertStore

__all__ = ["EventHub", "encode_event", "stream_alerts"]

_STREAM_PAGE = 500
_CACHED_EVENTS = 5000
_EVENT_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}

_log = logs.get_logger(__name__)


@dataclass(frozen=True)
class _Encoded:
    """One stored event as every stream sends it: encoded once, for all clients."""

    event_id: int
    deployment_id: str
    data: bytes
    event: dict[str, Any]
    """The event as read from the store, for followers that write their own form."""


class EventHub:
    """Reads each new alert event once and hands it, encoded, to every open stream.

    One poller for the whole application: while any stream is open it reads the events
    after the last one it saw (one query per interval), encodes each as an SSE message
    once, keeps the newest :data:`_CACHED_EVENTS` in memory and wakes the streams. A
    stream whose position is inside that window takes its events from memory; one further
    behind (a client resuming after a long gap) reads them from the store itself, so no
    client can miss an event and a slow one holds no queue.
    """

    def __init__(
        self,
        store: AlertStore,
        poll_interval_s: float,
        encode: Callable[[dict[str, Any]], bytes],
    ) -> None:
        self.store = store
        self.poll_interval_s = poll_interval_s
        self.encode = encode
        self.streams: set[web.StreamResponse] = set()
        self.closed = False
        self.recent: deque[_Encoded] = deque(maxlen=_CACHED_EVENTS)
        self.latest = store.last_event_id()
        """The newest event read; the cache holds what came after the hub started."""
        self.followers = 0
        """Followers other than streams (the JSONL sink); the hub polls while there are any."""
        self._changed = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        """An event set at the next change (or close); take it before reading."""
        return self._changed

    async def run(self) -> None:
        """Poll for new events until cancelled; a failed poll is logged and retried."""
        while True:
            if self.streams or self.followers:
                try:
                    await self.poll()
                except Exception:
                    _log.exception("alert_poll_failed")
            await asyncio.sleep(self.poll_interval_s)

    async def poll(self) -> None:
        """Read, encode and cache every event after the newest one read; wake the streams."""
        fresh = False
        while True:
            events = await asyncio.to_thread(self.store.events_after, self.latest, _STREAM_PAGE)
            if not events:
                break
            for event in events:
                self.recent.append(
                    _Encoded(
                        event["event_id"],
                        event["alert"]["deployment_id"],
                        self.encode(event),
                        event,
                    )
                )
            self.latest = events[-1]["event_id"]
            fresh = True
            if len(events) < _STREAM_PAGE:
                break
        if fresh:
            self._wake()

    def cached_after(
        self, after: int, deployments: Collection[str] | None
    ) -> list[_Encoded] | None:
        """The cached events after ``after`` (of ``deployments`` only), or None if not all cached.

        Events up to :attr:`latest` are all cached when ``after`` is at or above the id
        just before the oldest cached one (or the cache is empty and ``after`` is current).
        """
        if after >= self.latest:
            return []
        if not self.recent or self.recent[0].event_id > after + 1:
            # Ids are consecutive unless a transaction rolled back; then the first cached id
            # may be above after + 1 with nothing missing, but reading the store is correct.
            return None
        return [
            e
            for e in itertools.dropwhile(lambda e: e.event_id <= after, self.recent)
            if deployments is None or e.deployment_id in deployments
        ]

    async def resync(self) -> None:
        """Start from the newest stored event (when the first stream opens after none were).

        While no stream is open the hub reads nothing; rather than read and encode every
        event since, it forgets its cache and starts at the newest event.
        """
        self.recent.clear()
        self.latest = await asyncio.to_thread(self.store.last_event_id)

    def close(self) -> None:
        """End every open stream (at application shutdown)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


HUB = web.AppKey("hub", EventHub)
"""The application's one event hub (streams and the JSON Lines sink follow it)."""


@operation(
    "Server-Sent Events: stored alert events after the client's, then live.",
    description="Each event is `id: <event_id>`, `event: raised|updated|adjudicated` and "
    "`data: <Alert JSON>`; idle streams get a comment line as a heartbeat. Without "
    "Last-Event-ID or after, the stream starts at the newest event.",
    parameters=[
        query("after", _EVENT_ID, "Resume after this event id."),
        query("deployment", {"type": "string"}, "Only this deployment's alerts."),
        QUEUE_PARAM,
        Param(
            "Last-Event-ID",
            _EVENT_ID,
            "Resume after this event id (as browsers send it).",
            location="header",
        ),
    ],
    responses={
        200: media("text/event-stream", "An endless event stream."),
        400: problem("An unknown parameter, a bad event id or an unknown queue."),
        404: problem("No such deployment."),
    },
)
async def stream_alerts(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: stored events after the client's last one, then live ones.

    Each event is ``id: <event_id>``, ``event: raised|updated|adjudicated`` and
    ``data: <alert>``; ``?deployment=`` keeps one deployment's alerts. ``?queue=`` is
    ``suspects`` (the default: officers never see a test subject's alert here) or
    ``test_subjects`` (only theirs). A token limited to deployments gets only their
    alerts' events, resumed or live; ``?deployment=`` of another deployment is 404, as for
    an unknown one.
    Resume with the ``Last-Event-ID`` header (as browsers do) or ``?after=<event_id>``;
    without either, the stream starts at the newest event. Idle streams get a comment
    line every ``heartbeat_s``.
    """
    after = _resume_point(request)
    test_subjects = _queue(request)
    deployment_id = request.query.get("deployment") or None
    store, hub = request.app[STORE], request.app[HUB]
    if deployment_id is not None:
        require_in_scope(request, deployment_id)  # another's: the same 404 as an unknown id
        known = await asyncio.to_thread(request.app[DEPLOYMENTS].find, deployment_id)
        if known is None:
            raise unknown_deployment(deployment_id)
    if after is None:
        after = await asyncio.to_thread(store.last_event_id)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    if not hub.streams:
        await hub.resync()
    hub.streams.add(response)
    try:
        await response.write(b"retry: 2000\n\n")
        wanted = scope_of(request) if deployment_id is None else frozenset({deployment_id})
        await _pump(request, response, after, wanted, test_subjects)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; nothing to answer
    finally:
        hub.streams.discard(response)
    return response


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    after: int,
    deployments: Collection[str] | None,
    test_subjects: bool = False,
) -> None:
    store, hub = request.app[STORE], request.app[HUB]
    heartbeat_s = request.app[SETTINGS].heartbeat_s
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + heartbeat_s
    while not hub.closed:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        waiter = hub.waiter()
        cached = hub.cached_after(after, deployments)
        if cached is None:
            # Behind the cache (a client resuming after a long gap): read from the store.
            events = await asyncio.to_thread(store.events_after, after, _STREAM_PAGE)
            if events:
                wanted = [
                    encode_event(request.app, e)
                    for e in events
                    if (deployments is None or e["alert"]["deployment_id"] in deployments)
                    and in_queue(e, test_subjects)
                ]
                if wanted:
                    await response.write(b"".join(wanted))
                after = events[-1]["event_id"]
                next_beat = loop.time() + heartbeat_s
                continue
        elif after < hub.latest:
            cached = [e for e in cached if in_queue(e.event, test_subjects)]
            if cached:
                await response.write(b"".join(e.data for e in cached))
                next_beat = loop.time() + heartbeat_s
            after = hub.latest
            continue
        wait_s = next_beat - loop.time()
        if wait_s <= 0:
            await response.write(b": heartbeat\n\n")
            next_beat = loop.time() + heartbeat_s
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), wait_s)


def encode_event(app: web.Application, event: dict[str, Any]) -> bytes:
    """One stored event as an SSE message: ``id``, ``event`` (its kind), ``data`` (the alert)."""
    data = json.dumps(
        alert_body(app, event["alert"]).model_dump(mode="json"), separators=(",", ":")
    )
    return f"id: {event['event_id']}\nevent: {event['kind']}\ndata: {data}\n\n".encode()


def in_queue(event: dict[str, Any], test_subjects: bool) -> bool:
    """Whether a stored event belongs to the test subjects' queue (True) or the suspects'."""
    return bool(event["alert"].get("test_subject", False)) is test_subjects


def _queue(request: web.Request) -> bool:
    """Whether the stream asked for the test subjects' queue (``?queue=``)."""
    raw = request.query.get("queue") or "suspects"
    if raw not in QUEUES:
        raise ProblemError(
            400,
            f"queue must be one of {', '.join(QUEUES)}; got {raw[:40]!r}.",
            invalid_params=[{"name": "queue", "reason": "one of " + ", ".join(QUEUES)}],
        )
    return QUEUES[raw]


def _resume_point(request: web.Request) -> int | None:
    unknown = sorted(set(request.query) - {"after", "deployment", "queue"})
    if unknown:
        raise ProblemError(
            400,
            "The stream takes only the 'after', 'deployment' and 'queue' parameters.",
            invalid_params=[{"name": n, "reason": "unknown parameter"} for n in unknown],
        )
    header = request.headers.get("Last-Event-ID")
    name, raw = ("Last-Event-ID", header) if header else ("after", request.query.get("after"))
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_ID:
        raise ProblemError(
            400,
            f"{name} must be an event id (a whole number 0..{MAX_ID}).",
            invalid_params=[{"name": name, "reason": "not an event id"}],
        )
    return value
