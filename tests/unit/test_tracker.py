"""The box tracker on synthetic boxes: faces keep their tracks through motion, crossings
and short occlusions, get new ones after long absences, and the live tracks stay bounded."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from lfr_actors.tracking.tracker import BoxTracker, TrackerConfig, TrackUpdate, iou

STRONG = 0.99
WEAK = 0.6


def box(cx: float, cy: float, side: float = 50.0) -> list[float]:
    """A square face box ``x1 y1 x2 y2`` centred on ``(cx, cy)``."""
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def step(tracker: BoxTracker, *faces: tuple[list[float], float]) -> TrackUpdate:
    """One frame holding ``faces`` (box, score), checked for the update's own promises."""
    boxes = np.array([b for b, _ in faces], dtype=np.float32).reshape(-1, 4)
    scores = np.array([s for _, s in faces], dtype=np.float32)
    update = tracker.update(boxes, scores)
    assert len(update.assigned) == len(faces)
    assert set(update.started) <= set(tracker.live)
    assert not set(update.ended) & set(tracker.live)
    return update


def follow(tracker: BoxTracker, paths: list[list[list[float] | None]]) -> list[list[int]]:
    """Feed each frame the faces of ``paths`` (one box per frame per face, None: hidden);
    return each face's track numbers, frame by frame (-1 where hidden)."""
    seen: list[list[int]] = [[] for _ in paths]
    for frame in range(len(paths[0])):
        shown = [(k, p[frame]) for k, p in enumerate(paths) if p[frame] is not None]
        update = step(tracker, *((b, STRONG) for _, b in shown if b is not None))
        numbers = dict(zip((k for k, _ in shown), update.assigned, strict=True))
        for k in range(len(paths)):
            seen[k].append(numbers.get(k, -1))
    return seen


def test_a_still_face_keeps_one_track() -> None:
    tracker = BoxTracker()
    first = step(tracker, (box(100, 100), STRONG))
    assert first.started == first.assigned == [1]
    for _ in range(200):
        update = step(tracker, (box(100, 100), STRONG))
        assert (update.assigned, update.started, update.ended) == ([1], [], [])
    assert tracker.live == [1]
    np.testing.assert_allclose(tracker.predicted(1), box(100, 100), atol=0.5)


@pytest.mark.parametrize("speed", [2.0, 15.0], ids=["slow", "fast-30%-of-width"])
def test_a_face_moving_steadily_keeps_its_track(speed: float) -> None:
    tracker = BoxTracker()
    path: list[list[float] | None] = [box(60 + speed * t, 200 + speed * t / 2) for t in range(80)]
    (numbers,) = follow(tracker, [path])
    assert set(numbers) == {1}
    # The filter has learned the velocity: it expects the face one step further on.
    expected = box(60 + speed * 80, 200 + speed * 40)
    assert iou(tracker.predicted(1), expected)[0, 0] > 0.9


def test_a_face_that_stops_and_turns_keeps_its_track() -> None:
    tracker = BoxTracker()
    xs = [100 + 15.0 * t for t in range(20)] + [385.0] * 10 + [385 - 15.0 * t for t in range(20)]
    (numbers,) = follow(tracker, [[box(x, 150) for x in xs]])
    assert set(numbers) == {1}


def test_two_faces_crossing_paths_keep_their_own_tracks() -> None:
    tracker = BoxTracker()
    frames = 60
    left: list[list[float] | None] = [box(100 + 6.0 * t, 200) for t in range(frames)]
    right: list[list[float] | None] = [box(460 - 6.0 * t, 206) for t in range(frames)]
    a, b = follow(tracker, [left, right])
    assert set(a) == {1} and set(b) == {2}
    # After the crossing each track is ahead of its own face, not the other's.
    assert tracker.predicted(1)[0] > tracker.predicted(2)[0]


