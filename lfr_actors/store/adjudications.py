"""Adjudications: an officer's decision on an alert, its outcome, and audited corrections.

An alert is never actioned automatically (DESIGN.md §1): a trained officer looks at it and
records a decision (match confirmed, not a match, unsure) and, for a confirmed match, what
happened (the outcome). The first decision moves the alert from ``open`` to
``adjudicated``. A later decision that differs is refused unless it is an explicit
correction with a reason; the same decision again (a retried request) returns the stored
one. Rows are never changed: a correction is a new row that supersedes the previous one,
so the history of an alert is its rows in order, and each is in the audit log.

A decision, the alert's new status and the audit entry are one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lfr_actors.store.alerts import record_event
from lfr_actors.store.audit import Action, Actor, append_entry
from lfr_actors.store.db import Database, StoreError
from lfr_actors.store.monitoring import demographics_problems, read_categories, recorded_only

ADJUDICATED = "adjudicated"
"""An alert's ``status`` once an officer has decided on it."""

MAX_NOTE_CHARS = 2000
MAX_REASON_CHARS = 500

_COLUMNS = (
    "id, alert_id, decision, outcome, note, officer, officer_token, decided_at, correction, "
    "correction_reason, supersedes, demographics"
)


class Decision(StrEnum):
    """What the officer concluded, comparing the live face with the watchlist image."""

    MATCH_CONFIRMED = "match_confirmed"
    NOT_A_MATCH = "not_a_match"
    UNSURE = "unsure"


class Outcome(StrEnum):
    """What happened after the decision (the categories the Met publishes)."""

    NOT_ENGAGED = "not_engaged"
    ENGAGED_NO_FURTHER_ACTION = "engaged_no_further_action"
    CONDITION_CHECK = "condition_check"
    ARREST = "arrest"
    OTHER = "other"


class UnknownAlertError(StoreError):
    """No alert has the id given."""


class InvalidDemographicsError(StoreError):
    """A decision records a monitoring category or value the store's lists do not allow.

    ``problems`` lists each as (field path, reason naming the allowed values).
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))
        self.problems = problems


class AdjudicationConflictError(StoreError):
    """The decision contradicts the stored one (or corrects a decision that does not exist).

    ``current`` is the decision in force, or None when there is none.
    """

    def __init__(self, message: str, current: AdjudicationRecord | None) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class DecisionRequest:
    """A decision as an officer submits it; the officer and the time come from the server."""

    decision: Decision
    outcome: Outcome | None = None
    note: str | None = None
    correction: bool = False
    correction_reason: str | None = None
    demographics: Mapping[str, str] | None = None
    """Equality-monitoring values by category (:mod:`lfr_actors.store.monitoring`)."""

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field rules broken, as (field, reason); empty when the request is whole."""
        found = []
        if self.decision is Decision.MATCH_CONFIRMED and self.outcome is None:
            found.append(
                ("outcome", "required when decision is match_confirmed: say what happened")
            )
        if self.correction and not (self.correction_reason or "").strip():
            found.append(("correction_reason", "required when correction is true"))
        if not self.correction and self.correction_reason is not None:
            found.append(("correction_reason", "only allowed with correction: true"))
        if self.decision is Decision.UNSURE and self.demographics is not None:
            found.append(
                (
                    "demographics",
                    "only recorded on a decision of not_a_match or match_confirmed, not unsure",
                )
            )
        return found

    def same_as(self, record: AdjudicationRecord) -> bool:
        """Whether this request asks for exactly the decision already recorded."""
        return (
            self.decision,
            self.outcome,
            self.note or None,
            recorded_only(self.demographics),
        ) == (record.decision, record.outcome, record.note, record.demographics)


@dataclass(frozen=True)
class AdjudicationRecord:
    """One stored decision; ``supersedes`` is the id of the decision it corrected."""

    id: int
    alert_id: str
    decision: Decision
    outcome: Outcome | None
    note: str | None
    officer: str
    officer_token: str | None
    decided_at: float
    correction: bool
    correction_reason: str | None
    supersedes: int | None
    demographics: dict[str, str] | None = None
    """The monitoring categories recorded (category -> value), None when none were."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (Unix seconds)."""
        return {
            "id": self.id,
            "alert_id": self.alert_id,
            "decision": str(self.decision),
            "outcome": None if self.outcome is None else str(self.outcome),
            "note": self.note,
            "officer": self.officer,
            "decided_at": self.decided_at,
            "correction": self.correction,
            "correction_reason": self.correction_reason,
            "supersedes": self.supersedes,
            "demographics": self.demographics,
        }


@dataclass(frozen=True)
class Decided:
    """The decision in force after a request; ``created`` is False when it was a repeat."""

    record: AdjudicationRecord
    created: bool


