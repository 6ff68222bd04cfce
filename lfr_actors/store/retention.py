"""Retention of alert crops, and the evidential holds that stop it.

An alert's best face crop is biometric data kept only while it may be needed: after
:data:`DEFAULT_RETENTION_DAYS` since the alert was last seen, :func:`purge_crops` empties
it, unless an authoriser put the alert on evidential hold (:class:`Holds`). The alert row,
its numbers, its adjudications and the audit trail stay. The store runs with
``PRAGMA secure_delete = ON``, so the crop's bytes are overwritten with zeros, and the
purge checkpoints the WAL into the main file so no copy is left in the log either.

``best_crop`` is ``NOT NULL`` in the first migration and SQLite cannot drop that without
rebuilding the table, so a purged crop is an empty blob; ``crop_purged_at`` says when.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfr_actors.errors import LfrError
from lfr_actors.store.audit import SYSTEM, Action, Actor, append_entry
from lfr_actors.store.db import Database

DEFAULT_RETENTION_DAYS = 31
"""How long an alert's crop is kept after the alert was last seen, unless on hold."""

MAX_REASON_CHARS = 2000
"""The longest reason accepted for a hold or its release."""

ACTION_PURGE = Action.RETENTION_PURGE
ACTION_HOLD = Action.ALERT_HOLD
ACTION_RELEASE = Action.ALERT_RELEASE

_DAY_S = 86_400.0


class UnknownAlertError(LfrError):
    """No alert with the given id."""


@dataclass(frozen=True)
class PurgeResult:
    """What one purge did: how many crops it emptied, and whose."""

    count: int
    alert_ids: list[str]
    cutoff: float
    retention_days: float


@dataclass(frozen=True)
class Hold:
    """An evidential hold on an alert: its crop is kept past the retention period."""

    id: int
    alert_id: str
    set_by: str
    reason: str
    at: float
    released_at: float | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        """Whether the hold is still in force."""
        return self.released_at is None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (times as Unix seconds)."""
        return {
            "id": self.id,
            "alert_id": self.alert_id,
            "set_by": self.set_by,
            "reason": self.reason,
            "at": self.at,
            "released_at": self.released_at,
            "released_by": self.released_by,
            "release_reason": self.release_reason,
        }


_HOLD_COLUMNS = "id, alert_id, set_by, reason, at, released_at, released_by, release_reason"


def _hold(row: sqlite3.Row) -> Hold:
    return Hold(
        id=int(row["id"]),
        alert_id=row["alert_id"],
        set_by=row["set_by"],
        reason=row["reason"],
        at=float(row["at"]),
        released_at=None if row["released_at"] is None else float(row["released_at"]),
        released_by=row["released_by"],
        release_reason=row["release_reason"],
    )


def _active_hold(conn: sqlite3.Connection, alert_id: str) -> Hold | None:
    row = conn.execute(
        f"SELECT {_HOLD_COLUMNS} FROM alert_holds WHERE alert_id = ? AND released_at IS NULL",
        (alert_id,),
    ).fetchone()
    return None if row is None else _hold(row)


def _require_alert(conn: sqlite3.Connection, alert_id: str) -> None:
    if conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone() is None:
        raise UnknownAlertError(f"no alert with id {alert_id[:80]!r}")


def _check_reason(reason: str | None, *, required: bool) -> str | None:
    if reason is None or not reason.strip():
        if required:
            raise ValueError("a hold needs a reason")
        return None
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"a reason is at most {MAX_REASON_CHARS} characters")
    return reason.strip()


class Holds:
    """Evidential holds and purge state of alerts, over a store's :class:`Database`."""

    def __init__(self, db: Database, *, clock: Any = time.time) -> None:
        self.db = db
        self.clock = clock

    def active(self, alert_id: str) -> Hold | None:
        """The hold in force on an alert, or None."""
        with self.db.lock:
            return _active_hold(self.db.conn, alert_id)

    def crop_purged_at(self, alert_id: str) -> float | None:
        """When the alert's crop was purged (Unix seconds), or None (not purged or no alert)."""
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT crop_purged_at FROM alerts WHERE id = ?", (alert_id,)
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def hold(self, alert_id: str, reason: str, *, by: Actor) -> tuple[Hold, bool]:
        """Put an alert on hold; ``(hold, created)``; a second hold returns the first.

        Audited as ``alert.hold`` in the same transaction. Raises
        :class:`UnknownAlertError` and :class:`ValueError` (no or too long a reason).
        """
        text = _check_reason(reason, required=True)
        assert text is not None
        with self.db.transaction() as conn:
            _require_alert(conn, alert_id)
            current = _active_hold(conn, alert_id)
            if current is not None:
                return current, False
            at = float(self.clock())
            conn.execute(
                "INSERT INTO alert_holds (alert_id, set_by, set_by_token, reason, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (alert_id, by.name, by.token_id, text, at),
            )
            append_entry(conn, by, ACTION_HOLD, alert_id, {"reason": text}, at=at)
            held = _active_hold(conn, alert_id)
            assert held is not None
            return held, True

    def release(self, alert_id: str, *, by: Actor, reason: str | None = None) -> Hold | None:
        """Release the hold in force; the released hold, or None when there was none.

        Audited as ``alert.release`` when a hold is released. Raises
        :class:`UnknownAlertError` and :class:`ValueError` (too long a reason).
        """
        text = _check_reason(reason, required=False)
        with self.db.transaction() as conn:
            _require_alert(conn, alert_id)
            current = _active_hold(conn, alert_id)
            if current is None:
                return None
            at = float(self.clock())
            conn.execute(
                "UPDATE alert_holds SET released_at = ?, released_by = ?, release_reason = ? "
                "WHERE id = ?",
                (at, by.name, text, current.id),
            )
            append_entry(
                conn,
                by,
                ACTION_RELEASE,
                alert_id,
                {"reason": text, "hold_id": current.id, "held_since": current.at},
                at=at,
            )
            row = conn.execute(
                f"SELECT {_HOLD_COLUMNS} FROM alert_holds WHERE id = ?", (current.id,)
            ).fetchone()
            return _hold(row)


