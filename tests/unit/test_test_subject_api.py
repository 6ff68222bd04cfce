"""Test subjects through the API and the CLI: enrolment, the queues, passes and the report.

A real aiohttp app on loopback (aiohttp's test client) over a real SQLite file; alerts are
written through the real :class:`AlertStore`, as the alert actor writes them. Only the
enrolment models are replaced (the photo is not under test here).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.cli.main import main
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.test_subjects import TestSubjectPasses
from lfr_actors.store.tokens import Role
from lfr_actors.testing.declarations import make_deployment, make_entry
from lfr_actors.testing.doubles import SIGHTING_EPOCH, make_sighting
from tests.api_helpers import bearer, problem
from tests.unit.test_api import read_event
from tests.unit.test_auth import TINY_JPEG, fake_enroller
from tests.unit.test_test_subjects import ENROLLED

OFFICER = Actor("Insp Adams")
NOW = time.time()
"""The test's now, set again as each test starts (:func:`_now`): times made from it are as
fresh for a test run late in a long suite as for one run at collection."""


@pytest.fixture(autouse=True)
def _now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "NOW", time.time())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """dep1 authorised from an hour ago for two hours: suspect E1 and test subject TS1."""
    path = tmp_path / "alerts.db"
    with Database(path) as database:
        deployments = Deployments(database)
        deployments.create(make_deployment("dep1", NOW - 3600.0, NOW + 3600.0), actor=OFFICER)
        for entry in (make_entry("E1"), make_entry("TS1", consent_ref="CONSENT-7")):
            deployments.add_entry(
                "dep1", entry, ENROLLED, actor=Actor("PC Brown"), approved_by=OFFICER
            )
    # Approval is "now": passes are recorded for times after it.
    return path


async def client_for(aiohttp_client: AiohttpClient, db: Path, role: Role = Role.ADMIN) -> Any:
    app = create_app(db, poll_interval_s=0.02, heartbeat_s=0.2, enroller=fake_enroller)
    return await aiohttp_client(app, headers=bearer(db, role))


def write_alerts(db: Path, *sightings: Any) -> None:
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    with AlertStore(db) as alerts:
        for s in sightings:
            event = fuser.observe(s)
            if event is not None:
                alerts.apply(event)


def at(seconds_from_now: float) -> float:
    """``make_sighting``'s ``at`` for a sighting that many seconds from the fixture's now."""
    return NOW - SIGHTING_EPOCH + seconds_from_now


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def audit_count(db: Path) -> int:
    with Database(db) as database:
        return len(AuditLog(database).page(limit=1000).entries)


# -- enrolment ---------------------------------------------------------------------------


def upload(entry_id: str, **fields: str) -> FormData:
    form = FormData()
    form.add_field("id", entry_id)
    for name, value in {
        "display_name": "A Volunteer",
        "category": "test subject",
        "source": "photographed on the day",
        "image_date": "2026-11-30",
        **fields,
    }.items():
        form.add_field(name, value)
    form.add_field("image", TINY_JPEG, filename="p.jpg")
    return form


async def test_a_test_subject_is_enrolled_with_a_consent_ref(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await client_for(aiohttp_client, db)
    resp = await client.post(
        "/v1/deployments/dep1/entries",
        data=upload("TS9", test_subject="true", consent_ref="CONSENT-9"),
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["test_subject"], body["consent_ref"], body["legal_basis"]) == (
        True,
        "CONSENT-9",
        None,
    )
    suspect = await (await client.get("/v1/deployments/dep1/entries/E1")).json()
    assert (suspect["test_subject"], suspect["consent_ref"]) == (False, None)
    assert suspect["legal_basis"] == "PACE s.24"


@pytest.mark.parametrize(
    ("fields", "name", "words"),
    [
        ({"test_subject": "true"}, "consent_ref", "needs consent_ref"),
        (
            {"test_subject": "true", "consent_ref": "C-1", "legal_basis": "PACE s.24"},
            "legal_basis",
            "not a legal_basis",
        ),
        ({"legal_basis": "PACE s.24", "consent_ref": "C-1"}, "consent_ref", "only for a test"),
        ({}, "legal_basis", "legal_basis is required"),
        ({"test_subject": "perhaps", "consent_ref": "C-1"}, "test_subject", "boolean"),
    ],
)
async def test_the_wrong_authority_is_a_422_naming_the_field_and_stores_nothing(
    aiohttp_client: AiohttpClient, db: Path, fields: dict[str, str], name: str, words: str
) -> None:
    client = await client_for(aiohttp_client, db)
    before = audit_count(db)
    resp = await client.post("/v1/deployments/dep1/entries", data=upload("BAD1", **fields))
    body = await problem(resp, 422)
    assert [p["name"] for p in body["invalid_params"]] == [name]
    assert words in body["invalid_params"][0]["reason"]
    assert (await client.get("/v1/deployments/dep1/entries/BAD1")).status == 404
    assert audit_count(db) == before


# -- the queues --------------------------------------------------------------------------


async def test_the_alert_list_serves_suspects_unless_asked_for_test_subjects(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    write_alerts(
        db, make_sighting(1, entry="E1", at=at(0)), make_sighting(2, entry="TS1", at=at(1))
    )
    client = await client_for(aiohttp_client, db)

    async def entries(**params: str) -> list[tuple[str, bool]]:
        resp = await client.get("/v1/alerts", params=params)
        assert resp.status == 200, await resp.text()
        return [(a["entry_id"], a["test_subject"]) for a in (await resp.json())["alerts"]]

    assert await entries() == [("E1", False)]
    assert await entries(queue="suspects") == [("E1", False)]
    assert await entries(queue="test_subjects") == [("TS1", True)]
    assert await entries(queue="test_subjects", entry="E1") == []
    body = await problem(await client.get("/v1/alerts", params={"queue": "everyone"}), 400)
    assert body["invalid_params"] == [{"name": "queue", "reason": "one of suspects, test_subjects"}]


async def test_the_stream_keeps_the_queues_apart(aiohttp_client: AiohttpClient, db: Path) -> None:
    write_alerts(
        db,
        make_sighting(1, entry="TS1", at=at(0)),
        make_sighting(2, entry="E1", at=at(1)),
        make_sighting(3, entry="TS1", at=at(2)),
    )
    client = await client_for(aiohttp_client, db)
    officers = await client.get("/v1/alerts/stream", params={"after": "0"})
    volunteers = await client.get(
        "/v1/alerts/stream", params={"after": "0", "queue": "test_subjects"}
    )
    first = await read_event(officers)
    assert json.loads(first["data"])["entry_id"] == "E1" and first["id"] == "2"
    seen = [await read_event(volunteers), await read_event(volunteers)]
    assert [json.loads(e["data"])["entry_id"] for e in seen] == ["TS1", "TS1"]
    assert [e["id"] for e in seen] == ["1", "3"]
    # Live events, from the shared cache, are kept apart the same way.
    write_alerts(db, make_sighting(4, entry="TS1", camera="cam_b", at=at(300)))
    write_alerts(db, make_sighting(5, entry="E1", camera="cam_b", at=at(301)))
    live = await read_event(officers)
    assert json.loads(live["data"])["entry_id"] == "E1" and live["id"] == "5"
    assert json.loads((await read_event(volunteers))["data"])["test_subject"] is True
    officers.close()
    volunteers.close()
    bad = await client.get("/v1/alerts/stream", params={"queue": "all"})
    body = await problem(bad, 400)
    assert body["invalid_params"][0]["name"] == "queue"


# -- passes ------------------------------------------------------------------------------


async def test_passes_are_recorded_listed_and_matched_to_alerts(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await client_for(aiohttp_client, db, Role.ADJUDICATOR)
    passed = time.time()
    resp = await client.post(
        "/v1/deployments/dep1/test-passes",
        json={"entry_id": "TS1", "camera_id": "cam_a", "passed_at": iso(passed), "note": " "},
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["entry_id"], body["camera_id"], body["alerted"], body["note"]) == (
        "TS1",
        "cam_a",
        False,
        None,
    )
    assert body["recorded_by"] == "test adjudicator"
    write_alerts(db, make_sighting(1, entry="TS1", at=passed - SIGHTING_EPOCH + 8.0))
    listed = await (await client.get("/v1/deployments/dep1/test-passes")).json()
    (one,) = listed["passes"]
    assert one["alerted"] is True and one["alert_id"] is not None
    assert one["seconds_to_alert"] == pytest.approx(8.0, abs=0.01)

    report = await (await client.get("/v1/deployments/dep1/report")).json()
    figures = report["test_subjects"]
    assert (figures["passes_recorded"], figures["passes_alerted"]) == (1, 1)
    assert figures["true_positive_rate"] == 1.0
    assert figures["seconds_to_alert"]["max"] == pytest.approx(8.0, abs=0.01)
    assert report["alerts"]["total"] == 0  # the suspects' figures leave the volunteer out
    page = await (await client.get("/v1/deployments/dep1/report.html")).text()
    assert "<h2>Test subjects</h2>" in page and "100.0%" in page


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        ({"entry_id": "E1"}, 422, "entry_id"),  # a suspect
        ({"passed_at": 600.0}, 422, "passed_at"),  # in the future (seconds from now)
        ({"passed_at": -7200.0}, 409, None),  # before the window
        ({"entry_id": "NOBODY"}, 404, None),
        ({"camera_id": "Cam A"}, 422, "camera_id"),
        ({"passed_at": "yesterday"}, 422, "passed_at"),
    ],
)
async def test_refused_passes_store_and_audit_nothing(
    aiohttp_client: AiohttpClient,
    db: Path,
    body: dict[str, Any],
    status: int,
    name: str | None,
) -> None:
    client = await client_for(aiohttp_client, db, Role.AUTHORISER)
    before = audit_count(db)
    # A number is a time that many seconds from now, made when the test runs.
    timed = {k: iso(time.time() + v) if isinstance(v, float) else v for k, v in body.items()}
    sent = {"entry_id": "TS1", "camera_id": "cam_a", "passed_at": iso(time.time()), **timed}
    found = await problem(await client.post("/v1/deployments/dep1/test-passes", json=sent), status)
    if name is not None:
        assert [p["name"] for p in found["invalid_params"]] == [name]
    assert audit_count(db) == before
    with Database(db) as database:
        assert TestSubjectPasses(database).passes("dep1") == []


async def test_passes_of_an_unknown_deployment_are_404(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await client_for(aiohttp_client, db)
    await problem(await client.get("/v1/deployments/nope/test-passes"), 404)
    sent = {"entry_id": "TS1", "camera_id": "cam_a", "passed_at": iso(time.time())}
    await problem(await client.post("/v1/deployments/nope/test-passes", json=sent), 404)


# -- the CLI -----------------------------------------------------------------------------


def run_cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``lfr ARGV``: exit code, stdout, stderr (argparse's usage errors exit 2)."""
    capfd.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


