"""``GET /v1/audit`` (the log, page by page) and ``GET /v1/audit/verify`` (the chain check).

Entries come oldest first with everything needed to recompute the chain outside the API:
``at_unix`` (the exact stored time), ``details`` (re-encoded with
:func:`lfr_actors.store.audit.canonical_details`, it gives back the stored text),
``prev_hash`` and ``hash``. Each verification through the API is itself audited.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from lfr_actors.alerts import iso_utc
from lfr_actors.api.auth import principal
from lfr_actors.api.common import AUDIT, ProblemError
from lfr_actors.store.audit import Action, AuditEntry

MAX_PAGE = 500
DEFAULT_PAGE = 100
MAX_SUBJECT_CHARS = 200
AUDIT_LOG_SUBJECT = "audit_log"
"""The subject of ``audit.verify`` entries."""


def render_entry(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as the API shows it."""
    return {
        "seq": entry.seq,
        "at": iso_utc(entry.at),
        "at_unix": entry.at,
        "actor": entry.actor,
        "actor_token": entry.actor_token,
        "action": entry.action,
        "subject": entry.subject,
        "details": entry.details_map(),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


async def list_audit(request: web.Request) -> web.Response:
    """Audit entries after ``after`` (a seq), oldest first, filtered by action or subject."""
    after, limit, action, subject = _parse(request.query)
    page = await asyncio.to_thread(
        request.app[AUDIT].page, after_seq=after, limit=limit, action=action, subject=subject
    )
    return web.json_response(
        {
            "entries": [render_entry(e) for e in page.entries],
            "next_after": page.next_after,
        }
    )


async def verify_audit(request: web.Request) -> web.Response:
    """Recompute the hash chain; 200 either way, with ``intact`` and where it breaks."""
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
    return web.json_response(check.as_dict())


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