def test_a_face_hidden_behind_another_while_crossing_comes_back_on_its_track() -> None:
    tracker = BoxTracker()
    frames = 60
    front: list[list[float] | None] = [box(100 + 6.0 * t, 200) for t in range(frames)]
    # The face behind is not detected while the two overlap much (constant velocity
    # carries its prediction through), then reappears on its way.
    behind: list[list[float] | None] = []
    for t in range(frames):
        here = box(460 - 6.0 * t, 204)
        front_box = front[t]
        assert front_box is not None
        behind.append(None if iou(here, front_box)[0, 0] > 0.1 else here)
    hidden = sum(b is None for b in behind)
    assert 0 < hidden <= TrackerConfig().max_missed
    a, b = follow(tracker, [front, behind])
    assert set(a) == {1}
    assert {n for n in b if n != -1} == {2}


def test_a_face_hidden_up_to_max_missed_frames_comes_back_on_its_track() -> None:
    config = TrackerConfig(max_missed=5)
    tracker = BoxTracker(config)
    moving = [box(100 + 4.0 * t, 100) for t in range(40)]
    for t in range(20):
        assert step(tracker, (moving[t], STRONG)).assigned == [1]
    for _ in range(config.max_missed):
        update = step(tracker)
        assert update.ended == []
        assert tracker.live == [1]
    # It reappears where its motion would have taken it.
    update = step(tracker, (moving[20 + config.max_missed], STRONG))
    assert (update.assigned, update.started, update.ended) == ([1], [], [])


def test_a_face_away_longer_gets_a_new_track_and_the_old_one_ends() -> None:
    config = TrackerConfig(max_missed=5)
    tracker = BoxTracker(config)
    for _ in range(10):
        step(tracker, (box(100, 100), STRONG))
    ended = []
    for frame in range(config.max_missed + 1):
        update = step(tracker)
        ended.extend(update.ended)
        # The track ends on the frame it exceeds max_missed, and not before.
        assert update.ended == ([1] if frame == config.max_missed else [])
    assert ended == [1] and len(tracker) == 0
    update = step(tracker, (box(100, 100), STRONG))
    assert update.assigned == update.started == [2]


def test_max_missed_zero_ends_a_track_at_its_first_miss() -> None:
    tracker = BoxTracker(TrackerConfig(max_missed=0))
    step(tracker, (box(100, 100), STRONG))
    assert step(tracker).ended == [1]


def test_a_weak_detection_continues_a_track_but_never_starts_one() -> None:
    tracker = BoxTracker(TrackerConfig(high_score=0.9))
    update = step(tracker, (box(100, 100), WEAK))
    assert (update.assigned, update.started, len(tracker)) == ([-1], [], 0)
    step(tracker, (box(100, 100), STRONG))
    for t in range(1, 6):
        update = step(tracker, (box(100 + 3 * t, 100), WEAK))
        assert (update.assigned, update.started) == ([1], [])
    # A weak detection far from any track stays unassigned.
    update = step(tracker, (box(103 + 18, 100), STRONG), (box(600, 400), WEAK))
    assert update.assigned == [1, -1]


def test_a_confident_detection_is_matched_before_a_weak_one() -> None:
    tracker = BoxTracker()
    step(tracker, (box(100, 100), STRONG))
    # Both overlap the track; the weak one overlaps it more, but the confident one wins.
    update = step(tracker, (box(100, 100), WEAK), (box(110, 100), STRONG))
    assert update.assigned == [-1, 1]


def test_a_pair_below_min_iou_does_not_steer_the_assignment() -> None:
    tracker = BoxTracker(TrackerConfig(min_iou=0.2))
    step(tracker, (box(100, 100), STRONG), (box(160, 100), STRONG))
    near, far = box(128, 100), box(66, 100)
    overlap = iou([box(100, 100), box(160, 100)], [near, far])
    # ``near`` overlaps track 1 most; ``far`` overlaps track 1 too little to continue it.
    assert overlap[0, 0] > overlap[1, 0] > 0.2 > overlap[0, 1] > 0.0 == overlap[1, 1]
    update = step(tracker, (near, STRONG), (far, STRONG))
    assert (update.assigned, update.started) == ([1, 3], [3])


def test_score_at_high_score_counts_as_confident() -> None:
    tracker = BoxTracker(TrackerConfig(high_score=0.75))
    assert step(tracker, (box(100, 100), 0.75)).started == [1]


