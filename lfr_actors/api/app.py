"""The alert API: an aiohttp application over the alert store.

The API publishes only what is in the store, so everything a client sees was persisted
first. Live push is Server-Sent Events: each alert event carries its store event id, and a
client that reconnects with ``Last-Event-ID`` (or ``?after=``) receives every event after
that one, then the live tail, with no gap and no repeat. Alerts are read through a
read-only connection (the alert actor writes them); what the API itself records
(adjudications, audit entries) goes through its own writing connection to the same file.

Shape, as aiohttp's authors write it: :func:`create_app` builds the application; typed
``web.AppKey`` keys hold its state; the stores and the event poller open and close in
``cleanup_ctx``; one middleware turns every error into an RFC 9457 problem body
(``application/problem+json``), never an HTML page or a traceback; a second one admits each
request by its bearer token's role (:mod:`lfr_actors.api.auth`); every route is listed in
:func:`setup_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from prometheus_client import CollectorRegistry

from lfr_actors import logs
from lfr_actors.alerts import iso_utc
from lfr_actors.api.adjudication import adjudicate, adjudication_body
from lfr_actors.api.audit import list_audit, verify_audit
from lfr_actors.api.auth import (
    AUTH_ENABLED,
    auth_middleware,
    check_role_matrix,
    check_routes_on_startup,
    principal,
)
from lfr_actors.api.common import (
    ADJUDICATIONS,
    AUDIT,
    PROBLEM_CONTENT_TYPE,
    STORE,
    STORE_HEALTH,
    TOKENS,
    ProblemError,
    StoreHealth,
    model_response,
    problem_middleware,
    problem_response,
)
from lfr_actors.api.console import console_page
from lfr_actors.api.deployments import (
    DEPLOYMENTS,
    change_threshold,
    close_deployment,
    create_deployment,
    get_deployment,
    get_report,
    get_report_page,
    list_deployments,
)
from lfr_actors.api.metrics import (
    READY_STATUS_TIMEOUT_S,
    metrics_registry,
    metrics_response,
    readiness_response,
)
from lfr_actors.api.openapi import (
    BINARY,
    PageLimits,
    Param,
    build_document,
    limit_param,
    media,
    no_content,
    ok,
    operation,
    problem,
    query,
)
from lfr_actors.api.retention import HOLDS, hold_body, release_hold, set_hold
from lfr_actors.api.schemas import (
    Alert,
    AlertDetail,
    AlertPage,
    DeploymentStatus,
    Principal,
    Status,
    StatusFreshness,
)
from lfr_actors.api.status import DEFAULT_INTERVAL_S, StatusCache, StatusSource
from lfr_actors.api.watchlist import (
    ENROL_SLOTS,
    ENROLLER,
    MAX_CONCURRENT_ENROLMENTS,
    approve_entry,
    create_entry,
    delete_entry,
    get_entry,
    get_entry_image,
    list_entries,
)
from lfr_actors.enrolment import Enroller
from lfr_actors.store.adjudications import ADJUDICATED, Adjudications
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Action, AuditLog
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.retention import Holds
from lfr_actors.store.schema import Database
from lfr_actors.store.tokens import TokenStore

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "STORE",
    "ProblemError",
    "api_runner",
    "create_app",
    "problem_middleware",
    "problem_response",
    "setup_routes",
]

REQUEST_HEADER_TIMEOUT_S = 75.0
"""How long a connection may take to send a request's line and headers, and how long an
idle keep-alive connection is kept, before the server closes it (aiohttp bounds both with
one timer). A slowloris client that trickles a request and never finishes it holds a
connection this long, not for ever (aiohttp's default is an hour). 75 s, like nginx's
``keepalive_timeout``: longer than a reverse proxy's idle upstream connections (nginx
keeps them 60 s), so the proxy never sends a request down a connection the API is
closing."""

MAX_ID = 2**63 - 1
"""The largest id SQLite stores: a cursor or event id beyond it names nothing."""
ALERT_STATUSES = ("open", ADJUDICATED)
"""An alert is open until an officer decides on it."""
MAX_PAGE = 500
DEFAULT_PAGE = 100
_STREAM_PAGE = 500
_CACHED_EVENTS = 5000

_log = logs.get_logger(__name__)


@dataclass(frozen=True)
class ApiSettings:
    """What the application was built with."""

    store_path: Path
    poll_interval_s: float = 0.2
    heartbeat_s: float = 15.0
    sweep_interval_s: float = 5.0
    status_interval_s: float = DEFAULT_INTERVAL_S


@dataclass(frozen=True)
class _Encoded:
    """One stored event as every stream sends it: encoded once, for all clients."""

    event_id: int
    deployment_id: str
    data: bytes


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
        self._changed = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        """An event set at the next change (or close); take it before reading."""
        return self._changed

    async def run(self) -> None:
        """Poll for new events until cancelled; a failed poll is logged and retried."""
        while True:
            if self.streams:
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
                    _Encoded(event["event_id"], event["alert"]["deployment_id"], self.encode(event))
                )
            self.latest = events[-1]["event_id"]
            fresh = True
            if len(events) < _STREAM_PAGE:
                break
        if fresh:
            self._wake()

    def cached_after(self, after: int, deployment_id: str | None) -> list[_Encoded] | None:
        """The cached events after ``after`` (of one deployment), or None if not all cached.

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
            if deployment_id is None or e.deployment_id == deployment_id
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


