"""Fusion with face tracks: one alert per track, other tracks join in the window, rejected
tracks raise nothing, sightings without a track fuse as before, restore keeps the map."""

from __future__ import annotations

import msgspec
import pytest

from lfr_actors.alerts.fusion import Fuser, FusionConfig, RejectedTracks
from lfr_actors.alerts.records import SightingRef
from lfr_actors.messages import Sighting
from lfr_actors.testing.doubles import SIGHTING_EPOCH, make_sighting

T0 = SIGHTING_EPOCH


def tracked(
    n: int,
    track: str | None,
    *,
    entry: str = "E1",
    camera: str = "cam_a",
    at: float = 0.0,
    distance: float = 0.3,
    frames: int = 5,
    media_index: int | None = None,
) -> Sighting:
    """Sighting ``n`` of ``track`` (a track decision with ``frames`` faces of evidence)."""
    base = make_sighting(n, entry=entry, camera=camera, at=at, distance=distance)
    return msgspec.structs.replace(
        base,
        track_id=track,
        track_frames=frames,
        media_index=media_index,
        media_time_s=None if media_index is None else media_index / 25.0,
    )


def fuser(rejected: RejectedTracks | None = None, **overrides: object) -> Fuser:
    settings: dict[str, object] = {"threshold": 0.5, "fusion_window_s": 30.0}
    settings.update(overrides)
    return Fuser("dep1", FusionConfig.from_mapping(settings), rejected=rejected)


def test_an_alert_names_its_track_and_its_best_sightings_media_position() -> None:
    f = fuser()
    raised = f.observe(tracked(1, "cam_a:1.1.0", distance=0.4, frames=3, media_index=100))
    assert raised is not None and raised.kind == "raised"
    alert = raised.alert
    assert (alert.track_id, alert.tracks) == ("cam_a:1.1.0", ["cam_a:1.1.0"])
    assert (alert.track_frames, alert.media_index, alert.media_time_s) == (3, 100, 4.0)
    assert raised.sightings == (
        SightingRef("cam_a:1:0", "cam_a", T0, 0.4, "cam_a:1.1.0", 100, 4.0),
    )
    # A nearer sighting becomes the best one: its evidence and position replace the first.
    better = f.observe(tracked(2, "cam_a:1.1.0", at=2, distance=0.2, frames=9, media_index=150))
    assert better is not None and better.kind == "updated"
    assert (better.alert.track_frames, better.alert.media_index) == (9, 150)
    assert better.alert.media_time_s == 6.0
    assert better.alert.track_id == "cam_a:1.1.0"  # the raising track stays the alert's
    # A farther one changes nothing of the best.
    worse = f.observe(tracked(3, "cam_a:1.1.0", at=4, distance=0.45, frames=12, media_index=200))
    assert worse is not None and (worse.alert.track_frames, worse.alert.media_index) == (9, 150)


def test_one_track_never_raises_two_alerts_even_past_the_window() -> None:
    f = fuser()
    first = f.observe(tracked(1, "cam_a:1.1.0", at=0))
    assert first is not None and first.kind == "raised"
    # The person stands in view: the track's next decision comes long after the window.
    assert f.expire(T0 + 200) == []  # held by its track, not closed
    later = f.observe(tracked(2, "cam_a:1.1.0", at=200))
    assert later is not None and later.kind == "updated"
    assert later.alert.id == first.alert.id
    assert (later.alert.sightings, later.alert.last_seen) == (2, T0 + 200)
    assert f.counters.raised == 1 and f.counters.updated == 1
    assert len(f.open_alerts) == 1


