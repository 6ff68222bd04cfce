"""Deployments and their watchlists on a real store file: life cycle, four eyes, audit."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from lfr_actors.alerts.records import Alert, AlertEvent, SightingRef
from lfr_actors.store.adjudications import Adjudications, Decision, DecisionRequest, Outcome
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM, Action, Actor, AuditEntry, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import WINDOW_ENDED, Deployments
from lfr_actors.store.records import (
    DeploymentClosedError,
    DeploymentExistsError,
    DeploymentState,
    Enrolled,
    EntryExistsError,
    EntryRecord,
    EntryState,
    EntryStateError,
    FourEyesError,
    Origin,
    UnknownDeploymentError,
    UnknownEntryError,
)
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.topology.schema import NewDeployment, NewEntry

T0 = 1_800_000_000.0
HOUR = 3600.0
DIM = 128

CREATOR = Actor("Insp Adams", "tok-insp")
ADDER = Actor("PC Brown", "tok-pc")
AUTHORISER = Actor("Supt Clarke", "tok-supt")
FILE_LOADER = Actor("topology file")
OFFICER = Actor("PC Officer", "tok-officer")

WIPED_COLUMNS = (
    "image",
    "image_type",
    "embeddings",
    "quality",
    "display_name",
    "source",
    "image_date",
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def declared(
    deployment_id: str = "dep1",
    *,
    starts_at: float = T0 + HOUR,
    ends_at: float = T0 + 5 * HOUR,
    threshold: float = 0.45,
    impact_assessment_ref: str | None = "DPIA-2027-01",
) -> NewDeployment:
    return make_deployment(
        deployment_id,
        starts_at,
        ends_at,
        threshold,
        authorised_by="Supt Clarke",
        purpose="find people wanted on warrant",
        location="High Street, north end",
        impact_assessment_ref=impact_assessment_ref,
    )


def new_entry(entry_id: str, *, threshold: float | None = None) -> NewEntry:
    return NewEntry(
        id=entry_id,
        display_name=f"Person {entry_id}",
        category="wanted",
        legal_basis="warrant 2027/0042",
        source=f"custody record {entry_id}",
        image_date="2026-11-03",
        threshold=threshold,
    )


def vectors(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def image_bytes(tag: str) -> bytes:
    # Long and distinctive enough to be found in the raw file, and never by chance.
    return b"\xff\xd8fake-jpeg:" + tag.encode() + b":" + bytes(range(256)) * 4


def enrolled(tag: str = "E1", *, n: int = 2, seed: int = 0) -> Enrolled:
    return Enrolled(
        image=image_bytes(tag),
        image_type="image/jpeg",
        embeddings=vectors(n, seed),
        quality={"sharpness": 0.8, "face_px": 112},
    )


def add_active(
    store: Deployments, deployment_id: str, entry_id: str, enrolment: Enrolled | None = None
) -> EntryRecord:
    """An entry as the topology file declares it: active at once, approved by the authority."""
    return store.add_entry(
        deployment_id,
        new_entry(entry_id),
        enrolled(entry_id) if enrolment is None else enrolment,
        actor=FILE_LOADER,
        origin=Origin.FILE,
        approved_by=AUTHORISER,
    )


def raw_entry(db: Path, deployment_id: str, entry_id: str) -> dict[str, Any]:
    """The entry's row as a separate sqlite3 connection on the file sees it."""
    raw = sqlite3.connect(db)
    try:
        cursor = raw.execute(
            "SELECT * FROM watchlist_entries WHERE deployment_id = ? AND id = ?",
            (deployment_id, entry_id),
        )
        row = cursor.fetchone()
        assert row is not None
        return dict(zip([c[0] for c in cursor.description], row, strict=True))
    finally:
        raw.close()