SETTINGS = web.AppKey("settings", ApiSettings)
HUB = web.AppKey("hub", EventHub)
STATUS: web.AppKey[StatusSource | None] = web.AppKey("status")
STATUS_CACHE = web.AppKey("status_cache", StatusCache)
METRICS = web.AppKey("metrics", CollectorRegistry)


def create_app(
    store_path: Path,
    *,
    status: StatusSource | None = None,
    poll_interval_s: float = 0.2,
    heartbeat_s: float = 15.0,
    client_max_size: int = 1 << 20,
    auth: bool = True,
    enroller: Enroller | None = None,
    sweep_interval_s: float = 5.0,
    status_interval_s: float = DEFAULT_INTERVAL_S,
) -> web.Application:
    """Build the alert API over the store at ``store_path``.

    ``status`` supplies ``GET /v1/status`` (503 without it); it is called by one
    background task every ``status_interval_s`` (:class:`lfr_actors.api.status.StatusCache`),
    never by a request: ``/v1/status``, ``/readyz`` and ``/metrics`` answer from that cache,
    so a flood of them costs the actors nothing. ``poll_interval_s`` is how
    often live streams look for new events; ``heartbeat_s`` how often an idle stream sends
    a comment line to keep proxies from closing it. Requests with a body larger than
    ``client_max_size`` bytes are answered 413.

    With ``auth`` (the default) every route but ``/healthz``, ``/readyz`` and
    ``/v1/openapi.json`` needs a bearer token whose role
    :data:`lfr_actors.api.auth.ROLE_MATRIX` allows; ``auth=False`` admits every request as
    an anonymous admin (tests and benchmarks only). ``enroller`` turns uploaded images into
    watchlist entries (503 on upload without it). Every ``sweep_interval_s`` the API closes
    deployments whose window has passed, destroying their watchlists. Raises
    :class:`lfr_actors.api.auth.RoleMatrixError` if a route has no entry in the matrix.
    """
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware], client_max_size=client_max_size
    )
    app[SETTINGS] = ApiSettings(
        Path(store_path), poll_interval_s, heartbeat_s, sweep_interval_s, status_interval_s
    )
    app[STATUS] = status
    app[STORE_HEALTH] = StoreHealth(Path(store_path).parent)
    app[ENROLLER] = enroller
    app[ENROL_SLOTS] = asyncio.Semaphore(MAX_CONCURRENT_ENROLMENTS)
    app[AUTH_ENABLED] = auth
    if not auth:
        _log.warning("api_auth_disabled", store=str(store_path))
    app.cleanup_ctx.append(_governance_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_status_ctx)
    app.cleanup_ctx.append(_sweeper_ctx)
    app.on_startup.append(check_routes_on_startup)
    app.on_shutdown.append(_close_streams)
    setup_routes(app)
    check_role_matrix(app.router.routes())
    return app


