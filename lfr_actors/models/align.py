"""Alignment: a similarity transform from five detected landmarks onto a declared template.

The transform is the least-squares similarity (rotation, uniform scale, translation; no
reflection) of Umeyama (1991). When the face is much larger than the chip, sampling it
directly with bilinear interpolation aliases; the face's region is first shrunk with area
averaging (the same purpose as dlib's image pyramid), then warped.
"""

from __future__ import annotations

import cv2
import numpy as np

from lfr_actors.models.types import FloatArray, UInt8Array

# Shrink first when the chip samples the image more sparsely than every second pixel.
_ANTI_ALIAS_BELOW_SCALE = 0.5


def similarity_transform(src: FloatArray, dst: FloatArray) -> FloatArray:
    """The 2x3 similarity matrix M minimising ``sum |M @ [src, 1] - dst|^2``, no reflection."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two matching [K, 2] point sets, got {src.shape} and {dst.shape}")
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    covariance = dst_c.T @ src_c / src.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    src_var = (src_c**2).sum() / src.shape[0]
    scale = float((singular * sign).sum() / src_var) if src_var > 0 else 1.0
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix.astype(np.float32)


def align_faces(
    image: UInt8Array,
    landmarks: FloatArray,
    template: FloatArray | tuple[tuple[float, float], ...],
    chip_size: int,
) -> UInt8Array:
    """Cut one aligned ``chip_size`` square chip per face: ``[N, S, S, 3]`` uint8.

    ``landmarks`` is ``[N, 5, 2]`` in image pixels; ``template`` is ``[5, 2]`` in chip pixels.
    Channel order is that of ``image``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    points = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2)
    target = np.asarray(template, dtype=np.float32).reshape(5, 2)
    chips = np.empty((points.shape[0], chip_size, chip_size, 3), dtype=np.uint8)
    for i, face in enumerate(points):
        chips[i] = _align_one(image, face, target, chip_size)
    return chips


def _align_one(image: UInt8Array, face: FloatArray, template: FloatArray, size: int) -> UInt8Array:
    matrix = similarity_transform(face, template).astype(np.float64)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if scale < _ANTI_ALIAS_BELOW_SCALE:
        region, (x0, y0), (sx, sy) = _shrunken_region(image, matrix, size, scale)
        # A point q of the shrunken region is the image point (q_x / sx + x0, q_y / sy + y0).
        matrix = matrix @ np.array([[1 / sx, 0, x0], [0, 1 / sy, y0], [0, 0, 1]])
        image = region
    chip = cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return np.asarray(chip, dtype=np.uint8)


def _shrunken_region(
    image: UInt8Array, matrix: np.ndarray, size: int, scale: float
) -> tuple[UInt8Array, tuple[float, float], tuple[float, float]]:
    """The image region the chip covers (plus a margin), area-shrunk to about chip scale."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    mapped = corners @ inverse.T
    height, width = image.shape[:2]
    margin = 2.0 / scale
    x0 = int(max(0.0, np.floor(mapped[:, 0].min() - margin)))
    y0 = int(max(0.0, np.floor(mapped[:, 1].min() - margin)))
    x1 = int(min(float(width), np.ceil(mapped[:, 0].max() + margin)))
    y1 = int(min(float(height), np.ceil(mapped[:, 1].max() + margin)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, (0.0, 0.0), (1.0, 1.0)
    region = image[y0:y1, x0:x1]
    shrink = min(1.0, scale * 1.5)  # leave the warp a little oversampled
    new_w = max(2, round((x1 - x0) * shrink))
    new_h = max(2, round((y1 - y0) * shrink))
    small = np.asarray(cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA), np.uint8)
    return small, (float(x0), float(y0)), (new_w / (x1 - x0), new_h / (y1 - y0))