def file_bytes(db: Path) -> bytes:
    data = db.read_bytes()
    wal = db.with_name(db.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def audit_entries(database: Database, **filters: Any) -> list[AuditEntry]:
    return AuditLog(database).page(limit=1000, **filters).entries


def alert_event(alert_id: str, deployment_id: str, entry_id: str, n: int) -> AlertEvent:
    ref = SightingRef(f"cam_a:{n}:0", "cam_a", T0 + 2 * HOUR + n, 0.3)
    alert = Alert(
        id=alert_id,
        deployment_id=deployment_id,
        entry_id=entry_id,
        first_camera_id="cam_a",
        cameras=["cam_a"],
        first_seen=ref.captured_at,
        last_seen=ref.captured_at,
        sightings=1,
        best_distance=ref.distance,
        best_sighting_id=ref.sighting_id,
        best_box=[float(n), 2.0, 30.0, 40.0],
        best_quality={"sharpness": 0.5},
        best_crop_jpeg=b"\xff\xd8crop" + bytes([n]),
    )
    return AlertEvent(kind="raised", alert=alert, sightings=(ref,))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "alerts.sqlite3"


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def database(path: Path) -> Iterator[Database]:
    with Database(path) as db:
        yield db


@pytest.fixture
def store(database: Database, clock: Clock) -> Deployments:
    return Deployments(database, clock=clock)


@pytest.fixture
def dep(store: Deployments) -> str:
    store.create(declared("dep1"), actor=CREATOR)
    return "dep1"


# -- deployments ------------------------------------------------------------------------


def test_create_records_the_declaration_and_who_created_it(
    store: Deployments, clock: Clock
) -> None:
    record = store.create(declared("dep1"), actor=CREATOR)
    assert record.id == "dep1"
    assert record.declared() == declared("dep1")
    assert record.origin is Origin.API
    assert record.created_by == "Insp Adams"
    assert record.created_by_token == "tok-insp"
    assert record.created_at == clock.now
    assert record.closed_at is None and record.closed_by is None and record.close_reason is None
    assert record.watchlist_revision == 0
    assert (record.frames, record.faces_seen, record.tracks_seen, record.counters_at) == (
        0,
        0,
        0,
        None,
    )
    assert store.get("dep1") == record
    assert store.find("dep1") == record

    from_file = store.create(declared("dep2"), actor=SYSTEM, origin=Origin.FILE)
    assert from_file.origin is Origin.FILE
    assert from_file.created_by == "system" and from_file.created_by_token is None


def test_get_find_and_list(store: Deployments) -> None:
    assert store.list() == []
    assert store.find("nope") is None
    with pytest.raises(UnknownDeploymentError, match="nope"):
        store.get("nope")
    store.create(declared("early", starts_at=T0, ends_at=T0 + HOUR), actor=CREATOR)
    store.create(declared("late", starts_at=T0 + 10 * HOUR, ends_at=T0 + 11 * HOUR), actor=CREATOR)
    store.create(declared("middle", starts_at=T0 + 5 * HOUR, ends_at=T0 + 6 * HOUR), actor=CREATOR)
    assert [r.id for r in store.list()] == ["late", "middle", "early"]  # newest window first


def test_a_reused_id_is_refused_and_nothing_changes(store: Deployments, database: Database) -> None:
    first = store.create(declared("dep1"), actor=CREATOR)
    other = declared("dep1", threshold=0.9)
    with pytest.raises(DeploymentExistsError, match="dep1"):
        store.create(other, actor=ADDER)
    assert store.get("dep1") == first
    assert len(audit_entries(database, action=str(Action.DEPLOYMENT_CREATE))) == 1


@pytest.mark.parametrize(
    ("end", "refusal"),
    [
        (T0 + HOUR, "is not after start"),
        (T0, "is not after start"),
        (float("nan"), "expected an ISO 8601 date and time"),
    ],
)
def test_a_window_that_does_not_end_after_it_starts_is_refused(
    store: Deployments, database: Database, end: float, refusal: str
) -> None:
    # The declaration carries the window rules: one that breaks them is never made, so
    # the store cannot be handed it.
    written = {**declared("dep1", starts_at=T0 + HOUR).model_dump(), "threshold": 0.45}
    written["end"] = datetime.fromtimestamp(end, UTC) if end == end else end
    with pytest.raises(ValidationError, match=refusal):
        store.create(NewDeployment.model_validate(written), actor=CREATOR)
    assert store.find("dep1") is None
    assert audit_entries(database) == []


def test_state_follows_the_clock_and_the_close(store: Deployments, clock: Clock) -> None:
    record = store.create(declared("dep1"), actor=CREATOR)
    assert record.state(T0) is DeploymentState.SCHEDULED
    assert record.state(T0 + HOUR) is DeploymentState.ACTIVE  # the start is inside
    assert record.state(T0 + 5 * HOUR - 0.001) is DeploymentState.ACTIVE
    assert record.state(T0 + 5 * HOUR) is DeploymentState.ENDED  # the end is not
    assert record.as_dict(T0)["state"] == "scheduled"
    assert store.report("dep1")["state"] == "scheduled"
    clock.now = T0 + 2 * HOUR
    assert store.report("dep1")["state"] == "active"
    clock.now = T0 + 6 * HOUR
    assert store.report("dep1")["state"] == "ended"
    closed, _ = store.close("dep1", actor=CREATOR, reason="done")
    for now in (T0, T0 + 2 * HOUR, T0 + 6 * HOUR):
        assert closed.state(now) is DeploymentState.CLOSED
    assert store.report("dep1")["state"] == "closed"
    assert closed.as_dict(T0)["state"] == "closed"


def test_create_is_audited(store: Deployments, database: Database, clock: Clock) -> None:
    store.create(declared("dep1"), actor=CREATOR, origin=Origin.FILE)
    (entry,) = audit_entries(database)
    assert entry.action == "deployment.create"
    assert entry.subject == "dep1"
    assert (entry.actor, entry.actor_token) == ("Insp Adams", "tok-insp")
    assert entry.at == clock.now
    assert entry.details_map() == {**declared("dep1").as_dict(), "origin": "file"}


# -- adding entries ---------------------------------------------------------------------


def test_an_entry_added_without_approval_is_pending(
    store: Deployments, dep: str, clock: Clock
) -> None:
    clock.now = T0 + 10
    entry = store.add_entry(dep, new_entry("E1", threshold=0.4), enrolled("E1"), actor=ADDER)
    assert entry.state is EntryState.PENDING
    assert entry.origin is Origin.API
    assert (entry.deployment_id, entry.id) == (dep, "E1")
    assert entry.display_name == "Person E1"
    assert entry.category == "wanted" and entry.legal_basis == "warrant 2027/0042"
    assert entry.source == "custody record E1" and entry.image_date == "2026-11-03"
    assert entry.threshold == 0.4
    assert entry.image_type == "image/jpeg"
    assert entry.dimension == DIM
    assert entry.templates == 2
    assert entry.quality == {"sharpness": 0.8, "face_px": 112}
    assert (entry.added_by, entry.added_by_token, entry.added_at) == ("PC Brown", "tok-pc", T0 + 10)
    assert entry.approved_by is None and entry.approved_by_token is None
    assert entry.approved_at is None
    assert store.entry(dep, "E1") == entry
    assert store.entries(dep) == [entry]
    assert store.entries(dep, state=EntryState.PENDING) == [entry]
    assert store.entries(dep, state=EntryState.ACTIVE) == []
    # Pending entries are not searched.
    assert store.active_templates(dep) == (0, {})
    assert store.get(dep).watchlist_revision == 0


def test_an_entry_from_the_file_with_its_approval_is_active_at_once(
    store: Deployments, dep: str, database: Database, clock: Clock
) -> None:
    clock.now = T0 + 20
    entry = store.add_entry(
        dep,
        new_entry("E1"),
        enrolled("E1", n=3),
        actor=FILE_LOADER,
        origin=Origin.FILE,
        approved_by=AUTHORISER,
    )
    assert entry.state is EntryState.ACTIVE
    assert entry.origin is Origin.FILE
    assert entry.templates == 3
    assert (entry.approved_by, entry.approved_by_token, entry.approved_at) == (
        "Supt Clarke",
        "tok-supt",
        T0 + 20,
    )
    assert store.get(dep).watchlist_revision == 1
    entries = audit_entries(database, subject=f"{dep}/E1")
    assert [(e.action, e.actor) for e in entries] == [
        ("entry.create", "topology file"),
        ("entry.approve", "Supt Clarke"),
    ]
    assert entries[0].details_map()["state"] == "active"
    assert entries[0].details_map()["origin"] == "file"


def test_add_entry_needs_known_deployment_and_embeddings(store: Deployments, dep: str) -> None:
    with pytest.raises(UnknownDeploymentError):
        store.add_entry("nope", new_entry("E1"), enrolled(), actor=ADDER)
    for bad in (np.zeros((0, DIM), np.float32), np.zeros(DIM, np.float32)):
        flat = Enrolled(image=b"\xff\xd8fake", image_type="image/jpeg", embeddings=bad, quality={})
        with pytest.raises(ValueError, match="at least one embedding"):
            store.add_entry(dep, new_entry("E1"), flat, actor=ADDER)
    assert store.entries(dep) == []


def test_an_entry_with_zero_dimensional_embeddings_is_refused(store: Deployments, dep: str) -> None:
    add_active(store, dep, "GOOD")
    empty = Enrolled(
        image=b"\xff\xd8fake",
        image_type="image/jpeg",
        embeddings=np.zeros((1, 0), np.float32),
        quality={},
    )
    # Accepted, such an entry makes active_templates raise for the whole deployment
    # ("cannot reshape array of size 0"), so its index can no longer be loaded.
    with pytest.raises(ValueError):
        add_active(store, dep, "EMPTY", empty)
    assert set(store.active_templates(dep)[1]) == {"GOOD"}


def test_entry_ids_are_never_reused(store: Deployments, dep: str) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    with pytest.raises(EntryExistsError, match="E1"):
        store.add_entry(dep, new_entry("E1"), enrolled("again", seed=1), actor=ADDER)
    store.delete_entry(dep, "E1", actor=AUTHORISER, reason="mistake")
    with pytest.raises(EntryExistsError, match="never reused"):
        store.add_entry(dep, new_entry("E1"), enrolled("again", seed=1), actor=ADDER)
    assert store.entry_ids(dep) == {"E1"}
    assert store.entry(dep, "E1").state is EntryState.DELETED
    # Another deployment may use the same entry id.
    store.create(declared("dep2"), actor=CREATOR)
    assert store.add_entry("dep2", new_entry("E1"), enrolled(), actor=ADDER).id == "E1"


def test_revision_bumps_only_when_the_active_set_changes(store: Deployments, dep: str) -> None:
    def revision() -> int:
        rev, closed_at = store.revision(dep)
        assert closed_at is None
        assert store.get(dep).watchlist_revision == rev
        assert store.active_templates(dep)[0] == rev
        return rev

    assert revision() == 0
    store.add_entry(dep, new_entry("P1"), enrolled("P1"), actor=ADDER)
    assert revision() == 0  # pending: not searched
    store.add_entry(dep, new_entry("P2"), enrolled("P2"), actor=ADDER)
    assert revision() == 0
    store.approve_entry(dep, "P1", actor=AUTHORISER)
    assert revision() == 1
    store.approve_entry(dep, "P1", actor=AUTHORISER)  # already active
    assert revision() == 1
    add_active(store, dep, "F1")
    assert revision() == 2
    store.delete_entry(dep, "P2", actor=AUTHORISER)  # pending: not searched
    assert revision() == 2
    store.delete_entry(dep, "P1", actor=AUTHORISER)
    assert revision() == 3
    store.delete_entry(dep, "P1", actor=AUTHORISER)  # already deleted
    assert revision() == 3
    with pytest.raises(UnknownDeploymentError):
        store.revision("nope")


def test_active_templates_are_the_active_entries_embeddings(store: Deployments, dep: str) -> None:
    a, b, c = vectors(2, seed=1), vectors(3, seed=2), vectors(1, seed=3)
    store.add_entry(
        dep,
        new_entry("A"),
        Enrolled(image=b"\xff\xd8fake", image_type="image/jpeg", embeddings=a, quality={}),
        actor=FILE_LOADER,
        origin=Origin.FILE,
        approved_by=AUTHORISER,
    )
    store.add_entry(
        dep,
        new_entry("B"),
        # float64 and not contiguous: stored as contiguous float32
        Enrolled(
            image=b"\xff\xd8fake",
            image_type="image/jpeg",
            embeddings=np.asfortranarray(b.astype(np.float64)),
            quality={},
        ),
        actor=ADDER,
    )
    store.add_entry(
        dep,
        new_entry("C"),
        Enrolled(image=b"\xff\xd8fake", image_type="image/jpeg", embeddings=c, quality={}),
        actor=ADDER,
    )
    revision, templates = store.active_templates(dep)
    assert revision == 1
    assert set(templates) == {"A"}

    store.approve_entry(dep, "B", actor=AUTHORISER)
    revision, templates = store.active_templates(dep)
    assert revision == 2
    assert set(templates) == {"A", "B"}
    for entry_id, expected in (("A", a), ("B", b)):
        got = templates[entry_id]
        assert got.dtype == np.float32
        assert got.shape == expected.shape
        assert got.flags.writeable  # a copy, not a view of the row's bytes
        np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert store.entry(dep, "B").templates == 3
    with pytest.raises(UnknownDeploymentError):
        store.active_templates("nope")


def test_entry_image_until_deleted(store: Deployments, dep: str) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    assert store.entry_image(dep, "E1") == (image_bytes("E1"), "image/jpeg")
    with pytest.raises(UnknownEntryError):
        store.entry_image(dep, "E2")
    with pytest.raises(UnknownDeploymentError):
        store.entry_image("nope", "E1")
    store.delete_entry(dep, "E1", actor=AUTHORISER)
    assert store.entry_image(dep, "E1") is None


def test_unknown_entries_are_reported(store: Deployments, dep: str) -> None:
    with pytest.raises(UnknownEntryError, match="E9"):
        store.entry(dep, "E9")
    with pytest.raises(UnknownEntryError):
        store.approve_entry(dep, "E9", actor=AUTHORISER)
    with pytest.raises(UnknownEntryError):
        store.delete_entry(dep, "E9", actor=AUTHORISER)
    with pytest.raises(UnknownDeploymentError):
        store.entry("nope", "E9")
    with pytest.raises(UnknownDeploymentError):
        store.entries("nope")


def test_entries_are_listed_in_the_order_they_were_added(
    store: Deployments, dep: str, clock: Clock
) -> None:
    for i, entry_id in enumerate(("Z", "A", "M")):
        clock.now = T0 + i
        store.add_entry(dep, new_entry(entry_id), enrolled(entry_id), actor=ADDER)
    assert [e.id for e in store.entries(dep)] == ["Z", "A", "M"]


# -- approval ---------------------------------------------------------------------------


def test_the_person_who_added_an_entry_cannot_approve_it(
    store: Deployments, dep: str, database: Database
) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    same_name = Actor("PC Brown", "another-token")
    same_token = Actor("Someone Else", "tok-pc")
    for actor in (ADDER, same_name, same_token):
        with pytest.raises(FourEyesError, match="second person"):
            store.approve_entry(dep, "E1", actor=actor)
    entry = store.entry(dep, "E1")
    assert entry.state is EntryState.PENDING and entry.approved_by is None
    assert store.get(dep).watchlist_revision == 0
    assert audit_entries(database, action=str(Action.ENTRY_APPROVE)) == []


def test_an_untokened_adder_is_told_apart_by_name(store: Deployments, dep: str) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=Actor("cli user"))
    # No token on either side: a different name is a different person.
    approval = store.approve_entry(dep, "E1", actor=Actor("other user"))
    assert approval.changed and approval.entry.state is EntryState.ACTIVE


