"""Test subjects in the store: the entry rule, their alerts kept apart, passes and the report.

Over a real SQLite file: entries through ``Deployments.add_entry``, alerts written through
the real :class:`AlertStore` (as the alert actor writes them), webhooks delivered by the
real sender to a loopback receiver.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.schemas import ReportTestSubjects
from lfr_actors.api.stream import EventHub
from lfr_actors.control.jsonl_sink import JsonlSink
from lfr_actors.control.terminal import json_line, readable_line
from lfr_actors.control.webhooks import Webhooks
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Action, Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled, UnknownEntryError
from lfr_actors.store.test_subjects import (
    PASS_AFTER_S,
    PASS_BEFORE_S,
    NotATestSubjectError,
    PassInFutureError,
    PassRefusedError,
    TestSubjectPasses,
)
from lfr_actors.store.webhooks import WebhookPositions
from lfr_actors.testing.declarations import make_deployment, make_entry
from lfr_actors.testing.doubles import SIGHTING_EPOCH, make_sighting
from lfr_actors.topology import TopologyError
from lfr_actors.topology.loader import load_watchlist
from lfr_actors.topology.schema import RULES_ERROR, NewEntry, Webhook
from tests.unit.test_webhooks import ENV, SECRET, Receiver, start, until

T0 = SIGHTING_EPOCH
OFFICER = Actor("Insp Adams")
ENROLLER = Actor("PC Brown")
ENROLLED = Enrolled(
    image=b"\xff\xd8\xff fake",
    image_type="image/jpeg",
    embeddings=np.ones((1, 8), dtype=np.float32),
    quality={},
)


class Clock:
    """The store's clock, set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 3600.0)


@pytest.fixture
def store(db: Path, clock: Clock) -> Iterator[Deployments]:
    """dep1 authorised from T0 - 1 h to T0 + 2 h, a suspect E1 and a test subject TS1."""
    with Database(db) as database:
        deployments = Deployments(database, clock=clock)
        clock.now = T0 - 3600.0
        deployments.create(make_deployment("dep1", T0 - 3600.0, T0 + 7200.0), actor=OFFICER)
        deployments.add_entry(
            "dep1", make_entry("E1"), ENROLLED, actor=ENROLLER, approved_by=OFFICER
        )
        deployments.add_entry(
            "dep1",
            make_entry("TS1", consent_ref="CONSENT-2026-007"),
            ENROLLED,
            actor=ENROLLER,
            approved_by=OFFICER,
        )
        clock.now = T0 + 3600.0
        yield deployments


def audit(db: Database) -> list[Any]:
    """Every audit entry, oldest first."""
    return AuditLog(db).page(limit=1000).entries


def details(entry: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(entry.details)
    return found


def write_alerts(db: Path, *sightings: Any) -> None:
    """Alerts as the alert actor writes them: fused, then applied to the store."""
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    with AlertStore(db) as alerts:
        for s in sightings:
            event = fuser.observe(s)
            if event is not None:
                alerts.apply(event)


# -- the entry rule: a legal basis or a consent, exactly one ---------------------------


def _fields(**extra: Any) -> dict[str, Any]:
    fields = {
        "id": "X1",
        "display_name": "A Volunteer",
        "category": "test subject",
        "source": "photographed on the day",
        "image_date": "2026-11-30",
    }
    return {**fields, **extra}


def _violations(**extra: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        NewEntry.model_validate(_fields(**extra))
    (error,) = caught.value.errors()
    assert error["type"] == RULES_ERROR
    return [(v.path, v.message) for v in error["ctx"]["violations"]]


def test_a_test_subject_has_a_consent_ref_and_a_suspect_a_legal_basis() -> None:
    volunteer = NewEntry.model_validate(_fields(test_subject=True, consent_ref="C-7"))
    assert volunteer.test_subject and volunteer.legal_basis is None
    suspect = NewEntry.model_validate(_fields(legal_basis="PACE s.24"))
    assert not suspect.test_subject and suspect.consent_ref is None


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ({"test_subject": True}, ("consent_ref",), "a test subject needs consent_ref"),
        (
            {"test_subject": True, "consent_ref": "C-7", "legal_basis": "PACE s.24"},
            ("legal_basis",),
            "a test subject has a consent_ref, not a legal_basis",
        ),
        (
            {"legal_basis": "PACE s.24", "consent_ref": "C-7"},
            ("consent_ref",),
            "consent_ref is only for a test subject",
        ),
        ({}, ("legal_basis",), "legal_basis is required"),
    ],
)
def test_the_wrong_authority_names_its_field(
    extra: dict[str, Any], path: tuple[str], words: str
) -> None:
    found = _violations(**extra)
    assert [p for p, _ in found] == [path]
    assert words in found[0][1]


