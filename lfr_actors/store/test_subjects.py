"""Test subjects' passes: "volunteer E walked past camera X at time T", and what it proves.

A force checks a deployment live by having consenting volunteers, enrolled as test
subjects (``watchlist_entries.test_subject``), walk past its cameras. Each walk past is
recorded here as a *pass*, with who recorded it, in one transaction with its audit entry
(``test_subject.pass``). A pass is *alerted* when an alert of that entry has a sighting on
that camera from :data:`PASS_BEFORE_S` before the recorded time to :data:`PASS_AFTER_S`
after it; the report gives passes alerted / passes recorded, the deployment's live
true-positive rate, and the time from each pass to its alert.

A pass is refused, storing and auditing nothing, when the deployment or entry is unknown
(:class:`~lfr_actors.store.records.UnknownDeploymentError`, ``UnknownEntryError``), the
entry is not a test subject (:class:`NotATestSubjectError`), the time is in the future
(:class:`PassInFutureError`), or the time is outside the deployment's authorised window,
the deployment is closed, or the entry was not being searched then (:class:`PassRefusedError`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lfr_actors.store.audit import Action, Actor, append_entry
from lfr_actors.store.db import Database, StoreError
from lfr_actors.store.records import require_deployment, require_entry
from lfr_actors.timefmt import iso_utc

PASS_BEFORE_S = 30.0
"""How long before a recorded pass an alert's sighting may be and still count for it: the
person recording the pass writes the time down a little after the volunteer walked by."""
PASS_AFTER_S = 120.0
"""How long after a recorded pass an alert's sighting may be and still count for it: the
face must be tracked and decided before a sighting is made, and the time noted may be early."""
FUTURE_SLACK_S = 5.0
"""How far ahead of the store's clock a pass time may be (clocks a few seconds apart)."""
MAX_NOTE = 500


class NotATestSubjectError(StoreError):
    """The entry named is a suspect, not a test subject: passes are for volunteers only."""


class PassInFutureError(StoreError):
    """The pass time is later than now."""


class PassRefusedError(StoreError):
    """The pass is outside the window, the deployment is closed, or the entry was inactive.

    The entry must have been active (approved and not deleted) at the pass time.
    """


@dataclass(frozen=True)
class TestPass:
    """One recorded pass, and whether (and how soon) an alert of it followed."""

    __test__ = False  # not a pytest test class

    id: int
    deployment_id: str
    entry_id: str
    camera_id: str
    passed_at: float
    note: str | None
    recorded_by: str
    recorded_at: float
    alert_id: str | None = None
    """The alert that saw the pass, or None while it is not alerted."""
    alerted_at: float | None = None
    """When the alert's first sighting on that camera within the tolerance was captured."""

    @property
    def alerted(self) -> bool:
        """Whether an alert of the entry saw the volunteer on that camera then."""
        return self.alert_id is not None

    @property
    def seconds_to_alert(self) -> float | None:
        """Seconds from the pass to its alert's sighting, or None while not alerted.

        Negative when the volunteer was sighted before the time noted.
        """
        return None if self.alerted_at is None else self.alerted_at - self.passed_at

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (Unix seconds)."""
        return {
            "id": self.id,
            "deployment_id": self.deployment_id,
            "entry_id": self.entry_id,
            "camera_id": self.camera_id,
            "passed_at": self.passed_at,
            "note": self.note,
            "recorded_by": self.recorded_by,
            "recorded_at": self.recorded_at,
            "alerted": self.alerted,
            "alert_id": self.alert_id,
            "alerted_at": self.alerted_at,
            "seconds_to_alert": self.seconds_to_alert,
        }


_PASS_COLUMNS = (
    "p.id, p.deployment_id, p.entry_id, p.camera_id, p.passed_at, p.note, p.recorded_by, "
    "p.recorded_at"
)
# The first sighting (of any alert of the pass's entry) on the pass's camera within the
# tolerance: the alert that saw the volunteer, and when.
_ALERTED = (
    "SELECT s.{column} FROM alert_sightings s JOIN alerts a ON a.id = s.alert_id "
    "WHERE a.deployment_id = p.deployment_id AND a.entry_id = p.entry_id "
    "AND s.camera_id = p.camera_id AND s.captured_at BETWEEN p.passed_at - ? AND p.passed_at + ? "
    "ORDER BY s.captured_at, s.alert_id LIMIT 1"
)


def read_passes(conn: Any, deployment_id: str, *, pass_id: int | None = None) -> list[TestPass]:
    """The deployment's passes (or the one ``pass_id``), in pass-time order, with alerts."""
    one = "" if pass_id is None else " AND p.id = ?"
    rows = conn.execute(
        f"SELECT {_PASS_COLUMNS}, "
        f"({_ALERTED.format(column='alert_id')}) AS alert_id, "
        f"({_ALERTED.format(column='captured_at')}) AS alerted_at "
        f"FROM test_subject_passes p WHERE p.deployment_id = ?{one} ORDER BY p.passed_at, p.id",
        (
            PASS_BEFORE_S,
            PASS_AFTER_S,
            PASS_BEFORE_S,
            PASS_AFTER_S,
            deployment_id,
            *(() if pass_id is None else (pass_id,)),
        ),
    ).fetchall()
    return [
        TestPass(
            id=int(row["id"]),
            deployment_id=row["deployment_id"],
            entry_id=row["entry_id"],
            camera_id=row["camera_id"],
            passed_at=float(row["passed_at"]),
            note=row["note"],
            recorded_by=row["recorded_by"],
            recorded_at=float(row["recorded_at"]),
            alert_id=row["alert_id"],
            alerted_at=None if row["alerted_at"] is None else float(row["alerted_at"]),
        )
        for row in rows
    ]