def test_a_second_person_approves_once(
    store: Deployments, dep: str, database: Database, clock: Clock
) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    clock.now = T0 + 60
    approval = store.approve_entry(dep, "E1", actor=AUTHORISER)
    assert approval.changed is True
    assert approval.entry.state is EntryState.ACTIVE
    assert (approval.entry.approved_by, approval.entry.approved_by_token) == (
        "Supt Clarke",
        "tok-supt",
    )
    assert approval.entry.approved_at == T0 + 60
    assert store.entry(dep, "E1") == approval.entry

    clock.now = T0 + 120
    again = store.approve_entry(dep, "E1", actor=Actor("Supt Other", "tok-other"))
    assert again.changed is False
    assert again.entry == approval.entry  # the first approval stands
    # Even the adder asking again gets the active entry back, not a four-eyes refusal.
    assert store.approve_entry(dep, "E1", actor=ADDER).changed is False
    assert len(audit_entries(database, action=str(Action.ENTRY_APPROVE))) == 1


def test_a_deleted_entry_cannot_be_approved(store: Deployments, dep: str) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    store.delete_entry(dep, "E1", actor=AUTHORISER, reason="withdrawn")
    with pytest.raises(EntryStateError, match="deleted"):
        store.approve_entry(dep, "E1", actor=AUTHORISER)
    assert store.entry(dep, "E1").state is EntryState.DELETED
    assert store.active_templates(dep)[1] == {}


