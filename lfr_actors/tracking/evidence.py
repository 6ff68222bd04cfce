"""What a face track knows of its person: weighted embeddings, its best face, its state.

Each face a track embeds adds its embedding with a weight (:func:`face_weight`): small,
blurred, turned and doubtful faces count little, a face in profile or below the size floor
counts nothing (and is not embedded at all). The track is compared with the watchlist
through ONE vector: the weighted mean of its embeddings (re-normalised when the model's
embeddings are unit vectors), the quality-weighted mean that came out best of the
alternatives measured on the shared clip (README, "Face tracks").

Held in memory only, bounded (one running sum, one small JPEG), and dropped with the track.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lfr_actors.models.quality import FaceQuality
from lfr_actors.models.types import FloatArray
from lfr_actors.tracking.config import TrackingConfig

FULL_SHARPNESS = 60.0
"""Sharpness (variance of the Laplacian over the aligned chip) at which a face counts fully;
three times the default quality minimum."""
MIN_SHARPNESS_FACTOR = 0.1
"""A blurred face still counts a tenth: blur is what makes distant faces small, and a track
of twenty blurred frames says more than one."""
PROFILE_FRONTAL = 0.15
"""At or below this frontal score a face is in profile and counts nothing: the embedding
models' distances are unreliable there (MODELS.md)."""
FULL_FRONTAL = 0.6
"""From this frontal score a face counts fully for its pose."""
SPLIT_AFTER = 3
"""Faces of evidence a track needs before a face far from it splits it (see ``split``)."""

State = Literal["open", "matched", "no_match"]


def face_weight(quality: FaceQuality, config: TrackingConfig) -> float:
    """How much one face counts in its track's evidence, from 0 (not at all) to 1.

    The product of four factors: size (a tenth at ``min_face_px``, rising linearly to 1 at
    ``full_face_px``; 0 below the floor), sharpness (from a tenth when blurred to 1 at
    :data:`FULL_SHARPNESS`), pose (0 in profile, rising to 1 at :data:`FULL_FRONTAL`) and the
    detector's score.
    """
    if not quality.size_px >= config.min_face_px:  # NaN counts nothing
        return 0.0
    span = config.full_face_px - config.min_face_px
    ramp = 1.0 if span <= 0 else min((quality.size_px - config.min_face_px) / span, 1.0)
    size = 0.1 + 0.9 * ramp
    sharp = min(max(quality.sharpness / FULL_SHARPNESS, MIN_SHARPNESS_FACTOR), 1.0)
    pose = (quality.frontal - PROFILE_FRONTAL) / (FULL_FRONTAL - PROFILE_FRONTAL)
    pose = min(max(pose, 0.0), 1.0)
    score = min(max(quality.score, 0.0), 1.0)
    weight = size * sharp * pose * score
    return float(weight) if np.isfinite(weight) else 0.0


def decision_threshold(threshold: float, largest_px: float, config: TrackingConfig) -> float:
    """The distance a track must be within to match, given its largest face.

    ``threshold`` less a margin for small faces: the whole ``small_face_margin`` when the
    track's largest face is at ``min_face_px``, shrinking linearly to none at
    ``full_face_px``. Measured on the shared photos (README, "Face tracks"): the nearest
    stranger's weighted mean comes closer as faces shrink (0.63 at 48 px, 0.60 at 32, 0.53
    at 24), so the same threshold would match strangers by their blur alone.
    """
    span = config.full_face_px - config.min_face_px
    if span <= 0 or not largest_px < config.full_face_px:
        return threshold
    small = min(max((config.full_face_px - largest_px) / span, 0.0), 1.0)
    return threshold - config.small_face_margin * small


@dataclass
class TrackEvidence:
    """The evidence of one track and its decision so far (all in memory).

    ``faces`` counts the faces embedded into it, ``frames`` the frames the track was seen
    in, ``largest_px`` the size of its largest face of evidence. ``best_*`` describe its
    best face (highest weight): the crop an officer is shown.
    ``entry_id`` is the entry it matched (a track matches one entry at most).
    """

    track_id: str
    normalise: bool
    frames: int = 0
    faces: int = 0
    weight: float = 0.0
    largest_px: float = 0.0
    total: np.ndarray | None = field(default=None, repr=False)
    best_weight: float = 0.0
    best_crop: bytes = field(default=b"", repr=False)
    best_box: list[float] = field(default_factory=list)
    best_quality: dict[str, float] = field(default_factory=dict)
    best_media_index: int | None = None
    best_media_time_s: float | None = None
    state: State = "open"
    entry_id: str | None = None
    best_distance: float | None = None
    since_embedded: int = 0

    def mean(self) -> FloatArray:
        """The weighted mean embedding (unit length when the model's embeddings are)."""
        if self.total is None or self.weight <= 0:
            raise ValueError(f"track {self.track_id} has no evidence yet")
        mean = self.total / self.weight
        if self.normalise:
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return mean.astype(np.float32)

    def add(self, embedding: FloatArray, weight: float, size_px: float = 0.0) -> None:
        """Add one face's embedding with its weight (> 0) and its size (for ``largest_px``)."""
        if not weight > 0:
            raise ValueError(f"a face's weight must be above 0, got {weight}")
        vector = np.asarray(embedding, dtype=np.float64)
        if self.normalise:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        self.total = weight * vector if self.total is None else self.total + weight * vector
        self.weight += weight
        self.largest_px = max(self.largest_px, float(size_px))
        self.faces += 1
        self.since_embedded = 0

    def wants(self, weight: float, config: TrackingConfig) -> bool:
        """Whether a face of this weight should be embedded into the track now.

        Every face that counts, while the track is undecided; once it matched (or matched
        nothing after ``no_match_frames`` faces), only a face ``reembed_gain`` times better
        than its best, or one every ``reembed_every`` frames.
        """
        if weight <= 0:
            return False
        if self.state == "open":
            return True
        return (
            weight >= self.best_weight * config.reembed_gain
            or self.since_embedded + 1 >= config.reembed_every
        )

    def drop(self) -> None:
        """Forget the evidence (the track ended): embeddings and crop go."""
        self.total = None
        self.best_crop = b""
        self.weight = 0.0