class Adjudications:
    """The adjudications of one store file (needs a writer :class:`Database` to decide)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def decide(self, alert_id: str, request: DecisionRequest, *, officer: Actor) -> Decided:
        """Record ``officer``'s decision on an alert, or return the identical stored one.

        Raises :class:`UnknownAlertError` for an unknown alert, ValueError for a request
        that breaks :meth:`DecisionRequest.problems`, :class:`InvalidDemographicsError`
        for monitoring values the store's lists (read in the same transaction) refuse, and
        :class:`AdjudicationConflictError` for a decision that contradicts the one in force
        without being a correction (or a correction with nothing to correct). Nothing is
        written when it raises.
        """
        problems = request.problems()
        if problems:
            raise ValueError("; ".join(f"{name}: {reason}" for name, reason in problems))
        note = request.note or None
        demographics = recorded_only(request.demographics)
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
                raise UnknownAlertError(f"no alert with id {alert_id[:80]!r}")
            if request.demographics:
                refused = demographics_problems(
                    request.demographics, read_categories(conn).categories
                )
                if refused:
                    raise InvalidDemographicsError(refused)
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM adjudications WHERE alert_id = ? ORDER BY id DESC LIMIT 1",
                (alert_id,),
            ).fetchone()
            current = None if row is None else _record(row)
            if current is not None and request.same_as(current):
                return Decided(current, created=False)
            if current is None and request.correction:
                raise AdjudicationConflictError(
                    f"alert {alert_id!r} has no decision to correct; send it without correction",
                    None,
                )
            if current is not None and not request.correction:
                raise AdjudicationConflictError(
                    f"alert {alert_id!r} was already adjudicated {_describe(current)} by "
                    f"{current.officer}; to change it, send correction: true with a "
                    "correction_reason",
                    current,
                )
            now = self.clock()
            reason = request.correction_reason.strip() if request.correction_reason else None
            adjudication_id = conn.execute(
                f"INSERT INTO adjudications ({_COLUMNS}) "
                "VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert_id,
                    str(request.decision),
                    None if request.outcome is None else str(request.outcome),
                    note,
                    officer.name,
                    officer.token_id,
                    now,
                    int(request.correction),
                    reason,
                    None if current is None else current.id,
                    None if demographics is None else json.dumps(demographics, sort_keys=True),
                ),
            ).lastrowid
            assert adjudication_id is not None  # an INSERT into a rowid table always sets it
            conn.execute(
                "UPDATE alerts SET status = ?, updated_at = ? WHERE id = ?",
                (ADJUDICATED, now, alert_id),
            )
            # Live clients (the console's queue) learn of the decision from the event log.
            record_event(conn, alert_id, ADJUDICATED, now)
            record = AdjudicationRecord(
                id=int(adjudication_id),
                alert_id=alert_id,
                decision=request.decision,
                outcome=request.outcome,
                note=note,
                officer=officer.name,
                officer_token=officer.token_id,
                decided_at=now,
                correction=request.correction,
                correction_reason=reason,
                supersedes=None if current is None else current.id,
                demographics=demographics,
            )
            details: dict[str, Any] = {
                "adjudication_id": record.id,
                "decision": str(record.decision),
                "outcome": None if record.outcome is None else str(record.outcome),
                "has_note": note is not None,
            }
            if demographics is not None:
                details["demographics"] = demographics
            if current is not None:
                details |= {
                    "supersedes": current.id,
                    "previous_decision": str(current.decision),
                    "previous_outcome": None if current.outcome is None else str(current.outcome),
                    "correction_reason": reason,
                }
                if current.demographics is not None:
                    details["previous_demographics"] = current.demographics
            action = Action.ALERT_CORRECT if request.correction else Action.ALERT_ADJUDICATE
            append_entry(conn, officer, action, alert_id, details, at=now)
        return Decided(record, created=True)

    def history(self, alert_id: str) -> list[AdjudicationRecord]:
        """Every decision on an alert, oldest first (the last one is in force)."""
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {_COLUMNS} FROM adjudications WHERE alert_id = ? ORDER BY id",
                (alert_id,),
            ).fetchall()
        return [_record(row) for row in rows]


def _describe(record: AdjudicationRecord) -> str:
    outcome = "" if record.outcome is None else f" with outcome {record.outcome}"
    return f"as {record.decision}{outcome}"


def _record(row: sqlite3.Row) -> AdjudicationRecord:
    return AdjudicationRecord(
        id=int(row["id"]),
        alert_id=row["alert_id"],
        decision=Decision(row["decision"]),
        outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
        note=row["note"],
        officer=row["officer"],
        officer_token=row["officer_token"],
        decided_at=float(row["decided_at"]),
        correction=bool(row["correction"]),
        correction_reason=row["correction_reason"],
        supersedes=None if row["supersedes"] is None else int(row["supersedes"]),
        demographics=None if row["demographics"] is None else json.loads(row["demographics"]),
    )
