"""Prometheus metrics and Kubernetes readiness for the alert API.

:func:`status_families` turns the deployment's status (the dict that
:meth:`lfr_actors.control.Deployment.status` returns) into ``prometheus_client`` metric
families, and :func:`render_metrics` writes them in the Prometheus text exposition format
0.0.4 (``prometheus_client``'s own writer). It reads only the counters and gauges it
names, field by field, so nothing else in the status dict can leak into a scrape: labels
hold topology ids only (camera, embedder, actor, role, stage, quantile) and fixed
vocabularies (a camera's ``state``, one of :data:`CAMERA_STATES`), never an entry id, an
alert id, a name or anything about a face, because metric labels must hold no biometric
or watchlist data. Values that are missing, ``None`` or not numbers are left out rather
than guessed.

:func:`metrics_response` (``GET /metrics``) and :func:`readiness_response` (``GET /readyz``)
answer the routes that :mod:`lfr_actors.api.app` registers, from the status that
:class:`lfr_actors.api.status.StatusCache` gathers in the background: neither calls an
actor or reads the store. Each application scrapes its own
:class:`prometheus_client.CollectorRegistry` (:func:`metrics_registry`), whose one
collector reads the cache when it is scraped: no process-wide metric state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lfr_actors.api.auth import in_scope, principal, require_unscoped
from lfr_actors.api.bodies import model_response
from lfr_actors.api.keys import METRICS, STATUS, STATUS_CACHE, STORE_HEALTH
from lfr_actors.api.openapi import media, ok, operation, problem
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import DeploymentStatus, Status, StatusFreshness
from lfr_actors.api.status import StatusCache, not_ready

__all__ = [
    "CAMERA_STATES",
    "CONTENT_TYPE",
    "READY_STATUS_TIMEOUT_S",
    "deployment_status",
    "healthz",
    "metrics",
    "metrics_registry",
    "metrics_response",
    "readiness_response",
    "readyz",
    "render_metrics",
    "status_families",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, version 0.0.4."""

READY_STATUS_TIMEOUT_S = 2.0
"""How long a health request waits for the first gather of a just-started API (later ones
never wait: they read the cache)."""

Labels = tuple[tuple[str, str], ...]

