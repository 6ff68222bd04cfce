"""The alert API: an aiohttp application over the alert store.

The API publishes only what is in the store, so everything a client sees was persisted
first. Live push is Server-Sent Events: each alert event carries its store event id, and a
client that reconnects with ``Last-Event-ID`` (or ``?after=``) receives every event after
that one, then the live tail, with no gap and no repeat. Alerts are read through a
read-only connection (the alert actor writes them); what the API itself records
(adjudications, audit entries) goes through its own writing connection to the same file.

Shape, as aiohttp's authors write it: :func:`create_app` builds the application; typed
``web.AppKey`` keys (:mod:`lfr_actors.api.keys`) hold its state; the stores and the event
poller open and close in ``cleanup_ctx``; one middleware turns every error into an RFC 9457
problem body (:mod:`lfr_actors.api.problems`), never an HTML page or a traceback; a second
one admits each request by its bearer token's role (:mod:`lfr_actors.api.auth`); every
route is listed in :func:`setup_routes`. The handlers live with their resource: alerts,
stream, deployments, watchlist, adjudication, retention, audit, metrics (health, status and
``/metrics``), console, and openapi (the document, generated from their declarations).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from lfr_actors import logs
from lfr_actors.api.adjudication import adjudicate
from lfr_actors.api.alerts import get_alert, get_crop, list_alerts
from lfr_actors.api.audit import list_audit, verify_audit
from lfr_actors.api.auth import auth_middleware, check_role_matrix, check_routes_on_startup
from lfr_actors.api.calibration import delete_calibration, put_calibration
from lfr_actors.api.console import console_page, favicon, whoami
from lfr_actors.api.deployments import (
    change_threshold,
    close_deployment,
    create_deployment,
    get_deployment,
    get_report,
    get_report_page,
    list_deployments,
)
from lfr_actors.api.keys import (
    ADJUDICATIONS,
    AUDIT,
    AUTH_ENABLED,
    DEPLOYMENTS,
    ENROL_SLOTS,
    ENROLLER,
    HOLDS,
    METRICS,
    MONITORING,
    SETTINGS,
    STATUS,
    STATUS_CACHE,
    STORE,
    STORE_HEALTH,
    TOKENS,
    ApiSettings,
)
from lfr_actors.api.metrics import deployment_status, healthz, metrics, metrics_registry, readyz
from lfr_actors.api.monitoring import get_categories, set_categories
from lfr_actors.api.openapi import declared_query_middleware, openapi
from lfr_actors.api.policy import get_policy, set_policy
from lfr_actors.api.problems import problem_middleware
from lfr_actors.api.retention import release_hold, set_hold
from lfr_actors.api.status import DEFAULT_INTERVAL_S, StatusCache, StatusSource, StoreHealth
from lfr_actors.api.stream import HUB, EventHub, encode_event, stream_alerts
from lfr_actors.api.test_subjects import list_test_passes, record_test_pass
from lfr_actors.api.watchlist import (
    MAX_CONCURRENT_ENROLMENTS,
    approve_entry,
    create_entry,
    delete_entry,
    get_entry,
    get_entry_image,
    list_entries,
)
from lfr_actors.enrolment import Enroller
from lfr_actors.store.adjudications import Adjudications
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.monitoring import MonitoringCategories
from lfr_actors.store.retention import Holds
from lfr_actors.store.tokens import TokenStore

__all__ = ["api_runner", "create_app", "setup_routes"]

REQUEST_HEADER_TIMEOUT_S = 75.0
"""How long a connection may take to send a request's line and headers, and how long an
idle keep-alive connection is kept, before the server closes it (aiohttp bounds both with
one timer). A slowloris client that trickles a request and never finishes it holds a
connection this long, not for ever (aiohttp's default is an hour). 75 s, like nginx's
``keepalive_timeout``: longer than a reverse proxy's idle upstream connections (nginx
keeps them 60 s), so the proxy never sends a request down a connection the API is
closing."""

_log = logs.get_logger(__name__)


def create_app(
    store_path: Path,
    *,
    status: StatusSource | None = None,
    poll_interval_s: float = 0.2,
    heartbeat_s: float = 15.0,
    client_max_size: int = 1 << 20,
    auth: bool = True,
    enroller: Enroller | None = None,
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
    watchlist entries (503 on upload without it). Closing deployments whose window has
    passed is the controller's job (:mod:`lfr_actors.control.follow`), not the API's. Raises
    :class:`lfr_actors.api.auth.RoleMatrixError` if a route has no entry in the matrix.
    """
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware, declared_query_middleware],
        client_max_size=client_max_size,
    )
    app[SETTINGS] = ApiSettings(Path(store_path), poll_interval_s, heartbeat_s, status_interval_s)
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
    app.router.add_put(f"{deployment}/calibration", put_calibration, name="deployment_calibration")
    app.router.add_delete(
        f"{deployment}/calibration", delete_calibration, name="deployment_calibration_remove"
    )
    app.router.add_get(f"{deployment}/report", get_report, name="deployment_report")
    app.router.add_get(f"{deployment}/report.html", get_report_page, name="deployment_report_page")
    app.router.add_get(f"{deployment}/entries", list_entries, name="entries")
    app.router.add_post(f"{deployment}/entries", create_entry, name="entry_create")
    app.router.add_get(f"{deployment}/test-passes", list_test_passes, name="test_passes")
    app.router.add_post(f"{deployment}/test-passes", record_test_pass, name="test_pass_record")
    entry = f"{deployment}/entries/{{entry_id}}"
    app.router.add_get(entry, get_entry, name="entry")
    app.router.add_delete(entry, delete_entry, name="entry_delete")
    app.router.add_get(f"{entry}/image", get_entry_image, name="entry_image")
    app.router.add_post(f"{entry}/approval", approve_entry, name="entry_approve")
    categories = "/v1/policy/monitoring-categories"
    app.router.add_get(categories, get_categories, name="monitoring_categories")
    app.router.add_put(categories, set_categories, name="monitoring_categories_set")
    app.router.add_get("/console", console_page, name="console")
    app.router.add_get("/favicon.ico", favicon, name="favicon")
    app.router.add_get("/v1/whoami", whoami, name="whoami")
    app.router.add_get("/v1/openapi.json", openapi, name="openapi")
    app.router.add_get("/v1/policy", get_policy, name="policy")
    app.router.add_put("/v1/policy", set_policy, name="policy_set")


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
    app[MONITORING] = MonitoringCategories(db)
    yield
    db.close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = await asyncio.to_thread(AlertStore.open_readonly, app[SETTINGS].store_path)
    app[STORE] = store
    yield
    store.close()


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = EventHub(app[STORE], app[SETTINGS].poll_interval_s, functools.partial(encode_event, app))
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


async def _close_streams(app: web.Application) -> None:
    # Long-lived streams would otherwise hold the server's graceful shutdown open.
    app[HUB].close()
