"""The track-rules benchmark (loadtest/bench_track_rules.py): its helpers and one small run.

The degradation, the face region, the picking of the pasted face, the galleries and the
scoring are checked on synthetic images and embeddings (no models): the same seed gives
the same frames, the face lands where it is recorded and at the size asked for, and the
counts follow the decisions. One small run on the real photos (one size, three frames,
three identities) checks the report's shape and that its counts add up.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from lfr_actors.models.cache import ModelCache
from lfr_actors.models.pipeline import FacePipeline, PipelineConfig
from lfr_actors.models.runtime import RuntimeConfig

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"


def _bench() -> ModuleType:
    """The benchmark script as a module (it imports ``machine`` from beside itself)."""
    if str(LOADTEST) not in sys.path:
        sys.path.insert(0, str(LOADTEST))
    return importlib.import_module("bench_track_rules")


bench = _bench()

FACE = 230
"""The synthetic face's level: brighter than the frame's grey under every degradation."""


def synthetic_crop(
    side: int = 90, face: tuple[int, int, int, int] = (30, 25, 60, 65)
) -> tuple[np.ndarray, np.ndarray]:
    """A black square crop with a bright rectangle as its "face", and that face's box."""
    crop = np.zeros((side, side, 3), np.uint8)
    x1, y1, x2, y2 = face
    crop[y1:y2, x1:x2] = FACE
    return crop, np.array(face, np.float32)


def bright_box(frame: np.ndarray, d: object) -> np.ndarray:
    """The bounding box of the pixels nearer the face's level than the grey's, in ``frame``."""
    gain, offset = d.gain, d.offset  # type: ignore[attr-defined]
    cut = (FACE + bench.GREY) / 2.0 * gain + offset
    ys, xs = np.nonzero(frame.mean(axis=2) > cut)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(bench.iou(a.reshape(1, 4), b.reshape(1, 4))[0, 0])


# --- Degradation and track building -------------------------------------------------------


def test_same_seed_gives_the_same_frames() -> None:
    crop, box = synthetic_crop()
    first = bench.render_track(crop, box, 24, 4, bench.track_rng(0, 3, 24))
    again = bench.render_track(crop, box, 24, 4, bench.track_rng(0, 3, 24))
    other = bench.render_track(crop, box, 24, 4, bench.track_rng(1, 3, 24))
    assert len(first) == 4
    for (f1, b1, d1), (f2, b2, d2) in zip(first, again, strict=True):
        assert np.array_equal(f1, f2)
        assert np.array_equal(b1, b2)
        assert d1 == d2
    assert not all(np.array_equal(f1, f3) for (f1, *_), (f3, *_) in zip(first, other, strict=True))
    # Frames within a track differ (each has its own degradation).
    assert len({d for *_, d in first}) == 4


def test_the_streams_of_tracks_do_not_depend_on_each_other() -> None:
    """A track's frames depend on its seed, photo and size only, not on what ran before."""
    crop, box = synthetic_crop()
    alone = bench.render_track(crop, box, 32, 2, bench.track_rng(5, 1, 32))
    bench.render_track(crop, box, 20, 3, bench.track_rng(5, 0, 20))
    after = bench.render_track(crop, box, 32, 2, bench.track_rng(5, 1, 32))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(alone, after, strict=True))
    assert not np.array_equal(
        bench.render_track(crop, box, 32, 1, bench.track_rng(5, 2, 32))[0][0], alone[0][0]
    )