def test_other_tracks_join_the_entrys_alert_within_the_window_only() -> None:
    f = fuser()
    raised = f.observe(tracked(1, "cam_a:1.1.0", camera="cam_a", at=0))
    other_camera = f.observe(tracked(2, "cam_b:1.4.0", camera="cam_b", at=10))
    retracked = f.observe(tracked(3, "cam_a:1.9.0", camera="cam_a", at=35))
    assert raised is not None and other_camera is not None and retracked is not None
    assert other_camera.kind == retracked.kind == "updated"
    assert other_camera.alert.id == retracked.alert.id == raised.alert.id
    assert retracked.alert.tracks == ["cam_a:1.1.0", "cam_a:1.9.0", "cam_b:1.4.0"]
    assert retracked.alert.cameras == ["cam_a", "cam_b"]
    assert retracked.alert.track_id == "cam_a:1.1.0"
    # A new track past the window is a new alert; the old alert's tracks still join theirs.
    fresh = f.observe(tracked(4, "cam_a:2.1.0", at=100))
    assert fresh is not None and fresh.kind == "raised" and fresh.alert.id != raised.alert.id
    old_track = f.observe(tracked(5, "cam_b:1.4.0", camera="cam_b", at=101))
    assert old_track is not None and old_track.alert.id == raised.alert.id
    assert old_track.kind == "updated"
    assert f.counters.raised == 2


def test_a_track_of_another_entrys_alert_is_dropped_and_counted() -> None:
    f = fuser()
    assert f.observe(tracked(1, "cam_a:1.1.0", entry="E1")) is not None
    assert f.observe(tracked(2, "cam_a:1.1.0", entry="E2", at=1)) is None
    assert f.counters.track_conflicts == 1
    assert f.counters.raised == 1
    assert [a.entry_id for a in f.open_alerts] == ["E1"]
    # The track still updates its own entry's alert.
    again = f.observe(tracked(3, "cam_a:1.1.0", entry="E1", at=2))
    assert again is not None and again.kind == "updated"


@pytest.mark.parametrize("form", ["set", "predicate"])
def test_a_rejected_track_raises_and_updates_nothing(form: str) -> None:
    rejected = {"cam_a:1.1.0"}
    f = fuser(rejected if form == "set" else rejected.__contains__)
    assert f.observe(tracked(1, "cam_a:1.1.0")) is None
    assert f.observe(tracked(2, "cam_a:1.1.0", at=1)) is None
    assert f.counters.rejected_tracks == 2
    assert f.counters.raised == 0 and f.open_alerts == []
    # Another track of the same entry is not rejected.
    event = f.observe(tracked(3, "cam_b:1.1.0", camera="cam_b", at=2))
    assert event is not None and event.kind == "raised"
    # A far sighting of a rejected track counts as below the threshold first.
    assert f.observe(tracked(4, "cam_a:1.1.0", at=3, distance=0.9)) is None
    assert f.counters.below_threshold == 1 and f.counters.rejected_tracks == 2


def test_a_new_track_after_a_rejected_alert_is_a_new_alert_for_the_officer() -> None:
    decided: set[str] = set()
    f = fuser(decided.__contains__)
    first = f.observe(tracked(1, "cam_a:1.1.0", at=0))
    assert first is not None and first.kind == "raised"
    decided.add("cam_a:1.1.0")  # the officer: not a match
    # Within the window, someone else tracked as the same entry is not hidden in the
    # rejected alert: the officer sees a new one.
    second = f.observe(tracked(2, "cam_b:1.2.0", camera="cam_b", at=5))
    assert second is not None and second.kind == "raised"
    assert second.alert.id != first.alert.id and second.alert.tracks == ["cam_b:1.2.0"]
    # While the alert still has a track nobody rejected, other tracks join it as before.
    third = f.observe(tracked(3, "cam_c:1.3.0", camera="cam_c", at=6))
    assert third is not None and third.alert.id == second.alert.id


def test_the_predicate_is_asked_again_for_each_sighting() -> None:
    decided: set[str] = set()
    f = fuser(decided.__contains__)
    raised = f.observe(tracked(1, "cam_a:1.1.0"))
    assert raised is not None
    decided.add("cam_a:1.1.0")  # an officer says "not a match"
    assert f.observe(tracked(2, "cam_a:1.1.0", at=1)) is None
    decided.clear()  # a correction to another decision
    after = f.observe(tracked(3, "cam_a:1.1.0", at=2))
    assert after is not None and after.kind == "updated" and after.alert.id == raised.alert.id


def test_a_bad_rejected_argument_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="predicate on a track id or a collection"):
        fuser("cam_a:1.1.0")  # one id, not a collection of them
    with pytest.raises(ValueError, match="predicate on a track id or a collection"):
        fuser(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="track_memory_s must be a finite number above 0"):
        fuser(track_memory_s=0)


