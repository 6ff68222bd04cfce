"""Face quality: size, detection score, sharpness and a frontal-pose estimate per face.

These decide whether a face is worth comparing (live video) or enrolling (watchlist
photos). The weaker spots of this model family are small, blurred and turned faces, so
each has a measurable minimum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from lfr_actors.models.types import Detections, UInt8Array


@dataclass(frozen=True)
class QualityConfig:
    """Minimums a face must meet; a face failing any is reported with the reason."""

    min_face_px: float = 40.0
    """Shorter side of the detection box, in image pixels."""
    min_score: float = 0.90
    """Detector confidence."""
    min_sharpness: float = 20.0
    """Variance of the Laplacian over the middle of the aligned grey chip."""
    min_frontal: float = 0.40
    """1.0 for a face looking at the camera, towards 0 as it turns to profile."""


@dataclass(frozen=True)
class FaceQuality:
    """Quality figures for one detected face."""

    size_px: float
    score: float
    sharpness: float
    frontal: float
    yaw_ratio: float
    roll_deg: float

    def failures(self, config: QualityConfig) -> list[str]:
        """Reason codes for each minimum this face misses (empty when it passes)."""
        reasons = []
        if self.size_px < config.min_face_px:
            reasons.append("face_too_small")
        if self.score < config.min_score:
            reasons.append("low_detection_score")
        if self.sharpness < config.min_sharpness:
            reasons.append("face_too_blurred")
        if self.frontal < config.min_frontal:
            reasons.append("pose_not_frontal")
        return reasons

    def as_dict(self) -> dict[str, float]:
        """Rounded figures for reports and messages."""
        return {k: round(float(v), 3) for k, v in asdict(self).items()}


def sharpness(chips: UInt8Array) -> np.ndarray:
    """Variance of the Laplacian over the central 60% of each chip, ``[N]`` float32.

    Measured on the aligned chip rather than the image, so faces of any size are judged on
    the same scale.
    """
    out = np.zeros((chips.shape[0],), dtype=np.float32)
    if chips.shape[0] == 0:
        return out
    size = chips.shape[1]
    lo, hi = int(size * 0.2), int(size * 0.8)
    for i, chip in enumerate(chips):
        grey = cv2.cvtColor(chip[lo:hi, lo:hi], cv2.COLOR_RGB2GRAY)
        out[i] = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    return out


def pose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frontal score, yaw ratio and roll (degrees) from five landmarks ``[N, 5, 2]``.

    The yaw ratio is the nose's signed distance from the line through the eye midpoint and
    the mouth midpoint, over the distance between the eyes: about 0 when the face looks at
    the camera, growing past 0.5 towards profile. ``frontal = 1 - |yaw_ratio| / 0.6``,
    clipped to [0, 1].
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    left_eye, right_eye, nose = pts[:, 0], pts[:, 1], pts[:, 2]
    eye_mid = 0.5 * (left_eye + right_eye)
    mouth_mid = 0.5 * (pts[:, 3] + pts[:, 4])
    eye_vec = right_eye - left_eye
    eye_dist = np.maximum(np.linalg.norm(eye_vec, axis=1), 1e-6)
    axis = mouth_mid - eye_mid
    axis_len = np.maximum(np.linalg.norm(axis, axis=1), 1e-6)
    rel = nose - eye_mid
    cross = axis[:, 0] * rel[:, 1] - axis[:, 1] * rel[:, 0]
    yaw_ratio = -cross / axis_len / eye_dist
    frontal = np.clip(1.0 - np.abs(yaw_ratio) / 0.6, 0.0, 1.0)
    roll = np.degrees(np.arctan2(eye_vec[:, 1], eye_vec[:, 0]))
    return frontal.astype(np.float32), yaw_ratio.astype(np.float32), roll.astype(np.float32)


def assess(detections: Detections, chips: UInt8Array) -> list[FaceQuality]:
    """Quality of each detected face; ``chips`` are the faces' aligned chips, same order."""
    if len(detections) != chips.shape[0]:
        raise ValueError(f"{len(detections)} detections but {chips.shape[0]} chips")
    boxes = detections.boxes
    sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    sharp = sharpness(chips)
    frontal, yaw, roll = pose(detections.landmarks)
    return [
        FaceQuality(
            size_px=float(sizes[i]),
            score=float(detections.scores[i]),
            sharpness=float(sharp[i]),
            frontal=float(frontal[i]),
            yaw_ratio=float(yaw[i]),
            roll_deg=float(roll[i]),
        )
        for i in range(len(detections))
    ]