@pytest.mark.parametrize("size", [20, 24, 32, 48, 100])
def test_the_face_lands_where_recorded_at_the_size_asked(size: float) -> None:
    crop, box = synthetic_crop()
    frames = bench.render_track(crop, box, size, 6, bench.track_rng(0, 0, size))
    for frame, where, d in frames:
        assert frame.shape == (*bench.CANVAS, 3)
        assert frame.dtype == np.uint8
        side = min(where[2] - where[0], where[3] - where[1])
        # The face's size is the one asked for, changed by the frame's scale jitter
        # (at most 10 %), give or take the rounding of the crop to whole pixels.
        assert side == pytest.approx(size * (1 + d.scale), abs=1.0)
        assert 0.9 * size - 1 <= side <= 1.1 * size + 1
        assert 0 <= where[0] < where[2] <= bench.CANVAS[1]
        assert 0 <= where[1] < where[3] <= bench.CANVAS[0]
        # The bright face is where the box says, blur and JPEG spreading it a pixel or two.
        found = bright_box(frame, d)
        assert overlap(found, where) > 0.7, (found, where, d)
        assert np.abs((found[:2] + found[2:]) / 2 - (where[:2] + where[2:]) / 2).max() <= 2.0


def test_degradations_stay_within_their_ranges() -> None:
    rng = np.random.default_rng(7)
    drawn = [bench.draw_degradation(rng) for _ in range(500)]
    assert all(
        -0.1 <= d.scale <= 0.1 and -0.1 <= d.dx <= 0.1 and -0.1 <= d.dy <= 0.1 for d in drawn
    )
    assert all(0 <= d.blur_sigma <= 2 for d in drawn)
    assert all(30 <= d.jpeg_quality <= 90 for d in drawn)
    assert all(0.75 <= d.gain <= 1.25 and -25 <= d.offset <= 25 for d in drawn)
    assert all(0 <= d.noise_sigma <= 6 for d in drawn)
    # The draws cover their ranges (not one fixed value).
    assert max(d.blur_sigma for d in drawn) > 1.8 and min(d.blur_sigma for d in drawn) < 0.2
    assert {d.jpeg_quality for d in drawn} >= {30, 90}


def test_the_face_region_is_a_square_around_the_face_even_at_the_edge() -> None:
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    crop, inside = bench.face_region(image, [100, 50, 140, 100], margin=0.5)
    assert crop.shape == (100, 100, 3)  # the longer side 50, and half of it either side
    x1, y1, x2, y2 = inside.astype(int)
    assert np.array_equal(crop[y1:y2, x1:x2], image[50:100, 100:140])
    # A face at the corner: the crop is still square, padded with the edge's pixels.
    crop, inside = bench.face_region(image, [0, 0, 40, 40], margin=0.5)
    assert crop.shape == (80, 80, 3)
    x1, y1, x2, y2 = inside.astype(int)
    assert np.array_equal(crop[y1:y2, x1:x2], image[0:40, 0:40])
    assert np.array_equal(crop[0, 0], image[0, 0])
    with pytest.raises(bench.BenchError, match="x2 > x1"):
        bench.face_region(image, [10, 10, 10, 30])


def test_bad_track_requests_are_refused_clearly() -> None:
    crop, box = synthetic_crop()
    with pytest.raises(bench.BenchError, match="at least 1 frame"):
        bench.render_track(crop, box, 24, 0, bench.track_rng(0, 0, 24))
    with pytest.raises(bench.BenchError, match="does not fit"):
        bench.render_track(crop, box, 300, 1, bench.track_rng(0, 0, 300))


def test_the_pasted_face_is_the_detection_overlapping_it_most() -> None:
    pasted = np.array([100, 100, 124, 124], np.float32)
    boxes = np.array([[300, 100, 324, 124], [104, 102, 128, 126], [98, 96, 122, 122]], np.float32)
    assert bench.pick_face(boxes, pasted) == 2
    assert bench.pick_face(boxes[:1], pasted) is None  # elsewhere in the frame
    assert bench.pick_face(np.zeros((0, 4), np.float32), pasted) is None


# --- Galleries, decisions, scores -----------------------------------------------------


def photo(identity: str, name: str) -> object:
    return bench.Photo(identity, Path(identity) / name)


