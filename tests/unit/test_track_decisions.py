"""The tracking stage's evidence and decisions, on synthetic faces and embeddings.

Each frame is an :class:`AnalysedImage` built by hand (boxes, quality figures, blank chips)
and each face's embedding is chosen by the test, so every promise of
:mod:`lfr_actors.tracking.evidence` and :mod:`lfr_actors.tracking.stage` is checked without
the models: who is embedded, when a track is compared, what it matches, when it splits, and
that what a track held is dropped when it ends.
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc

import cv2
import numpy as np
import pytest

from lfr_actors.models.pipeline import AnalysedImage
from lfr_actors.models.quality import FaceQuality
from lfr_actors.models.types import Detections
from lfr_actors.tracking.config import TrackingConfig
from lfr_actors.tracking.evidence import TrackEvidence, decision_threshold, face_weight
from lfr_actors.tracking.stage import FrameInfo, Tracking, crop_jpeg

DIM = 4
GOOD = FaceQuality(
    size_px=80.0, score=1.0, sharpness=100.0, frontal=0.9, yaw_ratio=0.0, roll_deg=0.0
)


def quality(**changes: float) -> FaceQuality:
    return dataclasses.replace(GOOD, **changes)


def analysed(boxes: list[list[float]], qualities: list[FaceQuality] | None = None) -> AnalysedImage:
    n = len(boxes)
    qualities = qualities or [GOOD] * n
    return AnalysedImage(
        detections=Detections(
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            scores=np.asarray([q.score for q in qualities], np.float32),
            landmarks=np.zeros((n, 5, 2), np.float32),
        ),
        chips=np.zeros((n, 8, 8, 3), np.uint8),
        quality=qualities,
        passed=np.ones((n,), bool),
        embedded=np.zeros((0,), np.intp),
        embeddings=np.zeros((0, DIM), np.float32),
    )


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


ALICE = unit(1, 0, 0, 0)
BOB = unit(0, 1, 0, 0)
NEAR_ALICE = unit(1, 0.3, 0, 0)  # 0.045 from ALICE (cosine), 0.71 from BOB


class Clip:
    """Feeds one camera's frames through a Tracking, one frame per batch, as the embedder."""

    def __init__(self, tracking: Tracking, camera: str = "cam", epoch: str = "e1") -> None:
        self.tracking = tracking
        self.camera = camera
        self.epoch = epoch
        self.seq = 0
        self.image = np.full((240, 320, 3), 120, np.uint8)

    def frame(
        self,
        boxes: list[list[float]],
        embeddings: list[np.ndarray],
        qualities: list[FaceQuality] | None = None,
        hits: list[list[tuple[str, float]]] | None = None,
        *,
        seq: int | None = None,
    ) -> tuple[list, list]:
        """One frame: returns (the plan's faces, the decisions)."""
        self.seq = self.seq + 1 if seq is None else seq
        info = FrameInfo(
            self.camera, self.epoch, self.seq, float(self.seq), self.seq - 1, self.seq / 10
        )
        image = analysed(boxes, qualities)
        plan = self.tracking.observe([info], [image])
        vectors = (
            np.stack([embeddings[f.face] for f in plan.faces])
            if plan.faces
            else np.zeros((0, DIM), np.float32)
        )
        queries = self.tracking.absorb(plan, vectors, [info], [self.image], [image]).queries
        hits = [self._search(q.vector) for q in queries] if hits is None else hits[: len(queries)]
        return plan.faces, self.tracking.decide(queries, hits)

    def _search(self, vector: np.ndarray) -> list[tuple[str, float]]:
        found = [("alice", float(1 - vector @ ALICE)), ("bob", float(1 - vector @ BOB))]
        return sorted(found, key=lambda h: h[1])[:1]


def tracking(**changes: object) -> Tracking:
    return Tracking(
        TrackingConfig(**changes),  # type: ignore[arg-type]
        metric="cosine",
        normalise=True,
        threshold=0.3,
        crop_size=160,
    )


BOX = [100.0, 60.0, 180.0, 160.0]


