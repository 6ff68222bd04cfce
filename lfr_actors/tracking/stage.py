"""The tracking stage: faces of every camera become tracks, and tracks are decided.

One :class:`Tracking` serves all the cameras of an embedder (and of ``lfr evaluate video``:
the same code, not a copy). Per batch of frames, in three steps around the one embedding
call and the one index search the caller makes:

1. :meth:`Tracking.observe` matches each frame's faces to its camera's tracks and says
   which faces to embed: every face that counts (:func:`~lfr_actors.tracking.evidence.
   face_weight`) while its track is undecided, and only now and then once it is decided.
2. :meth:`Tracking.absorb` adds the embeddings to their tracks (a face far from its track's
   evidence splits it: the box tracker followed a different person), keeps each track's best
   face as a crop, and returns the tracks to compare: ONE vector per track.
3. :meth:`Tracking.decide` takes the index's hits for those vectors and returns the
   decisions that go on as sightings: a track with ``min_track_frames`` faces whose evidence
   is within the threshold of an entry matches it, and afterwards only that entry.

The embedder calls the first two steps from its worker thread and the third from its
event loop, so every public method holds one lock: the steps never interleave.

Frames of one camera must come in order; a frame older than one already seen is analysed
but not tracked (counted as ``frames_out_of_order``). A camera whose run epoch changes (it
restarted) starts all its tracks afresh. Everything here is memory only: a track's evidence
is dropped when it ends (lost for ``max_missed_frames``), when its camera restarts, and at
:meth:`Tracking.end_all`.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np

from lfr_actors.models.embedder import distances
from lfr_actors.models.images import encode_jpeg
from lfr_actors.models.pipeline import AnalysedImage
from lfr_actors.models.types import FloatArray, UInt8Array
from lfr_actors.tracking.config import TrackingConfig
from lfr_actors.tracking.evidence import (
    SPLIT_AFTER,
    TrackEvidence,
    decision_threshold,
    face_weight,
)
from lfr_actors.tracking.tracker import BoxTracker

_T = TypeVar("_T")

CROP_MARGIN = 1.6
"""The officer's crop is a square this many times the face box's longer side."""
IDLE_END_S = 10.0
"""A camera that sent no frame for this long has its tracks ended (its stream stopped)."""


def _locked(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run the method holding the stage's lock."""

    @functools.wraps(method)
    def run(self: Tracking, *args: object, **kwargs: object) -> _T:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


@dataclass(frozen=True)
class FrameInfo:
    """What tracking needs to know of a frame besides its faces."""

    camera_id: str
    epoch: str
    seq: int
    captured_at: float
    media_index: int | None = None
    media_time_s: float | None = None


@dataclass(frozen=True)
class FaceToEmbed:
    """One face the plan embeds: where it is, its track (and its box tracker's number)."""

    frame: int
    face: int
    track: TrackEvidence
    weight: float
    number: int


@dataclass(frozen=True)
class Plan:
    """What :meth:`Tracking.observe` decided for one batch.

    ``faces`` are the faces to embed, in frame then face order; ``chips`` their aligned
    chips (``[len(faces), S, S, 3]``). ``tracks_started[i]`` counts the tracks frame ``i``
    began.
    """

    faces: list[FaceToEmbed]
    chips: UInt8Array
    tracks_started: list[int]


@dataclass(frozen=True)
class BestFace:
    """A track's best face as it was when the track was queried: what a sighting shows.

    Taken at :meth:`Tracking.absorb`, so a track that ends before its decision comes back
    (the next batch's frames lost it) still has its crop in the sighting.
    """

    crop: bytes = field(repr=False)
    box: list[float]
    quality: dict[str, float]
    media_index: int | None
    media_time_s: float | None
    faces: int

    @staticmethod
    def of(track: TrackEvidence) -> BestFace:
        """The best face of ``track`` now."""
        return BestFace(
            track.best_crop,
            list(track.best_box),
            dict(track.best_quality),
            track.best_media_index,
            track.best_media_time_s,
            track.faces,
        )


