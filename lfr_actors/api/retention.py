"""``POST`` and ``DELETE /v1/alerts/{alert_id}/hold``: evidential holds on alerts.

An alert on hold keeps its face crop past the retention period
(:func:`lfr_actors.store.retention.purge_crops`). Setting and releasing a hold is the
authoriser's (and admin's) act, audited as ``alert.hold`` and ``alert.release``. Answers:

- POST: 201 with the new hold; 200 with the hold in force when there already is one;
  422 without a reason; 404 for an unknown alert.
- DELETE: 200 with the released hold, or with ``hold: null`` when none was in force (a
  retried release changes nothing); the body (a ``reason``) is optional.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lfr_actors.alerts import iso_utc
from lfr_actors.api.auth import principal
from lfr_actors.api.common import ProblemError, read_json_body
from lfr_actors.store.retention import MAX_REASON_CHARS, Hold, Holds, UnknownAlertError

MAX_BODY_BYTES = 16 * 1024
"""Room for the longest reason (4 bytes a character in UTF-8) and the rest."""

HOLDS = web.AppKey("holds", Holds)


class HoldBody(BaseModel):
    """Why an alert is put on evidential hold."""

    model_config = ConfigDict(extra="forbid", strict=True, title="HoldRequest")

    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="Why the crop must be kept (e.g. a case or disclosure reference).",
    )


class ReleaseBody(BaseModel):
    """Why a hold is released (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="ReleaseRequest")

    reason: str | None = Field(
        default=None,
        max_length=MAX_REASON_CHARS,
        description="Why the hold ends.",
    )


def render_hold(hold: Hold | None) -> dict[str, Any] | None:
    """A hold as the API shows it (ISO 8601 UTC times), or None."""
    if hold is None:
        return None
    out = hold.as_dict()
    out["at"] = iso_utc(hold.at)
    if hold.released_at is not None:
        out["released_at"] = iso_utc(hold.released_at)
    return out


async def set_hold(request: web.Request) -> web.Response:
    """Put the alert on evidential hold (see the module's docstring)."""
    alert_id = request.match_info["alert_id"]
    body = await read_json_body(request, HoldBody, max_bytes=MAX_BODY_BYTES)
    if not body.reason.strip():
        raise ProblemError(
            422,
            "The body has invalid fields.",
            invalid_params=[{"name": "reason", "reason": "must not be blank"}],
        )
    try:
        hold, created = await asyncio.to_thread(
            request.app[HOLDS].hold, alert_id, body.reason, by=principal(request).actor
        )
    except UnknownAlertError as exc:
        raise ProblemError(404, f"No alert with id {alert_id[:80]!r}.") from exc
    location = str(request.app.router["alert"].url_for(alert_id=alert_id))
    return web.json_response(
        {"alert_id": alert_id, "hold": render_hold(hold), "changed": created},
        status=201 if created else 200,
        headers={"Location": location},
    )


async def release_hold(request: web.Request) -> web.Response:
    """Release the alert's evidential hold (see the module's docstring)."""
    alert_id = request.match_info["alert_id"]
    if request.body_exists:
        body = await read_json_body(request, ReleaseBody, max_bytes=MAX_BODY_BYTES)
    else:
        body = ReleaseBody()
    try:
        released = await asyncio.to_thread(
            request.app[HOLDS].release,
            alert_id,
            by=principal(request).actor,
            reason=body.reason,
        )
    except UnknownAlertError as exc:
        raise ProblemError(404, f"No alert with id {alert_id[:80]!r}.") from exc
    return web.json_response(
        {"alert_id": alert_id, "hold": render_hold(released), "changed": released is not None}
    )