def test_face_weight_counts_size_sharpness_pose_and_score() -> None:
    config = TrackingConfig()
    assert face_weight(GOOD, config) == pytest.approx(1.0)
    assert face_weight(quality(size_px=19.9), config) == 0.0  # below the floor: nothing
    at_floor = face_weight(quality(size_px=20.0), config)
    assert 0 < at_floor <= 0.11  # at the floor: a little
    sizes = [face_weight(quality(size_px=s), config) for s in (20, 30, 40, 50, 60, 90)]
    assert sizes == sorted(sizes) and sizes[-1] == sizes[-2]  # grows to full_face_px, then flat
    assert face_weight(quality(frontal=0.1), config) == 0.0  # profile: nothing
    assert face_weight(quality(sharpness=0.0), config) == pytest.approx(0.1)  # blurred: a tenth
    assert face_weight(quality(score=0.5), config) == pytest.approx(0.5)
    assert face_weight(quality(size_px=float("nan")), config) == 0.0


def test_a_track_of_small_faces_is_decided_with_a_stricter_threshold() -> None:
    config = TrackingConfig(small_face_margin=0.05)  # min_face_px 20, full_face_px 60
    assert decision_threshold(0.6, 20.0, config) == pytest.approx(0.55)
    assert decision_threshold(0.6, 40.0, config) == pytest.approx(0.575)
    assert decision_threshold(0.6, 60.0, config) == decision_threshold(0.6, 200.0, config) == 0.6
    assert decision_threshold(0.6, 24.0, TrackingConfig(small_face_margin=0.0)) == 0.6
    t = tracking(min_track_frames=1, small_face_margin=0.05)
    t.set_threshold(0.05)
    small = quality(size_px=20.0)
    _, decisions = Clip(t).frame([BOX], [NEAR_ALICE], [small])  # 0.045 from alice
    assert decisions == []  # within 0.05, but not within 0.05 less the whole margin
    _, decisions = Clip(t, "large").frame([BOX], [NEAR_ALICE], [GOOD])
    assert [d.entry_id for d in decisions] == ["alice"]


def test_a_track_is_compared_only_with_min_track_frames_faces_and_then_matches() -> None:
    t = tracking(min_track_frames=3)
    clip = Clip(t)
    for _ in range(2):
        faces, decisions = clip.frame([BOX], [NEAR_ALICE])
        assert len(faces) == 1 and decisions == []
    faces, decisions = clip.frame([BOX], [NEAR_ALICE])
    assert [(d.entry_id, d.first) for d in decisions] == [("alice", True)]
    track = decisions[0].track
    assert track.track_id == "cam:e1.1.0"  # camera, run epoch, first frame and face
    assert track.faces == 3 and track.state == "matched"
    assert decisions[0].distance == pytest.approx(float(1 - NEAR_ALICE @ ALICE), abs=1e-5)
    assert t.counters["tracks_started"] == 1 and t.counters["tracks_matched"] == 1


def test_small_blurred_faces_add_up_to_a_decision() -> None:
    t = tracking(min_track_frames=5)
    clip = Clip(t)
    small = quality(size_px=24.0, sharpness=5.0)
    decisions = []
    for _ in range(5):
        _, decisions = clip.frame([BOX], [NEAR_ALICE], [small])
    assert [d.entry_id for d in decisions] == ["alice"]
    assert 0 < decisions[0].track.weight < 5 * 0.05  # counted, with low weight


def test_profile_faces_are_tracked_but_never_embedded_or_decided() -> None:
    t = tracking(min_track_frames=1)
    clip = Clip(t)
    for _ in range(10):
        faces, decisions = clip.frame([BOX], [NEAR_ALICE], [quality(frontal=0.0)])
        assert faces == [] and decisions == []
    assert t.live == 1 and t.counters["faces_not_counted"] == 10


def test_entry_thresholds_decide_and_a_track_never_matches_two_entries() -> None:
    t = tracking(min_track_frames=1)
    t.set_threshold(0.3, {"alice": 0.01})  # alice's own threshold is stricter
    clip = Clip(t)
    _, decisions = clip.frame([BOX], [NEAR_ALICE])
    assert decisions == []  # 0.045 from alice: beyond her own 0.01
    t.set_threshold(0.3, {})
    _, decisions = clip.frame([BOX], [NEAR_ALICE])
    assert [d.entry_id for d in decisions] == ["alice"]
    # Later evidence nearer another entry does not make the track match it.
    _, decisions = clip.frame([BOX], [NEAR_ALICE], hits=[[("bob", 0.01)]])
    assert decisions == []
    assert decisions == [] and t.counters["tracks_matched"] == 1


