"""``GET /v1/audit`` (the log, page by page) and ``GET /v1/audit/verify`` (the chain check).

Entries come oldest first with everything needed to recompute the chain outside the API:
``at_unix`` (the exact stored time), ``details`` (re-encoded with
:func:`lfr_actors.store.audit.canonical_details`, it gives back the stored text),
``prev_hash`` and ``hash``. Each verification through the API is itself audited.
"""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web
from multidict import MultiMapping

from lfr_actors.api.auth import principal, require_unscoped, scope_of
from lfr_actors.api.bodies import model_response
from lfr_actors.api.keys import AUDIT
from lfr_actors.api.openapi import PageLimits, limit_param, ok, operation, problem, query
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import AuditEntry as AuditEntryModel
from lfr_actors.api.schemas import AuditHead, AuditPage, AuditVerification
from lfr_actors.store.audit import Action, AuditEntry

MAX_PAGE = 500
DEFAULT_PAGE = 100
MAX_SUBJECT_CHARS = 200
AUDIT_LOG_SUBJECT = "audit_log"
"""The subject of ``audit.verify`` entries."""


def entry_body(entry: AuditEntry) -> AuditEntryModel:
    """An audit entry as the API shows it: its time both as text and as stored."""
    fields = {**dataclasses.asdict(entry), "at_unix": entry.at, "details": entry.details_map()}
    return AuditEntryModel.model_validate(fields)


@operation(
    "Audit entries after a seq, oldest first, with their hash chain (a scoped token: only "
    "its deployments' entries).",
    parameters=[
        query("after", {"type": "integer", "minimum": 0}, "Entries after this seq."),
        limit_param(PageLimits(DEFAULT_PAGE, MAX_PAGE)),
        query(
            "action",
            {"type": "string", "enum": sorted(str(a) for a in Action)},
            "Only entries of this action.",
        ),
        query(
            "subject",
            {"type": "string", "maxLength": MAX_SUBJECT_CHARS},
            "Only entries about this subject.",
        ),
    ],
    responses={
        200: ok(AuditPage, "A page of entries."),
        400: problem("Invalid query parameters (all listed in invalid_params)."),
    },
)
async def list_audit(request: web.Request) -> web.Response:
    """Audit entries after ``after`` (a seq), oldest first, filtered by action or subject.

    A token limited to deployments sees only the entries that belong to them (see
    :func:`lfr_actors.store.audit.scope_condition`): never a store-wide one.
    """
    after, limit, action, subject = _parse(request.query)
    page = await asyncio.to_thread(
        request.app[AUDIT].page,
        after_seq=after,
        limit=limit,
        action=action,
        subject=subject,
        deployments=scope_of(request),
    )
    return model_response(
        AuditPage(entries=[entry_body(e) for e in page.entries], next_after=page.next_after)
    )


@operation(
    "Recompute the audit hash chain (the check is itself audited).",
    responses={
        200: ok(AuditVerification, "Intact or not."),
        403: problem("The token is limited to deployments; the chain is the whole store's."),
    },
)
async def verify_audit(request: web.Request) -> web.Response:
    """Recompute the hash chain; 200 either way, with ``intact`` and where it breaks.

    Refused (403) to a token limited to deployments: the chain runs through every
    deployment's entries, and its verdict and head are about all of them.
    """
    require_unscoped(request, "Verifying the audit chain")
    audit = request.app[AUDIT]
    check = await asyncio.to_thread(audit.verify)
    await asyncio.to_thread(
        audit.append,
        principal(request).actor,
        Action.AUDIT_VERIFY,
        AUDIT_LOG_SUBJECT,
        {
            "entries": check.entries,
            "intact": check.intact,
            "head_seq": check.head_seq,
            "bad_seq": check.bad_seq,
        },
    )
    return model_response(
        AuditVerification(
            entries=check.entries,
            intact=check.intact,
            head=AuditHead(seq=check.head_seq, hash=check.head_hash),
            bad_seq=check.bad_seq,
            reason=check.reason,
        )
    )


def _parse(query: MultiMapping[str]) -> tuple[int, int, str | None, str | None]:
    known = {"after", "limit", "action", "subject"}
    invalid: list[dict[str, str]] = []

    def bad(name: str, reason: str) -> None:
        invalid.append({"name": name, "reason": reason})

    for name in sorted(set(query)):
        if name not in known:
            bad(name, "unknown parameter; known: " + ", ".join(sorted(known)))
        elif len(query.getall(name)) > 1:
            bad(name, "given more than once")
    after, limit = 0, DEFAULT_PAGE
    for name, low, high in (("after", 0, None), ("limit", 1, MAX_PAGE)):
        if name not in query:
            continue
        raw = query[name]
        value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else -1
        if value < low or (high is not None and value > high):
            bad(name, f"must be a whole number {low}..{high}" if high else f"must be ≥ {low}")
        elif name == "after":
            after = value
        else:
            limit = value
    action = query.get("action") or None
    actions = sorted(str(a) for a in Action)
    if action is not None and action not in actions:
        bad("action", "unknown action; known: " + ", ".join(actions))
    subject = query.get("subject") or None
    if subject is not None and len(subject) > MAX_SUBJECT_CHARS:
        bad("subject", f"at most {MAX_SUBJECT_CHARS} characters")
    if invalid:
        raise ProblemError(400, "The query has invalid parameters.", invalid_params=invalid)
    return after, limit, action, subject
