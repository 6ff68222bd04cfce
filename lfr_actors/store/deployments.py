"""Deployments and their watchlists: authorised, recorded objects with a life cycle.

A deployment is the authority to run live facial recognition at one place for one time
window (DESIGN.md §1, invariant 3). Its record holds who authorised it, why, where, when,
the impact-assessment reference and the threshold. A deployment is *scheduled* before its
window, *active* inside it, *ended* once the window has passed, and *closed* when someone
closes it or the window's end is noticed; a closed deployment never runs again.

Each deployment has its own watchlist. An entry added through the API is *pending* until a
second person, an authoriser, approves it (four eyes); only *active* entries are searched.
Entries read from a topology's watchlist file are active at once, approved by the
deployment's authority that signed the file. Deleting an entry wipes its image and
embeddings at once. Closing the deployment *destroys* the whole watchlist (every entry's
image, embeddings, name and source are overwritten in the same transaction, with SQLite's
``secure_delete`` on) and leaves the record, the alerts (under their own retention), the
audit trail and the report.

Every change is one transaction with its audit entry. ``watchlist_revision`` grows with
every change to the set of active entries; the running deployment polls it to bring its
index in line (:mod:`lfr_actors.control.follow`).

Each entry's templates are stored with a SHA-256 checksum (:func:`template_checksum`).
Templates read back that fail it, or hold a value that is not finite, make the entry
*damaged*: :meth:`Deployments.load_templates` leaves it out of the index and names it with
the reason, the deployment's status and report count it, and it is never "indexed".
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from lfr_actors.store.audit import SYSTEM, Action, Actor, append_entry
from lfr_actors.store.db import Database, StoreError
from lfr_actors.store.migrations import template_checksum, template_problem
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.schema import NewDeployment, NewEntry


class DeploymentState(StrEnum):
    """Where a deployment is in its life cycle (computed from the clock and the record)."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    ENDED = "ended"
    CLOSED = "closed"


class EntryState(StrEnum):
    """Where a watchlist entry is in its life cycle."""

    PENDING = "pending_approval"
    ACTIVE = "active"
    DELETED = "deleted"
    DESTROYED = "destroyed"


class Origin(StrEnum):
    """Where a deployment or an entry was declared."""

    API = "api"
    FILE = "file"


class UnknownDeploymentError(StoreError):
    """No deployment has the id given."""


class DeploymentExistsError(StoreError):
    """A deployment with that id already exists."""


class DeploymentClosedError(StoreError):
    """The deployment is closed; its watchlist and cameras can no longer change or run."""


class UnknownEntryError(StoreError):
    """The deployment has no watchlist entry with the id given."""


class EntryExistsError(StoreError):
    """The deployment already has (or had) a watchlist entry with that id."""


class EntryStateError(StoreError):
    """The entry is not in a state that allows the action (approving a deleted entry, ...)."""


class FourEyesError(StoreError):
    """The person who added an entry tried to approve it."""


_DEPLOYMENT_COLUMNS = (
    "id, authorised_by, purpose, location, starts_at, ends_at, impact_assessment_ref, "
    "threshold, origin, created_by, created_by_token, created_at, closed_at, closed_by, "
    "close_reason, watchlist_revision, frames, faces_seen, counters_at"
)
_ENTRY_COLUMNS = (
    "deployment_id, id, display_name, category, legal_basis, source, image_date, threshold, "
    "origin, state, image_type, dimension, quality, added_by, added_by_token, added_at, "
    "approved_by, approved_by_token, approved_at, removed_by, removed_at, remove_reason, "
    "CASE WHEN embeddings IS NULL THEN 0 ELSE length(embeddings) / (4 * dimension) END "
    "AS templates"
)
WINDOW_ENDED = "the authorised window ended"
"""The close reason recorded when a deployment is closed because its window passed."""