def api_runner(
    app: web.Application, *, header_timeout_s: float = REQUEST_HEADER_TIMEOUT_S
) -> web.AppRunner:
    """An :class:`aiohttp.web.AppRunner` for the API, with a request-header timeout.

    aiohttp's ``keepalive_timeout`` is armed when a connection opens and again after each
    response, and closes the connection if no complete request has arrived when it fires;
    bytes trickling in do not re-arm it. So it bounds how long a client may take to send a
    request's line and headers (a slowloris holds a connection at most
    ``header_timeout_s``), as well as how long an idle keep-alive connection is kept.
    Once a request's headers are in, its handler runs as long as it needs (a live stream).
    """
    return web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout_s)


def setup_routes(app: web.Application) -> None:
    """Every route of the API, in one place (the stream before ``{alert_id}``).

    Each route's name is its key in the role matrix (:mod:`lfr_actors.api.auth`).
    """
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/v1/status", deployment_status, name="status")
    app.router.add_get("/v1/alerts", list_alerts, name="alerts")
    app.router.add_get("/v1/alerts/stream", stream_alerts, name="alert_stream")
    app.router.add_get("/v1/alerts/{alert_id}", get_alert, name="alert")
    app.router.add_get("/v1/alerts/{alert_id}/crop.jpg", get_crop, name="alert_crop")
    app.router.add_post("/v1/alerts/{alert_id}/adjudication", adjudicate, name="alert_adjudication")
    app.router.add_post("/v1/alerts/{alert_id}/hold", set_hold, name="alert_hold")
    app.router.add_delete("/v1/alerts/{alert_id}/hold", release_hold, name="alert_release")
    app.router.add_get("/v1/audit", list_audit, name="audit")
    app.router.add_get("/v1/audit/verify", verify_audit, name="audit_verify")
    app.router.add_get("/v1/deployments", list_deployments, name="deployments")
    app.router.add_post("/v1/deployments", create_deployment, name="deployment_create")
    deployment = "/v1/deployments/{deployment_id}"
    app.router.add_get(deployment, get_deployment, name="deployment")
    app.router.add_post(f"{deployment}/close", close_deployment, name="deployment_close")
    app.router.add_post(f"{deployment}/threshold", change_threshold, name="deployment_threshold")
    app.router.add_get(f"{deployment}/report", get_report, name="deployment_report")
    app.router.add_get(f"{deployment}/report.html", get_report_page, name="deployment_report_page")
    app.router.add_get(f"{deployment}/entries", list_entries, name="entries")
    app.router.add_post(f"{deployment}/entries", create_entry, name="entry_create")
    entry = f"{deployment}/entries/{{entry_id}}"
    app.router.add_get(entry, get_entry, name="entry")
    app.router.add_delete(entry, delete_entry, name="entry_delete")
    app.router.add_get(f"{entry}/image", get_entry_image, name="entry_image")
    app.router.add_post(f"{entry}/approval", approve_entry, name="entry_approve")
    app.router.add_get("/console", console_page, name="console")
    app.router.add_get("/favicon.ico", favicon, name="favicon")
    app.router.add_get("/v1/whoami", whoami, name="whoami")
    app.router.add_get("/v1/openapi.json", openapi, name="openapi")


# -- resources -----------------------------------------------------------------------


