"""Deployments over the API: create, list, get, close, and the published report.

A deployment is created by an authoriser with its authority (who authorised it, purpose,
place, time window, impact-assessment reference, threshold) and closed by an authoriser
with a reason. Closing destroys its watchlist at once; a running ``lfr up`` of that
deployment notices within a second, stops its cameras and empties its index
(:mod:`lfr_actors.control.follow`). The report gives the figures the Metropolitan Police
publishes per deployment, as JSON and as a printable page; each export is audited.

Answers: 201 with the new deployment (409 when the id is taken); 404 for an unknown id;
409 when closing a closed deployment; 400/413/415/422 for bad bodies, as everywhere.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lfr_actors.api.auth import (
    in_scope,
    principal,
    require_in_scope,
    require_unscoped,
    unknown_deployment,
)
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.keys import AUDIT, DEPLOYMENTS
from lfr_actors.api.monitoring import render_breakdown, withhold_breakdown
from lfr_actors.api.openapi import Body, body_problems, media, ok, operation, problem
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import (
    ClosedDeployment,
    Deployment,
    DeploymentLinks,
    DeploymentList,
    Report,
    ThresholdChanged,
)
from lfr_actors.api.test_subject_report import test_subjects_section
from lfr_actors.plaintext import PLAIN
from lfr_actors.store import calibrations
from lfr_actors.store.audit import Action
from lfr_actors.store.policy import PolicyError
from lfr_actors.store.records import (
    DeploymentClosedError,
    DeploymentExistsError,
    DeploymentRecord,
    EntryExistsError,
    EntryStateError,
    FourEyesError,
    UnknownDeploymentError,
    UnknownEntryError,
)
from lfr_actors.topology.schema import NewDeployment, window_violations

MAX_BODY_BYTES = 16 * 1024
"""Room for every text field at its longest (4 bytes a character in UTF-8)."""
MAX_TEXT_CHARS = 500

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S"), PLAIN]


def trimmed(body: _M) -> _M:
    """A request body's declaration with the outer spaces of its text fields removed."""
    return body.model_copy(update={k: v.strip() for k, v in body if isinstance(v, str)})


class CloseBody(BaseModel):
    """Why a deployment is closed before (or at) the end of its window."""

    model_config = ConfigDict(extra="forbid", strict=True, title="CloseDeployment")

    reason: Text = Field(description="Why the deployment is closed now.")


class ThresholdBody(BaseModel):
    """A new threshold for a deployment, and why."""

    model_config = ConfigDict(extra="forbid", strict=True, title="ThresholdChange")

    threshold: float = Field(
        gt=0.0, lt=2.0, description="The new distance at or below which a face is a match."
    )
    reason: Text = Field(description="Why the threshold changes (recorded in the audit log).")


async def false_alerts_of(request: web.Request, *records: DeploymentRecord) -> list[Any]:
    """Each record's expected and observed false alerts (read off the event loop)."""
    store = request.app[DEPLOYMENTS]
    return await asyncio.to_thread(
        lambda: [calibrations.false_alerts(store, r.id) for r in records]
    )


def _deployment_fields(
    request: web.Request, record: DeploymentRecord, false_alerts: Any
) -> dict[str, Any]:
    now = request.app[DEPLOYMENTS].clock()
    router = request.app.router
    links = DeploymentLinks(
        entries=str(router["entries"].url_for(deployment_id=record.id)),
        report=str(router["deployment_report"].url_for(deployment_id=record.id)),
        report_page=str(router["deployment_report_page"].url_for(deployment_id=record.id)),
        alerts=str(router["alerts"].url_for().with_query(deployment=record.id)),
    )
    return {**record.as_dict(now), "false_alerts": false_alerts, "links": links}


def deployment_body(
    request: web.Request, record: DeploymentRecord, false_alerts: Any
) -> Deployment:
    """A deployment as the API shows it: its state now and links to its parts."""
    return Deployment.model_validate(_deployment_fields(request, record, false_alerts))


_REFUSALS = (
    DeploymentExistsError,
    DeploymentClosedError,
    EntryExistsError,
    EntryStateError,
    FourEyesError,
)
"""Store errors that refuse an action on the object's current state: 409."""