def purge_crops(
    store_path: Path,
    *,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    now: float | None = None,
) -> PurgeResult:
    """Empty the crops of alerts last seen before ``now - retention_days`` and not on hold.

    Writes one ``retention.purge`` audit entry (actor ``system``; count, retention_days,
    cutoff and the alert ids) in the same transaction. Idempotent: a crop already purged
    is not counted again, and a purge that empties nothing still records that it ran.
    Afterwards the WAL is checkpointed into the main file (and truncated when no reader
    holds it), so the zeroed pages replace the old ones on disk.
    """
    if isinstance(retention_days, bool) or not (
        isinstance(retention_days, int | float)
        and math.isfinite(retention_days)
        and retention_days >= 0
    ):
        raise ValueError(f"retention_days must be a number of days >= 0, not {retention_days!r}")
    at = time.time() if now is None else float(now)
    cutoff = at - float(retention_days) * _DAY_S
    with Database(Path(store_path)) as db:
        with db.transaction() as conn:
            ids = [
                str(r[0])
                for r in conn.execute(
                    "SELECT id FROM alerts WHERE last_seen < ? AND crop_purged_at IS NULL "
                    "AND id NOT IN (SELECT alert_id FROM alert_holds WHERE released_at IS NULL) "
                    "ORDER BY last_seen, id",
                    (cutoff,),
                )
            ]
            conn.executemany(
                "UPDATE alerts SET best_crop = zeroblob(0), crop_purged_at = ? WHERE id = ?",
                [(at, alert_id) for alert_id in ids],
            )
            append_entry(
                conn,
                SYSTEM,
                ACTION_PURGE,
                "alerts",
                {
                    "count": len(ids),
                    "retention_days": retention_days,
                    "cutoff": cutoff,
                    "alert_ids": ids,
                },
                at=at,
            )
        db.checkpoint("TRUNCATE")
    return PurgeResult(len(ids), ids, cutoff, retention_days)