def test_subject_figures(conn: Any, deployment_id: str) -> dict[str, Any]:
    """The report's ``test_subjects`` figures, read through ``conn`` (the report's snapshot).

    ``entries``: test subjects ever on the watchlist; ``passes_recorded`` and
    ``passes_alerted``; ``true_positive_rate``: alerted / recorded (null before any pass);
    ``seconds_to_alert``: median and max over the alerted passes (null before any);
    ``alerts``: test subjects' alerts (counted apart from the suspects' figures).
    """
    entries = conn.execute(
        "SELECT COUNT(*) FROM watchlist_entries WHERE deployment_id = ? AND test_subject = 1",
        (deployment_id,),
    ).fetchone()[0]
    alerts = conn.execute(
        "SELECT COUNT(*) FROM alerts WHERE deployment_id = ? AND test_subject = 1",
        (deployment_id,),
    ).fetchone()[0]
    passes = read_passes(conn, deployment_id)
    delays = [p.seconds_to_alert for p in passes if p.seconds_to_alert is not None]
    alerted = len(delays)
    return {
        "entries": int(entries),
        "alerts": int(alerts),
        "passes_recorded": len(passes),
        "passes_alerted": alerted,
        "true_positive_rate": alerted / len(passes) if passes else None,
        "seconds_to_alert": {
            "median": statistics.median(delays) if delays else None,
            "max": max(delays) if delays else None,
        },
        "tolerance_s": {"before": PASS_BEFORE_S, "after": PASS_AFTER_S},
    }


class TestSubjectPasses:
    """Records and lists test subjects' passes in one store file (a writer to record)."""

    __test__ = False  # not a pytest test class

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def record(
        self,
        deployment_id: str,
        entry_id: str,
        camera_id: str,
        passed_at: float,
        *,
        actor: Actor,
        note: str | None = None,
    ) -> TestPass:
        """Record one pass and its audit entry in one transaction; refusals store nothing."""
        with self.db.transaction() as conn:
            record = require_deployment(conn, deployment_id)
            entry = require_entry(conn, deployment_id, entry_id)
            if not entry.test_subject:
                raise NotATestSubjectError(
                    f"entry {entry_id!r} is not a test subject; passes are recorded only for "
                    "test subjects (volunteers enrolled with test_subject and a consent_ref)"
                )
            now = self.clock()
            if passed_at > now + FUTURE_SLACK_S:
                raise PassInFutureError(
                    f"the pass time {iso_utc(passed_at, 'seconds')} is in the future "
                    f"(now is {iso_utc(now, 'seconds')})"
                )
            if record.closed_at is not None:
                raise PassRefusedError(
                    f"deployment {deployment_id!r} was closed "
                    f"{iso_utc(record.closed_at, 'seconds')}; its report is final and takes no "
                    "more passes"
                )
            if not record.starts_at <= passed_at <= record.ends_at:
                raise PassRefusedError(
                    f"the pass time {iso_utc(passed_at, 'seconds')} is outside deployment "
                    f"{deployment_id!r}'s authorised window, "
                    f"{iso_utc(record.starts_at, 'seconds')} to "
                    f"{iso_utc(record.ends_at, 'seconds')}"
                )
            searched_from = entry.approved_at
            if (
                searched_from is None
                or passed_at < searched_from
                or (entry.removed_at is not None and passed_at >= entry.removed_at)
            ):
                raise PassRefusedError(
                    f"entry {entry_id!r} was not being searched at "
                    f"{iso_utc(passed_at, 'seconds')} (it is {entry.state}"
                    + (
                        ""
                        if searched_from is None
                        else f", approved {iso_utc(searched_from, 'seconds')}"
                    )
                    + "); a pass counts only while the entry is active"
                )
            pass_id = conn.execute(
                "INSERT INTO test_subject_passes (deployment_id, entry_id, camera_id, passed_at, "
                "note, recorded_by, recorded_by_token, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    deployment_id,
                    entry_id,
                    camera_id,
                    passed_at,
                    note,
                    actor.name,
                    actor.token_id,
                    now,
                ),
            ).lastrowid
            assert pass_id is not None
            append_entry(
                conn,
                actor,
                Action.TEST_PASS_RECORD,
                f"{deployment_id}/{entry_id}",
                {"pass": int(pass_id), "camera": camera_id, "passed_at": iso_utc(passed_at)},
                at=now,
            )
            [recorded] = read_passes(conn, deployment_id, pass_id=int(pass_id))
        return recorded

    def passes(self, deployment_id: str) -> list[TestPass]:
        """The deployment's passes with whether and when each was alerted (404 if unknown)."""
        with self.db.snapshot() as conn:
            require_deployment(conn, deployment_id)
            return read_passes(conn, deployment_id)
