"""The response models cover every field the stores hand out, in the order they are sent.

A model drops what it does not declare, so a store field the models lack would silently
vanish from the wire: each test reads a real store's record and checks the model's
fields against it, and the order the API has always sent them in.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api import schemas
from lfr_actors.store.adjudications import Adjudications, Decision, DecisionRequest
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM, Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled
from lfr_actors.store.retention import Holds
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.testing.doubles import fake_jpeg, make_sighting
from lfr_actors.topology.schema import NewEntry


def fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def seeded(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "alerts.db"
    now = time.time()
    with Database(path) as db:
        deployments = Deployments(db)
        new = make_deployment(
            "dep1", now - 60, now + 60, 0.6, authorised_by="Supt Baker", location="Stratford"
        )
        deployments.create(new, actor=Actor("Insp Adams"))
        enrolled = Enrolled(fake_jpeg(1), "image/jpeg", np.full((1, 128), 0.1, np.float32), {})
        entry = NewEntry(
            id="W-1",
            display_name="Person 1",
            category="wanted",
            legal_basis="PACE",
            source="custody",
            image_date=date(2026, 1, 2),
        )
        deployments.add_entry("dep1", entry, enrolled, actor=Actor("PC Clark"))
    event = Fuser("dep1", FusionConfig(threshold=0.6)).observe(make_sighting(1, entry="W-1"))
    assert event is not None
    with AlertStore(path) as store:
        store.apply(event)
    return path, event.alert.id


def test_alerts_send_every_stored_field_then_their_addresses(tmp_path: Path) -> None:
    path, alert_id = seeded(tmp_path)
    with AlertStore(path) as store:
        stored = store.get(alert_id)
        (event,) = store.events_after(0)
    assert stored is not None
    urls = ["crop_url", "entry_url", "entry_image_url"]
    assert fields(schemas.Alert) == [*stored, *urls]
    assert fields(schemas.Alert) == [*event["alert"], *urls]  # what the stream sends
    extra = ["adjudications", "hold", "crop_purged_at"]
    assert fields(schemas.AlertDetail) == [*stored, *urls, *extra]


def test_decisions_and_holds_send_every_stored_field_but_the_token(tmp_path: Path) -> None:
    path, alert_id = seeded(tmp_path)
    with Database(path) as db:
        decided = Adjudications(db).decide(
            alert_id, DecisionRequest(decision=Decision.UNSURE), officer=SYSTEM
        )
        hold, _ = Holds(db).hold(alert_id, "case 1", by=SYSTEM)
    assert fields(schemas.AdjudicationRecord) == list(decided.record.as_dict())
    assert fields(schemas.Hold) == list(hold.as_dict())


def test_deployments_entries_and_reports_send_every_stored_field(tmp_path: Path) -> None:
    path, _ = seeded(tmp_path)
    with Database(path) as db:
        deployments = Deployments(db)
        record = deployments.find("dep1")
        assert record is not None
        entry = deployments.entry("dep1", "W-1")
        report = deployments.report("dep1")
    assert fields(schemas.Deployment) == [*record.as_dict(time.time()), "false_alerts", "links"]
    assert fields(schemas.Entry) == [*entry.as_dict(), "image_url", "stale", "stale_at"]
    assert fields(schemas.Report) == list(report)
    assert fields(schemas.ReportWatchlist) == list(report["watchlist"])
    assert fields(schemas.ReportAlerts) == list(report["alerts"])
    assert fields(schemas.FalseAlerts) == list(report["false_alerts"])
