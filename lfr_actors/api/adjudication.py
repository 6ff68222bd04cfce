"""``POST /v1/alerts/{alert_id}/adjudication``: an officer records a decision on an alert.

The body says what was decided (:class:`AdjudicationBody`); the officer is the caller's
token name and the time is the server's, never the client's. Answers:

- 201 with the new decision; 200 with the stored one when the same decision is sent again
  (a retried request changes nothing);
- 409 when the decision contradicts the one in force and is not a correction (the
  problem's ``current`` member holds the decision in force), or corrects nothing;
- 404 for an unknown alert; 400 for malformed JSON; 415 for a body that is not JSON;
  422 with each bad field's path; 413 for a body over :data:`MAX_BODY_BYTES`.

``demographics`` (optional, on not_a_match and match_confirmed only) records the store's
equality-monitoring categories (:mod:`lfr_actors.store.monitoring`); a category that is
not configured, or a value not in its list, is a 422 whose reason names the allowed values.

A refused request writes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lfr_actors.api import schemas
from lfr_actors.api.auth import principal, require_alert_in_scope, unknown_alert
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.keys import ADJUDICATIONS
from lfr_actors.api.openapi import Body, body_problems, ok, operation, problem
from lfr_actors.api.problems import ProblemError
from lfr_actors.plaintext import PLAIN
from lfr_actors.store.adjudications import (
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    AdjudicationConflictError,
    AdjudicationRecord,
    Decision,
    DecisionRequest,
    InvalidDemographicsError,
    Outcome,
    UnknownAlertError,
)
from lfr_actors.store.monitoring import MAX_CATEGORIES, NOT_RECORDED

MAX_BODY_BYTES = 16 * 1024
"""Room for the longest note in any script (4 bytes a character in UTF-8) and the rest."""


class AdjudicationBody(BaseModel):
    """An officer's decision on an alert, as the client sends it."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Adjudication")

    decision: Decision = Field(
        description="What the officer concluded comparing the live face with the "
        "watchlist image: match_confirmed, not_a_match or unsure."
    )
    outcome: Outcome | None = Field(
        default=None,
        description="What happened next; required when decision is match_confirmed.",
    )
    note: Annotated[str, PLAIN] | None = Field(
        default=None,
        max_length=MAX_NOTE_CHARS,
        description=f"The officer's free-text note, at most {MAX_NOTE_CHARS} characters.",
    )
    correction: bool = Field(
        default=False,
        description="True to replace the decision in force with this one (audited).",
    )
    correction_reason: Annotated[str, PLAIN] | None = Field(
        default=None,
        max_length=MAX_REASON_CHARS,
        description="Why the earlier decision is corrected; required when correction is true.",
    )
    demographics: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_CATEGORIES,
        description="Optional equality monitoring, on not_a_match and match_confirmed only: "
        "category -> value, from the store's lists (GET /v1/policy/monitoring-categories). "
        f"Any category may be left out or given as {NOT_RECORDED!r}.",
    )

    def to_request(self) -> DecisionRequest:
        """The store's form of this decision."""
        return DecisionRequest(
            decision=self.decision,
            outcome=self.outcome,
            note=self.note,
            correction=self.correction,
            correction_reason=self.correction_reason,
            demographics=self.demographics,
        )


def adjudication_body(
    record: AdjudicationRecord, *, show_demographics: bool = True
) -> schemas.AdjudicationRecord:
    """A stored decision as the API shows it (``demographics`` null unless shown)."""
    body = schemas.AdjudicationRecord.model_validate(record, from_attributes=True)
    return body if show_demographics else body.model_copy(update={"demographics": None})


@operation(
    "Record the caller's decision on an alert.",
    body=Body(AdjudicationBody, MAX_BODY_BYTES),
    responses={
        200: ok(schemas.AdjudicationRecord, "The same decision was already stored."),
        201: ok(schemas.AdjudicationRecord, "The decision was recorded."),
        404: problem("No such alert."),
        409: problem("Contradicts the decision in force (see current)."),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def adjudicate(request: web.Request) -> web.Response:
    """Record the caller's decision on an alert (see the module's docstring)."""
    alert_id = request.match_info["alert_id"]
    await require_alert_in_scope(request, alert_id)
    body = await read_json_body(request, AdjudicationBody, max_bytes=MAX_BODY_BYTES)
    decision = body.to_request()
    problems = decision.problems()
    if problems:
        raise ProblemError(
            422,
            "The body has invalid fields.",
            invalid_params=[{"name": name, "reason": reason} for name, reason in problems],
        )
    try:
        decided = await asyncio.to_thread(
            request.app[ADJUDICATIONS].decide,
            alert_id,
            decision,
            officer=principal(request).actor,
        )
    except UnknownAlertError as exc:
        raise unknown_alert(alert_id) from exc
    except InvalidDemographicsError as exc:
        raise ProblemError(
            422,
            "The body records monitoring categories the store does not allow.",
            invalid_params=[{"name": name, "reason": reason} for name, reason in exc.problems],
        ) from exc
    except AdjudicationConflictError as exc:
        current = (
            None if exc.current is None else adjudication_body(exc.current).model_dump(mode="json")
        )
        raise ProblemError(409, f"Refused: {exc}.", current=current) from exc
    location = str(request.app.router["alert"].url_for(alert_id=alert_id))
    return model_response(
        adjudication_body(decided.record),
        status=201 if decided.created else 200,
        headers={"Location": location},
    )