def test_entry_actions_are_audited_under_deployment_slash_entry(
    store: Deployments, dep: str, database: Database, clock: Clock
) -> None:
    clock.now = T0 + 1
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    clock.now = T0 + 2
    store.approve_entry(dep, "E1", actor=AUTHORISER)
    clock.now = T0 + 3
    store.delete_entry(dep, "E1", actor=AUTHORISER, reason="arrested")
    entries = audit_entries(database, subject="dep1/E1")
    assert [(e.action, e.actor, e.actor_token, e.at) for e in entries] == [
        ("entry.create", "PC Brown", "tok-pc", T0 + 1),
        ("entry.approve", "Supt Clarke", "tok-supt", T0 + 2),
        ("entry.delete", "Supt Clarke", "tok-supt", T0 + 3),
    ]
    create, approve, delete = (e.details_map() for e in entries)
    assert create == {
        "deployment": "dep1",
        "category": "wanted",
        "legal_basis": "warrant 2027/0042",
        "origin": "api",
        "state": "pending_approval",
    }
    assert approve == {"added_by": "PC Brown"}
    assert delete == {"was": "active", "reason": "arrested"}
    # The name never goes into the append-only log, where it could not be wiped.
    assert all("Person E1" not in e.details for e in audit_entries(database))
    assert AuditLog(database).verify().intact


