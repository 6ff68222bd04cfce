"""Plain records passed between the stages of the face pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, as parallel arrays (N faces).

    ``boxes`` are ``[N, 4]`` float32 ``x1, y1, x2, y2`` in image pixels; ``scores`` are
    ``[N]`` float32 detector confidences in [0, 1]; ``landmarks`` are ``[N, 5, 2]`` float32
    ``(x, y)`` in image pixels, in the order: image-left eye, image-right eye, nose tip,
    image-left mouth corner, image-right mouth corner.
    """

    boxes: FloatArray
    scores: FloatArray
    landmarks: FloatArray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> Detections:
        """No faces."""
        return Detections(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )

    def select(self, index: npt.NDArray[np.intp] | list[int]) -> Detections:
        """The detections at ``index``, in that order."""
        idx = np.asarray(index, dtype=np.intp)
        return Detections(self.boxes[idx], self.scores[idx], self.landmarks[idx])