# (status key, metric name, help) for each per-actor counter and gauge.
_CAMERA_COUNTERS = (
    ("frames_processed", "lfr_camera_frames_processed_total", "Frames the pipeline answered."),
    ("frames_dropped", "lfr_camera_frames_dropped_total", "Frames dropped before processing."),
    ("frames_failed", "lfr_camera_frames_failed_total", "Frames whose processing failed."),
    ("corrupt_frames", "lfr_camera_corrupt_frames_total", "Frames that could not be decoded."),
    ("reconnects", "lfr_camera_reconnects_total", "Reconnections to the camera's source."),
    (
        "frames_retried",
        "lfr_camera_frames_retried_total",
        "Frames sent a second time because their embedder died or could not be reached.",
    ),
    (
        "stalls",
        "lfr_camera_stalls_total",
        "Times the camera's source delivered no frame for its stall timeout.",
    ),
    ("faces", "lfr_camera_faces_total", "Faces detected in the camera's frames."),
    ("tracks", "lfr_camera_tracks_total", "Face tracks (people) the camera's frames began."),
    ("candidates", "lfr_camera_candidates_total", "Watchlist candidates from the frames."),
)
_EMBEDDER_COUNTERS = (
    ("frames", "lfr_embedder_frames_total", "Frames the embedder processed."),
    ("batches", "lfr_embedder_batches_total", "Batches the embedder ran."),
    ("faces", "lfr_embedder_faces_total", "Faces the embedder embedded."),
    (
        "faces_compared",
        "lfr_embedder_faces_compared_total",
        "Faces compared against the watchlist.",
    ),
    (
        "non_matches_discarded",
        "lfr_embedder_non_matches_discarded_total",
        "Face tracks ended without matching any watchlist entry; what they held was discarded.",
    ),
    ("candidates", "lfr_embedder_candidates_total", "Watchlist candidates found."),
    ("tracks_started", "lfr_embedder_tracks_started_total", "Face tracks the embedder began."),
    ("tracks_ended", "lfr_embedder_tracks_ended_total", "Face tracks the embedder ended."),
    (
        "sightings_resent",
        "lfr_embedder_sightings_resent_total",
        "Sightings sent again to the alert actor after it could not store them.",
    ),
    (
        "sightings_lost",
        "lfr_embedder_sightings_lost_total",
        "Sightings dropped because the buffer of unstored ones was full.",
    ),
)
_INDEX_COUNTERS = (
    ("searches", "lfr_index_searches_total", "Searches the index actor answered."),
    ("queries", "lfr_index_queries_total", "Query vectors the index actor searched."),
)
_ALERT_COUNTERS = (
    ("sightings_received", "lfr_alert_sightings_received_total", "Sightings received."),
    ("alerts_raised", "lfr_alerts_raised_total", "Alerts raised."),
    ("alerts_updated", "lfr_alerts_updated_total", "Alert updates."),
    ("alerts_closed", "lfr_alerts_closed_total", "Alerts closed."),
    ("events_persisted", "lfr_alert_events_persisted_total", "Alert events persisted."),
    (
        "rejected_track_sightings",
        "lfr_alert_rejected_track_sightings_total",
        "Sightings dropped because an officer found their face track not a match.",
    ),
    (
        "track_conflicts",
        "lfr_alert_track_conflicts_total",
        "Sightings dropped because their face track belongs to another entry's alert.",
    ),
)
CAMERA_STATES = (
    "created",
    "waiting_for_window",
    "connecting",
    "running",
    "reconnecting",
    "stalled",
    "ended",
    "stopped",
    "window_ended",
    "failed",
)
"""Every state a camera actor reports (:class:`lfr_actors.actors.camera.CameraActor`);
``lfr_camera_state`` has one sample per camera and state, 1 for the camera's own."""

_QUANTILES = (("0.5", "latency_ms_p50"), ("0.95", "latency_ms_p95"), ("0.99", "latency_ms_p99"))


class _Families:
    """Metric families in the order first named; a sample whose value is no number is left out.

    A counter is declared by its exposed name (``..._total``); ``prometheus_client``
    keeps the family's name without the suffix and writes it back on each sample.
    """

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def add(self, name: str, kind: str, help_text: str, labels: Labels, value: Any) -> None:
        number = _number(value)
        if number is None:
            return
        family = self._families.get(name)
        if family is None:
            names = [label for label, _ in labels]
            made: Metric
            if kind == "counter":
                made = CounterMetricFamily(name, help_text, labels=names)
            else:
                made = GaugeMetricFamily(name, help_text, labels=names)
            family = self._families[name] = made
        family.add_metric([v for _, v in labels], number)  # type: ignore[attr-defined]

    def families(self) -> list[Metric]:
        return list(self._families.values())


class _Fixed(Collector):
    """A collector of families made already (what one scrape or one render writes)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(families: Iterable[Metric]) -> str:
    """``families`` in the Prometheus text exposition format 0.0.4 ("" when none)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry).decode("utf-8")


def render_metrics(status: Mapping[str, Any], *, status_up: bool | None = None) -> str:
    """The status dict as Prometheus text exposition format 0.0.4 (see :func:`status_families`)."""
    return exposition(status_families(status, status_up=status_up))


