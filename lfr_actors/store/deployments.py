"""Deployments: authorised, recorded objects with a life cycle, and their store.

A deployment is the authority to run live facial recognition at one place for one time
window (DESIGN.md §1, invariant 3). Its record holds who authorised it, why, where, when,
the impact-assessment reference and the threshold. A deployment is *scheduled* before its
window, *active* inside it, *ended* once the window has passed, and *closed* when someone
closes it or the window's end is noticed; a closed deployment never runs again.

Each deployment has its own watchlist (:mod:`lfr_actors.store.watchlist`). Closing the
deployment *destroys* the whole watchlist (every entry's image, embeddings, name and source
are overwritten in the same transaction, with SQLite's ``secure_delete`` on) and leaves the
record, the alerts (under their own retention), the audit trail and the report
(:mod:`lfr_actors.store.reports`).

Every change is one transaction with its audit entry. :class:`Deployments` is the one
object the rest of the package uses for both tables; the records it returns and the errors
it raises are in :mod:`lfr_actors.store.records`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import Any

from lfr_actors.store.audit import SYSTEM, Action, Actor, append_entry
from lfr_actors.store.db import Database
from lfr_actors.store.policy import require_deployment_threshold
from lfr_actors.store.records import (
    DEPLOYMENT_COLUMNS,
    DeploymentClosedError,
    DeploymentExistsError,
    DeploymentRecord,
    EntryState,
    Origin,
    UnknownDeploymentError,
    closed_error,
    deployment_record,
    find_deployment,
    require_deployment,
    wipe_entries,
)
from lfr_actors.store.reports import deployment_report
from lfr_actors.store.watchlist import WatchlistEntries
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.schema import NewDeployment

WINDOW_ENDED = "the authorised window ended"
"""The close reason recorded when a deployment is closed because its window passed."""


class Deployments(WatchlistEntries):
    """Deployments and watchlists in one store file (a writer :class:`Database` to change).

    The watchlist entries' methods come from
    :class:`~lfr_actors.store.watchlist.WatchlistEntries`.
    """

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._damaged_by_revision = {}

    def create(
        self, new: NewDeployment, *, actor: Actor, origin: Origin = Origin.API
    ) -> DeploymentRecord:
        """Record a new deployment (audited); :class:`DeploymentExistsError` if the id is used.

        The declaration has passed its window rules when it was made. A threshold looser
        than the store's policy (:mod:`lfr_actors.store.policy`) is refused with
        :class:`~lfr_actors.store.policy.PolicyError`.
        """
        with self.db.transaction() as conn:
            existing = find_deployment(conn, new.id)
            if existing is not None:
                raise DeploymentExistsError(
                    f"a deployment with id {new.id!r} already exists (created "
                    f"{iso_utc(existing.created_at, 'seconds')} by {existing.created_by}); "
                    "choose another id"
                )
            require_deployment_threshold(conn, new.threshold)
            now = self.clock()
            conn.execute(
                "INSERT INTO deployments (id, authorised_by, purpose, location, starts_at, "
                "ends_at, impact_assessment_ref, threshold, origin, created_by, "
                "created_by_token, created_at, watchlist_max_age_h) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.id,
                    new.authorised_by,
                    new.purpose,
                    new.location,
                    new.starts_at,
                    new.ends_at,
                    new.impact_assessment_ref,
                    new.threshold,
                    str(origin),
                    actor.name,
                    actor.token_id,
                    now,
                    new.watchlist_max_age_h,
                ),
            )
            append_entry(
                conn,
                actor,
                Action.DEPLOYMENT_CREATE,
                new.id,
                {**new.as_dict(), "origin": str(origin)},
                at=now,
            )
            record = find_deployment(conn, new.id)
        assert record is not None  # just inserted in this transaction
        return record

    def get(self, deployment_id: str) -> DeploymentRecord:
        """The deployment, or :class:`UnknownDeploymentError`."""
        with self.db.lock:
            record = find_deployment(self.db.conn, deployment_id)
        if record is None:
            raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
        return record

    def find(self, deployment_id: str) -> DeploymentRecord | None:
        """The deployment, or None."""
        with self.db.lock:
            return find_deployment(self.db.conn, deployment_id)

    def list(self) -> list[DeploymentRecord]:
        """Every deployment, the newest window first."""
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY starts_at DESC, id"
            ).fetchall()
        return [deployment_record(row) for row in rows]

    def close(
        self, deployment_id: str, *, actor: Actor, reason: str
    ) -> tuple[DeploymentRecord, dict[str, int]]:
        """Close the deployment and destroy its watchlist in one audited transaction.

        Returns the closed record and how many entries were destroyed, by their state
        before. :class:`DeploymentClosedError` if it is already closed.
        """
        with self.db.transaction() as conn:
            record = require_deployment(conn, deployment_id)
            if record.closed_at is not None:
                raise closed_error(record)
            now = self.clock()
            by_state = dict(
                conn.execute(
                    "SELECT state, COUNT(*) FROM watchlist_entries WHERE deployment_id = ? "
                    "AND state IN (?, ?) GROUP BY state",
                    (deployment_id, str(EntryState.PENDING), str(EntryState.ACTIVE)),
                ).fetchall()
            )
            conn.execute(
                "UPDATE watchlist_entries SET state = ?, removed_by = ?, removed_at = ?, "
                "remove_reason = ? WHERE deployment_id = ? AND state IN (?, ?)",
                (
                    str(EntryState.DESTROYED),
                    actor.name,
                    now,
                    "the deployment was closed",
                    deployment_id,
                    str(EntryState.PENDING),
                    str(EntryState.ACTIVE),
                ),
            )
            wipe_entries(conn, "deployment_id = ?", (deployment_id,))
            conn.execute(
                "UPDATE deployments SET closed_at = ?, closed_by = ?, close_reason = ?, "
                "watchlist_revision = watchlist_revision + 1 WHERE id = ?",
                (now, actor.name, reason, deployment_id),
            )
            destroyed = {str(k): int(v) for k, v in by_state.items()}
            append_entry(
                conn,
                actor,
                Action.DEPLOYMENT_CLOSE,
                deployment_id,
                {"reason": reason, "entries_destroyed": destroyed},
                at=now,
            )
            closed = find_deployment(conn, deployment_id)
        assert closed is not None
        self._checkpoint()
        return closed, destroyed

    def change_threshold(
        self, deployment_id: str, threshold: float, *, actor: Actor, reason: str
    ) -> tuple[DeploymentRecord, bool]:
        """Set the deployment's threshold (audited with the old and new value and why).

        Returns the record and whether it changed (the same value again changes nothing
        and writes nothing). :class:`DeploymentClosedError` for a closed deployment,
        :class:`~lfr_actors.store.policy.PolicyError` for a value looser than the policy.
        """
        if not 0.0 < threshold < 2.0:
            raise ValueError("a threshold is a distance between 0 and 2")
        with self.db.transaction() as conn:
            record = require_deployment(conn, deployment_id)
            if record.closed_at is not None:
                raise closed_error(record)
            require_deployment_threshold(conn, threshold)
            if record.threshold == threshold:
                return record, False
            now = self.clock()
            conn.execute(
                "UPDATE deployments SET threshold = ?, "
                "watchlist_revision = watchlist_revision + 1 WHERE id = ?",
                (threshold, deployment_id),
            )
            append_entry(
                conn,
                actor,
                Action.THRESHOLD_CHANGE,
                deployment_id,
                {"from": record.threshold, "to": threshold, "reason": reason},
                at=now,
            )
            changed = find_deployment(conn, deployment_id)
        assert changed is not None
        return changed, True

    def close_ended(self) -> builtins.list[str]:
        """Close every deployment whose window has passed (as the system); their ids."""
        now = self.clock()
        with self.db.lock:
            ids = [
                str(row[0])
                for row in self.db.conn.execute(
                    "SELECT id FROM deployments WHERE closed_at IS NULL AND ends_at <= ?",
                    (now,),
                )
            ]
        closed = []
        for deployment_id in ids:
            try:
                self.close(deployment_id, actor=SYSTEM, reason=WINDOW_ENDED)
            except DeploymentClosedError:
                continue  # another process closed it first
            closed.append(deployment_id)
        return closed

    def add_counters(self, deployment_id: str, *, frames: int, faces: int, tracks: int = 0) -> None:
        """Add frames processed, faces and face tracks (people) seen since the last call.

        The figures are for the report; each only grows.
        """
        if frames < 0 or faces < 0 or tracks < 0:
            raise ValueError("counters only grow")
        with self.db.transaction() as conn:
            changed = conn.execute(
                "UPDATE deployments SET frames = frames + ?, faces_seen = faces_seen + ?, "
                "tracks_seen = tracks_seen + ?, counters_at = ? WHERE id = ?",
                (frames, faces, tracks, self.clock(), deployment_id),
            ).rowcount
        if changed == 0:
            raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")

    def report(self, deployment_id: str) -> dict[str, Any]:
        """The figures the Metropolitan Police publishes for one deployment, now.

        What each figure counts: :func:`~lfr_actors.store.reports.deployment_report`.
        """
        now = self.clock()
        damaged = self.damaged_entries(deployment_id)
        return deployment_report(self.db, deployment_id, now=now, damaged=damaged)
