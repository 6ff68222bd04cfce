"""The SQLite alert store on a real file: WAL, migrations, atomic idempotent writes."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.alerts.records import AlertEvent
from lfr_actors.messages import Sighting
from lfr_actors.store.alerts import MIGRATIONS, AlertStore, StoreError
from lfr_actors.testing.doubles import SIGHTING_EPOCH, fake_jpeg, make_sighting

T0 = SIGHTING_EPOCH

sighting = make_sighting


def events_for(fuser: Fuser, *items: Sighting) -> list[AlertEvent]:
    return [e for s in items if (e := fuser.observe(s)) is not None]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture
def fuser() -> Fuser:
    return Fuser("dep1", FusionConfig(threshold=0.5))


def test_opens_in_wal_mode_with_migrations_recorded(db: Path) -> None:
    with AlertStore(db) as store:
        assert store.schema_version() == MIGRATIONS[-1].version
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [r[0] for r in raw.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in MIGRATIONS]
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"alerts", "alert_sightings", "alert_events", "schema_migrations"} <= tables
    finally:
        raw.close()
    # Opening again applies nothing twice.
    with AlertStore(db) as store:
        assert store.schema_version() == MIGRATIONS[-1].version


def test_refuses_a_schema_newer_than_this_build(db: Path) -> None:
    AlertStore(db).close()
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer than this build"):
        AlertStore(db)


def test_apply_writes_alert_sightings_and_event(db: Path, fuser: Fuser) -> None:
    raised, updated = events_for(fuser, sighting(1), sighting(2, camera="cam_b", at=3))
    with AlertStore(db) as store:
        first = store.apply(raised)
        second = store.apply(updated)
        assert 0 < first < second
        alert = store.get(raised.alert.id)
        assert alert is not None
        assert alert["sightings"] == 2
        assert alert["cameras"] == ["cam_a", "cam_b"]
        assert alert["status"] == "open"
        assert "best_crop" not in alert and "best_crop_jpeg" not in alert
        assert store.crop(raised.alert.id) == fake_jpeg(1)
        assert store.get("nope") is None and store.crop("nope") is None
        assert store.counts() == {
            "alerts": 1,
            "alerts_by_status": {"open": 1},
            "sightings": 2,
            "events": 2,
            "last_event_id": second,
        }


def test_apply_is_idempotent(db: Path, fuser: Fuser) -> None:
    raised, updated = events_for(fuser, sighting(1), sighting(2, at=1))
    with AlertStore(db) as store:
        first = store.apply(raised)
        second = store.apply(updated)
        before = store.counts()
        assert store.apply(raised) == first
        assert store.apply(updated) == second
        assert store.counts() == before
        # A fresh fuser replaying the stream gives the same events; still no change.
        for event in events_for(Fuser("dep1", FusionConfig(threshold=0.5)), sighting(1)):
            assert store.apply(event) == first
        assert store.counts() == before


def test_apply_is_atomic(db: Path, fuser: Fuser) -> None:
    (raised,) = events_for(fuser, sighting(1))
    bad_ref = dataclasses.replace(raised.sightings[0], distance=[0.1])  # type: ignore[arg-type]
    broken = dataclasses.replace(raised, sightings=(bad_ref,))
    with AlertStore(db) as store:
        with pytest.raises(sqlite3.Error):
            store.apply(broken)
        assert store.counts()["alerts"] == 0
        assert store.counts()["events"] == 0
        assert store.get(raised.alert.id) is None
        assert store.apply(raised) > 0  # the store is still usable


def test_the_log_has_one_raised_per_alert(db: Path, fuser: Fuser) -> None:
    (raised,) = events_for(fuser, sighting(1))
    with AlertStore(db) as store:
        store.apply(raised)
        # A "raised" for an alert the store already has (a new sighting) is an update.
        ref = dataclasses.replace(raised.sightings[0], sighting_id="cam_a:99:0")
        store.apply(dataclasses.replace(raised, sightings=(ref,)))
        assert [e["kind"] for e in store.events_after(0)] == ["raised", "updated"]
        with pytest.raises(ValueError, match="sighting"):
            store.apply(dataclasses.replace(raised, sightings=()))


def test_events_after_in_order_with_snapshots(db: Path, fuser: Fuser) -> None:
    stream = [sighting(n, at=n) for n in range(1, 6)]
    with AlertStore(db) as store:
        ids = [store.apply(e) for e in events_for(fuser, *stream)]
        events = store.events_after(0)
        assert [e["event_id"] for e in events] == ids
        assert [e["kind"] for e in events] == ["raised"] + ["updated"] * 4
        # Each event carries the alert as it was then, not as it is now.
        assert [e["alert"]["sightings"] for e in events] == [1, 2, 3, 4, 5]
        assert [e["event_id"] for e in store.events_after(ids[1], limit=2)] == ids[2:4]
        assert store.events_after(ids[-1]) == []
        assert store.last_event_id() == ids[-1]


def test_list_alerts_filters_and_pages_with_a_stable_cursor(db: Path, fuser: Fuser) -> None:
    stream = [
        sighting(n, entry=f"E{n}", camera="cam_a" if n % 2 else "cam_b", at=n * 10)
        for n in range(1, 8)
    ]
    with AlertStore(db) as store:
        for event in events_for(fuser, *stream):
            store.apply(event)
        page = store.list_alerts(limit=3)
        assert [a["entry_id"] for a in page.alerts] == ["E7", "E6", "E5"]
        assert page.next_before_event is not None
        # New alerts and updates do not move later pages.
        for event in events_for(
            fuser, sighting(8, entry="E8", at=80), sighting(9, entry="E4", at=41)
        ):
            store.apply(event)
        page2 = store.list_alerts(limit=3, before_event=page.next_before_event)
        assert [a["entry_id"] for a in page2.alerts] == ["E4", "E3", "E2"]
        page3 = store.list_alerts(limit=3, before_event=page2.next_before_event)
        assert [a["entry_id"] for a in page3.alerts] == ["E1"]
        assert page3.next_before_event is None
        by_camera = store.list_alerts(camera_id="cam_b")
        assert sorted(a["entry_id"] for a in by_camera.alerts) == ["E2", "E4", "E6"]
        assert [a["entry_id"] for a in store.list_alerts(entry_id="E3").alerts] == ["E3"]
        window = store.list_alerts(since=T0 + 30, until=T0 + 50)
        assert sorted(a["entry_id"] for a in window.alerts) == ["E3", "E4", "E5"]
        with pytest.raises(ValueError, match="limit"):
            store.list_alerts(limit=0)


def test_restore_round_trip(db: Path, fuser: Fuser) -> None:
    events = events_for(fuser, sighting(1), sighting(2, at=1, distance=0.1), sighting(3, at=2))
    with AlertStore(db) as store:
        for event in events:
            store.apply(event)
        latest = store.latest_seen("dep1")
        assert latest == T0 + 2
        alerts = store.open_alerts(latest - 30, "dep1")
        assert alerts == fuser.open_alerts
        assert alerts[0].best_crop_jpeg == fake_jpeg(2)
        assert store.open_alerts(T0 + 3) == []
        known = store.sighting_ids(a.id for a in alerts)
    assert known == {alerts[0].id: {"cam_a:1:0", "cam_a:2:0", "cam_a:3:0"}}
    restarted = Fuser("dep1", FusionConfig(threshold=0.5))
    restarted.restore(alerts, known)
    assert restarted.observe(sighting(1)) is None
    nxt = restarted.observe(sighting(4, at=3))
    assert nxt is not None and nxt.alert.id == alerts[0].id and nxt.alert.sightings == 4


def test_no_crop_outside_the_alert_row(db: Path, fuser: Fuser) -> None:
    far = sighting(50, distance=0.9)  # never matches: its crop must never reach the file
    events = events_for(fuser, sighting(1, distance=0.4), far, sighting(2, at=1, distance=0.2))
    with AlertStore(db) as store:
        for event in events:
            store.apply(event)
        store.checkpoint()
    raw = sqlite3.connect(db)
    try:
        columns = {r[1]: r[2] for r in raw.execute("PRAGMA table_info(alert_sightings)")}
        assert set(columns) == {
            "alert_id",
            "sighting_id",
            "camera_id",
            "captured_at",
            "distance",
            "event_id",
            "track_id",
            "media_index",
            "media_time_s",
        }
        assert "BLOB" not in columns.values()
        for table in ("alert_sightings", "alert_events"):
            names = [r[1] for r in raw.execute(f"PRAGMA table_info({table})")]
            for name in names:
                kinds = {r[0] for r in raw.execute(f"SELECT DISTINCT typeof({name}) FROM {table}")}
                assert "blob" not in kinds, (table, name)
    finally:
        raw.close()
    content = b"".join(p.read_bytes() for p in db.parent.glob("alerts.db*"))
    assert far.crop_jpeg not in content
    assert fake_jpeg(2) in content  # the best crop is the one image kept


def test_reopen_after_close_keeps_data(db: Path, fuser: Fuser) -> None:
    events = events_for(fuser, sighting(1), sighting(2, at=1))
    store = AlertStore(db)
    ids = [store.apply(e) for e in events]
    store.close()
    store.close()
    with AlertStore(db) as again:
        assert again.last_event_id() == ids[-1]
        assert again.get(events[0].alert.id) is not None
        assert again.has_sighting("cam_a:2:0")


def test_readonly_store_reads_while_the_writer_writes_and_refuses_to_write(
    db: Path, fuser: Fuser
) -> None:
    with pytest.raises(StoreError, match="no alert store"):
        AlertStore.open_readonly(db, create=False)
    raised, updated = events_for(fuser, sighting(1), sighting(2, at=1))
    with AlertStore(db) as writer, AlertStore.open_readonly(db) as reader:
        writer.apply(raised)
        assert reader.last_event_id() == 1
        writer.apply(updated)
        assert reader.events_after(1)[0]["alert"]["sightings"] == 2
        with pytest.raises(StoreError, match="read-only"):
            reader.apply(updated)


def test_open_readonly_creates_a_missing_store(db: Path) -> None:
    with AlertStore.open_readonly(db) as reader:
        assert reader.last_event_id() == 0
        assert reader.list_alerts().alerts == []


def test_a_reader_of_a_store_still_being_created_is_told_so_and_the_next_writer_completes_it(
    db: Path,
) -> None:
    # A writer that has made the file but not yet its schema (or was killed there): a
    # reader gets a sentence that says so, not "schema version 0, migrate it".
    sqlite3.connect(db).close()
    db.chmod(0o600)
    assert db.is_file() and db.stat().st_size == 0
    with pytest.raises(StoreError, match="holds no tables yet"):
        AlertStore.open_readonly(db, create=False)
    with AlertStore(db) as writer:  # no marker was written, so this is no lost store
        assert writer.schema_version() == MIGRATIONS[-1].version
    with AlertStore.open_readonly(db, create=False) as reader:
        assert reader.last_event_id() == 0
