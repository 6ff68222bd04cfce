"""Face tracks of one camera: detections matched frame to frame by overlap and motion.

A :class:`BoxTracker` follows the faces of ONE camera through its frames, in order. Each
track has a constant-velocity Kalman filter over its box (centre, width, height and their
velocities), so a face that moves keeps its track, and a face hidden for a few frames is
looked for where it should be. Each frame's detections are matched to the predicted boxes
by intersection over union, with an optimal assignment (:func:`scipy.optimize.
linear_sum_assignment`), confident detections first and weak ones after (as ByteTrack
does), so a face blurred for a frame still continues its track. A detection that matches
no track starts one; a track unmatched for more than ``max_missed`` frames ends, and so
does the track matched least recently when more than ``max_tracks`` would be live.

Bad input: boxes that are not ``[N, 4]``, or scores that are not ``[N]`` for the same
``N``, raise :class:`ValueError`. A detection whose box has a coordinate that is not
finite (NaN, infinite), whose box has no area (``x2 <= x1`` or ``y2 <= y1``), or whose
score is not finite is ignored: it is matched to nothing, starts nothing, and is
``assigned`` ``-1``.

Pure and in memory: boxes and numbers only, no face data. The caller names the tracks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

Boxes = npt.NDArray[np.float64]
"""Boxes ``[N, 4]`` (``x1 y1 x2 y2``) or scores ``[N]``, as the tracker keeps them."""

_STD_POSITION = 1.0 / 20.0
_STD_VELOCITY = 1.0 / 160.0


@dataclass(frozen=True)
class TrackerConfig:
    """How detections are matched into tracks.

    ``min_iou``: the overlap (intersection over union) a detection needs with a track's
    predicted box to continue it. ``max_missed``: frames a track survives without a
    detection before it ends. ``high_score``: detections at or above it are matched
    first, and only they start tracks; weaker ones may only continue a track.
    ``max_tracks``: the most tracks live at once; when a frame's new faces would make
    more, the tracks matched least recently end. A track matched in this frame is never
    ended for a new one: if one frame alone holds more faces than ``max_tracks``, its
    weakest new faces start no track (``assigned`` ``-1``).
    """

    min_iou: float = 0.2
    max_missed: int = 10
    high_score: float = 0.9
    max_tracks: int = 256

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou < 1.0:
            raise ValueError(f"min_iou must be between 0 and 1, got {self.min_iou}")
        for name, low, high in (("max_missed", 0, 1000), ("max_tracks", 1, 100_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be {low} to {high}, got {value}")
        if not 0.0 <= self.high_score <= 1.0:
            raise ValueError(f"high_score must be 0 to 1, got {self.high_score}")


class _Kalman:
    """Constant-velocity Kalman filter over ``[cx, cy, w, h]`` and their velocities.

    Noise scales with the box's height, as in ByteTrack's filter, so a small face and a
    large one are followed alike.
    """

    _F = np.eye(8) + np.eye(8, k=4)
    _H = np.eye(4, 8)

    def __init__(self, box: Boxes) -> None:
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

    def update(self, box: Boxes) -> None:
        z = _xyxy_to_cxcywh(box)
        h = max(self.x[3], 1.0)
        r = np.diag(np.square([_STD_POSITION * h] * 4))
        s = self._H @ self.P @ self._H.T + r
        gain = np.linalg.solve(s, self._H @ self.P).T
        self.x = self.x + gain @ (z - self._H @ self.x)
        self.P = (np.eye(8) - gain @ self._H) @ self.P

    def box(self) -> Boxes:
        """The box the filter holds now (after this frame's prediction and update)."""
        return _cxcywh_to_xyxy(self.x[:4])

    def ahead(self) -> Boxes:
        """The box the filter will predict for the next frame, without moving it there."""
        return _cxcywh_to_xyxy(self.x[:4] + self.x[4:])


@dataclass
class TrackState:
    """One live track: its number, its filter, and how it has fared.

    ``matched`` is the tracker's frame count when a detection last continued (or began)
    it: the track with the smallest ends first when there are too many.
    """

    number: int
    kalman: _Kalman
    hits: int = 1
    missed: int = 0
    age: int = 1
    matched: int = 0
    last_box: Boxes = field(default_factory=lambda: np.zeros(4))


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame did to the tracks.

    ``assigned[i]`` is the number of the track detection ``i`` belongs to (``-1`` for
    none: a weak detection that matched no track, a detection that is not a usable box,
    or a new face beyond ``max_tracks``). ``started`` lists the numbers of the tracks
    this frame began, ``ended`` those it ended (lost for more than ``max_missed`` frames,
    or matched least recently when ``max_tracks`` were live). Numbers are never reused.
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
        self._frames = 0

    def __len__(self) -> int:
        """How many tracks are live."""
        return len(self._tracks)

    @property
    def live(self) -> list[int]:
        """The numbers of the live tracks."""
        return list(self._tracks)

    def predicted(self, number: int) -> Boxes:
        """Where track ``number`` is expected in the next frame (its box, ``x1 y1 x2 y2``)."""
        return self._tracks[number].kalman.ahead()

    def update(self, boxes: npt.ArrayLike, scores: npt.ArrayLike) -> TrackUpdate:
        """Match one frame's detections (``[N, 4]`` boxes, ``[N]`` scores) to the tracks.

        Raises :class:`ValueError` when the shapes disagree; detections that are not
        usable boxes are ignored (see the module's notes on bad input).
        """
        boxes, scores, usable = _detections(boxes, scores)
        self._frames += 1
        for track in self._tracks.values():
            track.kalman.predict()
            track.age += 1
        assigned = [-1] * boxes.shape[0]
        high = [i for i in usable if scores[i] >= self.config.high_score]
        low = [i for i in usable if scores[i] < self.config.high_score]
        unmatched = list(self._tracks)
        for group in (high, low):
            pairs = self._match(unmatched, group, boxes)
            for number, i in pairs:
                track = self._tracks[number]
                track.kalman.update(boxes[i])
                track.hits += 1
                track.missed = 0
                track.matched = self._frames
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
        # The strongest new faces first, so that those the bound leaves out are the weakest.
        new = sorted((i for i in high if assigned[i] == -1), key=lambda i: -scores[i])
        ended.extend(self._make_room(len(new)))
        started = []
        for i in new[: self.config.max_tracks - len(self._tracks)]:
            number = self._next
            self._next += 1
            self._tracks[number] = TrackState(
                number, _Kalman(boxes[i]), matched=self._frames, last_box=boxes[i]
            )
            assigned[i] = number
            started.append(number)
        return TrackUpdate(assigned, started, ended)

    def _make_room(self, wanted: int) -> list[int]:
        """End the tracks matched least recently (not in this frame) so ``wanted`` fit."""
        excess = len(self._tracks) + wanted - self.config.max_tracks
        if excess <= 0:
            return []
        stale = sorted(
            (t for t in self._tracks.values() if t.matched < self._frames),
            key=lambda t: (t.matched, t.number),
        )
        ended = [t.number for t in stale[:excess]]
        for number in ended:
            del self._tracks[number]
        return ended

    def end_all(self) -> list[int]:
        """End every live track (the camera's stream ended or restarted)."""
        ended = list(self._tracks)
        self._tracks.clear()
        return ended

    def _match(
        self, numbers: list[int], detections: list[int], boxes: Boxes
    ) -> list[tuple[int, int]]:
        if not numbers or not detections:
            return []
        predicted = np.stack([self._tracks[n].kalman.box() for n in numbers])
        overlap = iou(predicted, boxes[detections])
        # A pair below min_iou may not be made, so it must not steer the assignment either.
        overlap[overlap < self.config.min_iou] = 0.0
        rows, cols = linear_sum_assignment(-overlap)
        return [
            (numbers[r], detections[c])
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
            if overlap[r, c] > 0.0
        ]


def iou(a: npt.ArrayLike, b: npt.ArrayLike) -> Boxes:
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


def _detections(
    given_boxes: npt.ArrayLike, given_scores: npt.ArrayLike
) -> tuple[Boxes, Boxes, list[int]]:
    """The boxes ``[N, 4]`` and scores ``[N]`` as float64, and the rows fit to be matched."""
    boxes = np.asarray(given_boxes, dtype=np.float64)
    scores = np.asarray(given_scores, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (x1 y1 x2 y2), got shape {list(boxes.shape)}")
    if scores.ndim != 1:
        raise ValueError(f"scores must be [N], got shape {list(scores.shape)}")
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    with np.errstate(invalid="ignore"):
        fit = (
            np.isfinite(boxes).all(axis=1)
            & np.isfinite(scores)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
    return boxes, scores, np.flatnonzero(fit).tolist()


def _cxcywh_to_xyxy(z: Boxes) -> Boxes:
    cx, cy = z[0], z[1]
    w, h = max(z[2], 1.0), max(z[3], 1.0)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


def _xyxy_to_cxcywh(box: Boxes) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])
