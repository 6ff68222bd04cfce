"""The stored shapes of deployments and watchlist entries, and reading them back.

The life-cycle states, the records a deployment and an entry read back as (never an
entry's image or embeddings), the errors the store raises for them, and the small reads
and writes that :mod:`lfr_actors.store.deployments`, :mod:`lfr_actors.store.watchlist` and
:mod:`lfr_actors.store.reports` share: a record by id inside a transaction, the error for a
closed deployment, and the wipe of entries' biometric data.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from lfr_actors.store.db import StoreError
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.schema import NewDeployment


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


DEPLOYMENT_COLUMNS = (
    "id, authorised_by, purpose, location, starts_at, ends_at, impact_assessment_ref, "
    "threshold, origin, created_by, created_by_token, created_at, closed_at, closed_by, "
    "close_reason, watchlist_revision, frames, faces_seen, tracks_seen, counters_at, "
    "watchlist_max_age_h"
)
ENTRY_COLUMNS = (
    "deployment_id, id, display_name, category, legal_basis, source, image_date, threshold, "
    "origin, state, image_type, dimension, quality, added_by, added_by_token, added_at, "
    "approved_by, approved_by_token, approved_at, removed_by, removed_at, remove_reason, "
    "test_subject, consent_ref, "
    "CASE WHEN embeddings IS NULL THEN 0 ELSE length(embeddings) / (4 * dimension) END "
    "AS templates, "
    # The deployment's freshness limit, so that an entry read alone can say if it is stale.
    "(SELECT d.watchlist_max_age_h FROM deployments d "
    "WHERE d.id = watchlist_entries.deployment_id) AS watchlist_max_age_h"
)


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
    tracks_seen: int
    counters_at: float | None
    watchlist_max_age_h: float | None = None
    """Hours after its approval that an entry is stale (not searched); None: no limit."""

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
            watchlist_max_age_h=self.watchlist_max_age_h,
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
    legal_basis: str | None
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
    watchlist_max_age_h: float | None = None
    """The deployment's freshness limit (:mod:`lfr_actors.store.freshness` applies it)."""
    test_subject: bool = False
    """A consenting volunteer, there to measure live accuracy (no legal basis, a consent)."""
    consent_ref: str | None = None
    """A test subject's consent reference (wiped with the personal details at close)."""

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
            "test_subject": self.test_subject,
            "consent_ref": self.consent_ref,
        }


@dataclass(frozen=True)
class StaleEntry:
    """An active entry approved too long ago to be searched (:mod:`.freshness`)."""

    entry_id: str
    approved_at: float
    stale_since: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (Unix seconds)."""
        return {
            "entry_id": self.entry_id,
            "approved_at": self.approved_at,
            "stale_since": self.stale_since,
        }


@dataclass(frozen=True)
class TemplateLoad:
    """What :meth:`Deployments.load_templates` read: the usable templates and those left out.

    ``damaged`` entries fail their checksum; ``stale`` ones were approved longer ago than
    the deployment's ``watchlist_max_age_h``; ``next_stale_at`` is when the next of the
    loaded entries goes stale (None: none will).
    """

    revision: int
    templates: dict[str, np.ndarray]
    damaged: dict[str, str]
    stale: tuple[StaleEntry, ...] = ()
    next_stale_at: float | None = None


@dataclass(frozen=True)
class Approval:
    """The entry after an approval; ``changed`` is False when it was already active."""

    entry: EntryRecord
    changed: bool


def find_deployment(conn: Any, deployment_id: str) -> DeploymentRecord | None:
    """The deployment as ``conn`` sees it, or None."""
    row = conn.execute(
        f"SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?", (deployment_id,)
    ).fetchone()
    return None if row is None else deployment_record(row)


def require_deployment(conn: Any, deployment_id: str) -> DeploymentRecord:
    """The deployment as ``conn`` sees it, or :class:`UnknownDeploymentError`."""
    record = find_deployment(conn, deployment_id)
    if record is None:
        raise UnknownDeploymentError(f"no deployment with id {deployment_id[:80]!r}")
    return record


def find_entry(conn: Any, deployment_id: str, entry_id: str) -> EntryRecord | None:
    """The deployment's entry as ``conn`` sees it, or None."""
    row = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM watchlist_entries WHERE deployment_id = ? AND id = ?",
        (deployment_id, entry_id),
    ).fetchone()
    return None if row is None else entry_record(row)


def require_entry(conn: Any, deployment_id: str, entry_id: str) -> EntryRecord:
    """The deployment's entry as ``conn`` sees it, or :class:`UnknownEntryError`."""
    entry = find_entry(conn, deployment_id, entry_id)
    if entry is None:
        raise UnknownEntryError(
            f"deployment {deployment_id!r} has no watchlist entry {entry_id[:80]!r}"
        )
    return entry


def closed_error(record: DeploymentRecord) -> DeploymentClosedError:
    """The error for a change to the closed deployment ``record``."""
    assert record.closed_at is not None
    return DeploymentClosedError(
        f"deployment {record.id!r} was closed {iso_utc(record.closed_at, 'seconds')} "
        f"by {record.closed_by} "
        f"({record.close_reason}); its watchlist was destroyed and it cannot change or run again"
    )


def wipe_entries(conn: Any, where: str, params: tuple[Any, ...]) -> None:
    """Wipe the images, templates and personal details of the entries ``where`` selects."""
    # The biometric data and the personal details (a test subject's consent reference
    # too) go; ids, category, legal basis, whether it was a test subject and who did what
    # stay for the audit trail and the report. secure_delete overwrites the pages.
    conn.execute(
        "UPDATE watchlist_entries SET image = NULL, image_type = NULL, embeddings = NULL, "
        "embeddings_sha256 = NULL, quality = NULL, display_name = NULL, source = NULL, "
        f"image_date = NULL, consent_ref = NULL WHERE {where}",
        params,
    )


def deployment_record(row: sqlite3.Row) -> DeploymentRecord:
    """The record a ``SELECT {DEPLOYMENT_COLUMNS}`` row reads as."""
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
        tracks_seen=int(row["tracks_seen"]),
        counters_at=None if row["counters_at"] is None else float(row["counters_at"]),
        watchlist_max_age_h=_hours(row["watchlist_max_age_h"]),
    )


def entry_record(row: sqlite3.Row) -> EntryRecord:
    """The record a ``SELECT {ENTRY_COLUMNS}`` row reads as."""
    return EntryRecord(
        deployment_id=row["deployment_id"],
        id=row["id"],
        display_name=row["display_name"],
        category=row["category"],
        # A test subject's row holds '' in the NOT NULL legal_basis column: it has none.
        legal_basis=row["legal_basis"] or None,
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
        watchlist_max_age_h=_hours(row["watchlist_max_age_h"]),
        test_subject=bool(row["test_subject"]),
        consent_ref=row["consent_ref"],
    )


def _hours(value: Any) -> float | None:
    return None if value is None else float(value)
