"""The audit log: who did what, append-only and hash-chained (DESIGN.md §4, invariant 5).

Each entry records when (``at``, Unix seconds), who (``actor``: a token's name, and the
token's id, or ``system``), what (``action``, e.g. ``alert.adjudicate``), to what
(``subject``, e.g. an alert id) and ``details`` (a JSON object). Entries are numbered
1, 2, 3, … by ``seq``; each carries the hash of the one before (``prev_hash``; the first
carries :data:`GENESIS_HASH`) and its own ``hash``, a SHA-256 over a canonical encoding of
every other column (:func:`entry_hash`). Editing, removing, inserting or reordering rows
therefore breaks the chain, and :meth:`AuditLog.verify` says where.

Defence in depth: triggers make SQLite refuse UPDATE and DELETE on the table, so only a
deliberate schema change can alter the log; the chain shows whether one did. Removing the
newest entries leaves no gap, so verification also compares the last seq with the highest
seq SQLite ever handed out (kept in ``sqlite_sequence``), and reports the head hash so it
can be recorded elsewhere.

Entries are appended inside the transaction of the change they record (:func:`append_entry`),
so a change and its audit entry are committed together or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lfr_actors.store.db import Database
from lfr_actors.store.filters import given

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""

HASH_DOMAIN = "lfr-audit-v1"
"""Tags the hashed encoding, so a change to it can never be confused with the old one."""

MAX_PAGE = 1000

_COLUMNS = "seq, at, actor, actor_token, action, subject, details, prev_hash, hash"


class Action(StrEnum):
    """What an audit entry records; later features add their actions here."""

    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    ALERT_VIEW = "alert.view"
    ALERT_ADJUDICATE = "alert.adjudicate"
    ALERT_CORRECT = "alert.correct"
    AUDIT_VERIFY = "audit.verify"
    ALERT_HOLD = "alert.hold"
    ALERT_RELEASE = "alert.release"
    RETENTION_PURGE = "retention.purge"
    DEPLOYMENT_CREATE = "deployment.create"
    DEPLOYMENT_CLOSE = "deployment.close"
    THRESHOLD_CHANGE = "deployment.threshold"
    ENTRY_CREATE = "entry.create"
    ENTRY_APPROVE = "entry.approve"
    ENTRY_DELETE = "entry.delete"
    ENTRY_VIEW = "entry.view"
    REPORT_EXPORT = "report.export"
    POLICY_CHANGE = "policy.threshold"
    CATEGORIES_CHANGE = "policy.monitoring_categories"
    CALIBRATION_SET = "deployment.calibration"
    TEST_PASS_RECORD = "test_subject.pass"


@dataclass(frozen=True)
class Actor:
    """Who acts: a token's holder (its name and id), or the system itself."""

    name: str
    token_id: str | None = None

    def __str__(self) -> str:
        return self.name if self.token_id is None else f"{self.name} (token {self.token_id})"


SYSTEM = Actor("system")
"""The deployment itself (e.g. issuing the local CLI's token at start-up)."""


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log, as stored."""

    seq: int
    at: float
    actor: str
    actor_token: str | None
    action: str
    subject: str
    details: str
    prev_hash: str
    hash: str

    def details_map(self) -> dict[str, Any]:
        """``details`` parsed (it is stored as canonical JSON text)."""
        parsed: dict[str, Any] = json.loads(self.details)
        return parsed

    def expected_hash(self) -> str:
        """The hash this entry's contents should have."""
        return entry_hash(self)


@dataclass(frozen=True)
class AuditPage:
    """Entries in seq order; pass ``next_after`` as ``after_seq`` for the next page."""

    entries: list[AuditEntry]
    next_after: int | None


@dataclass(frozen=True)
class ChainCheck:
    """The result of recomputing the chain.

    ``entries`` is how many rows were read; ``head_seq``/``head_hash`` the last intact
    entry (0 and :data:`GENESIS_HASH` when none). When the chain is broken, ``bad_seq`` is
    the first seq that fails and ``reason`` says why.
    """

    entries: int
    head_seq: int
    head_hash: str
    bad_seq: int | None = None
    reason: str | None = None

    @property
    def intact(self) -> bool:
        """Whether every entry is present, unchanged and in order."""
        return self.bad_seq is None

    def summary(self) -> str:
        """One line for a person: ``N entries, chain intact`` or where and why it breaks."""
        if self.intact:
            return (
                f"{self.entries} entries, chain intact "
                f"(head seq {self.head_seq}, hash {self.head_hash})"
            )
        return f"audit chain broken at seq {self.bad_seq}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map."""
        return {
            "entries": self.entries,
            "intact": self.intact,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "bad_seq": self.bad_seq,
            "reason": self.reason,
        }