def status_families(status: Mapping[str, Any], *, status_up: bool | None = None) -> list[Metric]:
    """The status dict as metric families.

    Reads ``deployment`` (threshold, watchlist size, state), ``cameras``, ``embedders``,
    ``index``, ``alerts`` (``alerts.store`` holds the store's row counts) and ``webhooks``
    (each webhook's delivery, labelled by its name and ``scheme://host:port``); every other
    key is ignored. ``status_up`` (when given) adds ``lfr_status_up``: whether the
    status was gathered and is fresh.
    """
    reg = _Families()
    if status_up is not None:
        reg.add(
            "lfr_status_up",
            "gauge",
            "Whether the deployment's status was gathered and is fresh (1), or the last "
            "gather failed or it is stale (0).",
            (),
            1 if status_up else 0,
        )
    deployment = status.get("deployment")
    if isinstance(deployment, Mapping):
        reg.add(
            "lfr_deployment_threshold",
            "gauge",
            "The distance threshold in force (changes are audited).",
            (),
            deployment.get("threshold"),
        )
        reg.add(
            "lfr_watchlist_entries",
            "gauge",
            "Watchlist entries in the index (approved, not deleted).",
            (),
            deployment.get("watchlist_entries"),
        )
        if "damaged_entries" in deployment:
            reg.add(
                "lfr_watchlist_damaged_entries",
                "gauge",
                "Watchlist entries left out of the index: their templates fail their checksum "
                "or are not finite (lfr store check names them).",
                (),
                deployment.get("damaged_entries"),
            )
        if "stale_entries" in deployment:
            reg.add(
                "lfr_watchlist_stale_entries",
                "gauge",
                "Active watchlist entries left out of the index because they were approved "
                "longer ago than the deployment's watchlist_max_age_h (enrol again to refresh).",
                (),
                deployment.get("stale_entries"),
            )
        if "state" in deployment:
            reg.add(
                "lfr_deployment_closed",
                "gauge",
                "Whether the deployment was closed (1): cameras stopped, watchlist destroyed.",
                (),
                1 if deployment.get("state") == "closed" else 0,
            )
    cameras = _sections(status.get("cameras"))
    embedders = _sections(status.get("embedders"))
    index = _sections(status.get("index"))
    alerts = status.get("alerts")
    alerts = alerts if isinstance(alerts, Mapping) else {}
    alert_actors = _sections({k: v for k, v in alerts.items() if k != "store"})

    for cam_id, cam in cameras:
        labels: Labels = (("camera", cam_id),)
        for key, name, help_text in _CAMERA_COUNTERS:
            reg.add(name, "counter", help_text, labels, cam.get(key))
        reg.add(
            "lfr_camera_fps", "gauge", "Measured sampling rate (frames/s).", labels, cam.get("fps")
        )
        reg.add(
            "lfr_camera_up",
            "gauge",
            "Whether the camera is running (1) or not (0).",
            labels,
            1 if cam.get("state") == "running" and "unavailable" not in cam else 0,
        )
        current = None if "unavailable" in cam else cam.get("state")
        for state in CAMERA_STATES:
            reg.add(
                "lfr_camera_state",
                "gauge",
                "The camera's state: 1 for the state it is in, 0 for the others.",
                (*labels, ("state", state)),
                1 if current == state else 0,
            )
        reg.add(
            "lfr_camera_seconds_since_frame",
            "gauge",
            "Seconds since the camera's source last delivered a frame.",
            labels,
            cam.get("seconds_since_frame"),
        )
        for quantile, key in _QUANTILES:
            reg.add(
                "lfr_camera_latency_ms",
                "gauge",
                "Capture-to-result latency over recent frames (ms), by quantile.",
                (*labels, ("quantile", quantile)),
                cam.get(key),
            )
        reg.add(
            "lfr_camera_queue",
            "gauge",
            "Frames waiting in the camera's queue.",
            labels,
            cam.get("queue"),
        )

    for emb_id, emb in embedders:
        labels = (("embedder", emb_id),)
        for key, name, help_text in _EMBEDDER_COUNTERS:
            reg.add(name, "counter", help_text, labels, emb.get(key))
        reg.add(
            "lfr_embedder_sightings_unstored",
            "gauge",
            "Possible matches held in the embedder's memory until the alert store takes them.",
            labels,
            emb.get("sightings_unstored"),
        )
        reg.add(
            "lfr_embedder_tracks_live",
            "gauge",
            "Face tracks the embedder follows now (people in view).",
            labels,
            emb.get("tracks_live"),
        )
        reg.add(
            "lfr_embedder_batch_size_mean",
            "gauge",
            "Mean batch size over recent batches.",
            labels,
            emb.get("batch_size_mean"),
        )
        stages = emb.get("stage_ms_median")
        if isinstance(stages, Mapping):
            for stage, value in stages.items():
                reg.add(
                    "lfr_embedder_stage_ms",
                    "gauge",
                    "Median time per batch in each stage over recent batches (ms).",
                    (*labels, ("stage", str(stage))),
                    value,
                )

    for actor_id, figures in index:
        labels = (("actor", actor_id), ("role", str(figures.get("role", "index"))))
        for key, name, help_text in _INDEX_COUNTERS:
            reg.add(name, "counter", help_text, labels, figures.get(key))

    for actor_id, figures in alert_actors:
        labels = (("actor", actor_id),)
        for key, name, help_text in _ALERT_COUNTERS:
            reg.add(name, "counter", help_text, labels, figures.get(key))
        reg.add(
            "lfr_alerts_open",
            "gauge",
            "Alerts open in the alert actor's fusion windows.",
            labels,
            figures.get("open_alerts"),
        )

    store = alerts.get("store")
    if isinstance(store, Mapping):
        reg.add("lfr_alerts_stored", "gauge", "Alerts in the store.", (), store.get("alerts"))
        reg.add(
            "lfr_alert_sightings_stored",
            "gauge",
            "Alert sightings in the store.",
            (),
            store.get("sightings"),
        )
        reg.add(
            "lfr_alert_events_stored",
            "gauge",
            "Alert events in the store.",
            (),
            store.get("events"),
        )

    webhooks = status.get("webhooks")
    for hook in webhooks if isinstance(webhooks, list) else []:
        if not isinstance(hook, Mapping):
            continue
        labels = (("webhook", str(hook.get("name"))), ("target", str(hook.get("target"))))
        reg.add(
            "lfr_webhook_delivered_total",
            "counter",
            "Alert events the webhook's receiver accepted (2xx) since the start.",
            labels,
            hook.get("delivered"),
        )
        reg.add(
            "lfr_webhook_failed_total",
            "counter",
            "Alert events skipped because the receiver refused them (a 4xx, after retries).",
            labels,
            hook.get("failed"),
        )
        reg.add(
            "lfr_webhook_attempts_failed_total",
            "counter",
            "Requests to the webhook that failed (timeouts, connection errors, non-2xx).",
            labels,
            hook.get("attempts_failed"),
        )
        reg.add(
            "lfr_webhook_pending",
            "gauge",
            "Alert events stored but not yet sent to the webhook (events behind).",
            labels,
            hook.get("pending"),
        )
        reg.add(
            "lfr_webhook_up",
            "gauge",
            "Whether the webhook's last request succeeded or none has failed yet (1) or it "
            "is failing and being retried (0).",
            labels,
            1 if hook.get("up") else 0,
        )
        reg.add(
            "lfr_webhook_last_success_timestamp_seconds",
            "gauge",
            "When the webhook last accepted an event (Unix time).",
            labels,
            hook.get("last_success_unix"),
        )

    outputs = status.get("alert_outputs")
    for output in outputs if isinstance(outputs, list) else []:
        if not isinstance(output, Mapping):
            continue
        labels = (("output", str(output.get("name"))),)
        reg.add(
            "lfr_alert_output_delivered_total",
            "counter",
            "Alert events written to the output (stdout, the --alerts-jsonl file) since the start.",
            labels,
            output.get("delivered"),
        )
        reg.add(
            "lfr_alert_output_attempts_failed_total",
            "counter",
            "Writes to the output that failed (a full disk, say) and are being retried.",
            labels,
            output.get("attempts_failed"),
        )
        reg.add(
            "lfr_alert_output_up",
            "gauge",
            "Whether the output's last write succeeded (1) or it is failing and retried (0).",
            labels,
            1 if output.get("up") else 0,
        )

    every_actor = [
        ("camera", cameras),
        ("embedder", embedders),
        ("index", index),
        ("alerts", alert_actors),
    ]
    for default_role, actors in every_actor:
        for actor_id, figures in actors:
            labels = (("actor", actor_id), ("role", str(figures.get("role", default_role))))
            reg.add(
                "lfr_actor_up",
                "gauge",
                "Whether the actor answered for its figures (1) or not (0).",
                labels,
                0 if "unavailable" in figures else 1,
            )
            reg.add(
                "lfr_actor_restarts_total",
                "counter",
                "Times the supervisor restarted the actor.",
                labels,
                figures.get("restarts"),
            )
            reg.add(
                "lfr_decode_errors_total",
                "counter",
                "Messages the actor dropped because they could not be decoded.",
                labels,
                figures.get("decode_errors"),
            )
    return reg.families()