def test_the_store_keeps_the_consent_and_wipes_it_at_close(store: Deployments, db: Path) -> None:
    entry = store.entry("dep1", "TS1")
    assert (entry.test_subject, entry.consent_ref, entry.legal_basis) == (
        True,
        "CONSENT-2026-007",
        None,
    )
    assert entry.as_dict()["test_subject"] is True
    suspect = store.entry("dep1", "E1")
    assert (suspect.test_subject, suspect.consent_ref) == (False, None)
    created = [e for e in audit(store.db) if e.action == str(Action.ENTRY_CREATE)]
    assert [details(e).get("test_subject") for e in created] == [None, True]
    assert all("CONSENT" not in e.details for e in created)
    store.close("dep1", actor=OFFICER, reason="operation over")
    with sqlite3.connect(db) as raw:
        row = raw.execute(
            "SELECT consent_ref, display_name, test_subject FROM watchlist_entries WHERE id = 'TS1'"
        ).fetchone()
    assert row == (None, None, 1)  # wiped; whether it was a test subject stays


# -- their alerts: flagged, in their own queue, never to a webhook ----------------------


def test_alerts_carry_whether_the_entry_is_a_test_subject(store: Deployments, db: Path) -> None:
    write_alerts(db, make_sighting(1, entry="E1"), make_sighting(2, entry="TS1"))
    with AlertStore(db) as alerts:
        suspects = alerts.list_alerts(test_subject=False).alerts
        volunteers = alerts.list_alerts(test_subject=True).alerts
        both = alerts.list_alerts().alerts
        events = alerts.events_after(0)
    assert [a["entry_id"] for a in suspects] == ["E1"]
    assert [a["entry_id"] for a in volunteers] == ["TS1"]
    assert {a["entry_id"]: a["test_subject"] for a in both} == {"E1": False, "TS1": True}
    assert {e["alert"]["entry_id"]: e["alert"]["test_subject"] for e in events} == {
        "E1": False,
        "TS1": True,
    }


def test_an_alert_of_an_entry_the_store_does_not_know_is_a_suspects(db: Path) -> None:
    write_alerts(db, make_sighting(1, entry="NOT-IN-THE-STORE"))
    with AlertStore(db) as alerts:
        (alert,) = alerts.list_alerts().alerts
    assert alert["test_subject"] is False


def test_sink_and_terminal_lines_label_test_subjects(
    store: Deployments, db: Path, tmp_path: Path
) -> None:
    write_alerts(db, make_sighting(1, entry="E1"), make_sighting(2, entry="TS1"))
    with AlertStore(db) as alerts:
        events = alerts.events_after(0)
    sink = JsonlSink(tmp_path / "alerts.jsonl")
    sink.write(events)
    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [(r["entry_id"], r["test_subject"]) for r in lines] == [("E1", False), ("TS1", True)]
    suspect, volunteer = (readable_line(e) for e in events)
    assert "TEST SUBJECT" not in suspect
    assert "TS1 [TEST SUBJECT, not a suspect]" in volunteer
    assert json.loads(json_line(events[1]))["test_subject"] is True