def test_lfr_test_subjects_pass_records_and_lists(
    db: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capfd,
        "test-subjects", "pass", "--db", str(db), "--deployment", "dep1", "--entry", "TS1",
        "--camera", "cam_a", "--note", "red scarf",
    )  # fmt: skip
    assert code == 0, err
    assert "recorded pass 1: test subject TS1 passed camera cam_a" in out
    with Database(db) as database:
        (stored,) = TestSubjectPasses(database).passes("dep1")
        entries = AuditLog(database).page(limit=1000, action="test_subject.pass").entries
    assert stored.recorded_by.startswith("cli:") and stored.note == "red scarf"
    assert [e.actor for e in entries] == [stored.recorded_by]
    code, out, _ = run_cli(
        capfd, "test-subjects", "passes", "--db", str(db), "--deployment", "dep1"
    )
    assert code == 0 and "0 of 1 passes alerted" in out
    code, out, _ = run_cli(
        capfd, "test-subjects", "passes", "--db", str(db), "--deployment", "dep1", "--json"
    )
    assert [p["entry_id"] for p in json.loads(out)] == ["TS1"]


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--entry", "E1"], 1, "is not a test subject"),
        (["--entry", "TS1", "--at", "2020-01-01T00:00:00Z"], 1, "outside deployment 'dep1'"),
        (["--entry", "TS1", "--at", "2099-01-01T00:00:00Z"], 1, "in the future"),
        (["--entry", "TS1", "--at", "soon"], 2, "not an ISO 8601 time"),
        (["--entry", "TS1", "--camera", "Cam A"], 2, "is not a camera id"),
    ],
)
def test_lfr_test_subjects_pass_refusals_are_one_line(
    db: Path, capfd: pytest.CaptureFixture[str], extra: list[str], code: int, words: str
) -> None:
    before = audit_count(db)
    args = ["test-subjects", "pass", "--db", str(db), "--deployment", "dep1", "--camera", "cam_a"]
    got, _, err = run_cli(capfd, *args, *extra)
    assert got == code
    assert words in err
    if code == 1:
        assert err.count("\n") == 1 and err.startswith("lfr: error: ")
    assert audit_count(db) == before