def test_galleries_leave_the_probe_out_and_strangers_have_no_entry() -> None:
    a1, a2, b1, c1 = photo("a", "1"), photo("a", "2"), photo("b", "1"), photo("c", "1")
    templates = {p: np.full((1, 2), i, np.float32) for i, p in enumerate([a1, a2, b1, c1])}
    mated = {e.entry_id: e.templates.tolist() for e in bench.gallery(templates, a1, mated=True)}
    assert mated == {"a": [[1, 1]], "b": [[2, 2]], "c": [[3, 3]]}
    stranger = {e.entry_id for e in bench.gallery(templates, a1, mated=False)}
    assert stranger == {"b", "c"}


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def synthetic_track(probe: object, vectors: list[np.ndarray], weights: list[float]) -> object:
    track = bench.Track(probe, 24.0, len(vectors))
    track.vectors = np.stack(vectors).astype(np.float32)
    track.weights = np.asarray(weights, np.float64)
    track.passed = np.asarray([w > 0.5 for w in weights], bool)
    return track


def test_decisions_use_the_track_rules_and_counts_add_up() -> None:
    alice, bob = photo("alice", "1"), photo("bob", "1")
    entries = [
        bench.Entry("alice", unit(1, 0, 0)[None], None),
        bench.Entry("bob", unit(0, 1, 0)[None], None),
    ]
    near_alice = [unit(1, 0.2, 0), unit(1, 0, 0.3), unit(1, 0.1, 0.1)]
    # Alice's track: two good faces near her, one weightless face near Bob.
    track = synthetic_track(alice, [*near_alice[:2], unit(0.1, 1, 0)], [1.0, 0.9, 0.0])
    decided = bench.decide(
        track, entries, threshold=0.6, metric="euclidean", normalise=False, min_faces=2
    )
    for rule in bench.ALTERNATIVES:
        assert decided[rule]["decision"] == "alice", rule
    # Frame decisions see every face, the weightless one too.
    assert decided["frame_all"]["faces"] == ["alice", "alice", "bob"]
    assert decided["frame_gate"]["faces"] == ["alice", "alice", None]
    # A stranger near nobody.
    stranger = synthetic_track(bob, [unit(0, 0, 1)] * 3, [1.0, 1.0, 1.0])
    far = bench.decide(
        stranger, entries[:1], threshold=0.6, metric="euclidean", normalise=False, min_faces=2
    )
    # Too few faces of weight: no track rule decides, frame rules still do.
    thin = synthetic_track(alice, near_alice, [1.0, 0.0, 0.0])
    few = bench.decide(
        thin, entries, threshold=0.6, metric="euclidean", normalise=False, min_faces=2
    )
    assert all(few[rule]["decision"] is None for rule in bench.ALTERNATIVES)
    nothing = synthetic_track(alice, near_alice, [0.0, 0.0, 0.0])
    empty = bench.decide(
        nothing, entries, threshold=0.6, metric="euclidean", normalise=False, min_faces=1
    )
    assert all(empty[rule]["entry"] is None for rule in bench.ALTERNATIVES)

    rows = bench.score([(alice, True, decided), (bob, False, far), (alice, True, few)])
    for rule in bench.ALTERNATIVES:
        row = rows[rule]
        assert (row["mated"], row["correct"], row["wrong"]) == (2, 1, 0), rule
        assert (row["non_mated"], row["false"]) == (1, 0), rule
        assert row["tmr"] == 0.5 and row["fmr"] == 0.0
    assert rows["frame_all_face"]["mated"] == 6  # faces, not tracks
    assert rows["frame_all_face"]["correct"] == 5
    assert rows["frame_all_face"]["wrong"] == 1
    assert rows["frame_all_any"]["mated"] == 2
    assert (rows["frame_all_any"]["correct"], rows["frame_all_any"]["wrong"]) == (2, 1)
    assert rows["frame_gate_any"]["wrong"] == 0
    assert rows["frame_all_face"]["non_mated"] == 3 and rows["frame_all_face"]["false"] == 0