def test_max_tracks_ends_the_track_matched_least_recently() -> None:
    tracker = BoxTracker(TrackerConfig(max_tracks=3, max_missed=50))
    spots = [box(100 + 100 * k, 100) for k in range(5)]
    step(tracker, (spots[0], STRONG))  # track 1
    step(tracker, (spots[0], STRONG), (spots[1], STRONG))  # track 2
    step(tracker, (spots[1], STRONG), (spots[2], STRONG))  # track 3; 1 now unmatched
    update = step(tracker, (spots[1], STRONG), (spots[2], STRONG), (spots[3], STRONG))
    assert (update.started, update.ended) == ([4], [1])
    assert sorted(tracker.live) == [2, 3, 4]
    # Two new faces at once: the two matched longest ago make room.
    update = step(tracker, (spots[3], STRONG), (spots[4], STRONG), (spots[0], STRONG))
    assert update.assigned[0] == 4
    assert sorted(update.ended) == [2, 3]
    assert sorted(tracker.live) == [4, *update.started]
    assert len(tracker) == 3


def test_max_tracks_never_ends_a_track_matched_in_the_same_frame() -> None:
    tracker = BoxTracker(TrackerConfig(max_tracks=2))
    spots = [box(100 + 100 * k, 100) for k in range(4)]
    step(tracker, (spots[0], STRONG), (spots[1], STRONG))
    # Four faces, two of them the live tracks, matched in this frame: no room is made
    # for the two new faces.
    update = step(
        tracker, (spots[0], STRONG), (spots[1], STRONG), (spots[2], 0.95), (spots[3], 0.97)
    )
    assert update.assigned == [1, 2, -1, -1]
    assert (update.started, update.ended) == ([], [])
    fresh = BoxTracker(TrackerConfig(max_tracks=2))
    update = step(
        fresh, *((s, score) for s, score in zip(spots, [0.91, 0.99, 0.93, 0.97], strict=True))
    )
    # One frame with more new faces than max_tracks: the strongest two start tracks.
    assert update.assigned == [-1, 1, -1, 2]
    assert len(fresh) == 2


