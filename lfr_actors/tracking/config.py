"""The settings of face tracking and of the per-track decision, with their limits."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from lfr_actors.tracking.tracker import TrackerConfig

LIMITS: dict[str, tuple[float, float]] = {
    "min_iou": (0.05, 0.9),
    "max_missed_frames": (0, 300),
    "high_score": (0.0, 1.0),
    "min_face_px": (8.0, 200.0),
    "full_face_px": (8.0, 1000.0),
    "min_track_frames": (1, 100),
    "reembed_every": (1, 1000),
    "reembed_gain": (1.0, 10.0),
    "no_match_frames": (1, 1000),
    "max_tracks": (1, 10000),
    "small_face_margin": (0.0, 0.5),
}
"""The inclusive range of each setting (the topology schema states the same ranges)."""

_WHOLE = {"max_missed_frames", "min_track_frames", "reembed_every", "no_match_frames", "max_tracks"}


@dataclass(frozen=True)
class TrackingConfig:
    """How faces become tracks, how much each face counts, and when a track is decided.

    Matching (see :class:`~lfr_actors.tracking.tracker.TrackerConfig`): ``min_iou``,
    ``max_missed_frames``, ``high_score``.

    Evidence: a face counts only from ``min_face_px`` (the shorter side of its box);
    its weight grows with its size up to ``full_face_px``, with its sharpness, with how
    frontal it is (a face in profile counts nothing) and with its detection score.

    Decision: a track is compared with the watchlist once it has ``min_track_frames``
    faces of evidence. A track that matched, or that matched nothing after
    ``no_match_frames`` faces, is embedded again only when a face is ``reembed_gain``
    times better than its best so far, or every ``reembed_every`` frames.

    ``small_face_margin``: how much stricter than the threshold a track of small faces is
    decided (see :func:`~lfr_actors.tracking.evidence.decision_threshold`): the whole
    margin when its largest face is at ``min_face_px``, none from ``full_face_px``.

    ``max_tracks``: the most live tracks per camera (a bound on memory); beyond it the
    track seen least recently ends.
    """

    min_iou: float = 0.2
    max_missed_frames: int = 10
    high_score: float = 0.9
    min_face_px: float = 20.0
    full_face_px: float = 60.0
    min_track_frames: int = 5
    reembed_every: int = 10
    reembed_gain: float = 1.25
    no_match_frames: int = 15
    max_tracks: int = 256
    small_face_margin: float = 0.05

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            low, high = LIMITS[item.name]
            whole = item.name in _WHOLE
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                kind = "a whole number" if whole else "a number"
                raise ValueError(f"tracking.{item.name} must be {kind}, got {value!r}")
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(
                    f"tracking.{item.name} must be from {low:g} to {high:g}, got {value!r}"
                )
        if self.full_face_px < self.min_face_px:
            raise ValueError(
                f"tracking.full_face_px ({self.full_face_px:g}) must be at least "
                f"min_face_px ({self.min_face_px:g})"
            )

    @property
    def tracker(self) -> TrackerConfig:
        """The box tracker's part of these settings."""
        return TrackerConfig(
            min_iou=self.min_iou,
            max_missed=self.max_missed_frames,
            high_score=self.high_score,
            max_tracks=self.max_tracks,
        )