# -- deletion ---------------------------------------------------------------------------


def test_delete_wipes_the_biometric_and_personal_data(
    store: Deployments, dep: str, path: Path, clock: Clock
) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    store.approve_entry(dep, "E1", actor=AUTHORISER)
    before = raw_entry(path, dep, "E1")
    assert all(before[column] is not None for column in WIPED_COLUMNS)

    clock.now = T0 + 99
    deleted = store.delete_entry(dep, "E1", actor=AUTHORISER, reason="no longer wanted")
    assert deleted.state is EntryState.DELETED
    assert (deleted.removed_by, deleted.removed_at, deleted.remove_reason) == (
        "Supt Clarke",
        T0 + 99,
        "no longer wanted",
    )
    assert deleted.display_name is None and deleted.source is None
    assert deleted.image_date is None and deleted.quality is None
    assert deleted.image_type is None and deleted.templates == 0
    # What stays: the id, category, legal basis and who did what.
    assert (deleted.category, deleted.legal_basis) == ("wanted", "warrant 2027/0042")
    assert (deleted.added_by, deleted.approved_by) == ("PC Brown", "Supt Clarke")
    assert deleted.as_dict()["has_image"] is False

    row = raw_entry(path, dep, "E1")
    assert {column: row[column] for column in WIPED_COLUMNS} == dict.fromkeys(WIPED_COLUMNS)
    assert row["state"] == "deleted"
    assert row["category"] == "wanted" and row["added_by"] == "PC Brown"


def test_deleting_again_returns_the_entry_unchanged(
    store: Deployments, dep: str, database: Database, clock: Clock
) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    first = store.delete_entry(dep, "E1", actor=AUTHORISER, reason="first")
    clock.now = T0 + 500
    again = store.delete_entry(dep, "E1", actor=Actor("Someone Else"), reason="second")
    assert again == first
    assert again.remove_reason == "first" and again.removed_at == T0
    assert len(audit_entries(database, action=str(Action.ENTRY_DELETE))) == 1
    assert audit_entries(database, action=str(Action.ENTRY_DELETE))[0].details_map() == {
        "was": "pending_approval",
        "reason": "first",
    }


def test_deleted_image_and_embeddings_leave_the_file(
    store: Deployments, dep: str, path: Path
) -> None:
    enrolment = enrolled("E1")
    store.add_entry(dep, new_entry("E1"), enrolment, actor=ADDER)
    blob = np.ascontiguousarray(enrolment.embeddings, dtype=np.float32).tobytes()
    assert image_bytes("E1") in file_bytes(path)
    assert blob in file_bytes(path)

    store.delete_entry(dep, "E1", actor=AUTHORISER)
    raw = file_bytes(path)
    # The module promises the image and embeddings are wiped "at once" with secure_delete;
    # with WAL the old page images stay in the -wal file until a checkpoint overwrites them.
    assert image_bytes("E1") not in raw, "the deleted image is still in the store file or WAL"
    assert blob not in raw, "the deleted embeddings are still in the store file or WAL"


# -- closing ----------------------------------------------------------------------------