async def run_store(call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a deployments-store call off the event loop; its refusals become problems.

    One place maps the store's errors to answers for every deployment and entry route:
    an unknown deployment or entry is 404, a refusal (closed, exists, four eyes, wrong
    state) 409, each with the store's own message; a threshold looser than the store's
    policy is 409 with the policy's value (``policy_max``, and which cap: ``policy_field``).
    """
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except UnknownDeploymentError as exc:
        message = str(exc)
        raise ProblemError(404, f"{message[:1].upper()}{message[1:]}.") from exc
    except UnknownEntryError as exc:
        raise ProblemError(404, f"Not found: {exc}.") from exc
    except _REFUSALS as exc:
        raise ProblemError(409, f"Refused: {exc}.") from exc
    except PolicyError as exc:
        raise ProblemError(
            409,
            f"Refused: {exc}.",
            policy_max=exc.policy_max,
            policy_field=exc.policy_field,
        ) from exc


NO_DEPLOYMENT = problem("No such deployment.")
UNKNOWN_PARAMETER = problem("An unknown parameter.")


@operation(
    "Every deployment (a scoped token: those in its scope), the newest window first.",
    responses={200: ok(DeploymentList, "The deployments."), 400: UNKNOWN_PARAMETER},
)
async def list_deployments(request: web.Request) -> web.Response:
    """Every deployment, the newest window first."""
    records = await asyncio.to_thread(request.app[DEPLOYMENTS].list)
    records = [r for r in records if in_scope(request, r.id)]
    figures = await false_alerts_of(request, *records)
    return model_response(
        DeploymentList(
            deployments=[
                deployment_body(request, r, f) for r, f in zip(records, figures, strict=True)
            ]
        )
    )


@operation(
    "Record a new deployment (audited as deployment.create).",
    body=Body(NewDeployment, MAX_BODY_BYTES),
    responses={
        201: ok(Deployment, "The deployment was recorded."),
        403: problem("The token is limited to deployments (a new one is in no scope)."),
        409: problem(
            "A deployment with that id exists, or the threshold is looser than the store's "
            "threshold policy (policy_max)."
        ),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def create_deployment(request: web.Request) -> web.Response:
    """Record a new deployment under the caller's name (audited).

    Refused (403) to a token limited to deployments: a scope names existing deployments,
    so a new one can be in none.
    """
    require_unscoped(request, "Creating a deployment")
    body = await read_json_body(request, NewDeployment, max_bytes=MAX_BODY_BYTES)
    store = request.app[DEPLOYMENTS]
    now = datetime.fromtimestamp(store.clock(), UTC)
    problems = window_violations(body.start, body.end, now=now)
    if problems:
        raise ProblemError(
            422,
            "The body has invalid fields.",
            invalid_params=[{"name": v.path[0], "reason": v.message} for v in problems],
        )
    record = await run_store(store.create, trimmed(body), actor=principal(request).actor)
    location = str(request.app.router["deployment"].url_for(deployment_id=record.id))
    (figures,) = await false_alerts_of(request, record)
    return model_response(
        deployment_body(request, record, figures), status=201, headers={"Location": location}
    )


@operation(
    "One deployment, with its state now.",
    responses={200: ok(Deployment, "The deployment."), 404: NO_DEPLOYMENT},
)
async def get_deployment(request: web.Request) -> web.Response:
    """One deployment, with its state now."""
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    record = await asyncio.to_thread(request.app[DEPLOYMENTS].find, deployment_id)
    if record is None:
        raise unknown_deployment(deployment_id)
    (figures,) = await false_alerts_of(request, record)
    return model_response(deployment_body(request, record, figures))


@operation(
    "Close the deployment: its cameras stop and its watchlist is destroyed.",
    description="Audited as deployment.close. The alerts, the audit trail and the report remain.",
    body=Body(CloseBody, MAX_BODY_BYTES),
    responses={
        200: ok(ClosedDeployment, "Closed; entries_destroyed counts them."),
        404: NO_DEPLOYMENT,
        409: problem("Already closed."),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def close_deployment(request: web.Request) -> web.Response:
    """Close the deployment and destroy its watchlist (audited); 409 if already closed."""
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    body = await read_json_body(request, CloseBody, max_bytes=MAX_BODY_BYTES)
    record, destroyed = await run_store(
        request.app[DEPLOYMENTS].close,
        deployment_id,
        actor=principal(request).actor,
        reason=body.reason.strip(),
    )
    fields = _deployment_fields(request, record, *await false_alerts_of(request, record))
    return model_response(
        ClosedDeployment.model_validate({**fields, "entries_destroyed": destroyed})
    )


@operation(
    "Change the deployment's threshold (audited as deployment.threshold with the old and "
    "new values and the reason).",
    description="A running deployment applies it within about a second. An entry's own "
    "threshold, where it has one, still replaces it for that entry.",
    body=Body(ThresholdBody, MAX_BODY_BYTES),
    responses={
        200: ok(ThresholdChanged, "The deployment; changed says if it did."),
        404: NO_DEPLOYMENT,
        409: problem(
            "The deployment is closed, or the threshold is looser than the store's threshold "
            "policy (policy_max)."
        ),
        **body_problems(MAX_BODY_BYTES),
    },
)
async def change_threshold(request: web.Request) -> web.Response:
    """Change the deployment's threshold (audited); a running deployment applies it at once.

    ``changed`` is false when the threshold already had that value (nothing is written).
    """
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    body = await read_json_body(request, ThresholdBody, max_bytes=MAX_BODY_BYTES)
    record, changed = await run_store(
        request.app[DEPLOYMENTS].change_threshold,
        deployment_id,
        body.threshold,
        actor=principal(request).actor,
        reason=body.reason.strip(),
    )
    (figures,) = await false_alerts_of(request, record)
    fields = _deployment_fields(request, record, figures)
    expected = figures["expected_per_1000"]
    return model_response(
        ThresholdChanged.model_validate(
            {**fields, "changed": changed, "expected_false_alerts_per_1000": expected}
        )
    )


async def _report(request: web.Request, form: str) -> Report:
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    report = withhold_breakdown(
        request, await run_store(request.app[DEPLOYMENTS].report, deployment_id)
    )
    # Who took the equality-monitoring breakdown away is on record, as the export is.
    shown = not report.get("demographics_withheld", False)
    await asyncio.to_thread(
        request.app[AUDIT].append,
        principal(request).actor,
        Action.REPORT_EXPORT,
        deployment_id,
        {"form": form, "demographics": shown},
    )
    return Report.model_validate(report)


@operation(
    "The deployment's published figures (audited as report.export).",
    responses={200: ok(Report, "The report."), 400: UNKNOWN_PARAMETER, 404: NO_DEPLOYMENT},
)
async def get_report(request: web.Request) -> web.Response:
    """The deployment's published figures as JSON (each export is audited)."""
    return model_response(await _report(request, "json"))


@operation(
    "The report as a printable page (audited as report.export).",
    responses={
        200: media("text/html", "The page."),
        400: UNKNOWN_PARAMETER,
        404: NO_DEPLOYMENT,
    },
)
async def get_report_page(request: web.Request) -> web.Response:
    """The deployment's published figures as a printable HTML page (audited)."""
    report = await _report(request, "html")
    return web.Response(
        text=render_report_page(report.model_dump(mode="json")),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


def _duration(start: str, end: str) -> str:
    span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    hours = span / timedelta(hours=1)
    return f"{hours:.1f} hours" if hours < 48 else f"{span.days} days"


REPORT_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #111; }
table { border-collapse: collapse; margin-bottom: 1.5em; min-width: 28em; }
th, td { border: 1px solid #999; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eee; width: 14em; }
footer { color: #555; font-size: 12px; }
@media print { body { margin: 0; } }
"""
"""The report page's style: the console allows it by hash, as the report opens under the
console's Content-Security-Policy when the console shows it (see ``console.html``)."""


def _distance(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def threshold_section(report: dict[str, Any]) -> str:
    """The report page's threshold history and the store's policy in force (HTML)."""
    e = html.escape
    policy = report["threshold_policy"]
    steps = (
        "".join(
            f"<tr><td>{e(step['at'])}</td><td>{e(step['change'])}</td>"
            f"<td>{_distance(step['from'])}</td><td>{_distance(step['to'])}</td>"
            f"<td>{e(step['by'])}</td><td>{e(step['reason'] or '')}</td></tr>"
            for step in report["threshold_history"]
        )
        or "<tr><td colspan=6>No threshold recorded in the audit log.</td></tr>"
    )
    return f"""<h2>Threshold history</h2>
<table id="threshold-history"><tr><th>At</th><th>Change</th><th>From</th><th>To</th>
<th>By</th><th>Reason</th></tr>{steps}</table>
<table id="threshold-policy">
<tr><th>Policy: deployment max</th><td>{_distance(policy["deployment_max"])}</td></tr>
<tr><th>Policy: entry max</th><td>{_distance(policy["entry_max"])}</td></tr>
<tr><th>Policy origin</th><td>{e(policy["origin"])}</td></tr></table>"""


def freshness_section(report: dict[str, Any]) -> str:
    """The report page's watchlist freshness: the limit and the entries stale now."""
    e = html.escape
    limit = report.get("watchlist_max_age_h")
    watchlist = report["watchlist"]
    stale_ids = watchlist.get("stale_entries") or []
    rows = [
        (
            "Longest time since approval",
            "no limit" if limit is None else f"{limit:g} hours",
        ),
        ("Stale entries (not searched)", f"{watchlist.get('stale', 0):,}"),
        ("Stale entry ids", ", ".join(stale_ids) or "none"),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    return f'<h2>Watchlist freshness</h2>\n<table id="freshness">{table}</table>'


def _per_1000(value: float | None, reason: str | None) -> str:
    return f"n/a ({reason})" if value is None else f"{value:g} per 1,000"


def false_alerts_section(figures: dict[str, Any]) -> str:
    """The report page's expected-beside-observed false alerts: a heading and a table."""
    e = html.escape
    expected = _per_1000(figures["expected_per_1000"], figures["expected_reason"])
    if figures["expected_upper_per_1000"] is not None:
        expected += f" (95 % upper bound {figures['expected_upper_per_1000']:g})"
    calibration = figures["calibration"]
    source = (
        "none"
        if calibration is None
        else f"{calibration['model']} {calibration['model_version']}, "
        f"{calibration['created_at']}: {calibration['gallery_identities']:,} identities, "
        f"{calibration['non_mated_probes']:,} non-mated probes, "
        f"{calibration['non_mated_comparisons']:,} comparisons"
    )
    rows = [
        ("Watchlist searched", f"{figures['watchlist_size']:,} entries"),
        ("Threshold", f"{figures['threshold']:g}"),
        ("Expected, per passer-by not on the watchlist", expected),
        (
            "Observed, per person seen (face track)",
            _per_1000(figures["observed_per_1000"], figures["observed_reason"]),
        ),
        (
            "Observed, per face seen",
            _per_1000(figures["observed_per_1000_faces"], "no faces seen"),
        ),
        ("Calibration", source),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f'<h2>Expected and observed false alerts</h2>\n<table id="false-alerts">{table}</table>'


def render_report_page(report: dict[str, Any]) -> str:
    """The report as a self-contained page (no scripts, no external resources)."""
    e = html.escape
    alerts, watchlist = report["alerts"], report["watchlist"]
    rate = report["false_alert_rate"]
    if rate is None:
        rate_text = "n/a (no faces seen)"
    else:
        rate_text = f"1 in {round(1 / rate):,}" if rate else "0"
    rows = [
        ("Deployment", report["deployment_id"]),
        ("State", report["state"]),
        ("Location", report["location"]),
        ("Purpose", report["purpose"]),
        ("Authorised by", report["authorised_by"]),
        ("Impact assessment", report["impact_assessment_ref"] or "not given"),
        ("Window start", report["starts_at"]),
        ("Window end", report["ends_at"]),
        ("Length", _duration(report["starts_at"], report["ends_at"])),
        ("Closed", report["closed_at"] or "not yet"),
        ("Threshold (distance)", f"{report['threshold']:g}"),
        ("Watchlist size", f"{watchlist['size']:,}"),
        ("Faces seen", f"{report['faces_seen']:,}"),
        ("People seen (face tracks)", f"{report['tracks_seen']:,}"),
        ("Alerts", f"{alerts['total']:,}"),
        ("Confirmed alerts", f"{alerts['confirmed']:,}"),
        ("False alerts", f"{alerts['false']:,}"),
        ("Unsure", f"{alerts['unsure']:,}"),
        ("Not adjudicated", f"{alerts['not_adjudicated']:,}"),
        ("False alert rate", rate_text),
    ]
    outcome_rows = (
        "".join(
            f"<tr><th>{e(name.replace('_', ' '))}</th><td>{count:,}</td></tr>"
            for name, count in report["outcomes"].items()
        )
        or "<tr><td colspan=2>No confirmed alerts.</td></tr>"
    )
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    test_subjects = test_subjects_section(report)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Deployment report: {e(report["deployment_id"])}</title>
<style>{REPORT_STYLE}</style></head>
<body>
<h1>Live facial recognition deployment report</h1>
<table id="figures">{table}</table>
<h2>Outcomes of confirmed alerts</h2>
<table id="outcomes">{outcome_rows}</table>
{render_breakdown(report)}
{threshold_section(report)}
{freshness_section(report)}
{false_alerts_section(report["false_alerts"])}
{test_subjects}
<footer>Generated {e(report["generated_at"])}. The watchlist's images and embeddings are
destroyed when the deployment closes; this report, the alerts under their retention and the
audit trail remain.</footer>
</body></html>
"""