def test_a_decided_track_is_embedded_again_only_when_better_or_every_k_frames() -> None:
    t = tracking(min_track_frames=1, reembed_every=4, reembed_gain=1.25)
    clip = Clip(t)
    ok = quality(size_px=40.0)  # weight below 1, so a better face can come
    faces, decisions = clip.frame([BOX], [NEAR_ALICE], [ok])
    assert len(faces) == 1 and decisions[0].first
    embedded = [len(clip.frame([BOX], [NEAR_ALICE], [ok])[0]) for _ in range(8)]
    assert embedded == [0, 0, 0, 1, 0, 0, 0, 1]  # every 4th frame
    faces, decisions = clip.frame([BOX], [NEAR_ALICE], [GOOD])  # noticeably better
    assert len(faces) == 1 and [d.first for d in decisions] == [False]
    assert t.counters["faces_skipped_decided"] == 6


def test_no_match_after_n_faces_then_only_now_and_then() -> None:
    t = tracking(min_track_frames=2, no_match_frames=3, reembed_every=5)
    clip = Clip(t)
    stranger = unit(0, 0, 1, 0)
    for _ in range(3):
        faces, decisions = clip.frame([BOX], [stranger])
        assert len(faces) == 1 and decisions == []
    (track,) = [f.track for f in faces]
    assert track.state == "no_match"
    embedded = [len(clip.frame([BOX], [stranger])[0]) for _ in range(5)]
    assert embedded == [0, 0, 0, 0, 1]
    # Still compared when embedded again: a no-match track can still match later.
    _, decisions = clip.frame([BOX], [ALICE], [quality(size_px=200.0)], hits=[[("alice", 0.0)]])
    assert track.state in ("no_match", "matched")


def test_a_face_far_from_its_track_splits_it_and_the_old_evidence_goes() -> None:
    t = tracking(min_track_frames=3)
    clip = Clip(t)
    for _ in range(3):  # undecided (the index finds nothing), so every face is embedded
        faces, _ = clip.frame([BOX], [NEAR_ALICE], hits=[[]])
    old = faces[0].track
    assert old.faces == 3 and old.total is not None
    faces, decisions = clip.frame([BOX], [BOB])  # same box, someone else
    assert old.total is None and old.best_crop == b""  # dropped at once
    assert t.counters["tracks_split"] == 1 and t.live == 1
    assert decisions == []  # the new track has one face of evidence
    for _ in range(2):
        _, decisions = clip.frame([BOX], [BOB])
    assert [d.entry_id for d in decisions] == ["bob"]
    assert decisions[0].track.track_id == "cam:e1.4.0"  # the frame and face that split it


def test_tracks_end_when_lost_at_restart_when_idle_and_at_end_all() -> None:
    now = [0.0]
    t = Tracking(
        TrackingConfig(max_missed_frames=2),
        metric="cosine",
        normalise=True,
        threshold=0.3,
        clock=lambda: now[0],
    )
    clip = Clip(t)
    faces, _ = clip.frame([BOX], [NEAR_ALICE])
    lost = faces[0].track
    for _ in range(3):
        clip.frame([], [])
    assert t.live == 0 and lost.total is None  # lost for more than max_missed_frames
    faces, _ = clip.frame([BOX], [NEAR_ALICE])
    before_restart = faces[0].track
    clip.epoch = "e2"  # the camera restarted: its tracks start afresh
    faces, _ = clip.frame([BOX], [NEAR_ALICE], seq=1)
    assert before_restart.total is None and faces[0].track.track_id == "cam:e2.1.0"
    now[0] = 100.0
    assert t.end_idle(idle_s=10.0) == 1 and t.live == 0
    clip.frame([BOX], [NEAR_ALICE])
    assert t.end_all() == 1 and t.live == 0


def test_frames_out_of_order_are_not_tracked() -> None:
    t = tracking()
    clip = Clip(t)
    clip.frame([BOX], [NEAR_ALICE], seq=5)
    faces, _ = clip.frame([BOX], [NEAR_ALICE], seq=4)
    assert faces == [] and t.counters["frames_out_of_order"] == 1


def test_two_cameras_keep_their_own_tracks() -> None:
    t = tracking(min_track_frames=1)
    a, b = Clip(t, "north"), Clip(t, "south")
    _, da = a.frame([BOX], [NEAR_ALICE])
    _, db = b.frame([BOX], [NEAR_ALICE])
    assert {da[0].track.track_id, db[0].track.track_id} == {"north:e1.1.0", "south:e1.1.0"}