def canonical_details(details: Mapping[str, Any] | None) -> str:
    """``details`` as the canonical JSON text that is stored and hashed."""
    return json.dumps(
        dict(details or {}),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def _hashed_fields(entry: AuditEntry) -> tuple[Any, ...]:
    """Every column of ``entry`` but ``hash``, in ``_COLUMNS`` order: what its hash covers."""
    return (
        entry.seq,
        entry.at,
        entry.actor,
        entry.actor_token,
        entry.action,
        entry.subject,
        entry.details,
        entry.prev_hash,
    )


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 (hex) over a canonical encoding of every column of ``entry`` but ``hash``.

    The encoding is a compact JSON array, which separates the fields unambiguously
    (no value can pass for a separator); floats are written as Python's shortest
    round-tripping repr, so the value read back from SQLite encodes the same way.
    """
    encoded = json.dumps(
        [HASH_DOMAIN, *_hashed_fields(entry)],
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def append_entry(
    conn: sqlite3.Connection,
    actor: Actor,
    action: Action,
    subject: str,
    details: Mapping[str, Any] | None = None,
    *,
    at: float,
) -> AuditEntry:
    """Append one entry inside the caller's write transaction and return it.

    The caller must hold a write transaction (``BEGIN IMMEDIATE``), which serialises
    appends across processes: the entry read as the last is still the last at insert.
    """
    if not conn.in_transaction:
        raise RuntimeError("append_entry needs the caller's write transaction")
    last = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (1, GENESIS_HASH) if last is None else (int(last[0]) + 1, str(last[1]))
    draft = AuditEntry(
        seq=seq,
        at=float(at),
        actor=actor.name,
        actor_token=actor.token_id,
        action=str(action),
        subject=subject,
        details=canonical_details(details),
        prev_hash=prev_hash,
        hash="",
    )
    entry = dataclasses.replace(draft, hash=entry_hash(draft))
    conn.execute(
        f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*_hashed_fields(entry), entry.hash),
    )
    return entry


def check_chain(entries: Iterable[AuditEntry], highest_seq_issued: int = 0) -> ChainCheck:
    """Recompute the chain over ``entries`` (in stored seq order); stop at the first break.

    ``highest_seq_issued`` is the highest seq the database ever handed out; a last entry
    below it means the newest entries were removed.
    """
    count = 0
    head_seq, head_hash = 0, GENESIS_HASH
    for entry in entries:
        expected_seq = head_seq + 1
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                gap = (
                    f"seq {expected_seq}"
                    if entry.seq == expected_seq + 1
                    else f"seq {expected_seq}..{entry.seq - 1}"
                )
                reason = f"{gap} missing: entries were removed (the next present is {entry.seq})"
            else:
                reason = f"seq {entry.seq} out of order after seq {head_seq}"
            return ChainCheck(count, head_seq, head_hash, expected_seq, reason)
        if entry.prev_hash != head_hash:
            return ChainCheck(
                count,
                head_seq,
                head_hash,
                entry.seq,
                f"prev_hash does not match the hash of seq {head_seq}: entries were "
                "reordered or replaced, or an earlier entry was rewritten with a new hash",
            )
        if entry.hash != entry.expected_hash():
            return ChainCheck(
                count,
                head_seq,
                head_hash,
                entry.seq,
                "entry was edited: its hash does not match its contents",
            )
        count += 1
        head_seq, head_hash = entry.seq, entry.hash
    if highest_seq_issued > head_seq:
        return ChainCheck(
            count,
            head_seq,
            head_hash,
            head_seq + 1,
            f"entries after seq {head_seq} were removed (the log had reached seq "
            f"{highest_seq_issued})",
        )
    return ChainCheck(count, head_seq, head_hash)


ALERT_ACTIONS = frozenset(
    {
        Action.ALERT_VIEW,
        Action.ALERT_ADJUDICATE,
        Action.ALERT_CORRECT,
        Action.ALERT_HOLD,
        Action.ALERT_RELEASE,
    }
)
"""Actions whose subject is an alert id: they belong to the alert's deployment."""
STORE_WIDE_ACTIONS = frozenset(
    {
        Action.TOKEN_CREATE,
        Action.TOKEN_REVOKE,
        Action.AUDIT_VERIFY,
        Action.RETENTION_PURGE,
        Action.POLICY_CHANGE,
        Action.CATEGORIES_CHANGE,
    }
)
"""Actions about the whole store (tokens, the chain, retention, policy): no deployment's."""


def scope_condition(deployments: Collection[str]) -> tuple[str, list[Any]]:
    """An SQL condition keeping the entries that belong to one of ``deployments``.

    An entry belongs to a deployment when its action is about an alert of that
    deployment (:data:`ALERT_ACTIONS`, the subject is the alert's id), or, for any other
    action but the store-wide ones (:data:`STORE_WIDE_ACTIONS`), when its subject is the
    deployment's id or starts with it and a slash (``deployment/entry``). Deployment ids
    hold no slash, so the part before the first one is the deployment exactly. The action
    decides which rule applies, so an alert or token id that happens to equal a
    deployment's id is never taken for it. An action added later whose subject is an
    alert is therefore hidden from scoped readers until it is listed here: the rule
    errs towards showing less.
    """
    scope = sorted(deployments)
    ids = ", ".join("?" * len(scope))
    alert_actions = sorted(str(a) for a in ALERT_ACTIONS)
    other = sorted(str(a) for a in ALERT_ACTIONS | STORE_WIDE_ACTIONS)
    marks = ", ".join("?" * len(alert_actions))
    not_marks = ", ".join("?" * len(other))
    condition = (
        f"((action IN ({marks}) AND subject IN "
        f"(SELECT id FROM alerts WHERE deployment_id IN ({ids}))) "
        f"OR (action NOT IN ({not_marks}) AND (subject IN ({ids}) OR "
        f"(instr(subject, '/') > 0 AND substr(subject, 1, instr(subject, '/') - 1) IN ({ids})))))"
    )
    return condition, [*alert_actions, *scope, *other, *scope, *scope]


class AuditLog:
    """The audit log of one store file: append, page, verify.

    Writes need a writer :class:`Database`; paging and verifying work on a read-only one.
    """

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def append(
        self,
        actor: Actor,
        action: Action,
        subject: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry in its own transaction (for actions that change nothing else)."""
        with self.db.transaction() as conn:
            return append_entry(conn, actor, action, subject, details, at=self.clock())

    def page(
        self,
        *,
        after_seq: int = 0,
        limit: int = 100,
        action: str | None = None,
        subject: str | None = None,
        deployments: Collection[str] | None = None,
    ) -> AuditPage:
        """Entries with seq above ``after_seq``, oldest first, optionally filtered.

        ``deployments`` keeps only the entries that belong to those deployments
        (:func:`scope_condition`; a scoped token's view).
        """
        if isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
            raise ValueError(
                f"Got {limit!r} for limit. limit must be a whole number 1..{MAX_PAGE}."
            )
        conditions, values = given(("action = ?", action), ("subject = ?", subject))
        where, params = ["seq > ?", *conditions], [after_seq, *values]
        if deployments is not None:
            condition, scope_params = scope_condition(deployments)
            where.append(condition)
            params.extend(scope_params)
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} "
                "ORDER BY seq LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
        entries = [_entry(row) for row in rows[:limit]]
        return AuditPage(entries, entries[-1].seq if len(rows) > limit else None)

    def verify(self) -> ChainCheck:
        """Recompute the whole chain from one consistent read of the table."""
        with self.db.snapshot() as conn:
            issued = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'"
            ).fetchone()
            rows = conn.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq")
            return check_chain((_entry(row) for row in rows), int(issued[0]) if issued else 0)


def _entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        seq=int(row["seq"]),
        at=float(row["at"]),
        actor=row["actor"],
        actor_token=row["actor_token"],
        action=row["action"],
        subject=row["subject"],
        details=row["details"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
