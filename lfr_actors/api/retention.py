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
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lfr_actors.api.auth import principal, require_alert_in_scope, unknown_alert
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.keys import HOLDS
from lfr_actors.api.openapi import Body, body_problems, ok, operation, problem
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import Hold as HoldModel
from lfr_actors.api.schemas import HoldState
from lfr_actors.plaintext import PLAIN
from lfr_actors.store.retention import MAX_REASON_CHARS, Hold, UnknownAlertError

MAX_BODY_BYTES = 16 * 1024
"""Room for the longest reason (4 bytes a character in UTF-8) and the rest."""


class HoldBody(BaseModel):
    """Why an alert is put on evidential hold."""

    model_config = ConfigDict(extra="forbid", strict=True, title="HoldRequest")

    reason: Annotated[str, PLAIN] = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="Why the crop must be kept (e.g. a case or disclosure reference).",
    )


class ReleaseBody(BaseModel):
    """Why a hold is released (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="ReleaseRequest")

    reason: Annotated[str, PLAIN] | None = Field(
        default=None,
        max_length=MAX_REASON_CHARS,
        description="Why the hold ends.",
    )


def hold_body(hold: Hold | None) -> HoldModel | None:
    """A stored hold as the API shows it, or None."""
    return None if hold is None else HoldModel.model_validate(hold, from_attributes=True)


@operation(
    "Put the alert on evidential hold: its crop is kept past retention.",
    description="Audited as alert.hold. A second hold answers 200 with the first.",
    body=Body(HoldBody, MAX_BODY_BYTES),
    responses={
        200: ok(HoldState, "The alert was already on hold."),
        201: ok(HoldState, "The hold was set."),
        404: problem("No such alert."),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def set_hold(request: web.Request) -> web.Response:
    """Put the alert on evidential hold (see the module's docstring)."""
    alert_id = request.match_info["alert_id"]
    await require_alert_in_scope(request, alert_id)
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
        raise unknown_alert(alert_id) from exc
    location = str(request.app.router["alert"].url_for(alert_id=alert_id))
    return model_response(
        HoldState(alert_id=alert_id, hold=hold_body(hold), changed=created),
        status=201 if created else 200,
        headers={"Location": location},
    )


@operation(
    "Release the alert's evidential hold (audited as alert.release).",
    description="hold is null and changed false when no hold was in force.",
    body=Body(ReleaseBody, MAX_BODY_BYTES, required=False),
    responses={
        200: ok(HoldState, "The hold released, or none was in force."),
        404: problem("No such alert."),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def release_hold(request: web.Request) -> web.Response:
    """Release the alert's evidential hold (see the module's docstring)."""
    alert_id = request.match_info["alert_id"]
    await require_alert_in_scope(request, alert_id)
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
        raise unknown_alert(alert_id) from exc
    return model_response(
        HoldState(alert_id=alert_id, hold=hold_body(released), changed=released is not None)
    )