def test_the_best_face_is_the_officers_crop_large_enough_to_adjudicate() -> None:
    t = tracking(min_track_frames=1)
    clip = Clip(t)
    clip.frame([BOX], [NEAR_ALICE], [quality(size_px=30.0)])
    _, decisions = clip.frame([BOX], [NEAR_ALICE], [GOOD])
    track = decisions[0].track
    assert track.best_quality["size_px"] == 80.0 and track.best_media_index == 1
    crop = cv2.imdecode(np.frombuffer(track.best_crop, np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (160, 160, 3)


def test_a_crop_at_the_edge_of_the_frame_is_still_square() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    for box in ([-10, -10, 30, 30], [80, 80, 120, 130], [0, 0, 100, 100]):
        data = crop_jpeg(image, np.asarray(box, np.float32), 200)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (200, 200, 3)


def test_bad_calls_get_clear_errors() -> None:
    t = tracking()
    with pytest.raises(ValueError, match="1 frames but 0 analysed images"):
        t.observe([FrameInfo("c", "e", 1, 0.0)], [])
    with pytest.raises(ValueError, match="0 tracks queried but 1 answers"):
        t.decide([], [[]])
    evidence = TrackEvidence("c:e.1.0", normalise=True)
    with pytest.raises(ValueError, match="no evidence yet"):
        evidence.mean()
    with pytest.raises(ValueError, match="above 0"):
        evidence.add(ALICE, 0.0)


def _crowd_frame(step: int, people: int = 24) -> tuple[list[list[float]], list[np.ndarray]]:
    """A crowd walking through: person ``p`` crosses the frame in 60 steps, then a new one."""
    boxes, embeddings = [], []
    rng = np.random.default_rng(step)
    for p in range(people):
        phase = (step + p * 7) % 80
        if phase >= 60:
            continue  # out of view for a while: that person's track ends
        generation = (step + p * 7) // 80  # each pass is somebody new
        x = 10 + phase * 5
        y = 10 + (p % 6) * 38
        boxes.append([x, y, x + 30, y + 34])
        person = np.random.default_rng(p * 1000 + generation).normal(size=DIM)
        embeddings.append(
            (person / np.linalg.norm(person) + 0.01 * rng.normal(size=DIM)).astype(np.float32)
        )
    return boxes, embeddings


def test_tracker_memory_stays_bounded_on_a_long_crowded_stream() -> None:
    """1,200 frames of a looping crowd: live tracks and what they hold stay bounded."""
    t = tracking(min_track_frames=3, max_missed_frames=5)
    clip = Clip(t)
    clip.image = np.zeros((260, 360, 3), np.uint8)
    clip._search = lambda vector: []  # type: ignore[method-assign]  # a watchlist of strangers
    tracemalloc.start()
    peaks = []
    try:
        for step in range(1200):
            boxes, embeddings = _crowd_frame(step)
            clip.frame(boxes, embeddings)
            assert t.live <= 2 * 24  # bounded by the people in view, not by the stream's length
            if step in (299, 1199):
                gc.collect()
                peaks.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert t.counters["tracks_started"] > 300  # people came and went all along
    assert t.counters["tracks_ended"] >= t.counters["tracks_started"] - t.live
    held = [o for o in gc.get_objects() if isinstance(o, TrackEvidence) and o.total is not None]
    assert len(held) <= t.live  # ended tracks hold no embeddings
    assert peaks[1] < peaks[0] * 1.5 + 200_000, peaks  # no growth with the stream's length
    live = t.live
    assert t.end_all() == live and t.live == 0


def test_a_track_that_ends_before_its_decision_still_shows_its_best_face() -> None:
    """The embedder decides a batch while its worker observes the next one."""
    t = tracking(min_track_frames=1, max_missed_frames=0)
    image = np.full((240, 320, 3), 120, np.uint8)
    first = FrameInfo("cam", "e1", 1, 1.0, 0, 0.0)
    seen = analysed([BOX])
    plan = t.observe([first], [seen])
    queries = t.absorb(plan, NEAR_ALICE[None], [first], [image], [seen]).queries
    t.observe([FrameInfo("cam", "e1", 2, 2.0)], [analysed([])])  # the next batch loses it
    (track,) = [q.track for q in queries]
    assert track.best_crop == b"" and t.live == 0  # its evidence is gone already
    (decision,) = t.decide(queries, [[("alice", 0.04)]])
    assert decision.best.crop.startswith(b"\xff\xd8") and decision.best.faces == 1
    assert decision.best.box == [100.0, 60.0, 180.0, 160.0] and decision.best.media_index == 0