@dataclass(frozen=True)
class DeploymentRecord:
    """A stored deployment."""

    id: str
    authorised_by: str
    purpose: str
    location: str
    starts_at: float
    ends_at: float
    impact_assessment_ref: str | None
    threshold: float
    origin: Origin
    created_by: str
    created_by_token: str | None
    created_at: float
    closed_at: float | None
    closed_by: str | None
    close_reason: str | None
    watchlist_revision: int
    frames: int
    faces_seen: int
    counters_at: float | None

    def state(self, now: float) -> DeploymentState:
        """The life-cycle state at ``now`` (Unix seconds)."""
        if self.closed_at is not None:
            return DeploymentState.CLOSED
        if now < self.starts_at:
            return DeploymentState.SCHEDULED
        if now < self.ends_at:
            return DeploymentState.ACTIVE
        return DeploymentState.ENDED

    def declared(self) -> NewDeployment:
        """The authority's declaration, for comparison with a topology file."""
        return NewDeployment(
            id=self.id,
            authorised_by=self.authorised_by,
            purpose=self.purpose,
            location=self.location,
            start=datetime.fromtimestamp(self.starts_at, UTC),
            end=datetime.fromtimestamp(self.ends_at, UTC),
            threshold=self.threshold,
            impact_assessment_ref=self.impact_assessment_ref,
        )

    def as_dict(self, now: float) -> dict[str, Any]:
        """A JSON-ready map (Unix seconds), with the state at ``now``; no token ids."""
        out = {"id": self.id, "state": str(self.state(now)), **dataclasses.asdict(self)}
        out["origin"] = str(self.origin)
        del out["created_by_token"]
        return out


@dataclass(frozen=True)
class Enrolled:
    """What enrolment made of an entry's images: the image kept and the templates."""

    image: bytes
    image_type: str
    embeddings: np.ndarray
    quality: Mapping[str, Any]