async def _governance_ctx(app: web.Application) -> AsyncIterator[None]:
    # The API's own writing connection, for what it records: token use is read here,
    # adjudications and audit entries written. It opens first, so it creates or migrates
    # the file before the read-only alert store needs it current.
    db = await asyncio.to_thread(Database, app[SETTINGS].store_path)
    app[TOKENS] = TokenStore(db)
    app[AUDIT] = AuditLog(db)
    app[ADJUDICATIONS] = Adjudications(db)
    app[HOLDS] = Holds(db)
    app[DEPLOYMENTS] = Deployments(db)
    yield
    db.close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = await asyncio.to_thread(AlertStore.open_readonly, app[SETTINGS].store_path)
    app[STORE] = store
    yield
    store.close()


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = EventHub(app[STORE], app[SETTINGS].poll_interval_s, functools.partial(_sse, app))
    app[HUB] = hub
    poller = asyncio.create_task(hub.run(), name="alert-event-poller")
    yield
    hub.close()
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller


async def _status_ctx(app: web.Application) -> AsyncIterator[None]:
    cache = StatusCache(
        app[STATUS],
        app[STORE],
        interval_s=app[SETTINGS].status_interval_s,
        store_health=app[STORE_HEALTH],
    )
    app[STATUS_CACHE] = cache
    app[METRICS] = metrics_registry(cache)
    task = asyncio.create_task(cache.run(), name="status-gatherer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sweep(app), name="deployment-window-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sweep(app: web.Application) -> None:
    # Invariant 3: a watchlist is destroyed when its deployment's window ends, whether or
    # not a pipeline of that deployment is running to notice.
    while True:
        try:
            closed = await asyncio.to_thread(app[DEPLOYMENTS].close_ended)
        except Exception:
            _log.exception("deployment_sweep_failed")
        else:
            for deployment_id in closed:
                _log.info("deployment_closed", deployment=deployment_id, reason="window ended")
        await asyncio.sleep(app[SETTINGS].sweep_interval_s)


async def _close_streams(app: web.Application) -> None:
    # Long-lived streams would otherwise hold the server's graceful shutdown open.
    app[HUB].close()


# -- handlers ------------------------------------------------------------------------


_EVENT_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
_TIME = {
    "anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
    "description": "Unix seconds, or ISO 8601 with a UTC offset (e.g. 2025-01-31T12:00:00Z).",
}
_NO_ALERT = problem("No such alert.")


@operation("Liveness: the process answers.", responses={200: ok(Status, "Alive.")})
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return model_response(Status(status="ok"))


@operation(
    "Readiness, from the status gathered once a second: the store can be read and written, "
    "the status is fresh, every camera and embedder is reachable and at least one camera is "
    "running.",
    responses={
        200: ok(Status, "Ready."),
        503: problem("Not ready; not_ready names what is not."),
    },
)
async def readyz(request: web.Request) -> web.Response:
    """Readiness from the cached status (503 naming what is not ready).

    Ready: the store readable and writable, the status fresh, every camera and embedder
    reachable and at least one camera running.
    """
    return await readiness_response(request, request.app[STATUS_CACHE])


@operation(
    "Prometheus text exposition of the deployment and the store.",
    responses={200: media("text/plain", "Metrics.")},
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the cached status and the store's counts."""
    return await metrics_response(request, request.app[STATUS_CACHE], request.app[METRICS])


@operation(
    "No icon (204), so browsers asking for one get no error.",
    responses={204: no_content("No content.")},
)
async def favicon(request: web.Request) -> web.Response:
    """No icon: browsers ask for one with every page; an empty answer keeps logs quiet."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


@operation(
    "Who the token belongs to: its holder's name and role.",
    responses={200: ok(Principal, "The caller.")},
)
async def whoami(request: web.Request) -> web.Response:
    """The caller's name and role (the console shows them and what the role may do)."""
    caller = principal(request)
    return model_response(Principal(name=caller.name, role=caller.role))


@operation(
    "This document.",
    responses={200: media("application/json", "The OpenAPI 3.1 document.", {"type": "object"})},
)
async def openapi(request: web.Request) -> web.Response:
    """The API's OpenAPI 3.1 document: the router, the handlers' declarations, the roles."""
    return web.json_response(build_document(request.app.router.routes()))


@operation(
    "The deployment's status, as last gathered (status_age_s says when).",
    responses={
        200: ok(
            DeploymentStatus,
            "The deployment's status, with status_age_s, status_error, status_stale and "
            "store_error.",
        ),
        503: problem("No status source, or it could not be read."),
    },
)
async def deployment_status(request: web.Request) -> web.Response:
    """The deployment's cached status, with its age; 503 when none is attached or gathered.

    ``status_age_s`` is how old the figures are, ``status_error`` why the last gather
    failed (the figures are then the last good ones), and ``store_error`` why the API
    cannot write the store (null while it can).
    """
    if request.app[STATUS] is None:
        raise ProblemError(503, "No status source is attached to this API.")
    cached = await request.app[STATUS_CACHE].first(READY_STATUS_TIMEOUT_S)
    if cached.status is None:
        reason = cached.error or "not gathered yet"
        raise ProblemError(
            503,
            f"The deployment status could not be read ({reason}); retry in a few seconds.",
            status_error=reason,
        )
    freshness = StatusFreshness(
        status_age_s=None if cached.age_s is None else round(cached.age_s, 1),
        status_error=cached.error,
        status_stale=cached.stale,
        store_error=request.app[STORE_HEALTH].failing,
    )
    # The figures are encoded once per gather; only these few fields per request.
    encoded = request.app[STATUS_CACHE].encoded() or b"{}"
    tail = json.dumps(freshness.model_dump(mode="json"), separators=(",", ":")).encode()
    body = encoded[:-1] + (b"," if encoded != b"{}" else b"") + tail[1:]
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


@operation(
    "Alerts, newest first, filtered and paged.",
    parameters=[
        query("deployment", {"type": "string"}, "Only this deployment's alerts."),
        query(
            "status",
            {"type": "string", "enum": list(ALERT_STATUSES)},
            "Only open (not yet decided) or adjudicated alerts.",
        ),
        query("camera", {"type": "string"}, "Only alerts seen on this camera."),
        query("entry", {"type": "string"}, "Only alerts of this watchlist entry."),
        query("since", _TIME, "Only alerts last seen at or after this time."),
        query("until", _TIME, "Only alerts first seen at or before this time."),
        limit_param(PageLimits(DEFAULT_PAGE, MAX_PAGE)),
        query(
            "cursor",
            {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "The next_cursor of the previous page (opaque).",
        ),
    ],
    responses={
        200: ok(AlertPage, "A page of alerts."),
        400: problem("Invalid query parameters (all listed in invalid_params)."),
    },
)
async def list_alerts(request: web.Request) -> web.Response:
    """Alerts, newest first, filtered and paged with an opaque ``cursor``."""
    query = _ListQuery.parse(request.query)
    page = await asyncio.to_thread(
        request.app[STORE].list_alerts,
        deployment_id=query.deployment,
        status=query.status,
        camera_id=query.camera,
        entry_id=query.entry,
        since=query.since,
        until=query.until,
        limit=query.limit,
        before_event=query.cursor,
    )
    cursor = None if page.next_before_event is None else str(page.next_before_event)
    return model_response(
        AlertPage(
            alerts=[alert_body(request.app, a) for a in page.alerts],
            next_cursor=cursor,
            last_event_id=page.last_event_id,
        )
    )


@operation(
    "One alert with its adjudications (the crop is at crop_url).",
    responses={200: ok(AlertDetail, "The alert."), 404: _NO_ALERT},
)
async def get_alert(request: web.Request) -> web.Response:
    """One alert (without its crop; see ``crop_url``) with its adjudications, oldest first.

    ``hold`` is the evidential hold in force (or null); ``crop_purged_at`` when retention
    purged the crop (or null).
    """
    alert_id = request.match_info["alert_id"]
    alert = await asyncio.to_thread(request.app[STORE].get, alert_id)
    if alert is None:
        raise ProblemError(404, f"No alert with id {alert_id[:80]!r}.")
    history = await asyncio.to_thread(request.app[ADJUDICATIONS].history, alert_id)
    holds = request.app[HOLDS]
    hold = await asyncio.to_thread(holds.active, alert_id)
    purged_at = await asyncio.to_thread(holds.crop_purged_at, alert_id)
    detail = AlertDetail.model_validate(
        {
            **_alert_fields(request.app, alert),
            "adjudications": [adjudication_body(record) for record in history],
            "hold": hold_body(hold),
            "crop_purged_at": purged_at,
        }
    )
    return model_response(detail)


@operation(
    "The alert's best face crop; never cached; each view is audited.",
    responses={
        200: media("image/jpeg", "The crop.", BINARY),
        404: _NO_ALERT,
        410: problem("Retention purged the crop; the alert remains."),
    },
)
async def get_crop(request: web.Request) -> web.Response:
    """The alert's best face crop as JPEG; never cached; each view is audited first.

    410 Gone once retention has purged the crop (the alert itself remains).
    """
    alert_id = request.match_info["alert_id"]
    crop = await asyncio.to_thread(request.app[STORE].crop, alert_id)
    if crop is None:
        raise ProblemError(404, f"No alert with id {alert_id[:80]!r}.")
    purged_at = await asyncio.to_thread(request.app[HOLDS].crop_purged_at, alert_id)
    if purged_at is not None or not crop:
        when = "" if purged_at is None else f" on {iso_utc(purged_at)}"
        raise ProblemError(
            410,
            f"The face crop of alert {alert_id[:80]!r} was purged{when} at the end of its "
            "retention period; the alert and its adjudications remain.",
            crop_purged_at=None if purged_at is None else iso_utc(purged_at),
        )
    await asyncio.to_thread(
        request.app[AUDIT].append,
        principal(request).actor,
        Action.ALERT_VIEW,
        alert_id,
        {"part": "crop"},
    )
    return web.Response(body=crop, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


@operation(
    "Server-Sent Events: stored alert events after the client's, then live.",
    description="Each event is `id: <event_id>`, `event: raised|updated|adjudicated` and "
    "`data: <Alert JSON>`; idle streams get a comment line as a heartbeat. Without "
    "Last-Event-ID or after, the stream starts at the newest event.",
    parameters=[
        query("after", _EVENT_ID, "Resume after this event id."),
        query("deployment", {"type": "string"}, "Only this deployment's alerts."),
        Param(
            "Last-Event-ID",
            _EVENT_ID,
            "Resume after this event id (as browsers send it).",
            location="header",
        ),
    ],
    responses={
        200: media("text/event-stream", "An endless event stream."),
        400: problem("An unknown parameter or a bad event id."),
        404: problem("No such deployment."),
    },
)
async def stream_alerts(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: stored events after the client's last one, then live ones.

    Each event is ``id: <event_id>``, ``event: raised|updated|adjudicated`` and
    ``data: <alert>``; ``?deployment=`` keeps one deployment's alerts.
    Resume with the ``Last-Event-ID`` header (as browsers do) or ``?after=<event_id>``;
    without either, the stream starts at the newest event. Idle streams get a comment
    line every ``heartbeat_s``.
    """
    after = _resume_point(request)
    deployment_id = request.query.get("deployment") or None
    store, hub = request.app[STORE], request.app[HUB]
    if deployment_id is not None:
        known = await asyncio.to_thread(request.app[DEPLOYMENTS].find, deployment_id)
        if known is None:
            raise ProblemError(404, f"No deployment with id {deployment_id[:80]!r}.")
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
        await _pump(request, response, after, deployment_id)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; nothing to answer
    finally:
        hub.streams.discard(response)
    return response


async def _pump(
    request: web.Request, response: web.StreamResponse, after: int, deployment_id: str | None
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
        cached = hub.cached_after(after, deployment_id)
        if cached is None:
            # Behind the cache (a client resuming after a long gap): read from the store.
            events = await asyncio.to_thread(store.events_after, after, _STREAM_PAGE)
            if events:
                wanted = [
                    _sse(request.app, e)
                    for e in events
                    if deployment_id is None or e["alert"]["deployment_id"] == deployment_id
                ]
                if wanted:
                    await response.write(b"".join(wanted))
                after = events[-1]["event_id"]
                next_beat = loop.time() + heartbeat_s
                continue
        elif after < hub.latest:
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


def _sse(app: web.Application, event: dict[str, Any]) -> bytes:
    data = json.dumps(
        alert_body(app, event["alert"]).model_dump(mode="json"), separators=(",", ":")
    )
    return f"id: {event['event_id']}\nevent: {event['kind']}\ndata: {data}\n\n".encode()


# -- representation and query parsing ------------------------------------------------


def _alert_fields(app: web.Application, alert: dict[str, Any]) -> dict[str, Any]:
    # The watchlist side of the comparison: the entry and its photo (the photo answers 410
    # once the deployment is closed and its watchlist destroyed).
    ids = {"deployment_id": alert["deployment_id"], "entry_id": alert["entry_id"]}
    return {
        **alert,
        "crop_url": str(app.router["alert_crop"].url_for(alert_id=alert["id"])),
        "entry_url": str(app.router["entry"].url_for(**ids)),
        "entry_image_url": str(app.router["entry_image"].url_for(**ids)),
    }


def alert_body(app: web.Application, alert: dict[str, Any]) -> Alert:
    """A stored alert as the API shows it: with ``crop_url`` and its entry's addresses."""
    return Alert.model_validate(_alert_fields(app, alert))


def _resume_point(request: web.Request) -> int | None:
    unknown = sorted(set(request.query) - {"after", "deployment"})
    if unknown:
        raise ProblemError(
            400,
            "The stream takes only the 'after' and 'deployment' parameters.",
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


@dataclass
class _ListQuery:
    deployment: str | None = None
    status: str | None = None
    camera: str | None = None
    entry: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_PAGE
    cursor: int | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, query: MultiMapping[str]) -> _ListQuery:
        """Read and check every parameter, reporting all problems at once."""
        parsed = cls()
        known = {"deployment", "status", "camera", "entry", "since", "until", "limit", "cursor"}
        for name in sorted(set(query)):
            if name not in known:
                parsed._error(name, "unknown parameter; known: " + ", ".join(sorted(known)))
            elif len(query.getall(name)) > 1:
                parsed._error(name, "given more than once")
        parsed.deployment = query.get("deployment") or None
        parsed.status = query.get("status") or None
        if parsed.status is not None and parsed.status not in ALERT_STATUSES:
            parsed._error("status", "one of " + ", ".join(ALERT_STATUSES))
        parsed.camera = query.get("camera") or None
        parsed.entry = query.get("entry") or None
        parsed.since = parsed._time("since", query.get("since"))
        parsed.until = parsed._time("until", query.get("until"))
        if "limit" in query:
            parsed.limit = parsed._int("limit", query["limit"], 1, MAX_PAGE) or DEFAULT_PAGE
        if "cursor" in query:
            parsed.cursor = parsed._int("cursor", query["cursor"], 1, MAX_ID)
        if parsed.since is not None and parsed.until is not None and parsed.since > parsed.until:
            parsed._error("until", "must not be before 'since'")
        if parsed.errors:
            raise ProblemError(
                400, "The query has invalid parameters.", invalid_params=parsed.errors
            )
        return parsed

    def _error(self, name: str, reason: str) -> None:
        self.errors.append({"name": name, "reason": reason})

    def _int(self, name: str, raw: str, low: int, high: int | None) -> int | None:
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f"≥ {low}"
            self._error(name, f"must be a whole number {bounds}")
            return None
        return value

    def _time(self, name: str, raw: str | None) -> float | None:
        if raw is None or raw == "":
            return None
        try:
            seconds = float(raw)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return seconds
            self._error(name, "must be a finite Unix time or an ISO 8601 time")
            return None
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            self._error(name, "must be Unix seconds or ISO 8601 (e.g. 2025-01-31T12:00:00Z)")
            return None
        if moment.tzinfo is None:
            self._error(name, "ISO 8601 time needs a UTC offset (Z or +hh:mm)")
            return None
        return moment.timestamp()
