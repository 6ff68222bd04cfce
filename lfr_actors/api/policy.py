"""The store's threshold policy over the API: ``GET /v1/policy`` and ``PUT /v1/policy``.

Every role may read the policy in force and where it came from; only ``admin`` may set it,
with a reason (audited as ``policy.threshold`` with the old and new values). What the
policy means and how it is enforced: :mod:`lfr_actors.store.policy`.

Answers to ``PUT``: 200 with the policy in force (``changed`` says whether it changed);
422 for values outside (0, 2) or an ``entry_max`` looser than ``deployment_max``; 409 when
deployments not yet closed (or their entries) already break the new policy, naming them
in ``breaches`` (the first 100; ``breaches_total`` counts them all); nothing is stored or
audited on a refusal.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lfr_actors.api.auth import principal, require_unscoped
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.deployments import MAX_BODY_BYTES, Text
from lfr_actors.api.keys import DEPLOYMENTS
from lfr_actors.api.openapi import Body, body_problems, ok, operation, problem
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import ThresholdPolicy, ThresholdPolicyChanged
from lfr_actors.store.policy import PolicyBreachError, ThresholdPolicies, value_problems

MAX_BREACHES_LISTED = 100
"""How many breaking deployments and entries a 409 lists (``breaches_total`` counts all)."""


class PolicyBody(BaseModel):
    """A new threshold policy, and why."""

    model_config = ConfigDict(extra="forbid", strict=True, title="ThresholdPolicyChange")

    deployment_max: float = Field(
        gt=0.0, lt=2.0, description="The loosest threshold any deployment may use."
    )
    entry_max: float | None = Field(
        default=None,
        gt=0.0,
        lt=2.0,
        description="The loosest own threshold any watchlist entry may use; no looser than "
        "deployment_max (left out or null: deployment_max).",
    )
    reason: Text = Field(description="Why the policy changes (recorded in the audit log).")


def _policies(request: web.Request) -> ThresholdPolicies:
    store = request.app[DEPLOYMENTS]
    return ThresholdPolicies(store.db, clock=store.clock)


@operation(
    "The store's threshold policy in force, and where it came from.",
    description="Until an admin sets one, the default model's declared threshold is in force "
    "for deployments and entries alike.",
    responses={200: ok(ThresholdPolicy, "The policy in force.")},
)
async def get_policy(request: web.Request) -> web.Response:
    """The policy in force and its origin (the model's default, or who set it, when, why)."""
    policy = await asyncio.to_thread(_policies(request).get)
    return model_response(ThresholdPolicy.model_validate(policy.as_dict()))


@operation(
    "Set the store's threshold policy (admin; audited as policy.threshold with the old and "
    "new values and the reason).",
    description="Refused with 409 naming them while a deployment not yet closed, or one of "
    "its pending or active entries, has a threshold looser than the new policy.",
    body=Body(PolicyBody, MAX_BODY_BYTES),
    responses={
        200: ok(ThresholdPolicyChanged, "The policy in force; changed says if it did."),
        409: problem("Deployments not closed already break it (named in breaches)."),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def set_policy(request: web.Request) -> web.Response:
    """Set the policy (admin only, audited); 409 naming the deployments that would break it."""
    require_unscoped(request, "Setting the threshold policy")
    body = await read_json_body(request, PolicyBody, max_bytes=MAX_BODY_BYTES)
    entry_max = body.deployment_max if body.entry_max is None else body.entry_max
    problems = value_problems(body.deployment_max, entry_max)
    if problems:
        raise ProblemError(
            422,
            "The body has invalid fields.",
            invalid_params=[{"name": name, "reason": why} for name, why in problems],
        )
    try:
        policy, changed = await asyncio.to_thread(
            _policies(request).set,
            body.deployment_max,
            entry_max,
            actor=principal(request).actor,
            reason=body.reason,
        )
    except PolicyBreachError as exc:
        raise ProblemError(
            409,
            f"Refused: {exc}.",
            breaches=[b.as_dict() for b in exc.breaches[:MAX_BREACHES_LISTED]],
            breaches_total=len(exc.breaches),
        ) from exc
    return model_response(
        ThresholdPolicyChanged.model_validate({**policy.as_dict(), "changed": changed})
    )