def _sections(value: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``{actor id: figures}`` entries of a status section that are dicts."""
    if not isinstance(value, Mapping):
        return []
    return [(str(k), v) for k, v in value.items() if isinstance(v, Mapping)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


# -- handlers ------------------------------------------------------------------------


class _StatusCollector(Collector):
    """The cached status as metrics, read when scraped (one per application)."""

    def __init__(self, cache: StatusCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        cached = cache.snapshot()
        status_up = cached.up if cached.has_source else None

        def build() -> list[Metric]:
            status: dict[str, Any] = dict(cached.status or {}) if cached.has_source else {}
            alerts = status.get("alerts")
            merged = dict(alerts) if isinstance(alerts, Mapping) else {}
            if cached.store_counts is not None:
                merged["store"] = cached.store_counts
            status["alerts"] = merged
            return status_families(status, status_up=status_up)

        # The figures change once per gather: built once per gather, not once per scrape.
        yield from cache.derived("metrics", status_up, build)
        extra = _Families()
        if cached.has_source and cached.age_s is not None:
            extra.add(
                "lfr_status_age_seconds",
                "gauge",
                "Seconds since the deployment's status was last gathered.",
                (),
                round(cached.age_s, 3),
            )
        extra.add(
            "lfr_status_gathers_total",
            "counter",
            "Status gathers the background task has made (requests never add to it).",
            (),
            cache.gathers,
        )
        writable = not any(
            reason.startswith("alert store: cannot be written") for reason in not_ready(cached)
        )
        extra.add(
            "lfr_store_writable",
            "gauge",
            "Whether the alert store can be written (1) or a write failed for space or I/O (0).",
            (),
            1 if writable else 0,
        )
        yield from extra.families()


def metrics_registry(cache: StatusCache) -> CollectorRegistry:
    """An application's own registry: one collector that reads ``cache`` at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(cache))
    return registry


async def metrics_response(
    request: web.Request, cache: StatusCache, registry: CollectorRegistry
) -> web.Response:
    """Prometheus metrics from the cached status (the store's counts alone without a source).

    Reads memory only: the cache's background task gathered the figures.
    ``lfr_status_up`` (with a source) says whether the last gather answered and is fresh,
    ``lfr_status_age_seconds`` how old the figures are, ``lfr_store_writable`` whether the
    store can be written (the API's own writes and the alert actor's). Before the first
    gather it waits for that one, at most :data:`READY_STATUS_TIMEOUT_S`.
    """
    await cache.first(READY_STATUS_TIMEOUT_S)
    response = web.Response(body=generate_latest(registry), headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def readiness_response(request: web.Request, cache: StatusCache) -> web.Response:
    """Readiness from the cached status; see :func:`lfr_actors.api.status.not_ready`.

    Reads memory only (before the first gather it waits for that one, at most
    :data:`READY_STATUS_TIMEOUT_S`). The 503 names what is not ready (components and
    camera/embedder ids) but not the errors' text, which is logged by the gatherer: this
    route is public.
    """
    cached = await cache.first(READY_STATUS_TIMEOUT_S)
    if cached.stale:
        reasons = not_ready(cached)  # names the status's age, which changes every second
    else:
        key = (cached.store_error, cached.store_readable, cached.error)
        reasons = cache.derived("not_ready", key, lambda: not_ready(cached))
    if reasons:
        raise ProblemError(
            503,
            "Not ready: " + "; ".join(reasons) + ".",
            not_ready=reasons,
            headers={"Cache-Control": "no-store"},
        )
    return model_response(Status(status="ready"), headers={"Cache-Control": "no-store"})


# -- the health and status routes --------------------------------------------------


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
    responses={
        200: media("text/plain", "Metrics."),
        403: problem("The token is limited to deployments; the metrics count the whole store."),
    },
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the cached status and the store's counts.

    Refused (403) to a token limited to deployments: the store's counts cover every
    deployment's alerts (a scraper uses an unscoped token).
    """
    require_unscoped(request, "The metrics endpoint (it counts the whole store's alerts)")
    return await metrics_response(request, request.app[STATUS_CACHE], request.app[METRICS])


@operation(
    "The deployment's status, as last gathered (status_age_s says when).",
    responses={
        200: ok(
            DeploymentStatus,
            "The deployment's status, with status_age_s, status_error, status_stale and "
            "store_error.",
        ),
        404: problem("A scoped token: no deployment in its scope runs here."),
        503: problem("No status source, or it could not be read."),
    },
)
async def deployment_status(request: web.Request) -> web.Response:
    """The deployment's cached status, with its age; 503 when none is attached or gathered.

    ``status_age_s`` is how old the figures are, ``status_error`` why the last gather
    failed (the figures are then the last good ones), and ``store_error`` why the API
    cannot write the store (null while it can).

    A token limited to deployments sees the status only while a deployment of its scope
    runs here, without the store-wide counts (``alerts.store``); otherwise 404, the same
    whether nothing runs, the status is not gathered yet or another deployment runs.
    """
    scoped = principal(request).scoped
    if scoped:
        await _require_running_in_scope(request)
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
    if scoped:
        encoded = _without_store_counts(encoded)
    tail = json.dumps(freshness.model_dump(mode="json"), separators=(",", ":")).encode()
    body = encoded[:-1] + (b"," if encoded != b"{}" else b"") + tail[1:]
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def _require_running_in_scope(request: web.Request) -> None:
    """404 unless the status gathered names a running deployment in the caller's scope."""
    running = None
    if request.app[STATUS] is not None:
        cached = await request.app[STATUS_CACHE].first(READY_STATUS_TIMEOUT_S)
        running = _running_deployment(cached.status)
    if running is None or not in_scope(request, running):
        raise ProblemError(404, "No deployment in this token's scope runs here.")


def _running_deployment(status: Mapping[str, Any] | None) -> str | None:
    """The id of the deployment a status describes (its ``deployment`` section), or None."""
    section = None if status is None else status.get("deployment")
    if isinstance(section, Mapping):
        section = section.get("id")
    return section if isinstance(section, str) else None


def _without_store_counts(encoded: bytes) -> bytes:
    """The status without ``alerts.store``: those counts are the whole store's."""
    status = json.loads(encoded)
    alerts = status.get("alerts")
    if isinstance(alerts, dict):
        alerts.pop("store", None)
    return json.dumps(status, separators=(",", ":")).encode()