def test_close_destroys_the_watchlist_and_keeps_the_record(
    store: Deployments, dep: str, path: Path, database: Database, clock: Clock
) -> None:
    store.add_entry(dep, new_entry("P1"), enrolled("P1"), actor=ADDER)
    store.add_entry(dep, new_entry("A1"), enrolled("A1"), actor=ADDER)
    store.approve_entry(dep, "A1", actor=AUTHORISER)
    add_active(store, dep, "A2")
    store.add_entry(dep, new_entry("D1"), enrolled("D1"), actor=ADDER)
    deleted = store.delete_entry(dep, "D1", actor=AUTHORISER, reason="mistake")
    revision_before = store.get(dep).watchlist_revision
    assert revision_before == 2

    clock.now = T0 + 3 * HOUR
    closed, destroyed = store.close(dep, actor=CREATOR, reason="operation over")
    assert destroyed == {"pending_approval": 1, "active": 2}
    assert closed.closed_at == T0 + 3 * HOUR
    assert (closed.closed_by, closed.close_reason) == ("Insp Adams", "operation over")
    assert closed.watchlist_revision == revision_before + 1
    assert store.revision(dep) == (revision_before + 1, T0 + 3 * HOUR)
    assert store.get(dep) == closed
    assert closed.declared() == declared(dep)  # the record stays

    for entry_id in ("P1", "A1", "A2"):
        entry = store.entry(dep, entry_id)
        assert entry.state is EntryState.DESTROYED
        assert (entry.removed_by, entry.removed_at) == ("Insp Adams", T0 + 3 * HOUR)
        assert entry.remove_reason == "the deployment was closed"
        row = raw_entry(path, dep, entry_id)
        assert row["state"] == "destroyed"
        assert {column: row[column] for column in WIPED_COLUMNS} == dict.fromkeys(WIPED_COLUMNS)
        assert store.entry_image(dep, entry_id) is None
    assert store.entry(dep, "D1") == deleted  # already deleted: left as it was
    assert store.active_templates(dep) == (revision_before + 1, {})
    # All added at the same clock time: listed by id.
    assert store.entries(dep, state=EntryState.DESTROYED) == [
        store.entry(dep, i) for i in ("A1", "A2", "P1")
    ]

    (audit,) = audit_entries(database, action=str(Action.DEPLOYMENT_CLOSE))
    assert (audit.subject, audit.actor, audit.at) == (dep, "Insp Adams", T0 + 3 * HOUR)
    assert audit.details_map() == {
        "reason": "operation over",
        "entries_destroyed": {"pending_approval": 1, "active": 2},
    }
    check = AuditLog(database).verify()
    assert check.intact, check.summary()
    assert check.entries == len(audit_entries(database))


def test_closing_an_empty_deployment_destroys_nothing(
    store: Deployments, dep: str, database: Database
) -> None:
    closed, destroyed = store.close(dep, actor=CREATOR, reason="cancelled")
    assert destroyed == {}
    assert closed.watchlist_revision == 1  # the running deployment learns of the close
    (audit,) = audit_entries(database, action=str(Action.DEPLOYMENT_CLOSE))
    assert audit.details_map()["entries_destroyed"] == {}


def test_a_closed_deployment_cannot_change(
    store: Deployments, dep: str, database: Database, clock: Clock
) -> None:
    store.add_entry(dep, new_entry("E1"), enrolled("E1"), actor=ADDER)
    closed, _ = store.close(dep, actor=CREATOR, reason="operation over")
    audit_before = audit_entries(database)

    clock.now = T0 + HOUR
    with pytest.raises(DeploymentClosedError, match="operation over"):
        store.close(dep, actor=CREATOR, reason="again")
    with pytest.raises(DeploymentClosedError, match="cannot change"):
        store.add_entry(dep, new_entry("E2"), enrolled("E2"), actor=ADDER)
    with pytest.raises(DeploymentClosedError):
        store.approve_entry(dep, "E1", actor=AUTHORISER)
    with pytest.raises(DeploymentClosedError):
        store.delete_entry(dep, "E1", actor=AUTHORISER)
    assert store.get(dep) == closed
    assert store.entry_ids(dep) == {"E1"}
    assert store.entry(dep, "E1").state is EntryState.DESTROYED
    assert audit_entries(database) == audit_before
    with pytest.raises(UnknownDeploymentError):
        store.close("nope", actor=CREATOR, reason="x")


def test_close_destroys_only_that_deployments_watchlist(store: Deployments, dep: str) -> None:
    store.create(declared("dep2"), actor=CREATOR)
    for deployment_id in (dep, "dep2"):
        add_active(store, deployment_id, "E1", enrolled(deployment_id))
    store.close(dep, actor=CREATOR, reason="over")
    assert store.entry("dep2", "E1").state is EntryState.ACTIVE
    assert store.entry_image("dep2", "E1") == (image_bytes("dep2"), "image/jpeg")
    assert set(store.active_templates("dep2")[1]) == {"E1"}
    assert store.get("dep2").closed_at is None


def test_destroyed_images_and_embeddings_leave_the_file(
    store: Deployments, dep: str, path: Path
) -> None:
    enrolment = enrolled("E1")
    add_active(store, dep, "E1", enrolment)
    blob = np.ascontiguousarray(enrolment.embeddings, dtype=np.float32).tobytes()
    assert image_bytes("E1") in file_bytes(path)
    store.close(dep, actor=CREATOR, reason="over")
    raw = file_bytes(path)
    assert image_bytes("E1") not in raw, "the destroyed image is still in the store file or WAL"
    assert blob not in raw, "the destroyed embeddings are still in the store file or WAL"


