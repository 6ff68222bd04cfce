"""Alerts that belong to face tracks, everywhere they go: migration 9, the store's answer
whether a track was rejected, the alert actor dropping rejected tracks, the API (list,
?track_id=, stream) and the JSON Lines line. Real SQLite files in tmp_path throughout."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.actors.alerts import AlertActor, StoreUnavailableError
from lfr_actors.actors.settings import AlertSettings
from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.alerts.records import AlertEvent
from lfr_actors.control.jsonl_sink import event_line
from lfr_actors.messages import Sighting, SightingBatch
from lfr_actors.store import db as db_module
from lfr_actors.store.adjudications import Adjudications, Decision, DecisionRequest, Outcome
from lfr_actors.store.alerts import NOT_A_MATCH, AlertStore
from lfr_actors.store.audit import Actor
from lfr_actors.store.check import inspect_store
from lfr_actors.store.db import Database
from lfr_actors.store.migrations import MIGRATIONS
from lfr_actors.testing.doubles import SIGHTING_EPOCH, fake_jpeg
from tests.unit.test_api import client_for, read_event
from tests.unit.test_fusion_tracks import tracked

T0 = SIGHTING_EPOCH
OFFICER = Actor("PC Smith")
TRACK = "cam_a:1.1.0"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


def store_events(path: Path, *items: Sighting) -> list[AlertEvent]:
    """Fuse ``items`` and apply each event to the store at ``path``, as the actor does."""
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    events = [e for s in items if (e := fuser.observe(s)) is not None]
    with AlertStore(path) as store:
        for event in events:
            store.apply(event)
    return events


def decide(path: Path, alert_id: str, decision: Decision, *, correction: bool = False) -> None:
    outcome = Outcome.NOT_ENGAGED if decision is Decision.MATCH_CONFIRMED else None
    request = DecisionRequest(
        decision,
        outcome=outcome,
        correction=correction,
        correction_reason="looked again" if correction else None,
    )
    with Database(path) as database:
        Adjudications(database).decide(alert_id, request, officer=OFFICER)


# -- the store ------------------------------------------------------------------------


def test_alerts_and_sightings_keep_their_tracks_and_media_position(db: Path) -> None:
    events = store_events(
        db,
        tracked(1, TRACK, distance=0.4, frames=4, media_index=1025),
        tracked(2, "cam_b:3.2.0", camera="cam_b", at=5, distance=0.2, frames=7, media_index=8),
    )
    alert_id = events[0].alert.id
    with AlertStore(db) as store:
        stored = store.get(alert_id)
        (restored,) = store.open_alerts(T0 - 60, "dep1")
        snapshots = [e["alert"] for e in store.events_after(0)]
    assert stored is not None
    assert (stored["track_id"], stored["tracks"]) == (TRACK, [TRACK, "cam_b:3.2.0"])
    assert (stored["track_frames"], stored["media_index"], stored["media_time_s"]) == (7, 8, 0.32)
    assert restored.tracks == ["cam_a:1.1.0", "cam_b:3.2.0"] and restored.track_id == TRACK
    assert (restored.track_frames, restored.media_index, restored.media_time_s) == (7, 8, 0.32)
    assert snapshots[0]["media_index"] == 1025 and snapshots[1]["media_index"] == 8
    raw = sqlite3.connect(db)
    try:
        rows = raw.execute(
            "SELECT sighting_id, track_id, media_index, media_time_s FROM alert_sightings "
            "ORDER BY sighting_id"
        ).fetchall()
        plan = raw.execute(
            "EXPLAIN QUERY PLAN SELECT alert_id FROM alert_sightings WHERE track_id = ?", (TRACK,)
        ).fetchall()
    finally:
        raw.close()
    assert rows == [("cam_a:1:0", TRACK, 1025, 41.0), ("cam_b:2:0", "cam_b:3.2.0", 8, 0.32)]
    assert any("alert_sightings_track" in str(step) for step in plan)


def test_a_store_of_version_8_upgrades_and_its_alerts_read_as_trackless(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MIGRATIONS[8].version == 9 and "track" in MIGRATIONS[8].description
    with monkeypatch.context() as patched:
        patched.setattr(db_module, "MIGRATIONS", MIGRATIONS[:8])
        with Database(db) as old:
            assert old.schema_version() == 8
    # An alert, its sighting and its event as the build before tracks wrote them.
    snapshot = {"id": "A1", "deployment_id": "dep1", "entry_id": "E1", "sightings": 1}
    raw = sqlite3.connect(db)
    with raw:
        raw.execute(
            "INSERT INTO alerts (id, deployment_id, entry_id, first_camera_id, cameras, "
            "first_seen, last_seen, sightings, best_distance, best_sighting_id, best_box, "
            "best_quality, best_crop, created_at, updated_at, raised_event_id) "
            "VALUES ('A1', 'dep1', 'E1', 'cam_a', '[\"cam_a\"]', ?, ?, 1, 0.3, 'cam_a:1:0', "
            "'[1, 2, 3, 4]', '{}', ?, ?, ?, 1)",
            (T0, T0, fake_jpeg(1), T0, T0),
        )
        raw.execute(
            "INSERT INTO alert_sightings VALUES ('A1', 'cam_a:1:0', 'cam_a', ?, 0.3, 1)", (T0,)
        )
        raw.execute(
            "INSERT INTO alert_events (alert_id, kind, at, alert) VALUES ('A1', 'raised', ?, ?)",
            (T0, json.dumps(snapshot)),
        )
    raw.close()
    with AlertStore(db) as store:
        assert store.schema_version() == MIGRATIONS[-1].version
        stored = store.get("A1")
        (event,) = store.events_after(0)
        (alert,) = store.open_alerts(T0 - 1)
        assert store.track_rejected(TRACK) is False
    trackless = {
        "track_id": None,
        "tracks": [],
        "track_frames": 1,
        "media_index": None,
        "media_time_s": None,
    }
    assert stored is not None and {k: stored[k] for k in trackless} == trackless
    assert {k: event["alert"][k] for k in trackless} == trackless
    assert (alert.track_id, alert.tracks, alert.track_frames) == (None, [], 1)
    report = inspect_store(db)
    assert not report.damaged and report.schema_version == MIGRATIONS[-1].version


def test_a_new_store_with_track_alerts_passes_the_check(db: Path) -> None:
    store_events(db, tracked(1, TRACK, media_index=3))
    report = inspect_store(db, full=True)
    assert not report.damaged and report.fault is None


def test_a_track_is_rejected_while_not_a_match_is_the_decision_in_force(db: Path) -> None:
    assert Decision.NOT_A_MATCH.value == NOT_A_MATCH
    events = store_events(db, tracked(1, TRACK), tracked(2, "cam_b:1.1.0", camera="cam_b", at=1))
    alert_id = events[0].alert.id

    def rejected(track: str) -> bool:
        with AlertStore.open_readonly(db) as store:
            return store.track_rejected(track)

    assert not rejected(TRACK)  # open: not decided yet
    decide(db, alert_id, Decision.UNSURE)
    assert not rejected(TRACK)
    decide(db, alert_id, Decision.NOT_A_MATCH, correction=True)
    # Every track fused into the alert is rejected with it; others are not.
    assert rejected(TRACK) and rejected("cam_b:1.1.0") and not rejected("cam_c:1.1.0")
    decide(db, alert_id, Decision.MATCH_CONFIRMED, correction=True)
    assert not rejected(TRACK)  # a correction to another decision un-rejects
    decide(db, alert_id, Decision.NOT_A_MATCH, correction=True)
    assert rejected(TRACK)


# -- the alert actor --------------------------------------------------------------------


@pytest.fixture
def actor(db: Path) -> Iterator[AlertActor]:
    settings = AlertSettings(
        actor_id="alerts", deployment_id="dep1", db_path=str(db), fusion=FusionConfig(0.5)
    )
    made = AlertActor(settings)
    yield made
    made._store.close()


def batch(*items: Sighting) -> bytes:
    return SightingBatch.of(list(items)).encode()


async def test_the_actor_drops_sightings_of_a_rejected_track_and_counts_them(
    db: Path, actor: AlertActor
) -> None:
    first = await actor.submit(batch(tracked(1, TRACK), tracked(2, TRACK, at=1)))
    assert (first["raised"], first["updated"], first["rejected_track_sightings"]) == (1, 1, 0)
    with AlertStore(db) as reader:
        (alert,) = reader.list_alerts().alerts
    decide(db, alert["id"], Decision.NOT_A_MATCH)  # through the API's own connection
    later = await actor.submit(
        batch(tracked(3, TRACK, at=2), tracked(4, "cam_b:1.1.0", camera="cam_b", at=3))
    )
    assert later["rejected_track_sightings"] == 1 and later["accepted"] == 2
    # The other camera's track is not hidden in the rejected alert: it is a new one.
    assert later["raised"] == 1 and later["updated"] == 0
    conflict = await actor.submit(batch(tracked(5, "cam_c:1.1.0", entry="E2", at=4)))
    assert conflict["raised"] == 1
    clash = await actor.submit(batch(tracked(6, "cam_c:1.1.0", entry="E1", at=5)))
    assert clash["track_conflicts"] == 1 and clash["updated"] == clash["raised"] == 0
    stats = await actor.stats()
    assert (stats["rejected_track_sightings"], stats["track_conflicts"]) == (1, 1)
    with AlertStore(db) as reader:
        ids = reader.sighting_ids([alert["id"]])[alert["id"]]
    assert ids == {"cam_a:1:0", "cam_a:2:0"}  # nothing of the rejected track after the decision
    # A correction to another decision counts from the next sighting on (nothing cached).
    decide(db, alert["id"], Decision.UNSURE, correction=True)
    again = await actor.submit(batch(tracked(7, TRACK, at=6)))
    assert again["updated"] == 1 and again["rejected_track_sightings"] == 0


async def test_after_a_restart_a_track_neither_duplicates_nor_raises_again(
    db: Path, actor: AlertActor
) -> None:
    sightings = [tracked(1, TRACK), tracked(2, TRACK, at=1)]
    await actor.submit(batch(*sightings))
    await actor.close()
    settings = AlertSettings(
        actor_id="alerts", deployment_id="dep1", db_path=str(db), fusion=FusionConfig(0.5)
    )
    restarted = AlertActor(settings)
    try:
        replay = await restarted.submit(batch(*sightings))
        assert (replay["duplicates"], replay["raised"], replay["updated"]) == (2, 0, 0)
        much_later = await restarted.submit(batch(tracked(3, TRACK, at=300)))
        assert (much_later["raised"], much_later["updated"]) == (0, 1)
        assert (await restarted.stats())["tracks_remembered"] == 1
    finally:
        await restarted.close()
    with AlertStore(db) as reader:
        assert reader.counts()["alerts"] == 1


async def test_a_failing_rejection_check_is_a_store_outage_not_a_crash(
    db: Path, actor: AlertActor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(track_id: str) -> bool:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(actor._store, "track_rejected", broken)
    with pytest.raises(StoreUnavailableError, match="alert store unavailable: database is locked"):
        await actor.submit(batch(tracked(1, TRACK)))
    assert (await actor.stats())["store_error"] == "database is locked"
    monkeypatch.undo()
    resent = await actor.submit(batch(tracked(1, TRACK)))
    assert resent["raised"] == 1 and (await actor.stats())["store_error"] is None


# -- the API and the JSON Lines line ----------------------------------------------------


async def test_the_api_shows_tracks_and_filters_by_track(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    store_events(db, tracked(1, TRACK, entry="E1", media_index=1030))
    client = await client_for(aiohttp_client, db)
    stream = await client.get("/v1/alerts/stream", params={"after": "0"})
    store_events(db, tracked(2, "cam_b:2.1.0", entry="E2", camera="cam_b", at=1))
    resp = await client.get("/v1/alerts")
    assert resp.status == 200
    alerts = (await resp.json())["alerts"]
    assert [(a["entry_id"], a["track_id"], a["tracks"]) for a in alerts] == [
        ("E2", "cam_b:2.1.0", ["cam_b:2.1.0"]),
        ("E1", TRACK, [TRACK]),
    ]
    assert (alerts[1]["media_index"], alerts[1]["media_time_s"]) == (1030, 41.2)
    assert alerts[0]["track_frames"] == 5 and alerts[0]["media_index"] is None
    resp = await client.get("/v1/alerts", params={"track_id": TRACK})
    assert [a["entry_id"] for a in (await resp.json())["alerts"]] == ["E1"]
    resp = await client.get("/v1/alerts", params={"track_id": "cam_z:9.9.9"})
    assert (await resp.json())["alerts"] == []
    detail = await (await client.get(f"/v1/alerts/{alerts[1]['id']}")).json()
    assert (detail["track_id"], detail["media_index"]) == (TRACK, 1030)
    raised = [json.loads((await read_event(stream))["data"]) for _ in range(2)]
    assert [e["track_id"] for e in raised] == [TRACK, "cam_b:2.1.0"]
    assert raised[0]["media_time_s"] == 41.2
    document = await (await client.get("/v1/openapi.json")).json()
    names = [p["name"] for p in document["paths"]["/v1/alerts"]["get"]["parameters"]]
    assert "track_id" in names
    schema = document["components"]["schemas"]["Alert"]
    assert {"track_id", "tracks", "track_frames", "media_index", "media_time_s"} <= set(
        schema["required"]
    )


def test_the_jsonl_line_carries_the_track_and_media_position(db: Path) -> None:
    store_events(
        db,
        tracked(1, TRACK, media_index=1030),
        tracked(2, "cam_b:1.1.0", camera="cam_b", at=1),
    )
    with AlertStore.open_readonly(db) as store:
        lines = [event_line(e) for e in store.events_after(0)]
    assert [(line["track_id"], line["tracks"]) for line in lines] == [
        (TRACK, [TRACK]),
        (TRACK, [TRACK, "cam_b:1.1.0"]),
    ]
    assert (lines[0]["media_index"], lines[0]["media_time_s"]) == (1030, 41.2)
    # The second sighting is no nearer: the best face, and so the position, stays the first.
    assert (lines[1]["media_index"], lines[1]["media_time_s"]) == (1030, 41.2)


def test_sightings_keep_their_track_fields_through_a_batch() -> None:
    sent = tracked(1, TRACK, frames=12, media_index=7)
    (received,) = SightingBatch.decode(batch(sent)).items()
    assert msgspec.structs.asdict(received) == msgspec.structs.asdict(sent)