@dataclass(frozen=True)
class EntryRecord:
    """A stored watchlist entry, without its image and embeddings."""

    deployment_id: str
    id: str
    display_name: str | None
    category: str
    legal_basis: str
    source: str | None
    image_date: str | None
    threshold: float | None
    origin: Origin
    state: EntryState
    image_type: str | None
    dimension: int | None
    quality: dict[str, Any] | None
    added_by: str
    added_by_token: str | None
    added_at: float
    approved_by: str | None
    approved_by_token: str | None
    approved_at: float | None
    removed_by: str | None
    removed_at: float | None
    remove_reason: str | None
    templates: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (Unix seconds); no image or embedding, ever."""
        return {
            "deployment_id": self.deployment_id,
            "id": self.id,
            "state": str(self.state),
            "display_name": self.display_name,
            "category": self.category,
            "legal_basis": self.legal_basis,
            "source": self.source,
            "image_date": self.image_date,
            "threshold": self.threshold,
            "origin": str(self.origin),
            "has_image": self.image_type is not None,
            "templates": self.templates,
            "quality": self.quality,
            "added_by": self.added_by,
            "added_at": self.added_at,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at,
            "removed_by": self.removed_by,
            "removed_at": self.removed_at,
            "remove_reason": self.remove_reason,
        }


@dataclass(frozen=True)
class TemplateLoad:
    """What :meth:`Deployments.load_templates` read: the usable templates and the damaged."""

    revision: int
    templates: dict[str, np.ndarray]
    damaged: dict[str, str]


@dataclass(frozen=True)
class Approval:
    """The entry after an approval; ``changed`` is False when it was already active."""

    entry: EntryRecord
    changed: bool


class Deployments:
    """Deployments and watchlists in one store file (a writer :class:`Database` to change)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    # -- deployments ----------------------------------------------------------------

    def create(
        self, new: NewDeployment, *, actor: Actor, origin: Origin = Origin.API
    ) -> DeploymentRecord:
        """Record a new deployment (audited); :class:`DeploymentExistsError` if the id is used.

        The declaration has passed its window rules when it was made.
        """
        with self.db.transaction() as conn:
            existing = self._deployment(conn, new.id)
            if existing is not None:
                raise DeploymentExistsError(
                    f"a deployment with id {new.id!r} already exists (created "
                    f"{iso_utc(existing.created_at, 'seconds')} by {existing.created_by}); "
                    "choose another id"
                )
            now = self.clock()
            conn.execute(
                "INSERT INTO deployments (id, authorised_by, purpose, location, starts_at, "
                "ends_at, impact_assessment_ref, threshold, origin, created_by, "
                "created_by_token, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            record = self._deployment(conn, new.id)
        assert record is not None  # just inserted in this transaction
        return record

    def get(self, deployment_id: str) -> DeploymentRecord:
        """The deployment, or :class:`UnknownDeploymentError`."""
        with self.db.lock:
            record = self._deployment(self.db.conn, deployment_id)
        if record is None:
            raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
        return record

    def find(self, deployment_id: str) -> DeploymentRecord | None:
        """The deployment, or None."""
        with self.db.lock:
            return self._deployment(self.db.conn, deployment_id)

    def list(self) -> list[DeploymentRecord]:
        """Every deployment, the newest window first."""
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments ORDER BY starts_at DESC, id"
            ).fetchall()
        return [_deployment_record(row) for row in rows]

    def close(
        self, deployment_id: str, *, actor: Actor, reason: str
    ) -> tuple[DeploymentRecord, dict[str, int]]:
        """Close the deployment and destroy its watchlist in one audited transaction.

        Returns the closed record and how many entries were destroyed, by their state
        before. :class:`DeploymentClosedError` if it is already closed.
        """
        with self.db.transaction() as conn:
            record = self._require(conn, deployment_id)
            if record.closed_at is not None:
                raise _closed(record)
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
            _wipe(conn, "deployment_id = ?", (deployment_id,))
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
            closed = self._deployment(conn, deployment_id)
        assert closed is not None
        self._checkpoint()
        return closed, destroyed

    def change_threshold(
        self, deployment_id: str, threshold: float, *, actor: Actor, reason: str
    ) -> tuple[DeploymentRecord, bool]:
        """Set the deployment's threshold (audited with the old and new value and why).

        Returns the record and whether it changed (the same value again changes nothing
        and writes nothing). :class:`DeploymentClosedError` for a closed deployment.
        """
        if not 0.0 < threshold < 2.0:
            raise ValueError("a threshold is a distance between 0 and 2")
        with self.db.transaction() as conn:
            record = self._require(conn, deployment_id)
            if record.closed_at is not None:
                raise _closed(record)
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
            changed = self._deployment(conn, deployment_id)
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

    def add_counters(self, deployment_id: str, *, frames: int, faces: int) -> None:
        """Add frames processed and faces seen since the last call (for the report)."""
        if frames < 0 or faces < 0:
            raise ValueError("counters only grow")
        with self.db.transaction() as conn:
            changed = conn.execute(
                "UPDATE deployments SET frames = frames + ?, faces_seen = faces_seen + ?, "
                "counters_at = ? WHERE id = ?",
                (frames, faces, self.clock(), deployment_id),
            ).rowcount
        if changed == 0:
            raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")

    # -- watchlist entries ----------------------------------------------------------

    def add_entry(
        self,
        deployment_id: str,
        new: NewEntry,
        enrolled: Enrolled,
        *,
        actor: Actor,
        origin: Origin = Origin.API,
        approved_by: Actor | None = None,
    ) -> EntryRecord:
        """Add an entry: pending approval, or active at once when ``approved_by`` is given.

        :class:`DeploymentClosedError` for a closed deployment, :class:`EntryExistsError`
        when the deployment has or had an entry with that id (ids are never reused, so an
        alert always names one person).
        """
        vectors = np.ascontiguousarray(enrolled.embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
            raise ValueError("an entry needs at least one embedding, shaped (n, dimension)")
        if not np.isfinite(vectors).all():
            raise ValueError("an entry's embeddings must be finite numbers")
        with self.db.transaction() as conn:
            record = self._require(conn, deployment_id)
            if record.closed_at is not None:
                raise _closed(record)
            existing = self._entry(conn, deployment_id, new.id)
            if existing is not None:
                raise EntryExistsError(
                    f"deployment {deployment_id!r} already has an entry {new.id!r} "
                    f"({existing.state}); entry ids are never reused, so choose another"
                )
            now = self.clock()
            state = EntryState.PENDING if approved_by is None else EntryState.ACTIVE
            conn.execute(
                "INSERT INTO watchlist_entries (deployment_id, id, display_name, category, "
                "legal_basis, source, image_date, threshold, origin, state, image, image_type, "
                "embeddings, dimension, quality, added_by, added_by_token, added_at, "
                "approved_by, approved_by_token, approved_at, embeddings_sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    deployment_id,
                    new.id,
                    new.display_name,
                    new.category,
                    new.legal_basis,
                    new.source,
                    new.image_date.isoformat(),
                    new.threshold,
                    str(origin),
                    str(state),
                    enrolled.image,
                    enrolled.image_type,
                    vectors.tobytes(),
                    int(vectors.shape[1]),
                    json.dumps(dict(enrolled.quality), sort_keys=True),
                    actor.name,
                    actor.token_id,
                    now,
                    None if approved_by is None else approved_by.name,
                    None if approved_by is None else approved_by.token_id,
                    None if approved_by is None else now,
                    template_checksum(int(vectors.shape[1]), vectors.tobytes()),
                ),
            )
            details = {
                "deployment": deployment_id,
                "category": new.category,
                "legal_basis": new.legal_basis,
                "origin": str(origin),
                "state": str(state),
            }
            subject = _subject(deployment_id, new.id)
            append_entry(conn, actor, Action.ENTRY_CREATE, subject, details, at=now)
            if approved_by is not None:
                append_entry(
                    conn,
                    approved_by,
                    Action.ENTRY_APPROVE,
                    subject,
                    {"origin": str(origin)},
                    at=now,
                )
                _bump(conn, deployment_id)
            entry = self._entry(conn, deployment_id, new.id)
        assert entry is not None
        return entry

    def approve_entry(self, deployment_id: str, entry_id: str, *, actor: Actor) -> Approval:
        """Approve a pending entry (four eyes: not by the person who added it); audited."""
        with self.db.transaction() as conn:
            record = self._require(conn, deployment_id)
            if record.closed_at is not None:
                raise _closed(record)
            entry = self._require_entry(conn, deployment_id, entry_id)
            if entry.state is EntryState.ACTIVE:
                return Approval(entry, changed=False)
            if entry.state is not EntryState.PENDING:
                raise EntryStateError(
                    f"entry {entry_id!r} is {entry.state}; only an entry pending approval "
                    "can be approved"
                )
            if actor.name == entry.added_by or (
                actor.token_id is not None and actor.token_id == entry.added_by_token
            ):
                raise FourEyesError(
                    f"entry {entry_id!r} was added by {entry.added_by}; a second person "
                    "with the authoriser role must approve it"
                )
            now = self.clock()
            conn.execute(
                "UPDATE watchlist_entries SET state = ?, approved_by = ?, approved_by_token = ?, "
                "approved_at = ? WHERE deployment_id = ? AND id = ?",
                (str(EntryState.ACTIVE), actor.name, actor.token_id, now, deployment_id, entry_id),
            )
            _bump(conn, deployment_id)
            append_entry(
                conn,
                actor,
                Action.ENTRY_APPROVE,
                _subject(deployment_id, entry_id),
                {"added_by": entry.added_by},
                at=now,
            )
            approved = self._entry(conn, deployment_id, entry_id)
        assert approved is not None
        return Approval(approved, changed=True)

    def delete_entry(
        self, deployment_id: str, entry_id: str, *, actor: Actor, reason: str | None = None
    ) -> EntryRecord:
        """Delete an entry: its image, embeddings, name and source are wiped; audited.

        Deleting a deleted entry returns it unchanged; a destroyed one (closed deployment)
        raises :class:`DeploymentClosedError`.
        """
        with self.db.transaction() as conn:
            record = self._require(conn, deployment_id)
            if record.closed_at is not None:
                raise _closed(record)
            entry = self._require_entry(conn, deployment_id, entry_id)
            if entry.state is EntryState.DELETED:
                return entry
            now = self.clock()
            conn.execute(
                "UPDATE watchlist_entries SET state = ?, removed_by = ?, removed_at = ?, "
                "remove_reason = ? WHERE deployment_id = ? AND id = ?",
                (str(EntryState.DELETED), actor.name, now, reason, deployment_id, entry_id),
            )
            _wipe(conn, "deployment_id = ? AND id = ?", (deployment_id, entry_id))
            if entry.state is EntryState.ACTIVE:
                _bump(conn, deployment_id)
            append_entry(
                conn,
                actor,
                Action.ENTRY_DELETE,
                _subject(deployment_id, entry_id),
                {"was": str(entry.state), "reason": reason},
                at=now,
            )
            deleted = self._entry(conn, deployment_id, entry_id)
        assert deleted is not None
        self._checkpoint()
        return deleted

    def entry(self, deployment_id: str, entry_id: str) -> EntryRecord:
        """One entry, or :class:`UnknownDeploymentError` / :class:`UnknownEntryError`."""
        with self.db.lock:
            self._require(self.db.conn, deployment_id)
            return self._require_entry(self.db.conn, deployment_id, entry_id)

    def entries(
        self, deployment_id: str, *, state: EntryState | None = None
    ) -> builtins.list[EntryRecord]:
        """The deployment's entries (optionally of one state), in the order they were added."""
        sql = f"SELECT {_ENTRY_COLUMNS} FROM watchlist_entries WHERE deployment_id = ?"
        params: tuple[Any, ...] = (deployment_id,)
        if state is not None:
            sql, params = f"{sql} AND state = ?", (*params, str(state))
        with self.db.lock:
            self._require(self.db.conn, deployment_id)
            rows = self.db.conn.execute(f"{sql} ORDER BY added_at, id", params).fetchall()
        return [_entry_record(row) for row in rows]

    def entry_ids(self, deployment_id: str) -> set[str]:
        """Every entry id the deployment has or had (ids are never reused)."""
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT id FROM watchlist_entries WHERE deployment_id = ?", (deployment_id,)
            ).fetchall()
        return {str(row[0]) for row in rows}

    def has_entry(self, deployment_id: str, entry_id: str) -> bool:
        """Whether the deployment has or had an entry with this id (one indexed lookup)."""
        with self.db.lock:
            return self._entry(self.db.conn, deployment_id, entry_id) is not None

    def entry_image(self, deployment_id: str, entry_id: str) -> tuple[bytes, str] | None:
        """The entry's image and its media type, or None once deleted or destroyed."""
        with self.db.lock:
            self._require(self.db.conn, deployment_id)
            self._require_entry(self.db.conn, deployment_id, entry_id)
            row = self.db.conn.execute(
                "SELECT image, image_type FROM watchlist_entries "
                "WHERE deployment_id = ? AND id = ? AND image IS NOT NULL",
                (deployment_id, entry_id),
            ).fetchone()
        return None if row is None else (bytes(row[0]), str(row[1]))

    def active_templates(self, deployment_id: str) -> tuple[int, dict[str, np.ndarray]]:
        """The watchlist revision and every active, undamaged entry's embeddings, together."""
        loaded = self.load_templates(deployment_id)
        return loaded.revision, loaded.templates

    def load_templates(self, deployment_id: str) -> TemplateLoad:
        """The revision, the active entries' checked templates, and the damaged entries.

        An active entry whose templates fail their checksum or are not finite is left out
        of ``templates`` and named in ``damaged`` with the reason (never the values).
        """
        with self.db.snapshot() as conn:
            row = conn.execute(
                "SELECT watchlist_revision FROM deployments WHERE id = ?", (deployment_id,)
            ).fetchone()
            if row is None:
                raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
            rows = conn.execute(
                "SELECT id, embeddings, dimension, embeddings_sha256 FROM watchlist_entries "
                "WHERE deployment_id = ? AND state = ?",
                (deployment_id, str(EntryState.ACTIVE)),
            ).fetchall()
        templates: dict[str, np.ndarray] = {}
        damaged: dict[str, str] = {}
        for entry_id, stored, dim, checksum in rows:
            blob = None if stored is None else bytes(stored)
            dimension = None if dim is None else int(dim)
            problem = template_problem(blob, dimension, checksum)
            if problem is not None:
                damaged[str(entry_id)] = problem
                continue
            assert blob is not None and dimension is not None
            vectors = np.frombuffer(blob, dtype=np.float32).reshape(-1, dimension).copy()
            templates[str(entry_id)] = vectors
        return TemplateLoad(int(row[0]), templates, damaged)

    def damaged_entries(self, deployment_id: str) -> dict[str, str]:
        """The active entries whose templates cannot be used, with the reason for each."""
        return self.load_templates(deployment_id).damaged

    def revision(self, deployment_id: str) -> tuple[int, float | None]:
        """The watchlist revision and the closing time (None while open): one cheap query."""
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT watchlist_revision, closed_at FROM deployments WHERE id = ?",
                (deployment_id,),
            ).fetchone()
        if row is None:
            raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
        return int(row[0]), None if row[1] is None else float(row[1])

    # -- the report -----------------------------------------------------------------

    def report(self, deployment_id: str) -> dict[str, Any]:
        """The figures the Metropolitan Police publishes for one deployment.

        Alerts are counted by the decision in force (the latest, corrections included);
        outcomes are those of confirmed matches. ``false_alert_rate`` is false alerts per
        face seen (null before any face was seen).
        """
        now = self.clock()
        damaged = self.damaged_entries(deployment_id)
        with self.db.snapshot() as conn:
            record = self._require(conn, deployment_id)
            entries = dict(
                conn.execute(
                    "SELECT state, COUNT(*) FROM watchlist_entries WHERE deployment_id = ? "
                    "GROUP BY state",
                    (deployment_id,),
                ).fetchall()
            )
            approved = conn.execute(
                "SELECT COUNT(*) FROM watchlist_entries WHERE deployment_id = ? "
                "AND approved_at IS NOT NULL",
                (deployment_id,),
            ).fetchone()[0]
            alerts = conn.execute(
                "SELECT COUNT(*) FROM alerts WHERE deployment_id = ?", (deployment_id,)
            ).fetchone()[0]
            decisions = conn.execute(
                "SELECT j.decision, j.outcome, COUNT(*) FROM alerts a JOIN adjudications j "
                "ON j.id = (SELECT MAX(id) FROM adjudications WHERE alert_id = a.id) "
                "WHERE a.deployment_id = ? GROUP BY j.decision, j.outcome",
                (deployment_id,),
            ).fetchall()
        by_decision: dict[str, int] = {}
        outcomes: dict[str, int] = {}
        for decision, outcome, count in decisions:
            by_decision[decision] = by_decision.get(decision, 0) + int(count)
            if decision == "match_confirmed" and outcome is not None:
                outcomes[outcome] = outcomes.get(outcome, 0) + int(count)
        adjudicated = sum(by_decision.values())
        false_alerts = by_decision.get("not_a_match", 0)
        faces = record.faces_seen
        return {
            "deployment_id": record.id,
            "state": str(record.state(now)),
            "authorised_by": record.authorised_by,
            "purpose": record.purpose,
            "location": record.location,
            "starts_at": record.starts_at,
            "ends_at": record.ends_at,
            "closed_at": record.closed_at,
            "impact_assessment_ref": record.impact_assessment_ref,
            "threshold": record.threshold,
            "watchlist": {
                "size": int(approved),
                "active": int(entries.get(str(EntryState.ACTIVE), 0)),
                "pending_approval": int(entries.get(str(EntryState.PENDING), 0)),
                "deleted": int(entries.get(str(EntryState.DELETED), 0)),
                "destroyed": int(entries.get(str(EntryState.DESTROYED), 0)),
                # Active entries left out of the index: their templates fail their checksum
                # or are not finite (``damaged_entries`` names them and why).
                "damaged": len(damaged),
                "damaged_entries": sorted(damaged),
            },
            "frames": record.frames,
            "faces_seen": faces,
            "alerts": {
                "total": int(alerts),
                "confirmed": by_decision.get("match_confirmed", 0),
                "false": false_alerts,
                "unsure": by_decision.get("unsure", 0),
                "not_adjudicated": int(alerts) - adjudicated,
            },
            "outcomes": dict(sorted(outcomes.items())),
            "false_alert_rate": (false_alerts / faces) if faces else None,
            "generated_at": now,
        }

    # -- internals ------------------------------------------------------------------

    def _checkpoint(self) -> None:
        # With WAL, the pages that held a wiped image stay in the -wal file until a
        # checkpoint copies the new pages over them; TRUNCATE also empties the file.
        self.db.checkpoint("TRUNCATE")

    def _deployment(self, conn: Any, deployment_id: str) -> DeploymentRecord | None:
        row = conn.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,)
        ).fetchone()
        return None if row is None else _deployment_record(row)

    def _require(self, conn: Any, deployment_id: str) -> DeploymentRecord:
        record = self._deployment(conn, deployment_id)
        if record is None:
            raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
        return record

    def _entry(self, conn: Any, deployment_id: str, entry_id: str) -> EntryRecord | None:
        row = conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM watchlist_entries WHERE deployment_id = ? AND id = ?",
            (deployment_id, entry_id),
        ).fetchone()
        return None if row is None else _entry_record(row)

    def _require_entry(self, conn: Any, deployment_id: str, entry_id: str) -> EntryRecord:
        entry = self._entry(conn, deployment_id, entry_id)
        if entry is None:
            raise UnknownEntryError(
                f"deployment {deployment_id!r} has no watchlist entry {entry_id[:80]!r}"
            )
        return entry