async def test_webhooks_never_deliver_a_test_subjects_alert(
    store: Deployments, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    receiver = Receiver(SECRET.encode())
    await receiver.start()
    with AlertStore.open_readonly(db, create=True) as reader:
        hub = EventHub(reader, 0.01, lambda e: b"")
        poller = asyncio.create_task(hub.run())
        try:
            webhook = Webhook(url=receiver.url, secret_env=ENV, name="room")
            webhooks = Webhooks([webhook], ["room"], db)
            stop, task = await start(hub, webhooks)
            write_alerts(
                db,
                make_sighting(1, entry="TS1", at=1.0),
                make_sighting(2, entry="TS1", at=2.0),
                make_sighting(3, entry="E1", at=3.0),
            )
            (state,) = webhooks.states()
            await until(lambda: state.position == 3)
            stop.set()
            await asyncio.wait_for(task, 5)
        finally:
            poller.cancel()
            await receiver.stop()
    assert [r["entry_id"] for r in receiver.requests] == ["E1"]
    assert receiver.ids() == [3]
    assert (state.delivered, state.failed, state.pending) == (1, 0, 0)
    with Database(db) as database:
        # The test subject's events are not waiting to be sent either.
        assert WebhookPositions(database).pending(0, ["raised", "updated"]) == 1


# -- passes ------------------------------------------------------------------------------


def test_a_pass_is_recorded_with_its_audit_entry(store: Deployments) -> None:
    passes = TestSubjectPasses(store.db, clock=store.clock)
    recorded = passes.record("dep1", "TS1", "cam_a", T0 + 10.0, actor=OFFICER, note="blue coat")
    assert (recorded.entry_id, recorded.camera_id, recorded.passed_at) == ("TS1", "cam_a", T0 + 10)
    assert (recorded.recorded_by, recorded.note, recorded.alerted) == (
        OFFICER.name,
        "blue coat",
        False,
    )
    (audited,) = [e for e in audit(store.db) if e.action == str(Action.TEST_PASS_RECORD)]
    assert audited.subject == "dep1/TS1" and audited.actor == OFFICER.name
    assert details(audited)["camera"] == "cam_a" and details(audited)["pass"] == recorded.id


@pytest.mark.parametrize(
    ("entry", "at", "error", "words"),
    [
        ("E1", T0, NotATestSubjectError, "not a test subject"),
        ("NOPE", T0, UnknownEntryError, "no watchlist entry"),
        ("TS1", T0 + 3600.0 + 60.0, PassInFutureError, "in the future"),
        ("TS1", T0 - 7200.0, PassRefusedError, "outside deployment 'dep1'"),
    ],
)
def test_refused_passes_store_and_audit_nothing(
    store: Deployments, entry: str, at: float, error: type[Exception], words: str
) -> None:
    passes = TestSubjectPasses(store.db, clock=store.clock)
    before = len(audit(store.db))
    with pytest.raises(error, match=words):
        passes.record("dep1", entry, "cam_a", at, actor=OFFICER)
    assert passes.passes("dep1") == []
    assert len(audit(store.db)) == before


def test_after_the_window_or_the_close_a_pass_is_refused(store: Deployments, clock: Clock) -> None:
    passes = TestSubjectPasses(store.db, clock=clock)
    clock.now = T0 + 9000.0  # the window ended at T0 + 2 h
    with pytest.raises(PassRefusedError, match="authorised window"):
        passes.record("dep1", "TS1", "cam_a", T0 + 7300.0, actor=OFFICER)
    passes.record("dep1", "TS1", "cam_a", T0 + 7000.0, actor=OFFICER)  # late, but inside
    store.close("dep1", actor=OFFICER, reason="operation over")
    with pytest.raises(PassRefusedError, match="closed"):
        passes.record("dep1", "TS1", "cam_a", T0 + 7000.0, actor=OFFICER)
    assert len(passes.passes("dep1")) == 1


def test_a_pass_before_the_entry_was_approved_is_refused(store: Deployments, clock: Clock) -> None:
    clock.now = T0
    store.add_entry(
        "dep1", make_entry("TS2", consent_ref="C-2"), ENROLLED, actor=ENROLLER
    )  # pending: never searched
    passes = TestSubjectPasses(store.db, clock=clock)
    with pytest.raises(PassRefusedError, match="was not being searched"):
        passes.record("dep1", "TS2", "cam_a", T0, actor=OFFICER)


# -- the report --------------------------------------------------------------------------


def test_report_counts_passes_alerted_and_keeps_test_subjects_out_of_the_suspects_figures(
    store: Deployments, db: Path
) -> None:
    passes = TestSubjectPasses(store.db, clock=store.clock)
    # Three passes on cam_a: seen 12 s after the first, 40 s after the second (a second
    # alert after the first one's fusion window), never for the third. One on cam_b whose
    # alert was on cam_a only: not alerted (the wrong camera).
    for at, camera in ((T0, "cam_a"), (T0 + 1000.0, "cam_a"), (T0 + 2000.0, "cam_a")):
        passes.record("dep1", "TS1", camera, at, actor=OFFICER)
    passes.record("dep1", "TS1", "cam_b", T0 + 1000.0, actor=OFFICER)
    write_alerts(
        db,
        make_sighting(1, entry="TS1", camera="cam_a", at=12.0),
        make_sighting(2, entry="TS1", camera="cam_a", at=1040.0),
        make_sighting(3, entry="E1", camera="cam_a", at=500.0),
        # Outside the tolerance of the third pass: too early, too late.
        make_sighting(4, entry="TS1", camera="cam_a", at=2000.0 - PASS_BEFORE_S - 1.0),
        make_sighting(5, entry="TS1", camera="cam_a", at=2000.0 + PASS_AFTER_S + 1.0),
    )
    report = store.report("dep1")
    figures = report["test_subjects"]
    assert figures["entries"] == 1
    assert figures["passes_recorded"] == 4
    assert figures["passes_alerted"] == 2
    assert figures["true_positive_rate"] == 0.5
    assert figures["seconds_to_alert"] == {"median": 26.0, "max": 40.0}
    assert figures["tolerance_s"] == {"before": PASS_BEFORE_S, "after": PASS_AFTER_S}
    assert figures["alerts"] >= 2
    assert report["alerts"]["total"] == 1  # the suspect's alert only
    assert report["alerts"]["not_adjudicated"] == 1
    listed = passes.passes("dep1")
    assert [(p.camera_id, p.alerted) for p in listed] == [
        ("cam_a", True),
        ("cam_a", True),
        ("cam_b", False),
        ("cam_a", False),
    ]


def test_report_before_any_pass_says_null(store: Deployments) -> None:
    figures = store.report("dep1")["test_subjects"]
    # The API's model sends every figure, in the store's order.
    assert list(ReportTestSubjects.model_fields) == list(figures)
    assert ReportTestSubjects.model_validate(figures).model_dump(mode="json") == figures
    assert figures["passes_recorded"] == 0
    assert figures["true_positive_rate"] is None
    assert figures["seconds_to_alert"] == {"median": None, "max": None}


# -- the watchlist file ------------------------------------------------------------------

WATCHLIST_FILE = """\
version: 1
entries:
  - id: TS-1
    display_name: A Volunteer
    images: [img/volunteer.jpg]
    category: test subject
    test_subject: true
    consent_ref: CONSENT-2026-007
    source: photographed on the day
    image_date: 2026-11-30
"""


def test_a_watchlist_file_declares_test_subjects(tmp_path: Path) -> None:
    path = tmp_path / "watchlist.yaml"
    path.write_text(WATCHLIST_FILE, "utf-8")
    (entry,) = load_watchlist(path).entries
    assert (entry.test_subject, entry.consent_ref, entry.legal_basis) == (
        True,
        "CONSENT-2026-007",
        None,
    )
    path.write_text(WATCHLIST_FILE.replace("    consent_ref: CONSENT-2026-007\n", ""), "utf-8")
    with pytest.raises(TopologyError) as caught:
        load_watchlist(path)
    (issue,) = caught.value.issues
    assert issue.path == "entries[0].consent_ref"
    assert "a test subject needs consent_ref" in issue.message
    assert issue.line is not None
