"""Alerts over the API: the filtered, paged list, one alert with its decisions, its crop.

Everything comes from the store (the alert actor writes alerts; this API reads them through
a read-only connection): ``GET /v1/alerts`` pages newest first with an opaque cursor and
says which event the page reflects (``last_event_id``), so a client can open the live
stream (:mod:`lfr_actors.api.stream`) after it and miss nothing. Each view of a face crop
is audited before it is sent; a crop that retention purged answers 410 while the alert
remains.

Officers work the suspects' queue: the list and the stream serve suspects' alerts unless
``?queue=test_subjects`` asks for those of test subjects (volunteers measuring live
accuracy), which never enter the suspects' queue.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from lfr_actors.api.adjudication import adjudication_body
from lfr_actors.api.auth import principal, require_alert_in_scope, scope_of, unknown_alert
from lfr_actors.api.bodies import model_response
from lfr_actors.api.keys import ADJUDICATIONS, AUDIT, HOLDS, STORE
from lfr_actors.api.monitoring import shows_recorded
from lfr_actors.api.openapi import (
    BINARY,
    PageLimits,
    limit_param,
    media,
    ok,
    operation,
    problem,
    query,
)
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.retention import hold_body
from lfr_actors.api.schemas import Alert, AlertDetail, AlertPage
from lfr_actors.store.adjudications import ADJUDICATED
from lfr_actors.store.audit import Action
from lfr_actors.timefmt import iso_utc

MAX_ID = 2**63 - 1
"""The largest id SQLite stores: a cursor or event id beyond it names nothing."""
ALERT_STATUSES = ("open", ADJUDICATED)
"""An alert is open until an officer decides on it."""
MAX_PAGE = 500
DEFAULT_PAGE = 100
_TIME = {
    "anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
    "description": "Unix seconds, or ISO 8601 with a UTC offset (e.g. 2025-01-31T12:00:00Z).",
}
_NO_ALERT = problem("No such alert.")
QUEUES = {"suspects": False, "test_subjects": True}
"""The alert queues (``?queue=``) and whether each holds test subjects' alerts: officers
work the suspects' queue (the default); test subjects' alerts measure live accuracy and
are kept apart from it."""
QUEUE_PARAM = query(
    "queue",
    {"type": "string", "enum": list(QUEUES), "default": "suspects"},
    "suspects (the default): alerts of suspects only; test_subjects: only the alerts of "
    "test subjects (volunteers measuring live accuracy).",
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
        query("track_id", {"type": "string"}, "Only the alert this face track belongs to."),
        QUEUE_PARAM,
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
    """Alerts, newest first, filtered and paged with an opaque ``cursor``.

    A scoped token sees only its deployments' alerts: ``?deployment=`` of another one
    answers an empty page, as for a deployment id that names none.
    """
    query = _ListQuery.parse(request.query)
    page = await asyncio.to_thread(
        request.app[STORE].list_alerts,
        deployment_id=query.deployment,
        status=query.status,
        camera_id=query.camera,
        entry_id=query.entry,
        track_id=query.track_id,
        since=query.since,
        until=query.until,
        limit=query.limit,
        before_event=query.cursor,
        deployment_ids=scope_of(request),
        test_subject=QUEUES[query.queue],
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
    await require_alert_in_scope(request, alert_id)
    alert = await asyncio.to_thread(request.app[STORE].get, alert_id)
    if alert is None:
        raise unknown_alert(alert_id)
    history = await asyncio.to_thread(request.app[ADJUDICATIONS].history, alert_id)
    holds = request.app[HOLDS]
    hold = await asyncio.to_thread(holds.active, alert_id)
    purged_at = await asyncio.to_thread(holds.crop_purged_at, alert_id)
    detail = AlertDetail.model_validate(
        {
            **_alert_fields(request.app, alert),
            "adjudications": [
                adjudication_body(record, show_demographics=shows_recorded(request))
                for record in history
            ],
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
    await require_alert_in_scope(request, alert_id)
    crop = await asyncio.to_thread(request.app[STORE].crop, alert_id)
    if crop is None:
        raise unknown_alert(alert_id)
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


@dataclass
class _ListQuery:
    deployment: str | None = None
    status: str | None = None
    camera: str | None = None
    entry: str | None = None
    track_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_PAGE
    cursor: int | None = None
    queue: str = "suspects"
    errors: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, query: MultiMapping[str]) -> _ListQuery:
        """Read and check every parameter, reporting all problems at once."""
        parsed = cls()
        known = {f.name for f in fields(cls)} - {"errors"}  # one parameter per field
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
        parsed.track_id = query.get("track_id") or None
        parsed.queue = query.get("queue") or "suspects"
        if parsed.queue not in QUEUES:
            parsed._error("queue", "one of " + ", ".join(QUEUES))
            parsed.queue = "suspects"
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
