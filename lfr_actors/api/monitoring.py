"""Equality monitoring over the API: the category lists, and who sees what was recorded.

``GET /v1/policy/monitoring-categories`` answers the lists officers may record from (for
the roles that adjudicate, audit or authorise); ``PUT`` replaces them (admin only; audited
as ``policy.monitoring_categories`` with the old and new lists, who and why). The rules the
lists follow are :func:`lfr_actors.store.monitoring.category_problems`; a body that breaks
them is a 422 naming each bad path, and writes nothing.

Who sees the values recorded on decisions:

- the report's breakdown (``demographics``) goes to auditor, authoriser and admin tokens
  only (:data:`BREAKDOWN_READERS`); every other caller gets ``demographics: null`` and
  ``demographics_withheld: true``;
- the values on each decision (an alert's ``adjudications``) are shown to every role that
  may read the alert except ``viewer``, which gets null: the watching officer needs the
  faces, not who the false alerts fell on;
- the audit log (auditor and admin) holds them in each adjudication's details.
"""

from __future__ import annotations

import asyncio
import html
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lfr_actors.api.auth import principal, require_unscoped, roles
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.keys import MONITORING
from lfr_actors.api.openapi import Body, body_problems, ok, operation
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import MonitoringCategories, MonitoringCategoriesChanged
from lfr_actors.plaintext import PLAIN
from lfr_actors.store.monitoring import (
    MAX_CATEGORIES,
    MAX_REASON_CHARS,
    NOT_RECORDED,
    CategorySetting,
    InvalidCategoriesError,
    category_problems,
)
from lfr_actors.store.tokens import Role

MAX_BODY_BYTES = 64 * 1024
"""Room for every category's every value at their longest (4 bytes a character)."""

BREAKDOWN_READERS = roles(Role.AUDITOR, Role.AUTHORISER)
"""Who reads the report's demographic breakdown (admin is always added)."""

RECORD_READERS = roles(Role.ADJUDICATOR, Role.AUDITOR, Role.AUTHORISER)
"""Who sees the values recorded on each decision of an alert (admin is always added)."""


class CategoriesBody(BaseModel):
    """New category lists for the store, and why."""

    model_config = ConfigDict(extra="forbid", strict=True, title="MonitoringCategoriesChange")

    categories: dict[str, list[Annotated[str, PLAIN]]] = Field(
        max_length=MAX_CATEGORIES,
        description="Category name (a short identifier such as age_band) -> its allowed "
        f"values (distinct, non-blank); {NOT_RECORDED!r} is always allowed and not listed. "
        "An empty map configures none (monitoring off).",
    )
    reason: Annotated[str, PLAIN] = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        pattern=r"\S",
        description="Why the lists change (recorded in the audit log).",
    )


def shows_recorded(request: web.Request) -> bool:
    """Whether the caller sees the monitoring values recorded on an alert's decisions."""
    return RECORD_READERS.allows(principal(request).role)


def withhold_breakdown(request: web.Request, report: dict[str, Any]) -> dict[str, Any]:
    """The report with its breakdown removed unless the caller's role may read it."""
    if BREAKDOWN_READERS.allows(principal(request).role):
        return report
    return {**report, "demographics": None, "demographics_withheld": True}


def _setting_fields(setting: CategorySetting) -> dict[str, Any]:
    return {
        "categories": setting.categories,
        "not_recorded": NOT_RECORDED,
        "configured": setting.configured,
        "set_by": setting.set_by,
        "set_at": setting.set_at,
    }


@operation(
    "The equality-monitoring categories officers may record on a decision.",
    description="Until an admin sets them, none is configured and a decision that records "
    "one is refused.",
    responses={200: ok(MonitoringCategories, "The categories in force.")},
)
async def get_categories(request: web.Request) -> web.Response:
    """The category lists in force (empty until an admin sets them)."""
    setting = await asyncio.to_thread(request.app[MONITORING].get)
    return model_response(MonitoringCategories.model_validate(_setting_fields(setting)))


@operation(
    "Replace the equality-monitoring categories (admin only; audited as "
    "policy.monitoring_categories with the old and new lists and the reason).",
    description="Decisions already recorded keep their values and are still counted.",
    body=Body(CategoriesBody, MAX_BODY_BYTES),
    responses={
        200: ok(MonitoringCategoriesChanged, "The categories; changed says if they did."),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def set_categories(request: web.Request) -> web.Response:
    """Replace the store's category lists (audited); the same lists again change nothing."""
    require_unscoped(request, "Setting the equality-monitoring categories")
    body = await read_json_body(request, CategoriesBody, max_bytes=MAX_BODY_BYTES)
    problems = category_problems(body.categories)
    if problems:
        raise ProblemError(
            422,
            "The body has invalid fields.",
            invalid_params=[{"name": name, "reason": reason} for name, reason in problems],
        )
    try:
        setting, changed = await asyncio.to_thread(
            request.app[MONITORING].set,
            body.categories,
            actor=principal(request).actor,
            reason=body.reason,
        )
    except InvalidCategoriesError as exc:  # checked above; kept for a store-side rule
        raise ProblemError(
            422,
            "The body has invalid fields.",
            invalid_params=[{"name": name, "reason": reason} for name, reason in exc.problems],
        ) from exc
    return model_response(
        MonitoringCategoriesChanged.model_validate({**_setting_fields(setting), "changed": changed})
    )


def render_breakdown(report: dict[str, Any]) -> str:
    """The report page's section on the monitoring categories (an ``<h2>`` and a table)."""
    e = html.escape
    title = "<h2>Equality monitoring of adjudicated alerts</h2>"
    found = report.get("demographics")
    if report.get("demographics_withheld"):
        return (
            f'{title}<table id="demographics"><tr><td>Withheld: only auditor, authoriser '
            "and admin tokens may read the breakdown.</td></tr></table>"
        )
    if found is None:
        return ""
    false_, confirmed = found["false"], found["confirmed"]
    names = list(dict.fromkeys([*false_["by_category"], *confirmed["by_category"]]))
    rows = [
        "<tr><th>Category</th><th>Value</th><th>False alerts</th><th>Confirmed alerts</th></tr>"
    ]
    for name in names:
        f_counts = false_["by_category"].get(name, {})
        c_counts = confirmed["by_category"].get(name, {})
        for value in dict.fromkeys([*f_counts, *c_counts]):
            rows.append(
                f"<tr><th>{e(name.replace('_', ' '))}</th><td>{e(value)}</td>"
                f"<td>{f_counts.get(value, 0):,}</td><td>{c_counts.get(value, 0):,}</td></tr>"
            )
    if len(rows) == 1:
        rows.append("<tr><td colspan=4>No monitoring categories are configured.</td></tr>")
    totals = (
        f"<p>By the decision in force on {false_['alerts']:,} false and "
        f"{confirmed['alerts']:,} confirmed alerts; recorded by the adjudicating officer "
        "(perceived, optional).</p>"
    )
    return f'{title}{totals}<table id="demographics">{"".join(rows)}</table>'
