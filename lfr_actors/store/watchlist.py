"""Watchlist entries: added, approved by a second person, deleted, and read as templates.

Each deployment has its own watchlist. An entry added through the API is *pending* until a
second person, an authoriser, approves it (four eyes); only *active* entries are searched.
Entries read from a topology's watchlist file are active at once, approved by the
deployment's authority that signed the file. Deleting an entry wipes its image and
embeddings at once. An active entry approved longer ago than the deployment's
``watchlist_max_age_h`` is *stale* and not searched either (:mod:`lfr_actors.store.freshness`).

Every change is one transaction with its audit entry. ``watchlist_revision`` grows with
every change to the set of active entries; the running deployment polls it to bring its
index in line (:mod:`lfr_actors.control.follow`).

Each entry's templates are stored with a SHA-256 checksum
(:func:`~lfr_actors.store.migrations.template_checksum`). Templates read back that fail it,
or hold a value that is not finite, make the entry *damaged*:
:meth:`WatchlistEntries.load_templates` leaves it out of the index and names it with the
reason, the deployment's status and report count it, and it is never "indexed".

:class:`WatchlistEntries` is the watchlist half of
:class:`~lfr_actors.store.deployments.Deployments`, which is where it is used.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from lfr_actors.store.audit import Action, Actor, append_entry
from lfr_actors.store.db import Database
from lfr_actors.store.freshness import Freshness, judge, read_freshness
from lfr_actors.store.migrations import template_checksum, template_problem
from lfr_actors.store.policy import require_entry_threshold
from lfr_actors.store.records import (
    ENTRY_COLUMNS,
    Approval,
    Enrolled,
    EntryExistsError,
    EntryRecord,
    EntryState,
    EntryStateError,
    FourEyesError,
    Origin,
    TemplateLoad,
    UnknownDeploymentError,
    closed_error,
    entry_record,
    find_entry,
    require_deployment,
    require_entry,
    wipe_entries,
)
from lfr_actors.topology.schema import NewEntry


class WatchlistEntries:
    """The watchlist methods of :class:`~lfr_actors.store.deployments.Deployments`."""

    db: Database
    clock: Callable[[], float]
    _damaged_by_revision: dict[str, tuple[int, frozenset[str]]]
    """Per deployment, the revision its damaged entries were checked at, and their ids."""

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
        alert always names one person), :class:`~lfr_actors.store.policy.PolicyError` when
        the entry's own threshold is looser than the store's policy allows.
        """
        vectors = np.ascontiguousarray(enrolled.embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
            raise ValueError("an entry needs at least one embedding, shaped (n, dimension)")
        if not np.isfinite(vectors).all():
            raise ValueError("an entry's embeddings must be finite numbers")
        with self.db.transaction() as conn:
            record = require_deployment(conn, deployment_id)
            if record.closed_at is not None:
                raise closed_error(record)
            existing = find_entry(conn, deployment_id, new.id)
            if existing is not None:
                raise EntryExistsError(
                    f"deployment {deployment_id!r} already has an entry {new.id!r} "
                    f"({existing.state}); entry ids are never reused, so choose another"
                )
            require_entry_threshold(conn, new.threshold)
            now = self.clock()
            state = EntryState.PENDING if approved_by is None else EntryState.ACTIVE
            conn.execute(
                "INSERT INTO watchlist_entries (deployment_id, id, display_name, category, "
                "legal_basis, source, image_date, threshold, origin, state, image, image_type, "
                "embeddings, dimension, quality, added_by, added_by_token, added_at, "
                "approved_by, approved_by_token, approved_at, embeddings_sha256, "
                "test_subject, consent_ref) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    deployment_id,
                    new.id,
                    new.display_name,
                    new.category,
                    # The column is NOT NULL (migration 3); a test subject has no legal
                    # basis, so its row holds '' and reads back as None.
                    new.legal_basis or "",
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
                    int(new.test_subject),
                    new.consent_ref,
                ),
            )
            details: dict[str, Any] = {
                "deployment": deployment_id,
                "category": new.category,
                "legal_basis": new.legal_basis,
                "origin": str(origin),
                "state": str(state),
            }
            if new.test_subject:
                # Whether it is a volunteer stays in the trail; the consent reference, like
                # the name, is wiped at close and so is not copied here.
                details["test_subject"] = True
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
            entry = find_entry(conn, deployment_id, new.id)
        assert entry is not None
        return entry

    def check_entry_threshold(self, threshold: float | None) -> None:
        """Refuse now an entry's own ``threshold`` looser than the store's policy.

        Raises :class:`~lfr_actors.store.policy.PolicyError`; :meth:`add_entry` checks again.
        """
        with self.db.snapshot() as conn:
            require_entry_threshold(conn, threshold)

    def approve_entry(self, deployment_id: str, entry_id: str, *, actor: Actor) -> Approval:
        """Approve a pending entry (four eyes: not by the person who added it); audited."""
        with self.db.transaction() as conn:
            record = require_deployment(conn, deployment_id)
            if record.closed_at is not None:
                raise closed_error(record)
            entry = require_entry(conn, deployment_id, entry_id)
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
            approved = find_entry(conn, deployment_id, entry_id)
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
            record = require_deployment(conn, deployment_id)
            if record.closed_at is not None:
                raise closed_error(record)
            entry = require_entry(conn, deployment_id, entry_id)
            if entry.state is EntryState.DELETED:
                return entry
            now = self.clock()
            conn.execute(
                "UPDATE watchlist_entries SET state = ?, removed_by = ?, removed_at = ?, "
                "remove_reason = ? WHERE deployment_id = ? AND id = ?",
                (str(EntryState.DELETED), actor.name, now, reason, deployment_id, entry_id),
            )
            wipe_entries(conn, "deployment_id = ? AND id = ?", (deployment_id, entry_id))
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
            deleted = find_entry(conn, deployment_id, entry_id)
        assert deleted is not None
        self._checkpoint()
        return deleted

    def entry(self, deployment_id: str, entry_id: str) -> EntryRecord:
        """One entry, or :class:`UnknownDeploymentError` / :class:`UnknownEntryError`."""
        with self.db.lock:
            require_deployment(self.db.conn, deployment_id)
            return require_entry(self.db.conn, deployment_id, entry_id)

    def entries(
        self, deployment_id: str, *, state: EntryState | None = None
    ) -> builtins.list[EntryRecord]:
        """The deployment's entries (optionally of one state), in the order they were added."""
        sql = f"SELECT {ENTRY_COLUMNS} FROM watchlist_entries WHERE deployment_id = ?"
        params: tuple[Any, ...] = (deployment_id,)
        if state is not None:
            sql, params = f"{sql} AND state = ?", (*params, str(state))
        with self.db.lock:
            require_deployment(self.db.conn, deployment_id)
            rows = self.db.conn.execute(f"{sql} ORDER BY added_at, id", params).fetchall()
        return [entry_record(row) for row in rows]

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
            return find_entry(self.db.conn, deployment_id, entry_id) is not None

    def entry_image(self, deployment_id: str, entry_id: str) -> tuple[bytes, str] | None:
        """The entry's image and its media type, or None once deleted or destroyed."""
        with self.db.lock:
            require_deployment(self.db.conn, deployment_id)
            require_entry(self.db.conn, deployment_id, entry_id)
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

    def load_templates(self, deployment_id: str, *, now: float | None = None) -> TemplateLoad:
        """The revision, the searched entries' checked templates, and the entries left out.

        An active entry whose templates fail their checksum or are not finite is left out
        of ``templates`` and named in ``damaged`` with the reason (never the values). An
        active entry approved longer ago than the deployment's ``watchlist_max_age_h`` at
        ``now`` (the store's clock by default) is left out too and listed in ``stale``
        (:mod:`lfr_actors.store.freshness` states the rule); ``next_stale_at`` is when the
        next loaded entry goes stale.
        """
        at = self.clock() if now is None else now
        with self.db.snapshot() as conn:
            row = conn.execute(
                "SELECT watchlist_revision, watchlist_max_age_h FROM deployments WHERE id = ?",
                (deployment_id,),
            ).fetchone()
            if row is None:
                raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
            rows = conn.execute(
                "SELECT id, embeddings, dimension, embeddings_sha256, approved_at "
                "FROM watchlist_entries WHERE deployment_id = ? AND state = ?",
                (deployment_id, str(EntryState.ACTIVE)),
            ).fetchall()
        limit = None if row[1] is None else float(row[1])
        fresh = judge(((str(r[0]), _time(r[4])) for r in rows), limit, at)
        stale = {s.entry_id for s in fresh.stale}
        templates: dict[str, np.ndarray] = {}
        damaged: dict[str, str] = {}
        for entry_id, stored, dim, checksum, _ in rows:
            blob = None if stored is None else bytes(stored)
            dimension = None if dim is None else int(dim)
            problem = template_problem(blob, dimension, checksum)
            if problem is not None:
                damaged[str(entry_id)] = problem
                continue
            if str(entry_id) in stale:
                continue
            assert blob is not None and dimension is not None
            vectors = np.frombuffer(blob, dtype=np.float32).reshape(-1, dimension).copy()
            templates[str(entry_id)] = vectors
        return TemplateLoad(int(row[0]), templates, damaged, fresh.stale, fresh.next_stale_at)

    def freshness(self, deployment_id: str, *, now: float | None = None) -> Freshness:
        """The deployment's stale entries at ``now`` (the store's clock by default)."""
        at = self.clock() if now is None else now
        with self.db.snapshot() as conn:
            return read_freshness(conn, deployment_id, at)

    def searched_entries(self, deployment_id: str, now: float | None = None) -> builtins.list[str]:
        """The ids the deployment searches at ``now``: active, not damaged, not stale; sorted.

        Their number is the watchlist size an expected false alert rate is computed for.
        """
        return sorted(self.load_templates(deployment_id, now=now).templates)

    def damaged_entries(self, deployment_id: str) -> dict[str, str]:
        """The active entries whose templates cannot be used, with the reason for each."""
        return self.load_templates(deployment_id).damaged

    def damaged_ids(self, deployment_id: str) -> frozenset[str]:
        """The damaged entries' ids, checked again only when the watchlist's revision moves.

        Checking reads every active entry's templates. A deployment's answer asks for the
        watchlist searched (its expected false alerts) on every call, so the ids are kept
        per revision, as the index itself is loaded per revision; the report checks afresh
        (:meth:`damaged_entries`).
        """
        revision, _ = self.revision(deployment_id)
        kept = self._damaged_by_revision.get(deployment_id)
        if kept is not None and kept[0] == revision:
            return kept[1]
        load = self.load_templates(deployment_id)
        ids = frozenset(load.damaged)
        self._damaged_by_revision[deployment_id] = (load.revision, ids)
        return ids

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

    def _checkpoint(self) -> None:
        # With WAL, the pages that held a wiped image stay in the -wal file until a
        # checkpoint copies the new pages over them; TRUNCATE also empties the file.
        self.db.checkpoint("TRUNCATE")


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


def _subject(deployment_id: str, entry_id: str) -> str:
    return f"{deployment_id}/{entry_id}"


def _bump(conn: Any, deployment_id: str) -> None:
    conn.execute(
        "UPDATE deployments SET watchlist_revision = watchlist_revision + 1 WHERE id = ?",
        (deployment_id,),
    )
