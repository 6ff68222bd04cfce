"""Enrolment rules: which face of a watchlist photo, if any, may be enrolled.

A watchlist photo must yield exactly one usable face, or one clearly dominant face when
the others are much smaller (a bystander far behind, or a spurious detection such as a
hand). Otherwise it is refused with a reason an operator can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lfr_actors.errors import EnrolmentRejectedError
from lfr_actors.models.quality import FaceQuality, QualityConfig
from lfr_actors.models.types import Detections

REASONS = {
    "no_face": "no face was found in the image",
    "multiple_faces": "several faces of similar size; crop the photo to the one person",
    "face_too_small": "the face is too small; use a photo where the face is larger",
    "face_too_blurred": "the face is too blurred; use a sharper photo",
    "pose_not_frontal": "the face is turned too far from the camera; use a frontal photo",
    "low_detection_score": "the face is not clear enough to be detected with confidence",
}


@dataclass(frozen=True)
class EnrolmentConfig:
    """Stricter minimums than live video, and how dominant one face must be among several."""

    quality: QualityConfig = field(
        default_factory=lambda: QualityConfig(
            min_face_px=60.0, min_score=0.95, min_sharpness=20.0, min_frontal=0.5
        )
    )
    dominance_ratio: float = 1.8
    """The chosen face's box side must be at least this many times the next face's."""
    ignore_below_score: float = 0.80
    """Detections below this confidence are not counted as competing faces."""


def choose_enrolment_face(
    detections: Detections, quality: list[FaceQuality], config: EnrolmentConfig
) -> int:
    """Index of the one face to enrol; raises :class:`EnrolmentRejectedError` otherwise."""
    if len(detections) == 0:
        raise EnrolmentRejectedError("no_face", REASONS["no_face"])
    sizes = np.array([q.size_px for q in quality], dtype=np.float64)
    scores = np.array([q.score for q in quality], dtype=np.float64)
    counted = np.flatnonzero(scores >= config.ignore_below_score)
    if counted.size == 0:
        raise EnrolmentRejectedError(
            "low_detection_score",
            f"{REASONS['low_detection_score']} (best score {scores.max():.2f})",
        )
    order = counted[np.argsort(-sizes[counted], kind="stable")]
    chosen = int(order[0])
    if order.size > 1:
        runner_up = int(order[1])
        if sizes[chosen] < config.dominance_ratio * sizes[runner_up]:
            raise EnrolmentRejectedError(
                "multiple_faces",
                f"{REASONS['multiple_faces']} ({order.size} faces; the two largest are "
                f"{sizes[chosen]:.0f} px and {sizes[runner_up]:.0f} px)",
            )
    failures = quality[chosen].failures(config.quality)
    if failures:
        reason = failures[0]
        figures = quality[chosen].as_dict()
        raise EnrolmentRejectedError(reason, f"{REASONS[reason]} (measured: {figures})")
    return chosen
