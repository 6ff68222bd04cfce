"""The alert actor: on real Ray (restart without loss or duplicates), and as a plain class."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray
from structlog.testing import capture_logs

from lfr_actors.actors.alerts import AlertActor, StoreUnavailableError
from lfr_actors.actors.settings import AlertSettings
from lfr_actors.alerts.fusion import FusionConfig
from lfr_actors.messages import Sighting, SightingBatch
from lfr_actors.store.alerts import AlertStore
from lfr_actors.testing.doubles import SIGHTING_EPOCH, make_sighting

T0 = SIGHTING_EPOCH

sighting = make_sighting
NAMESPACE = "lfr-test-alerts"
FUSION = FusionConfig(threshold=0.5, fusion_window_s=30.0)


def _settings(db: str, actor_id: str = "alerts") -> AlertSettings:
    """The alert actor of deployment ``dep1``, storing into ``db``."""
    return AlertSettings(actor_id=actor_id, deployment_id="dep1", db_path=db, fusion=FUSION)


def batch(*items: Sighting) -> bytes:
    return SightingBatch.of(list(items)).encode()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never another run's Ray
    yield
    ray.shutdown()


def start_actor(name: str, db: Path) -> Any:
    """Create the named actor, waiting for a killed predecessor's name to be freed."""
    deadline = time.monotonic() + 30
    while True:
        try:
            handle: Any = (
                ray.remote(AlertActor)
                .options(name=name, namespace=NAMESPACE)
                .remote(_settings(str(db), actor_id=name))
            )
            ray.get(handle.health.remote(), timeout=60)
            return handle
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_restart_neither_duplicates_nor_forgets(ray_cluster: None, tmp_path: Path) -> None:
    db = tmp_path / "alerts.db"
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    first = batch(sighting(1), sighting(2, camera="cam_b", at=2), sighting(3, distance=0.9))
    actor = start_actor(name, db)
    result = ray.get(actor.submit.remote(first))
    assert result == {
        "accepted": 3,
        "dropped": 0,
        "below_threshold": 1,
        "duplicates": 0,
        "held": 0,
        "raised": 1,
        "updated": 1,
        "rejected_track_sightings": 0,
        "track_conflicts": 0,
    }
    # A garbage message is counted and dropped; the actor carries on.
    assert ray.get(actor.submit.remote(b"\x93not a message"))["dropped"] == 1
    assert ray.get(actor.health.remote())["status"] == "ok"
    stats = ray.get(actor.stats.remote())
    assert (stats["decode_errors"], stats["alerts_raised"], stats["below_threshold"]) == (1, 1, 1)

    ray.kill(actor)
    actor = start_actor(name, db)
    health = ray.get(actor.health.remote())
    assert health["open_alerts"] == 1 and health["last_event_id"] == 2
    replay = ray.get(actor.submit.remote(first))
    assert (replay["duplicates"], replay["raised"], replay["updated"]) == (2, 0, 0)
    later = ray.get(actor.submit.remote(batch(sighting(4, at=20))))
    assert later["updated"] == 1 and later["raised"] == 0
    ray.get(actor.flush.remote())
    ray.get(actor.close.remote())
    ray.kill(actor)

    with AlertStore.open_readonly(db) as store:
        alerts = store.list_alerts().alerts
        assert len(alerts) == 1
        assert alerts[0]["sightings"] == 3
        assert alerts[0]["cameras"] == ["cam_a", "cam_b"]
        assert [e["kind"] for e in store.events_after(0)] == ["raised", "updated", "updated"]
        assert store.counts()["sightings"] == 3


@pytest.mark.asyncio
async def test_logs_hold_ids_and_counters_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LFR_LOG_LEVEL", "DEBUG")  # alert_raised/updated are DEBUG lines
    actor = AlertActor(_settings(str(tmp_path / "alerts.db")))
    far = sighting(9, distance=0.9)
    with capture_logs() as entries:
        await actor.submit(batch(sighting(1), far, sighting(2, at=1)))
        await actor.submit(b"garbage")
        await actor.submit(
            SightingBatch([msgspec.Raw(msgspec.msgpack.encode({"sighting_id": 1}))]).encode()
        )
        await actor.close()
    names = [e["event"] for e in entries]
    assert names.count("message_dropped") == 2
    assert {"alert_raised", "alert_updated", "alert_actor_stopped"} <= set(names)
    forbidden = {"distance", "best_distance", "box", "best_box", "crop", "crop_jpeg", "quality"}
    for entry in entries:
        assert not forbidden & set(entry), entry
        assert not any(isinstance(v, bytes | bytearray) for v in entry.values()), entry
        assert "0.9" not in repr(entry)
    assert far.sighting_id not in repr(entries)


