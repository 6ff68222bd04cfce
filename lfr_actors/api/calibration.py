"""A deployment's calibration over the API: ``PUT`` and ``DELETE /v1/deployments/{id}/calibration``.

For deployments made through the API (``lfr up`` stores the topology's
``alerts.calibration`` itself). The body is the calibration file's JSON as
``lfr evaluate calibrate`` writes it; an authoriser sets it, audited as
``deployment.calibration`` with the old and the new file's summary. The answer is the
deployment with its ``false_alerts`` figures from the new calibration.

Answers: 200 (``changed`` false when the same file was already stored, nothing written);
404 for an unknown deployment; 409 for a closed one; 422 for a body that is not a valid
calibration file of this version (every bad field in ``invalid_params``) or whose model's
embedding length differs from the deployment's stored templates.

``DELETE`` withdraws the calibration (one found unfit, with none to replace it; a damaged
one too), audited the same way with ``to`` null; the expected rate is then null with its
reason. 200 (``changed`` false when none was stored), 404 and 409 as for ``PUT``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lfr_actors.api.auth import principal, require_in_scope
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.deployments import (
    MAX_BODY_BYTES,
    NO_DEPLOYMENT,
    Text,
    _deployment_fields,
    false_alerts_of,
    run_store,
    trimmed,
)
from lfr_actors.api.keys import DEPLOYMENTS
from lfr_actors.api.openapi import Body, body_problems, ok, operation, problem
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import CalibrationChanged
from lfr_actors.calibration import MAX_GRID_POINTS, CalibrationFile
from lfr_actors.store.calibrations import remove_calibration, set_calibration
from lfr_actors.store.records import DeploymentRecord, EntryState

MAX_CALIBRATION_BYTES = 64 * 1024 + MAX_GRID_POINTS * 400
"""Room for the file's fixed part and a full grid of points written with indentation."""


class WithdrawBody(BaseModel):
    """Why a deployment's calibration is withdrawn."""

    model_config = ConfigDict(extra="forbid", strict=True, title="WithdrawCalibration")

    reason: Text = Field(description="Why the calibration is unfit (it goes in the audit entry).")


def _template_dimensions(request: web.Request, deployment_id: str) -> set[int]:
    store = request.app[DEPLOYMENTS]
    entries = store.entries(deployment_id)
    return {
        e.dimension
        for e in entries
        if e.dimension is not None and e.state in (EntryState.ACTIVE, EntryState.PENDING)
    }


async def _answer(request: web.Request, record: DeploymentRecord, changed: bool) -> web.Response:
    """The deployment with its false-alert figures from the calibration now stored."""
    fields = _deployment_fields(request, record, *await false_alerts_of(request, record))
    return model_response(CalibrationChanged.model_validate({**fields, "changed": changed}))


@operation(
    "Set the deployment's calibration: the file lfr evaluate calibrate writes (audited as "
    "deployment.calibration).",
    description="The deployment then shows its expected false alerts per 1,000 passers-by "
    "for its watchlist size and threshold (false_alerts) in GET /v1/deployments/{id} and "
    "in its report. No face, image or embedding is in the file.",
    body=Body(CalibrationFile, MAX_CALIBRATION_BYTES),
    responses={
        200: ok(CalibrationChanged, "The deployment; changed says if the calibration did."),
        404: NO_DEPLOYMENT,
        409: problem("The deployment is closed."),
        **body_problems(MAX_CALIBRATION_BYTES),
    },
)
async def put_calibration(request: web.Request) -> web.Response:
    """Store the deployment's calibration (audited); 422 for an invalid file."""
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    calibration = await read_json_body(request, CalibrationFile, max_bytes=MAX_CALIBRATION_BYTES)
    record = await run_store(request.app[DEPLOYMENTS].get, deployment_id)
    dimensions = await asyncio.to_thread(_template_dimensions, request, deployment_id)
    other = sorted(d for d in dimensions if d != calibration.model.dimension)
    if other:
        raise ProblemError(
            422,
            "The calibration is of another model than the deployment's watchlist.",
            invalid_params=[
                {
                    "name": "model.dimension",
                    "reason": f"the calibration's model ({calibration.model.name}) makes "
                    f"{calibration.model.dimension}-long embeddings; the watchlist's "
                    f"templates are {', '.join(map(str, other))} long",
                }
            ],
        )
    record, changed = await run_store(
        set_calibration,
        request.app[DEPLOYMENTS],
        record.id,
        calibration,
        actor=principal(request).actor,
    )
    return await _answer(request, record, changed)


@operation(
    "Withdraw the deployment's calibration (audited as deployment.calibration, to null).",
    description="For a calibration found unfit with none to replace it: the deployment then "
    "shows no expected false alert rate (null, with the reason), while the observed one "
    "stays. A topology naming alerts.calibration stores it again at the next lfr up.",
    body=Body(WithdrawBody, MAX_BODY_BYTES),
    responses={
        200: ok(CalibrationChanged, "The deployment; changed says if a calibration was removed."),
        404: NO_DEPLOYMENT,
        409: problem("The deployment is closed."),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def delete_calibration(request: web.Request) -> web.Response:
    """Remove the deployment's calibration (audited)."""
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    body = trimmed(await read_json_body(request, WithdrawBody, max_bytes=MAX_BODY_BYTES))
    record, changed = await run_store(
        remove_calibration,
        request.app[DEPLOYMENTS],
        deployment_id,
        actor=principal(request).actor,
        reason=body.reason,
    )
    return await _answer(request, record, changed)