@dataclass(frozen=True)
class TrackQuery:
    """A track to compare with the watchlist: its evidence vector, best face, latest frame."""

    track: TrackEvidence
    vector: FloatArray
    frame: int
    face: int
    best: BestFace


@dataclass(frozen=True)
class Absorbed:
    """What :meth:`Tracking.absorb` did: the tracks to compare now, and where faces went.

    ``tracks[i]`` is the track face ``i`` of the plan was added to (a new one where the
    face split its track).
    """

    queries: list[TrackQuery]
    tracks: list[TrackEvidence]


@dataclass(frozen=True)
class TrackDecision:
    """A track within the threshold of an entry: what becomes a sighting."""

    track: TrackEvidence
    entry_id: str
    distance: float
    frame: int
    face: int
    first: bool
    """True for the decision that matched the track (the rest update it)."""
    best: BestFace


@dataclass
class _Camera:
    epoch: str
    tracker: BoxTracker
    tracks: dict[int, TrackEvidence] = field(default_factory=dict)
    last_seq: int = 0
    seen_at: float = 0.0


class Tracking:
    """Face tracks of every camera of one embedder, and their decisions."""

    def __init__(
        self,
        config: TrackingConfig,
        *,
        metric: str,
        normalise: bool,
        threshold: float,
        entry_thresholds: Mapping[str, float] | None = None,
        crop_size: int = 160,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.RLock()
        self.config = config
        self.clock = clock
        self.metric = metric
        self.normalise = normalise
        self.crop_size = crop_size
        self.entry_thresholds: dict[str, float] = {}
        self.set_threshold(threshold, entry_thresholds)
        self._cameras: dict[str, _Camera] = {}
        self.counters = dict.fromkeys(
            (
                "tracks_started",
                "tracks_ended",
                "tracks_split",
                "tracks_matched",
                "non_matches_discarded",
                "faces_embedded",
                "faces_skipped_decided",
                "faces_not_counted",
                "frames_out_of_order",
            ),
            0,
        )

    @_locked
    def set_threshold(
        self, threshold: float, entry_thresholds: Mapping[str, float] | None = None
    ) -> None:
        """The deployment's threshold and, when given, every entry's own (replacing them)."""
        self.threshold = float(threshold)
        if entry_thresholds is not None:
            self.entry_thresholds = {str(k): float(v) for k, v in entry_thresholds.items()}

    @property
    def search_limit(self) -> float:
        """The loosest threshold of any entry: the farthest a search needs to look."""
        return max([self.threshold, *self.entry_thresholds.values()])

    @property
    @_locked
    def live(self) -> int:
        """Tracks alive now, over all cameras."""
        return sum(len(camera.tracks) for camera in self._cameras.values())

    def threshold_for(self, entry_id: str) -> float:
        """The entry's own threshold, else the deployment's."""
        return self.entry_thresholds.get(entry_id, self.threshold)

    # -- step 1 ----------------------------------------------------------------------------

    @_locked
    def observe(self, frames: Sequence[FrameInfo], images: Sequence[AnalysedImage]) -> Plan:
        """Match each frame's faces to its camera's tracks; choose the faces to embed."""
        if len(frames) != len(images):
            raise ValueError(f"{len(frames)} frames but {len(images)} analysed images")
        faces: list[FaceToEmbed] = []
        chips: list[UInt8Array] = []
        started = [0] * len(frames)
        for row, (info, image) in enumerate(zip(frames, images, strict=True)):
            camera = self._camera(info)
            camera.seen_at = self.clock()
            if info.seq <= camera.last_seq:
                self.counters["frames_out_of_order"] += 1
                continue
            camera.last_seq = info.seq
            detections = image.detections
            update = camera.tracker.update(detections.boxes, detections.scores)
            for number in update.ended:
                self._end(camera, number)
            for face, number in enumerate(update.assigned):
                if number < 0:
                    continue
                track = camera.tracks.get(number)
                if track is None:
                    track = camera.tracks[number] = self._new_track(info, face)
                    started[row] += 1
                track.frames += 1
                weight = face_weight(image.quality[face], self.config)
                if weight <= 0:
                    self.counters["faces_not_counted"] += 1
                elif track.wants(weight, self.config):
                    faces.append(FaceToEmbed(row, face, track, weight, number))
                    chips.append(image.chips[face])
                    continue
                else:
                    self.counters["faces_skipped_decided"] += 1
                track.since_embedded += 1
        if chips:
            stacked = np.stack(chips)
        else:
            side = images[0].chips.shape[1] if images and images[0].chips.ndim == 4 else 0
            stacked = np.zeros((0, side, side, 3), np.uint8)
        return Plan(faces, stacked, started)

    # -- step 2 ----------------------------------------------------------------------------

    @_locked
    def absorb(
        self,
        plan: Plan,
        embeddings: FloatArray,
        frames: Sequence[FrameInfo],
        images: Sequence[UInt8Array],
        analysed: Sequence[AnalysedImage],
    ) -> Absorbed:
        """Add the plan's embeddings to their tracks; the tracks to compare now.

        ``images`` are the batch's RGB frames (for the best face's crop), ``analysed`` what
        :meth:`observe` was given.
        """
        if embeddings.shape[0] != len(plan.faces):
            raise ValueError(f"{len(plan.faces)} faces planned but {embeddings.shape[0]} embedded")
        latest: dict[int, TrackQuery] = {}
        went: list[TrackEvidence] = []
        moved: dict[int, TrackEvidence] = {}  # tracks split earlier in this batch
        for face, embedding in zip(plan.faces, embeddings, strict=True):
            current = moved.get(id(face.track), face.track)
            track = self._maybe_split(current, face, embedding, frames[face.frame])
            if track is not current:
                moved[id(face.track)] = track
                latest.pop(id(current), None)
            track.add(embedding, face.weight, analysed[face.frame].quality[face.face].size_px)
            went.append(track)
            self.counters["faces_embedded"] += 1
            if face.weight > track.best_weight:
                info = frames[face.frame]
                box = analysed[face.frame].detections.boxes[face.face]
                track.best_weight = face.weight
                track.best_crop = crop_jpeg(images[face.frame], box, self.crop_size)
                track.best_box = [round(float(v), 1) for v in box]
                track.best_quality = analysed[face.frame].quality[face.face].as_dict()
                track.best_media_index = info.media_index
                track.best_media_time_s = info.media_time_s
            if track.faces >= self.config.min_track_frames:
                latest[id(track)] = TrackQuery(
                    track, track.mean(), face.frame, face.face, BestFace.of(track)
                )
        return Absorbed(list(latest.values()), went)

    def _maybe_split(
        self, track: TrackEvidence, face: FaceToEmbed, embedding: FloatArray, info: FrameInfo
    ) -> TrackEvidence:
        """The track this face's embedding goes to: its own, or a new one split from it.

        A face farther from its track's evidence than the search limit is someone else
        (the box tracker followed a face across a cut, or two people crossed): the old
        track ends there and a new one starts with this face.
        """
        if track.faces < SPLIT_AFTER or track.total is None:
            return track
        apart = float(distances(embedding[None], track.mean()[None], self.metric)[0, 0])
        if apart <= self.search_limit:
            return track
        fresh = self._new_track(info, face.face)
        fresh.frames = 1
        camera = self._cameras.get(info.camera_id)
        if camera is not None and camera.tracks.get(face.number) is track:
            camera.tracks[face.number] = fresh  # the box tracker follows on, as the new track
        self._ended(track)
        self.counters["tracks_split"] += 1
        return fresh

    # -- step 3 ----------------------------------------------------------------------------

    @_locked
    def decide(
        self, queries: Sequence[TrackQuery], hits: Sequence[Sequence[tuple[str, float]]]
    ) -> list[TrackDecision]:
        """The decisions for the queried tracks, given the index's hits for each vector.

        A track that matched an entry is decided against that entry only (a track never
        matches two). An undecided track matches the nearest entry within that entry's
        threshold, made stricter for a track of small faces (see
        :func:`~lfr_actors.tracking.evidence.decision_threshold`); after
        ``no_match_frames`` faces without one it is decided as no match (and is still
        compared when it is embedded again).
        """
        if len(queries) != len(hits):
            raise ValueError(f"{len(queries)} tracks queried but {len(hits)} answers")
        decisions = []
        for query, found in zip(queries, hits, strict=True):
            track = query.track
            candidates = [
                (str(entry), float(distance))
                for entry, distance in found
                if math.isfinite(distance)
                and distance
                <= decision_threshold(self.threshold_for(str(entry)), track.largest_px, self.config)
            ]
            if track.entry_id is not None:
                candidates = [c for c in candidates if c[0] == track.entry_id]
            if not candidates:
                if track.state == "open" and track.faces >= self.config.no_match_frames:
                    track.state = "no_match"
                continue
            entry_id, distance = min(candidates, key=lambda c: c[1])
            first = track.entry_id is None
            if first:
                track.entry_id = entry_id
                self.counters["tracks_matched"] += 1
            track.state = "matched"
            if track.best_distance is None or distance < track.best_distance:
                track.best_distance = distance
            decisions.append(
                TrackDecision(track, entry_id, distance, query.frame, query.face, first, query.best)
            )
        return decisions

    # -- ends ------------------------------------------------------------------------------

    @_locked
    def end_camera(self, camera_id: str) -> int:
        """End every track of one camera (its stream ended); returns how many."""
        camera = self._cameras.pop(camera_id, None)
        if camera is None:
            return 0
        return self._end_all_of(camera)

    @_locked
    def end_idle(self, idle_s: float = IDLE_END_S) -> int:
        """End the tracks of cameras that sent nothing for ``idle_s``; returns how many."""
        now = self.clock()
        idle = [c for c, camera in self._cameras.items() if now - camera.seen_at > idle_s]
        return sum(self.end_camera(camera_id) for camera_id in idle)

    @_locked
    def end_all(self) -> int:
        """End every track of every camera (drain, shutdown); returns how many."""
        ended = sum(self._end_all_of(camera) for camera in self._cameras.values())
        self._cameras.clear()
        return ended

    def _end_all_of(self, camera: _Camera) -> int:
        numbers = list(camera.tracks)
        camera.tracker.end_all()
        for number in numbers:
            self._end(camera, number)
        return len(numbers)

    def _camera(self, info: FrameInfo) -> _Camera:
        camera = self._cameras.get(info.camera_id)
        if camera is not None and camera.epoch != info.epoch:
            # The camera restarted: its old run's tracks end, new ones start afresh.
            self._end_all_of(camera)
            camera = None
        if camera is None:
            camera = self._cameras[info.camera_id] = _Camera(
                info.epoch, BoxTracker(self.config.tracker)
            )
        return camera

    def _new_track(self, info: FrameInfo, face: int) -> TrackEvidence:
        self.counters["tracks_started"] += 1
        return TrackEvidence(
            track_id=f"{info.camera_id}:{info.epoch}.{info.seq}.{face}", normalise=self.normalise
        )

    def _end(self, camera: _Camera, number: int) -> None:
        track = camera.tracks.pop(number, None)
        if track is not None:
            self._ended(track)

    def _ended(self, track: TrackEvidence) -> None:
        track.drop()
        self.counters["tracks_ended"] += 1
        if track.entry_id is None:
            self.counters["non_matches_discarded"] += 1


def crop_jpeg(image: UInt8Array, box: FloatArray, size: int) -> bytes:
    """A square JPEG of the face in ``box`` with a margin around it, ``size`` pixels a side.

    The square is :data:`CROP_MARGIN` times the box's longer side, centred on the box; where
    it passes the image's edge the edge pixels are repeated.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * CROP_MARGIN
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    right, bottom = left + max(round(side), 1), top + max(round(side), 1)
    h, w = image.shape[:2]
    pad = max(0, -left, -top, right - w, bottom - h)
    source: np.ndarray = image
    if pad:
        source = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    square = source[top + pad : bottom + pad, left + pad : right + pad]
    interpolation = cv2.INTER_AREA if square.shape[0] > size else cv2.INTER_CUBIC
    resized = cv2.resize(square, (size, size), interpolation=interpolation)
    return encode_jpeg(np.ascontiguousarray(resized), quality=90)