def test_fifty_faces_keep_their_tracks() -> None:
    tracker = BoxTracker()
    grid = [(60.0 + 80 * (k % 10), 60.0 + 80 * (k // 10)) for k in range(50)]
    paths: list[list[list[float] | None]] = [
        [box(x + 1.5 * t, y + 0.5 * t, 40) for t in range(100)] for x, y in grid
    ]
    seen = follow(tracker, paths)
    assert [set(numbers) for numbers in seen] == [{k + 1} for k in range(50)]
    assert len(tracker) == 50


def test_ten_thousand_frames_of_faces_coming_and_going_stay_bounded() -> None:
    tracker = BoxTracker(TrackerConfig(max_missed=10, max_tracks=64))
    rng = np.random.default_rng(7)
    # Each walker crosses the frame and leaves; a new one enters when one leaves.
    walkers: list[list[float]] = []
    entered = peak = ended_total = started_total = 0
    for _ in range(10_000):
        while len(walkers) < 12:
            walkers.append([0.0, float(rng.uniform(30, 1000)), float(rng.uniform(2, 8))])
            entered += 1
        faces = []
        for walker in walkers:
            walker[0] += walker[2]
            if rng.random() > 0.1:  # now and then a face is missed
                faces.append((box(walker[0], walker[1], 40), STRONG))
        walkers = [w for w in walkers if w[0] < 640]
        update = step(tracker, *faces)
        started_total += len(update.started)
        ended_total += len(update.ended)
        peak = max(peak, len(tracker))
    # The faces in view, and those that just left and are still waited for.
    assert 12 <= peak <= 24
    assert started_total - ended_total == len(tracker)
    # About one track per walker: faces really came and went, and kept their tracks.
    assert entered > 750
    assert entered - 12 <= started_total <= entered * 1.05
    assert len(tracker.end_all()) == started_total - ended_total and len(tracker) == 0


def test_end_all_ends_every_live_track_and_numbers_go_on() -> None:
    tracker = BoxTracker()
    step(tracker, (box(100, 100), STRONG), (box(300, 100), STRONG))
    assert sorted(tracker.end_all()) == [1, 2]
    assert (len(tracker), tracker.live) == (0, [])
    assert step(tracker, (box(100, 100), STRONG)).started == [3]


def test_an_empty_frame_is_a_frame_without_faces() -> None:
    tracker = BoxTracker()
    step(tracker, (box(100, 100), STRONG))
    empties: list[npt.ArrayLike] = [[], np.zeros((0, 4), np.float32)]
    for empty in empties:
        update = tracker.update(empty, [])
        assert update == TrackUpdate([], [], [])
    assert tracker.live == [1]


@pytest.mark.parametrize(
    "bad",
    [
        [math.nan, 10, 60, 60],
        [10, 10, math.inf, 60],
        [60, 10, 10, 60],  # x2 before x1
        [10, 10, 60, 10],  # no height
    ],
    ids=["nan", "infinite", "inverted", "flat"],
)
def test_an_unusable_box_is_ignored_with_assigned_minus_one(bad: list[float]) -> None:
    tracker = BoxTracker()
    step(tracker, (box(100, 100), STRONG))
    update = step(tracker, (bad, STRONG), (box(102, 100), STRONG), (bad, WEAK))
    assert (update.assigned, update.started, update.ended) == ([-1, 1, -1], [], [])
    update = step(tracker, (bad, STRONG))
    assert (update.assigned, update.started) == ([-1], [])


def test_a_score_that_is_not_a_number_is_ignored() -> None:
    tracker = BoxTracker()
    step(tracker, (box(100, 100), STRONG))
    update = step(tracker, (box(100, 100), math.nan), (box(400, 100), math.nan))
    assert (update.assigned, update.started) == ([-1, -1], [])


@pytest.mark.parametrize(
    ("boxes", "scores", "message"),
    [
        (np.zeros((2, 4)), np.ones(3), "2 boxes but 3 scores"),
        (np.zeros((3, 4)), np.ones(2), "3 boxes but 2 scores"),
        (np.zeros((2, 5)), np.ones(2), r"boxes must be \[N, 4\].*\[2, 5\]"),
        (np.zeros(4), np.ones(1), r"boxes must be \[N, 4\].*\[4\]"),
        (np.zeros((1, 4)), np.ones((1, 1)), r"scores must be \[N\].*\[1, 1\]"),
    ],
    ids=["fewer-boxes", "fewer-scores", "five-columns", "flat-box", "column-scores"],
)
def test_mismatched_shapes_are_a_clear_error(
    boxes: np.ndarray, scores: np.ndarray, message: str
) -> None:
    tracker = BoxTracker()
    with pytest.raises(ValueError, match=message):
        tracker.update(boxes, scores)
    assert len(tracker) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_iou", 0.0, "min_iou must be between 0 and 1"),
        ("min_iou", 1.0, "min_iou must be between 0 and 1"),
        ("min_iou", math.nan, "min_iou must be between 0 and 1"),
        ("max_missed", -1, "max_missed must be 0 to 1000"),
        ("max_missed", 2.5, "max_missed must be a whole number"),
        ("max_missed", True, "max_missed must be a whole number"),
        ("high_score", 1.5, "high_score must be 0 to 1"),
        ("max_tracks", 0, "max_tracks must be 1 to 100000"),
        ("max_tracks", 1.0, "max_tracks must be a whole number"),
    ],
)
def test_tracker_config_limits(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackerConfig(**{field: value})  # type: ignore[arg-type]


def test_iou() -> None:
    a = box(100, 100, 40)
    assert iou(a, a)[0, 0] == pytest.approx(1.0)
    assert iou(a, box(140, 100, 40))[0, 0] == 0.0  # touching edges
    assert iou(a, box(120, 100, 40))[0, 0] == pytest.approx(1 / 3)
    assert iou([a, a], [a, a, a]).shape == (2, 3)
    assert iou([0, 0, 0, 0], [0, 0, 0, 0])[0, 0] == 0.0  # no area, no overlap
