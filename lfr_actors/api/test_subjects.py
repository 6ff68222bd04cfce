"""Test subjects' passes over the API: record that a volunteer passed a camera, list them.

``POST /v1/deployments/{deployment_id}/test-passes`` records "test subject E passed camera
X at time T" (audited as ``test_subject.pass``); ``GET`` of the same path lists the passes
with whether and when an alert saw each (:mod:`lfr_actors.store.test_subjects` says what
counts). Adjudicators (the officers at the cameras, who see the volunteer walk by) and
authorisers (who oversee the test) record passes; whoever reads the report reads them.

Answers: 201 with the pass; 404 for an unknown deployment or entry; 422 when the entry is
not a test subject (the request names the wrong kind of entry: ``entry_id`` is the bad
field) or the time is in the future; 409 when the time is outside the deployment's
authorised window, the deployment is closed, or the entry was not active at that time (the
deployment's or entry's state refuses it). A refusal stores and audits nothing.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lfr_actors.api.auth import principal, require_in_scope
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.deployments import NO_DEPLOYMENT, UNKNOWN_PARAMETER, run_store
from lfr_actors.api.keys import DEPLOYMENTS
from lfr_actors.api.openapi import Body, body_problems, ok, operation, problem
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import TestPass, TestPassList
from lfr_actors.plaintext import PLAIN
from lfr_actors.store.test_subjects import (
    MAX_NOTE,
    NotATestSubjectError,
    PassInFutureError,
    PassRefusedError,
    TestSubjectPasses,
)
from lfr_actors.store.test_subjects import TestPass as StoredPass
from lfr_actors.topology.schema import ACTOR_ID_PATTERN, ENTRY_ID_PATTERN

MAX_BODY_BYTES = 4 * 1024


class TestPassBody(BaseModel):
    """A test subject's pass past a camera."""

    __test__ = False  # not a pytest test class

    model_config = ConfigDict(extra="forbid", strict=True, title="TestPassRecord")

    entry_id: str = Field(
        pattern=ENTRY_ID_PATTERN, description="The test subject's watchlist entry."
    )
    camera_id: str = Field(pattern=ACTOR_ID_PATTERN, description="The camera they passed.")
    passed_at: AwareDatetime = Field(
        description="When they passed it: ISO 8601 with a UTC offset, e.g. 2026-12-01T10:15:00Z."
    )
    note: Annotated[str, PLAIN] | None = Field(
        default=None, max_length=MAX_NOTE, description="Anything worth noting (optional)."
    )


def pass_body(stored: StoredPass) -> TestPass:
    """A stored pass as the API shows it."""
    return TestPass.model_validate(stored.as_dict())


def _passes(request: web.Request) -> TestSubjectPasses:
    store = request.app[DEPLOYMENTS]
    return TestSubjectPasses(store.db, clock=store.clock)


@operation(
    "Record that a test subject passed a camera at a time (audited as test_subject.pass).",
    body=Body(TestPassBody, MAX_BODY_BYTES),
    responses={
        201: ok(TestPass, "The pass recorded, with whether an alert has seen it yet."),
        404: problem("No such deployment or entry."),
        409: problem(
            "Outside the deployment's authorised window, the deployment closed, or the entry "
            "not active at that time."
        ),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def record_test_pass(request: web.Request) -> web.Response:
    """Record a test subject's pass; refusals store and audit nothing."""
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    body = await read_json_body(request, TestPassBody, max_bytes=MAX_BODY_BYTES)
    note = (body.note or "").strip() or None
    try:
        stored = await run_store(
            _passes(request).record,
            deployment_id,
            body.entry_id,
            body.camera_id,
            body.passed_at.timestamp(),
            actor=principal(request).actor,
            note=note,
        )
    except NotATestSubjectError as exc:
        raise _invalid("entry_id", str(exc)) from exc
    except PassInFutureError as exc:
        raise _invalid("passed_at", str(exc)) from exc
    except PassRefusedError as exc:
        raise ProblemError(409, f"Refused: {exc}.") from exc
    return model_response(pass_body(stored), status=201)


@operation(
    "The deployment's recorded test-subject passes, each with whether and when it was alerted.",
    responses={
        200: ok(TestPassList, "The passes, in pass-time order."),
        400: UNKNOWN_PARAMETER,
        404: NO_DEPLOYMENT,
    },
)
async def list_test_passes(request: web.Request) -> web.Response:
    """The deployment's passes in pass-time order, each with its alert (if any)."""
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    passes = await run_store(_passes(request).passes, deployment_id)
    return model_response(TestPassList(passes=[pass_body(p) for p in passes]))


def _invalid(name: str, reason: str) -> ProblemError:
    return ProblemError(
        422,
        f"The body has an invalid field: {reason}.",
        invalid_params=[{"name": name, "reason": reason}],
    )
