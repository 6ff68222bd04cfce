"""Fusion of sightings into alerts: thresholds, windows, min_sightings, stable ids."""

from __future__ import annotations

import uuid

import pytest

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.alerts.records import NAMESPACE, Alert, alert_id
from lfr_actors.testing.doubles import SIGHTING_EPOCH, fake_jpeg, make_sighting

T0 = SIGHTING_EPOCH

sighting = make_sighting


def fuser(**overrides: object) -> Fuser:
    settings: dict[str, object] = {"threshold": 0.5, "fusion_window_s": 30.0}
    settings.update(overrides)
    return Fuser("dep1", FusionConfig.from_mapping(settings))


def test_threshold_ignores_and_counts_far_sightings() -> None:
    f = fuser()
    assert f.observe(sighting(1, distance=0.51)) is None
    assert f.observe(sighting(2, distance=float("nan"))) is None
    assert f.counters.below_threshold == 2
    assert f.open_alerts == []
    event = f.observe(sighting(3, distance=0.5))
    assert event is not None and event.kind == "raised"


def test_entry_threshold_overrides_the_deployment_threshold() -> None:
    f = fuser(entry_thresholds={"STRICT": 0.2, "LOOSE": 0.7})
    assert f.observe(sighting(1, entry="STRICT", distance=0.3)) is None
    assert f.observe(sighting(2, entry="LOOSE", distance=0.6)) is not None
    assert f.observe(sighting(3, entry="OTHER", distance=0.6)) is None
    assert f.counters.below_threshold == 2


def test_fuses_sightings_across_cameras_within_the_window() -> None:
    f = fuser()
    raised = f.observe(sighting(1, camera="cam_a", at=0))
    updated = f.observe(sighting(2, camera="cam_b", at=20))
    again = f.observe(sighting(3, camera="cam_a", at=45))  # 25 s after last_seen
    assert raised is not None and updated is not None and again is not None
    assert (raised.kind, updated.kind, again.kind) == ("raised", "updated", "updated")
    assert raised.alert.id == updated.alert.id == again.alert.id
    alert = again.alert
    assert alert.sightings == 3
    assert alert.cameras == ["cam_a", "cam_b"]
    assert alert.first_camera_id == "cam_a"
    assert (alert.first_seen, alert.last_seen) == (T0, T0 + 45)
    assert [s.sighting_id for s in updated.sightings] == ["cam_b:2:0"]
    assert len(f.open_alerts) == 1


def test_a_new_alert_after_the_window_has_passed() -> None:
    f = fuser()
    first = f.observe(sighting(1, at=0))
    second = f.observe(sighting(2, at=31))
    assert first is not None and second is not None
    assert second.kind == "raised"
    assert second.alert.id != first.alert.id
    assert f.counters.closed == 1


def test_different_entries_never_fuse() -> None:
    f = fuser()
    a = f.observe(sighting(1, entry="E1"))
    b = f.observe(sighting(2, entry="E2"))
    assert a is not None and b is not None and a.alert.id != b.alert.id
    assert b.kind == "raised"


def test_min_sightings_holds_then_raises_with_the_held_sightings() -> None:
    f = fuser(min_sightings=3)
    assert f.observe(sighting(1, at=0)) is None
    assert f.observe(sighting(2, at=1, camera="cam_b")) is None
    assert f.pending == 1 and f.open_alerts == []
    event = f.observe(sighting(3, at=2))
    assert event is not None and event.kind == "raised"
    assert event.alert.sightings == 3
    assert [s.sighting_id for s in event.sightings] == ["cam_a:1:0", "cam_b:2:0", "cam_a:3:0"]
    assert event.alert.id == alert_id("dep1", "E1", "cam_a:1:0")
    later = f.observe(sighting(4, at=3))
    assert later is not None and later.kind == "updated"
    assert [s.sighting_id for s in later.sightings] == ["cam_a:4:0"]


def test_duplicate_sighting_is_dropped() -> None:
    f = fuser(min_sightings=2)
    assert f.observe(sighting(1)) is None
    assert f.observe(sighting(1)) is None  # held, then replayed: still one held
    event = f.observe(sighting(2, at=1))
    assert event is not None and event.alert.sightings == 2
    assert f.observe(sighting(2, at=1)) is None
    assert f.counters.duplicates == 2


def test_alert_ids_are_stable_across_fusers() -> None:
    stream = [sighting(1, at=0), sighting(2, at=5, camera="cam_b"), sighting(3, at=50)]
    ids = []
    for _ in range(2):
        f = fuser()
        ids.append([e.alert.id for s in stream if (e := f.observe(s)) is not None])
    assert ids[0] == ids[1]
    assert ids[0][0] == str(uuid.uuid5(NAMESPACE, "dep1:E1:cam_a:1:0"))
    assert ids[0][2] == str(uuid.uuid5(NAMESPACE, "dep1:E1:cam_a:3:0"))
    # A different deployment gives different ids for the same sightings.
    other = Fuser("dep2", FusionConfig(threshold=0.5)).observe(stream[0])
    assert other is not None and other.alert.id != ids[0][0]


def test_best_crop_follows_the_lowest_distance() -> None:
    f = fuser()
    f.observe(sighting(1, distance=0.4))
    better = f.observe(sighting(2, distance=0.2, at=1))
    worse = f.observe(sighting(3, distance=0.3, at=2))
    assert better is not None and worse is not None
    best = worse.alert
    assert best.best_distance == 0.2
    assert best.best_sighting_id == "cam_a:2:0"
    assert best.best_crop_jpeg == fake_jpeg(2)
    assert best.best_box == [2.0, 2.0, 30.0, 40.0]
    assert best.best_quality == {"sharpness": 0.52}
    assert best.sightings == 3


def test_expire_closes_raised_alerts_and_drops_pending_ones() -> None:
    f = fuser(min_sightings=2)
    f.observe(sighting(1, entry="E1", at=0))
    f.observe(sighting(2, entry="E1", at=1))  # raised
    f.observe(sighting(3, entry="E2", at=2))  # pending
    assert f.expire(T0 + 20) == []
    closed = f.expire(T0 + 40)
    assert [a.entry_id for a in closed] == ["E1"]
    assert f.open_alerts == [] and f.pending == 0
    assert (f.counters.closed, f.counters.pending_dropped) == (1, 1)
    # After expiry the same entry starts a new alert.
    assert f.observe(sighting(4, entry="E1", at=41)) is None
    assert f.pending == 1


def test_restore_continues_the_same_alert_and_drops_replays() -> None:
    first = fuser()
    events = [first.observe(sighting(n, at=n)) for n in (1, 2)]
    alert = events[-1].alert if events[-1] else None
    assert isinstance(alert, Alert)

    restarted = fuser()
    restarted.restore([alert], {alert.id: {"cam_a:1:0", "cam_a:2:0"}})
    assert restarted.open_alerts == [alert]
    assert restarted.observe(sighting(1, at=1)) is None
    assert restarted.observe(sighting(2, at=2)) is None
    assert restarted.counters.duplicates == 2
    later = restarted.observe(sighting(3, at=3))
    assert later is not None and later.kind == "updated"
    assert later.alert.id == alert.id and later.alert.sightings == 3


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 0.5, "fusion_window_s": -1}, "fusion_window_s"),
        ({"threshold": 0.5, "min_sightings": 0}, "min_sightings"),
        ({"threshold": 0.5, "entry_thresholds": {"E1": float("inf")}}, "entry_thresholds.E1"),
        ({"threshold": 0.5, "window": 3}, "window"),
        ({}, "threshold"),
    ],
)
def test_bad_config_names_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FusionConfig.from_mapping(settings)