@pytest.mark.asyncio
async def test_a_malformed_sighting_is_dropped_alone(tmp_path: Path) -> None:
    actor = AlertActor(_settings(str(tmp_path / "alerts.db")))
    bad = msgspec.structs.replace(sighting(2), distance="near")
    mixed = batch(sighting(1), bad)
    with capture_logs() as entries:
        result = await actor.submit(mixed)
    (dropped,) = [e for e in entries if e["event"] == "message_dropped"]
    assert dropped["reason"] == (
        "'sightings' item 1: 'sighting' message: Expected `float`, got `str` - at `$.distance`"
    )
    assert (result["accepted"], result["dropped"], result["raised"]) == (1, 1, 1)
    assert (await actor.stats())["decode_errors"] == 1
    await actor.close()


@pytest.mark.asyncio
async def test_nothing_is_acknowledged_when_the_store_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "alerts.db"
    actor = AlertActor(_settings(str(db)))
    await actor.submit(batch(sighting(1)))
    store = actor._store
    real_apply = store.apply

    def failing(event: Any) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(store, "apply", failing)
    retry = batch(sighting(2, at=1), sighting(3, at=2))
    with pytest.raises(StoreUnavailableError, match="alert store unavailable: OSError: disk full"):
        await actor.submit(retry)
    monkeypatch.setattr(store, "apply", real_apply)
    result = await actor.submit(retry)  # the sender resends: both sightings count
    assert (result["updated"], result["duplicates"]) == (2, 0)
    await actor.close()
    with AlertStore.open_readonly(db) as reader:
        assert reader.list_alerts().alerts[0]["sightings"] == 3


def _fill_the_store(actor: AlertActor) -> None:
    """Let the store grow no more: SQLite itself then answers SQLITE_FULL, as on a full disk."""
    conn = actor._store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


@pytest.mark.asyncio
async def test_a_full_store_refuses_with_its_cause_logs_once_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "alerts.db"
    actor = AlertActor(_settings(str(db)))
    await actor.submit(batch(sighting(1)))
    _fill_the_store(actor)
    refused: list[bytes] = []
    stored = 1
    with capture_logs() as entries:
        for n in range(2, 60):
            data = batch(sighting(n, at=n * 0.1))
            try:
                await actor.submit(data)
                stored += 1
            except StoreUnavailableError as exc:
                assert str(exc) == "alert store unavailable: disk full"
                refused.append(data)
            if len(refused) == 4:
                break
        stats = await actor.stats()
        health = await actor.health()
    assert len(refused) == 4, "the page budget never ran out"
    assert (stats["store_error"], stats["store_failures"]) == ("disk full", 4)
    assert health["status"] == "error" and health["store_error"] == "disk full"
    assert health["reason"] == "alert store unavailable: disk full"
    errors = [e for e in entries if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["alert_store_unavailable"]  # one line, not four
    assert errors[0]["reason"] == "disk full"
    assert not any("exc_info" in e or "exception" in e for e in entries)

    # Space comes back: the sender's resends are all counted, once each.
    actor._store._conn.execute("PRAGMA max_page_count = 1000000")
    with capture_logs() as entries:
        results = [await actor.submit(data) for data in refused]
        replay = await actor.submit(refused[0])  # a true replay is still a duplicate
    assert [r["updated"] for r in results] == [1, 1, 1, 1]
    assert (replay["duplicates"], replay["updated"]) == (1, 0)
    assert (await actor.stats())["store_error"] is None
    assert (await actor.health())["status"] == "ok"
    assert [e["event"] for e in entries if e["event"].startswith("alert_store")] == [
        "alert_store_available"
    ]
    await actor.close()
    with AlertStore.open_readonly(db) as reader:
        alerts = reader.list_alerts().alerts
        assert len(alerts) == 1 and alerts[0]["sightings"] == stored + 4


@pytest.mark.slow
def test_the_store_error_reaches_a_ray_caller_as_its_own_type(
    ray_cluster: None, tmp_path: Path
) -> None:
    """What the embedder relies on: the cause of a refused ``submit`` is recognisable."""
    db = tmp_path / "alerts.db"
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    actor = start_actor(name, db)
    ray.get(actor.submit.remote(batch(sighting(1))))
    with sqlite3.connect(db) as conn:  # another writer holds the write lock: a real failure
        conn.execute("BEGIN EXCLUSIVE")
        with pytest.raises(Exception) as caught:
            ray.get(actor.submit.remote(batch(sighting(2, at=1))), timeout=120)
        conn.rollback()
    cause = getattr(caught.value, "cause", caught.value)
    assert isinstance(cause, StoreUnavailableError)
    assert str(cause).startswith("alert store unavailable: database is locked")
    assert ray.get(actor.stats.remote())["store_error"] == "database is locked"
    assert ray.get(actor.submit.remote(batch(sighting(2, at=1))))["updated"] == 1
    assert ray.get(actor.stats.remote())["store_error"] is None
    ray.get(actor.close.remote())
    ray.kill(actor)