def _subject(deployment_id: str, entry_id: str) -> str:
    return f"{deployment_id}/{entry_id}"


def _bump(conn: Any, deployment_id: str) -> None:
    conn.execute(
        "UPDATE deployments SET watchlist_revision = watchlist_revision + 1 WHERE id = ?",
        (deployment_id,),
    )


def _wipe(conn: Any, where: str, params: tuple[Any, ...]) -> None:
    # The biometric data and the personal details go; ids, category, legal basis and who
    # did what stay for the audit trail and the report. secure_delete overwrites the pages.
    conn.execute(
        "UPDATE watchlist_entries SET image = NULL, image_type = NULL, embeddings = NULL, "
        "embeddings_sha256 = NULL, quality = NULL, display_name = NULL, source = NULL, "
        f"image_date = NULL WHERE {where}",
        params,
    )


def _closed(record: DeploymentRecord) -> DeploymentClosedError:
    assert record.closed_at is not None
    return DeploymentClosedError(
        f"deployment {record.id!r} was closed {iso_utc(record.closed_at, 'seconds')} "
        f"by {record.closed_by} "
        f"({record.close_reason}); its watchlist was destroyed and it cannot change or run again"
    )


def _deployment_record(row: sqlite3.Row) -> DeploymentRecord:
    return DeploymentRecord(
        id=row["id"],
        authorised_by=row["authorised_by"],
        purpose=row["purpose"],
        location=row["location"],
        starts_at=float(row["starts_at"]),
        ends_at=float(row["ends_at"]),
        impact_assessment_ref=row["impact_assessment_ref"],
        threshold=float(row["threshold"]),
        origin=Origin(row["origin"]),
        created_by=row["created_by"],
        created_by_token=row["created_by_token"],
        created_at=float(row["created_at"]),
        closed_at=None if row["closed_at"] is None else float(row["closed_at"]),
        closed_by=row["closed_by"],
        close_reason=row["close_reason"],
        watchlist_revision=int(row["watchlist_revision"]),
        frames=int(row["frames"]),
        faces_seen=int(row["faces_seen"]),
        counters_at=None if row["counters_at"] is None else float(row["counters_at"]),
    )


def _entry_record(row: sqlite3.Row) -> EntryRecord:
    return EntryRecord(
        deployment_id=row["deployment_id"],
        id=row["id"],
        display_name=row["display_name"],
        category=row["category"],
        legal_basis=row["legal_basis"],
        source=row["source"],
        image_date=row["image_date"],
        threshold=None if row["threshold"] is None else float(row["threshold"]),
        origin=Origin(row["origin"]),
        state=EntryState(row["state"]),
        image_type=row["image_type"],
        dimension=None if row["dimension"] is None else int(row["dimension"]),
        quality=None if row["quality"] is None else json.loads(row["quality"]),
        added_by=row["added_by"],
        added_by_token=row["added_by_token"],
        added_at=float(row["added_at"]),
        approved_by=row["approved_by"],
        approved_by_token=row["approved_by_token"],
        approved_at=None if row["approved_at"] is None else float(row["approved_at"]),
        removed_by=row["removed_by"],
        removed_at=None if row["removed_at"] is None else float(row["removed_at"]),
        remove_reason=row["remove_reason"],
        templates=int(row["templates"] or 0),
    )
