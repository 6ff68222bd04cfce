"""Face tracks of one camera: detections matched frame to frame by overlap and motion.

A :class:`BoxTracker` follows the faces of ONE camera through its frames, in order. Each
track has a constant-velocity Kalman filter over its box (centre, width, height and their
velocities), so a face that moves keeps its track, and a face hidden for a few frames is
looked for where it should be. Each frame's detections are matched to the predicted boxes
by intersection over union, with an optimal assignment (:func:`scipy.optimize.
linear_sum_assignment`), confident detections first and weak ones after (as ByteTrack
does), so a face blurred for a frame still continues its track. A detection that matches
no track starts one; a track unmatched for more than ``max_missed`` frames ends.

Pure and in memory: boxes and numbers only, no face data. The caller names the tracks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from lfr_actors.models.types import FloatArray

_STD_POSITION = 1.0 / 20.0
_STD_VELOCITY = 1.0 / 160.0


@dataclass(frozen=True)
class TrackerConfig:
    """How detections are matched into tracks.

    ``min_iou``: the overlap (intersection over union) a detection needs with a track's
    predicted box to continue it. ``max_missed``: frames a track survives without a
    detection before it ends. ``high_score``: detections at or above it are matched
    first, and only they start tracks; weaker ones may only continue a track.
    """

    min_iou: float = 0.2
    max_missed: int = 10
    high_score: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou < 1.0:
            raise ValueError(f"min_iou must be between 0 and 1, got {self.min_iou}")
        if isinstance(self.max_missed, bool) or not isinstance(self.max_missed, int):
            raise ValueError(f"max_missed must be a whole number, got {self.max_missed!r}")
        if not 0 <= self.max_missed <= 1000:
            raise ValueError(f"max_missed must be 0 to 1000, got {self.max_missed}")
        if not 0.0 <= self.high_score <= 1.0:
            raise ValueError(f"high_score must be 0 to 1, got {self.high_score}")


class _Kalman:
    """Constant-velocity Kalman filter over ``[cx, cy, w, h]`` and their velocities.

    Noise scales with the box's height, as in ByteTrack's filter, so a small face and a
    large one are followed alike.
    """

    _F = np.eye(8) + np.eye(8, k=4)
    _H = np.eye(4, 8)

    def __init__(self, box: FloatArray) -> None:
        z = _xyxy_to_cxcywh(box)
        self.x = np.concatenate([z, np.zeros(4)])
        h = max(z[3], 1.0)
        std = [
            2 * _STD_POSITION * h, 2 * _STD_POSITION * h, 2 * _STD_POSITION * h,
            2 * _STD_POSITION * h, 10 * _STD_VELOCITY * h, 10 * _STD_VELOCITY * h,
            10 * _STD_VELOCITY * h, 10 * _STD_VELOCITY * h,
        ]  # fmt: skip
        self.P = np.diag(np.square(std))

    def predict(self) -> None:
        h = max(self.x[3], 1.0)
        q = np.square([_STD_POSITION * h] * 4 + [_STD_VELOCITY * h] * 4)
        self.x = self._F @ self.x
        self.P = self._F @ self.P @ self._F.T + np.diag(q)
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)

    def update(self, box: FloatArray) -> None:
        z = _xyxy_to_cxcywh(box)
        h = max(self.x[3], 1.0)
        r = np.diag(np.square([_STD_POSITION * h] * 4))
        s = self._H @ self.P @ self._H.T + r
        gain = np.linalg.solve(s, self._H @ self.P).T
        self.x = self.x + gain @ (z - self._H @ self.x)
        self.P = (np.eye(8) - gain @ self._H) @ self.P

    def box(self) -> FloatArray:
        cx, cy, w, h = self.x[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


@dataclass
class TrackState:
    """One live track: its number, its filter, and how it has fared."""

    number: int
    kalman: _Kalman
    hits: int = 1
    missed: int = 0
    age: int = 1
    last_box: FloatArray = field(default_factory=lambda: np.zeros(4))


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame did to the tracks.

    ``assigned[i]`` is the number of the track detection ``i`` belongs to (``-1`` for
    none: a weak detection that matched no track). ``started`` lists the numbers of the
    tracks this frame began, ``ended`` those it ended (lost for too long).
    """

    assigned: list[int]
    started: list[int]
    ended: list[int]


class BoxTracker:
    """The tracks of one camera; feed it every processed frame's detections, in order."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: dict[int, TrackState] = {}
        self._next = 1

    def __len__(self) -> int:
        """How many tracks are live."""
        return len(self._tracks)

    @property
    def live(self) -> list[int]:
        """The numbers of the live tracks."""
        return list(self._tracks)

    def predicted(self, number: int) -> FloatArray:
        """Where track ``number`` is expected in the next frame (its box, ``x1 y1 x2 y2``)."""
        return self._tracks[number].kalman.box()

    def update(self, boxes: FloatArray, scores: FloatArray) -> TrackUpdate:
        """Match one frame's detections (``[N, 4]`` boxes, ``[N]`` scores) to the tracks."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if boxes.shape[0] != scores.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
        for track in self._tracks.values():
            track.kalman.predict()
            track.age += 1
        assigned = [-1] * boxes.shape[0]
        high = [i for i in range(boxes.shape[0]) if scores[i] >= self.config.high_score]
        low = [i for i in range(boxes.shape[0]) if scores[i] < self.config.high_score]
        unmatched = list(self._tracks)
        for group in (high, low):
            pairs = self._match(unmatched, group, boxes)
            for number, i in pairs:
                track = self._tracks[number]
                track.kalman.update(boxes[i])
                track.hits += 1
                track.missed = 0
                track.last_box = boxes[i]
                assigned[i] = number
            taken = {number for number, _ in pairs}
            unmatched = [n for n in unmatched if n not in taken]
        ended = []
        for number in unmatched:
            track = self._tracks[number]
            track.missed += 1
            if track.missed > self.config.max_missed:
                ended.append(number)
                del self._tracks[number]
        started = []
        for i in high:
            if assigned[i] == -1:
                number = self._next
                self._next += 1
                self._tracks[number] = TrackState(number, _Kalman(boxes[i]), last_box=boxes[i])
                assigned[i] = number
                started.append(number)
        return TrackUpdate(assigned, started, ended)

    def end_all(self) -> list[int]:
        """End every live track (the camera's stream ended or restarted)."""
        ended = list(self._tracks)
        self._tracks.clear()
        return ended

    def _match(
        self, numbers: list[int], detections: list[int], boxes: FloatArray
    ) -> list[tuple[int, int]]:
        if not numbers or not detections:
            return []
        predicted = np.stack([self._tracks[n].kalman.box() for n in numbers])
        overlap = iou(predicted, boxes[detections])
        rows, cols = linear_sum_assignment(-overlap)
        return [
            (numbers[r], detections[c])
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
            if overlap[r, c] >= self.config.min_iou
        ]


def iou(a: FloatArray, b: FloatArray) -> np.ndarray:
    """Intersection over union of every box of ``a`` ``[N, 4]`` with every box of ``b``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _xyxy_to_cxcywh(box: FloatArray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])