def test_sightings_without_a_track_fuse_exactly_as_before() -> None:
    with_tracks, without = fuser(), fuser()
    plan = [(1, 0.0, "cam_a"), (2, 20.0, "cam_b"), (3, 45.0, "cam_a"), (4, 200.0, "cam_a")]
    for n, at, camera in plan:
        a = with_tracks.observe(make_sighting(n, camera=camera, at=at))
        b = without.observe(tracked(n, None, camera=camera, at=at, frames=1))
        assert a is not None and b is not None
        assert (a.kind, a.alert, a.sightings) == (b.kind, b.alert, b.sightings)
        assert a.alert.track_id is None and a.alert.tracks == []
    assert with_tracks.counters == without.counters
    assert with_tracks.expire(T0 + 500) == without.expire(T0 + 500)
    assert with_tracks.tracks == 0


def test_a_held_track_alert_closes_when_its_track_is_forgotten() -> None:
    f = fuser(track_memory_s=120.0)
    raised = f.observe(tracked(1, "cam_a:1.1.0", at=0))
    assert raised is not None
    assert f.expire(T0 + 100) == []  # past the window, but its track is remembered
    assert f.tracks == 1 and len(f.open_alerts) == 1
    closed = f.expire(T0 + 130)
    assert [a.id for a in closed] == [raised.alert.id]
    assert f.tracks == 0 and f.open_alerts == [] and f.counters.closed == 1
    # The track is forgotten: a sighting of it now starts afresh.
    again = f.observe(tracked(2, "cam_a:1.1.0", at=140))
    assert again is not None and again.kind == "raised" and again.alert.id != raised.alert.id


def test_pending_track_alerts_are_dropped_with_the_window_and_free_their_track() -> None:
    f = fuser(min_sightings=2)
    assert f.observe(tracked(1, "cam_a:1.1.0", at=0)) is None
    assert f.pending == 1 and f.tracks == 1
    f.expire(T0 + 40)
    assert f.pending == 0 and f.tracks == 0 and f.counters.pending_dropped == 1


def test_restore_rebuilds_the_track_map_so_a_replay_neither_duplicates_nor_raises() -> None:
    before = fuser()
    sightings = [
        tracked(1, "cam_a:1.1.0", at=0),
        tracked(2, "cam_b:1.2.0", camera="cam_b", at=10),
        tracked(3, "cam_a:1.1.0", at=80),  # past the window: the track's own alert
    ]
    events = [before.observe(s) for s in sightings]
    assert all(e is not None for e in events)
    stored = events[-1]
    assert stored is not None
    alert = stored.alert
    assert alert.tracks == ["cam_a:1.1.0", "cam_b:1.2.0"] and alert.sightings == 3

    after = fuser()  # a restarted alert actor
    after.restore([alert], {alert.id: {s.sighting_id for s in sightings}})
    assert after.tracks == 2
    for s in sightings:  # the replay of what was already stored
        assert after.observe(s) is None
    assert after.counters.duplicates == 3
    # Later sightings of either track join the stored alert, even past the window.
    later = after.observe(tracked(4, "cam_b:1.2.0", camera="cam_b", at=300))
    assert later is not None and later.kind == "updated" and later.alert.id == alert.id
    # And a track of it seen for another entry is a conflict, not a new alert.
    assert after.observe(tracked(5, "cam_a:1.1.0", entry="E2", at=301)) is None
    assert after.counters.track_conflicts == 1 and after.counters.raised == 0


def test_restore_keeps_older_alerts_of_an_entry_for_their_tracks() -> None:
    f = fuser()
    old = f.observe(tracked(1, "cam_a:1.1.0", at=0))
    new = f.observe(tracked(2, "cam_a:1.2.0", at=100))
    assert old is not None and new is not None and old.alert.id != new.alert.id
    restored = fuser()
    restored.restore([new.alert, old.alert])
    event = restored.observe(tracked(3, "cam_a:1.1.0", at=110))
    assert event is not None and event.alert.id == old.alert.id
    other = restored.observe(tracked(4, "cam_b:9.9.0", camera="cam_b", at=111))
    assert other is not None and other.alert.id == new.alert.id  # the entry's current one