def test_separation_is_the_chance_a_mated_value_is_nearer() -> None:
    assert bench.separation([0.3, 0.4], [0.5, 0.6]) == 1.0
    assert bench.separation([0.5], [0.5]) == 0.5
    assert bench.separation([float("inf")], [0.7]) == 0.0
    assert bench.separation([], [0.7]) is None


def test_photo_folders_are_checked(tmp_path: Path) -> None:
    with pytest.raises(bench.BenchError, match="no such folder"):
        bench.list_photos(tmp_path / "absent")
    for identity, names in {"a": ["1.jpg", "2.png", "notes.txt"], "b": ["1.jpeg"]}.items():
        (tmp_path / identity).mkdir()
        for name in names:
            (tmp_path / identity / name).write_bytes(b"")
    photos = bench.list_photos(tmp_path)
    assert [(p.identity, p.path.name) for p in photos] == [
        ("a", "1.jpg"),
        ("a", "2.png"),
        ("b", "1.jpeg"),
    ]
    with pytest.raises(bench.BenchError, match="unknown identities zed"):
        bench.list_photos(tmp_path, ["a", "zed"])
    with pytest.raises(bench.BenchError, match="two identities"):
        bench.list_photos(tmp_path, ["a"])


# --- One small run on the real photos -------------------------------------------------------


@pytest.mark.models
@pytest.mark.data
def test_a_small_run_reports_every_rule_and_its_counts_add_up(
    model_cache: ModelCache, shared_data: Path
) -> None:
    pipeline = FacePipeline.build(RuntimeConfig(), PipelineConfig(), cache=model_cache)
    people = ["biden", "lin_manuel_miranda", "rose_leslie"]  # 2 + 1 + 2 photos
    report = bench.run(
        pipeline,
        shared_data / "faces" / "people",
        sizes=[32],
        frames=3,
        seeds=[0],
        thresholds=[0.6],
        only=people,
        min_faces=2,
    )
    assert report["photos"] == {"biden": 2, "lin_manuel_miranda": 1, "rose_leslie": 2}
    assert report["refused"] == []
    (size,) = report["sizes"]
    assert (size["tracks"], size["mated_tracks"], size["non_mated_tracks"]) == (5, 4, 5)
    assert size["frames"] == 15
    assert size["frames_no_face"] + size["faces"] == size["frames"]
    assert size["faces_weight_0"] <= size["faces"]
    assert size["faces_passed_gate"] <= size["faces"]
    assert 20 <= size["median_face_px"] <= 45  # asked for 32 (MTCNN's box, not ours)

    rules = {row["rule"]: row for row in report["results"]}
    expected = {*bench.ALTERNATIVES}
    expected |= {f"{r}_{kind}" for r in bench.FRAME_RULES for kind in ("face", "any")}
    assert set(rules) == expected
    assert len(report["results"]) == len(expected)
    tracks = report["tracks"]
    assert len(tracks) == 9  # 4 mated searches and 5 non-mated
    mated_faces = sum(t["faces"] for t in tracks if t["mated"])
    for rule, row in rules.items():
        if rule.endswith("_face"):
            assert row["mated"] == mated_faces
            assert row["non_mated"] == sum(t["faces"] for t in tracks if not t["mated"])
        else:
            assert (row["mated"], row["non_mated"]) == (4, 5), rule
        assert row["correct"] + row["wrong"] <= row["mated"] or rule.endswith("_any")
        assert 0 <= row["false"] <= row["non_mated"]
        assert row["tmr"] == round(row["correct"] / row["mated"], 3)
        assert row["fmr"] == round(row["false"] / row["non_mated"], 3)
    for rule in bench.ALTERNATIVES:
        decided = sum(t[rule]["decision"] == t["photo"].split("/")[0] for t in tracks if t["mated"])
        assert rules[rule]["correct"] == decided
        assert rules[rule]["false"] == sum(
            t[rule]["decision"] is not None for t in tracks if not t["mated"]
        )
    text = bench.format_table(report)
    assert "weighted_mean" in text and "frame_gate_any" in text