def test_close_ended_closes_only_deployments_whose_window_passed(
    store: Deployments, database: Database, clock: Clock
) -> None:
    store.create(declared("past", starts_at=T0 - 5 * HOUR, ends_at=T0 - HOUR), actor=CREATOR)
    store.create(declared("edge", starts_at=T0 - 5 * HOUR, ends_at=T0), actor=CREATOR)
    store.create(declared("running", starts_at=T0 - HOUR, ends_at=T0 + HOUR), actor=CREATOR)
    store.create(declared("future", starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR), actor=CREATOR)
    store.create(declared("gone", starts_at=T0 - 5 * HOUR, ends_at=T0 - 2 * HOUR), actor=CREATOR)
    store.close("gone", actor=CREATOR, reason="closed by hand")
    add_active(store, "past", "E1")

    assert sorted(store.close_ended()) == ["edge", "past"]
    for deployment_id in ("edge", "past"):
        record = store.get(deployment_id)
        assert record.state(clock.now) is DeploymentState.CLOSED
        assert record.closed_by == "system"
        assert record.close_reason == WINDOW_ENDED
        (audit,) = audit_entries(
            database, action=str(Action.DEPLOYMENT_CLOSE), subject=deployment_id
        )
        assert (audit.actor, audit.actor_token) == (SYSTEM.name, None)
        assert audit.details_map()["reason"] == WINDOW_ENDED
    assert store.entry("past", "E1").state is EntryState.DESTROYED
    assert store.get("running").closed_at is None
    assert store.get("future").closed_at is None
    assert store.get("gone").close_reason == "closed by hand"

    assert store.close_ended() == []  # nothing more to close
    clock.now = T0 + HOUR
    assert store.close_ended() == ["running"]
    clock.now = T0 + 3 * HOUR
    assert store.close_ended() == ["future"]
    assert AuditLog(database).verify().intact


# -- counters and the report ------------------------------------------------------------


def test_add_counters_accumulates(store: Deployments, dep: str, clock: Clock) -> None:
    clock.now = T0 + 10
    store.add_counters(dep, frames=100, faces=7, tracks=2)
    clock.now = T0 + 20
    store.add_counters(dep, frames=50, faces=0)
    store.add_counters(dep, frames=0, faces=3, tracks=1)
    record = store.get(dep)
    assert (record.frames, record.faces_seen, record.counters_at) == (150, 10, T0 + 20)
    assert record.tracks_seen == 3
    report = store.report(dep)
    assert (report["frames"], report["faces_seen"], report["tracks_seen"]) == (150, 10, 3)


@pytest.mark.parametrize(("frames", "faces", "tracks"), [(-1, 0, 0), (0, -1, 0), (0, 0, -1)])
def test_counters_never_go_down(
    store: Deployments, dep: str, frames: int, faces: int, tracks: int
) -> None:
    store.add_counters(dep, frames=5, faces=5, tracks=5)
    with pytest.raises(ValueError, match="only grow"):
        store.add_counters(dep, frames=frames, faces=faces, tracks=tracks)
    record = store.get(dep)
    assert (record.frames, record.faces_seen, record.tracks_seen) == (5, 5, 5)


def test_migration_10_counts_no_tracks_for_a_deployment_counted_before(path: Path) -> None:
    with Database(path) as db:
        store = Deployments(db)
        store.create(declared("dep1"), actor=CREATOR)
        store.add_counters("dep1", frames=40, faces=9)
    with sqlite3.connect(path) as raw:  # the store as version 8 left it
        raw.execute("ALTER TABLE deployments DROP COLUMN tracks_seen")
        raw.execute("DELETE FROM schema_migrations WHERE version = 10")
    raw.close()
    with Database(path) as db:
        store = Deployments(db)
        record = store.get("dep1")
        assert (record.frames, record.faces_seen, record.tracks_seen) == (40, 9, 0)
        store.add_counters("dep1", frames=1, faces=1, tracks=1)
        assert store.report("dep1")["tracks_seen"] == 1


def test_report_of_a_deployment_without_alerts(store: Deployments, dep: str, clock: Clock) -> None:
    report = store.report(dep)
    assert report["deployment_id"] == dep
    assert report["state"] == "scheduled"
    assert report["authorised_by"] == "Supt Clarke"
    assert report["impact_assessment_ref"] == "DPIA-2027-01"
    assert report["threshold"] == 0.45
    assert (report["starts_at"], report["ends_at"], report["closed_at"]) == (
        T0 + HOUR,
        T0 + 5 * HOUR,
        None,
    )
    assert report["watchlist"] == {
        "size": 0,
        "active": 0,
        "pending_approval": 0,
        "deleted": 0,
        "destroyed": 0,
        "damaged": 0,
        "damaged_entries": [],
        "stale": 0,
        "stale_entries": [],
    }
    assert report["alerts"] == {
        "total": 0,
        "confirmed": 0,
        "false": 0,
        "unsure": 0,
        "not_adjudicated": 0,
    }
    assert report["outcomes"] == {}
    assert (report["faces_seen"], report["tracks_seen"]) == (0, 0)
    assert report["false_alert_rate"] is None  # no face seen yet
    assert report["generated_at"] == clock.now
    with pytest.raises(UnknownDeploymentError):
        store.report("nope")


