"""Where each webhook stands in the alert event log: the last event id it was sent.

A webhook's position moves on once an event is delivered (or skipped as refused), in one
small transaction, so a restart resumes after the last event the receiver answered and
an event may be sent again (at least once), never left out. A webhook the store has not
seen, or whose URL changed (another receiver), starts at the newest event: a new
receiver is sent what happens from then on, not the deployment's history. Only a digest
of the URL is stored.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

from lfr_actors.store.db import Database


def url_digest(url: str) -> str:
    """The SHA-256 of a webhook's URL, as stored (the URL itself may hold a credential)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Position:
    """A webhook's stored position and its totals over every run."""

    event_id: int
    delivered: int
    failed: int


class WebhookPositions:
    """The ``webhook_positions`` table over a writer connection."""

    def __init__(self, db: Database) -> None:
        db.require_writer("open a writer to record webhook positions")
        self.db = db

    def start(self, name: str, url: str) -> Position:
        """The position to resume from; a new (or moved) webhook starts at the newest event."""
        digest = url_digest(url)
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT url_sha256, event_id, delivered, failed FROM webhook_positions "
                "WHERE name = ?",
                (name,),
            ).fetchone()
            if row is not None and row["url_sha256"] == digest:
                return Position(int(row["event_id"]), int(row["delivered"]), int(row["failed"]))
            newest = conn.execute("SELECT MAX(event_id) FROM alert_events").fetchone()[0]
            position = Position(int(newest or 0), 0, 0)
            conn.execute(
                "INSERT OR REPLACE INTO webhook_positions "
                "(name, url_sha256, event_id, delivered, failed, updated_at) "
                "VALUES (?, ?, ?, 0, 0, ?)",
                (name, digest, position.event_id, time.time()),
            )
            return position

    def advance(self, name: str, event_id: int, *, delivered: int = 0, failed: int = 0) -> None:
        """Record ``event_id`` as the webhook's last event handled, adding to its totals."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE webhook_positions SET event_id = MAX(event_id, ?), "
                "delivered = delivered + ?, failed = failed + ?, updated_at = ? WHERE name = ?",
                (event_id, delivered, failed, time.time(), name),
            )

    def pending(self, after: int, kinds: Iterable[str]) -> int:
        """Events of ``kinds`` after ``after``: what the webhook has still to send.

        A test subject's events are never sent, so they are not counted.
        """
        kinds = list(kinds)
        marks = ", ".join("?" for _ in kinds)
        with self.db.lock:
            row = self.db.conn.execute(
                f"SELECT COUNT(*) FROM alert_events WHERE event_id > ? AND kind IN ({marks}) "
                "AND NOT COALESCE(json_extract(alert, '$.test_subject'), 0)",
                (after, *kinds),
            ).fetchone()
        return int(row[0])