def test_report_watchlist_size_counts_approved_entries_even_once_destroyed(
    store: Deployments, dep: str
) -> None:
    store.add_entry(dep, new_entry("P1"), enrolled("P1"), actor=ADDER)  # never approved
    store.add_entry(dep, new_entry("A1"), enrolled("A1"), actor=ADDER)
    store.approve_entry(dep, "A1", actor=AUTHORISER)
    add_active(store, dep, "F1")
    add_active(store, dep, "F2")
    store.delete_entry(dep, "F2", actor=AUTHORISER)  # approved, then deleted: still counted
    store.add_entry(dep, new_entry("P2"), enrolled("P2"), actor=ADDER)
    store.delete_entry(dep, "P2", actor=AUTHORISER)  # never approved: not counted
    assert store.report(dep)["watchlist"] == {
        "size": 3,
        "active": 2,
        "pending_approval": 1,
        "deleted": 2,
        "destroyed": 0,
        "damaged": 0,
        "damaged_entries": [],
        "stale": 0,
        "stale_entries": [],
    }
    store.close(dep, actor=CREATOR, reason="over")
    assert store.report(dep)["watchlist"] == {
        "size": 3,
        "active": 0,
        "pending_approval": 0,
        "deleted": 2,
        "destroyed": 3,
        "damaged": 0,
        "damaged_entries": [],
        "stale": 0,
        "stale_entries": [],
    }


def test_report_counts_alerts_by_the_decision_in_force(
    store: Deployments, dep: str, path: Path, database: Database, clock: Clock
) -> None:
    store.create(declared("other"), actor=CREATOR)
    with AlertStore(path) as alerts:
        for n, alert_id in enumerate(("a1", "a2", "a3", "a4", "a5", "a6"), start=1):
            alerts.apply(alert_event(alert_id, dep, f"E{n}", n))
        alerts.apply(alert_event("x1", "other", "E1", 9))  # another deployment's
        last_before = alerts.last_event_id()

    adjudications = Adjudications(database, clock=clock)

    def decide(alert_id: str, decision: Decision, outcome: Outcome | None = None) -> None:
        adjudications.decide(
            alert_id, DecisionRequest(decision=decision, outcome=outcome), officer=OFFICER
        )

    decide("a1", Decision.MATCH_CONFIRMED, Outcome.ARREST)
    decide("a2", Decision.MATCH_CONFIRMED, Outcome.ARREST)
    decide("a3", Decision.MATCH_CONFIRMED, Outcome.NOT_ENGAGED)
    decide("a4", Decision.NOT_A_MATCH)
    decide("a5", Decision.UNSURE)
    decide("x1", Decision.NOT_A_MATCH)
    # a6 is not adjudicated.
    store.add_counters(dep, frames=1000, faces=200)

    with AlertStore(path) as alerts:
        events = alerts.events_after(last_before)
    assert [e["kind"] for e in events if e["alert"]["id"] == "a1"] == ["adjudicated"]
    assert all(e["kind"] == "adjudicated" for e in events)
    assert len(events) == 6
    assert events[0]["alert"]["status"] == "adjudicated"

    report = store.report(dep)
    assert report["alerts"] == {
        "total": 6,
        "confirmed": 3,
        "false": 1,
        "unsure": 1,
        "not_adjudicated": 1,
    }
    assert report["outcomes"] == {"arrest": 2, "not_engaged": 1}
    assert list(report["outcomes"]) == sorted(report["outcomes"])
    assert report["false_alert_rate"] == pytest.approx(1 / 200)

    # A correction replaces the decision in force: one arrest becomes a false alert,
    # and the unsure one becomes a confirmed match with its outcome.
    adjudications.decide(
        "a2",
        DecisionRequest(
            decision=Decision.NOT_A_MATCH, correction=True, correction_reason="wrong person"
        ),
        officer=OFFICER,
    )
    adjudications.decide(
        "a5",
        DecisionRequest(
            decision=Decision.MATCH_CONFIRMED,
            outcome=Outcome.CONDITION_CHECK,
            correction=True,
            correction_reason="checked the image again",
        ),
        officer=OFFICER,
    )
    report = store.report(dep)
    assert report["alerts"] == {
        "total": 6,
        "confirmed": 3,
        "false": 2,
        "unsure": 0,
        "not_adjudicated": 1,
    }
    assert report["outcomes"] == {"arrest": 1, "condition_check": 1, "not_engaged": 1}
    assert report["false_alert_rate"] == pytest.approx(2 / 200)

    other = store.report("other")
    assert other["alerts"]["total"] == 1 and other["alerts"]["false"] == 1
    assert other["false_alert_rate"] is None  # other saw no faces: no rate, not infinity

    # Closing keeps the alerts and the report.
    store.close(dep, actor=CREATOR, reason="over")
    assert store.report(dep)["alerts"] == report["alerts"]
    assert AuditLog(database).verify().intact
