"""MTCNN face detection with five landmarks, on ONNX Runtime.

The procedure follows facenet-pytorch 2.6.0's ``detect_face`` (itself a port of Zhang et
al.'s MTCNN) step for step, in numpy and OpenCV:

1. **P-Net** on an image pyramid: scales ``12 / min_face_px * factor**k`` while the
   shorter side stays >= 12 px; each level ``int(h*s + 1) x int(w*s + 1)``. Every cell with
   face probability >= ``thresholds[0]`` gives a 12/s-px window; NMS (IoU
   ``nms_thresholds[0]``) within each level, then across levels (IoU
   ``pyramid_nms_threshold``); box regression; squared ("rerec").
2. **R-Net** on 24x24 crops of those boxes, in one batch: keep probability >
   ``thresholds[1]``, NMS (IoU ``nms_thresholds[1]``), regression, squared again.
3. **O-Net** on 48x48 crops: keep probability > ``thresholds[2]``; landmarks from the
   box before regression; regression; NMS with intersection over the *smaller* box
   ("Min", ``nms_thresholds[2]``).

Two deliberate differences from facenet-pytorch:

* Resizing uses OpenCV's ``INTER_AREA`` on float32 pixels; facenet-pytorch uses torch's
  ``interpolate(mode="area")`` (adaptive average pooling). Both average pixel areas; they
  differ slightly at non-integer ratios and when a crop is enlarged.
* A crop that reaches outside the image is padded with zeros (black), as in the original
  MTCNN; facenet-pytorch instead stretches the clipped part to the full crop size, which
  distorts faces cut by the image edge. Faces inside the image are unaffected.

Box and landmark coordinates keep MTCNN's conventions, so they equal facenet-pytorch's
``MTCNN.detect`` output for the same network outputs; boxes are not clipped to the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from lfr_actors.errors import ModelError
from lfr_actors.models.convert.mtcnn import (
    INPUT_NAME,
    LANDMARKS_OUTPUT,
    PROB_OUTPUT,
    REG_OUTPUT,
)
from lfr_actors.models.runtime import RuntimeConfig, build_session
from lfr_actors.models.types import Detections

__all__ = ["DetectorConfig", "MtcnnDetector", "check_image"]

F32 = npt.NDArray[np.float32]
Index = npt.NDArray[np.intp]

_NETS = ("pnet", "rnet", "onet")
_OUTPUTS = {
    "pnet": (PROB_OUTPUT, REG_OUTPUT),
    "rnet": (PROB_OUTPUT, REG_OUTPUT),
    "onet": (PROB_OUTPUT, REG_OUTPUT, LANDMARKS_OUTPUT),
}
_SIDES = {"pnet": None, "rnet": 24, "onet": 48}  # fixed input side of each net
_CELL = 12  # P-Net window size in pyramid pixels
_STRIDE = 2  # P-Net output stride in pyramid pixels
_NMS_MATRIX_MAX = 1500  # up to this many boxes, NMS computes all pairwise overlaps at once


@dataclass(frozen=True)
class DetectorConfig:
    """Tuning of :class:`MtcnnDetector`; defaults are facenet-pytorch's.

    ``min_face_px``: smallest face side searched for, in image pixels (smaller values
    cost much more time). ``thresholds``: face probability needed after P-Net, R-Net and
    O-Net. ``scale_factor``: ratio between pyramid levels. ``nms_thresholds``: overlap
    above which the weaker box is dropped, within each pyramid level, after R-Net, and
    after O-Net (there as intersection over the smaller box). ``pyramid_nms_threshold``:
    IoU for merging P-Net boxes across pyramid levels. ``max_faces``: at most this many
    faces are returned, the most confident first.
    """

    min_face_px: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = 0.709
    nms_thresholds: tuple[float, float, float] = (0.5, 0.7, 0.7)
    pyramid_nms_threshold: float = 0.7
    max_faces: int = 256

    def __post_init__(self) -> None:
        if self.min_face_px < 1:
            raise ValueError(f"min_face_px must be >= 1, got {self.min_face_px}")
        if not 0.0 < self.scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {self.scale_factor}")
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three values in [0, 1], got {self.thresholds}")
        overlaps = (*self.nms_thresholds, self.pyramid_nms_threshold)
        if len(self.nms_thresholds) != 3 or not all(0.0 < t <= 1.0 for t in overlaps):
            raise ValueError(
                "nms_thresholds must be three values and pyramid_nms_threshold one value in "
                f"(0, 1], got {self.nms_thresholds} and {self.pyramid_nms_threshold}"
            )
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")


class MtcnnDetector:
    """Finds faces and their five landmarks in RGB images with the three MTCNN networks.

    ``sessions`` maps ``"pnet"``, ``"rnet"`` and ``"onet"`` to ONNX Runtime sessions of
    the graphs built by :func:`lfr_actors.models.convert.mtcnn.convert_mtcnn`. The
    detector holds no per-call state: :meth:`detect` may run from several threads.
    """

    def __init__(
        self,
        sessions: Mapping[str, ort.InferenceSession],
        config: DetectorConfig = DetectorConfig(),
    ) -> None:
        missing = [n for n in _NETS if n not in sessions]
        if missing:
            raise ModelError(f"MTCNN detector: no session for {', '.join(missing)}")
        for net in _NETS:
            session = sessions[net]
            inputs = [(i.name, list(i.shape)) for i in session.get_inputs()]
            outputs = {o.name for o in session.get_outputs()}
            side = _SIDES[net]
            sides_ok = len(inputs) == 1 and (
                all(not isinstance(d, int) for d in inputs[0][1][2:])
                if side is None
                else inputs[0][1][2:] == [side, side]
            )
            if not sides_ok or inputs[0][0] != INPUT_NAME or not outputs.issuperset(_OUTPUTS[net]):
                raise ModelError(
                    f"MTCNN detector: the {net} session has inputs {inputs} and outputs "
                    f"{sorted(outputs)}; expected input {INPUT_NAME!r} "
                    f"[N, 3, {side or 'H'}, {side or 'W'}] and outputs {list(_OUTPUTS[net])} "
                    "(a graph from convert_mtcnn)"
                )
        self._sessions = {n: sessions[n] for n in _NETS}
        self.config = config

    @classmethod
    def from_models(
        cls,
        models: Mapping[str, Path | bytes],
        runtime: RuntimeConfig,
        config: DetectorConfig = DetectorConfig(),
    ) -> MtcnnDetector:
        """Build the three sessions from ONNX files or bytes (keys pnet, rnet, onet)."""
        missing = [n for n in _NETS if n not in models]
        if missing:
            raise ModelError(f"MTCNN detector: no model given for {', '.join(missing)}")
        sessions = {n: build_session(models[n], runtime, name=f"mtcnn-{n}")[0] for n in _NETS}
        return cls(sessions, config)

    name = "mtcnn"

    @property
    def providers(self) -> list[str]:
        """The execution providers the three sessions really run on (built alike: P-Net's)."""
        return list(self._sessions["pnet"].get_providers())

    def detect_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Faces of each image, in image order (MTCNN's shapes change per image: one by one)."""
        return [self.detect(image) for image in images]

    def warm_up(self) -> None:
        """One detection on a blank image, so the first frame pays no start-up cost."""
        self.detect(np.zeros((120, 160, 3), np.uint8))

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> Detections:
        """Faces in ``image_rgb`` (H x W x 3, uint8, RGB), the most confident first.

        Raises ``ValueError`` for anything else (a grey or RGBA image, floats, a batch).
        """
        check_image(image_rgb)
        image = image_rgb.astype(np.float32)
        cfg = self.config

        boxes = self._stage_one(image)
        if len(boxes) == 0:
            return Detections.empty()

        prob, reg = self._run("rnet", _crop_windows(image, boxes, 24))
        keep = np.flatnonzero(prob[:, 1] > cfg.thresholds[1])
        boxes, score, reg = boxes[keep], prob[keep, 1], reg[keep]
        keep = _nms(boxes, score, cfg.nms_thresholds[1])
        boxes = _square(_regress(boxes[keep], reg[keep]))
        if len(boxes) == 0:
            return Detections.empty()

        prob, reg, marks = self._run("onet", _crop_windows(image, boxes, 48))
        keep = np.flatnonzero(prob[:, 1] > cfg.thresholds[2])
        boxes, score, reg, marks = boxes[keep], prob[keep, 1], reg[keep], marks[keep]
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1
        # MTCNN's landmark outputs are five x then five y, as fractions of the box.
        landmarks = np.stack(
            [
                size[:, None, 0] * marks[:, :5] + boxes[:, None, 0] - 1,
                size[:, None, 1] * marks[:, 5:] + boxes[:, None, 1] - 1,
            ],
            axis=2,
        )
        boxes = _regress(boxes, reg)
        keep = _nms(boxes, score, cfg.nms_thresholds[2], min_overlap=True, plus_one=True)
        keep = keep[: cfg.max_faces]
        return Detections(
            boxes=np.ascontiguousarray(boxes[keep], dtype=np.float32),
            scores=np.ascontiguousarray(score[keep], dtype=np.float32),
            landmarks=np.ascontiguousarray(landmarks[keep], dtype=np.float32),
        )

    def _stage_one(self, image: F32) -> F32:
        """P-Net over the pyramid: squared candidate boxes [M, 4] in image pixels."""
        cfg = self.config
        height, width = image.shape[:2]
        per_level_boxes: list[F32] = []
        per_level_scores: list[F32] = []
        per_level_reg: list[F32] = []
        for scale in _pyramid(height, width, cfg.min_face_px, cfg.scale_factor):
            size = (int(width * scale + 1), int(height * scale + 1))
            level = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.float32)
            prob, reg = self._run("pnet", level.transpose(2, 0, 1)[None])
            rows, cols = np.nonzero(prob[0, 1] >= cfg.thresholds[0])
            if rows.size == 0:
                continue
            cells = np.stack([cols, rows], axis=1).astype(np.float32)
            # float32 as in facenet-pytorch, so floor() lands on the same pixel.
            s = np.float32(scale)
            boxes = np.concatenate(
                [np.floor((_STRIDE * cells + 1) / s), np.floor((_STRIDE * cells + _CELL) / s)],
                axis=1,
            )
            scores = prob[0, 1, rows, cols]
            keep = _nms(boxes, scores, cfg.nms_thresholds[0])
            per_level_boxes.append(boxes[keep])
            per_level_scores.append(scores[keep])
            per_level_reg.append(reg[0][:, rows[keep], cols[keep]].T)
        if not per_level_boxes:
            return np.zeros((0, 4), np.float32)
        boxes = np.concatenate(per_level_boxes)
        scores = np.concatenate(per_level_scores)
        reg = np.concatenate(per_level_reg)
        keep = _nms(boxes, scores, cfg.pyramid_nms_threshold)
        boxes, reg = boxes[keep], reg[keep]
        # Stage one scales the offsets by the window's side without MTCNN's usual +1.
        side = boxes[:, 2:4] - boxes[:, 0:2]
        return _square(boxes + reg * np.concatenate([side, side], axis=1))

    def _run(self, net: str, batch: F32) -> list[F32]:
        outputs: list[F32] = self._sessions[net].run(
            list(_OUTPUTS[net]), {INPUT_NAME: np.ascontiguousarray(batch)}
        )
        return outputs


def check_image(image: Any) -> None:
    """Refuse, as ``ValueError``, anything but an H x W x 3 uint8 image (a detector's input)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"detect() needs a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"detect() needs an H x W x 3 RGB image, got an array of shape {image.shape}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"detect() needs uint8 pixels, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"detect() got an empty image of shape {image.shape}")


def _pyramid(height: int, width: int, min_face_px: int, factor: float) -> list[float]:
    """Scales at which a min_face_px face becomes P-Net's 12-px window."""
    scale = _CELL / min_face_px
    shorter = min(height, width) * scale
    scales: list[float] = []
    while shorter >= _CELL:
        scales.append(scale)
        scale *= factor
        shorter *= factor
    return scales


def _square(boxes: F32) -> F32:
    """Grow each box to a square around its centre, side = the longer side."""
    size = boxes[:, 2:4] - boxes[:, 0:2]
    side = size.max(axis=1, keepdims=True)
    corner = boxes[:, 0:2] + size * 0.5 - side * 0.5
    return np.concatenate([corner, corner + side], axis=1).astype(np.float32)


def _regress(boxes: F32, reg: F32) -> F32:
    """Apply R-/O-Net box offsets (fractions of the inclusive box side)."""
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1
    return (boxes + reg * np.concatenate([size, size], axis=1)).astype(np.float32)


def _crop_windows(image: F32, boxes: F32, out: int) -> F32:
    """Crops of ``image`` under ``boxes`` resized to out x out, as [N, 3, out, out].

    A box covers pixel columns ``trunc(x1) - 1 .. trunc(x2) - 1`` (MTCNN's one-based
    legacy) and likewise rows; whatever lies outside the image is zero.
    """
    height, width = image.shape[:2]
    corners = np.trunc(boxes).astype(np.int64)
    x0, y0 = corners[:, 0] - 1, corners[:, 1] - 1
    x1, y1 = np.maximum(corners[:, 2], x0 + 1), np.maximum(corners[:, 3], y0 + 1)
    batch = np.empty((len(boxes), out, out, 3), np.float32)
    for k in range(len(boxes)):
        a, b, c, d = int(x0[k]), int(y0[k]), int(x1[k]), int(y1[k])
        if a >= 0 and b >= 0 and c <= width and d <= height:
            crop = image[b:d, a:c]
        else:
            crop = np.zeros((d - b, c - a, 3), np.float32)
            ia, ib, ic, id_ = max(a, 0), max(b, 0), min(c, width), min(d, height)
            if ic > ia and id_ > ib:
                crop[ib - b : id_ - b, ia - a : ic - a] = image[ib:id_, ia:ic]
        batch[k] = cv2.resize(crop, (out, out), interpolation=cv2.INTER_AREA)
    return batch.transpose(0, 3, 1, 2)


def _nms(
    boxes: F32,
    scores: F32,
    threshold: float,
    *,
    min_overlap: bool = False,
    plus_one: bool = False,
) -> Index:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    A box is dropped when its overlap with a better kept box exceeds ``threshold``:
    intersection over union, or over the smaller area when ``min_overlap``. ``plus_one``
    counts box sides inclusively (``x2 - x1 + 1``), as MTCNN's last stage does.
    """
    if len(scores) == 0:
        return np.zeros(0, np.intp)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[order, i] for i in range(4))
    extra = np.float32(1.0 if plus_one else 0.0)
    area = (x2 - x1 + extra) * (y2 - y1 + extra)

    def overlap(i: Index | int, j: Index) -> F32:
        iw = np.maximum(np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]) + extra, 0)
        ih = np.maximum(np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]) + extra, 0)
        inter = iw * ih
        if min_overlap:
            return np.asarray(inter / np.minimum(area[i], area[j]), np.float32)
        return np.asarray(inter / (area[i] + area[j] - inter), np.float32)

    kept: list[int] = []
    if len(order) <= _NMS_MATRIX_MAX:
        # All pairs at once, then a cheap greedy pass: far fewer numpy calls than below.
        everything = np.arange(len(order))
        drops = overlap(everything[:, None], everything[None, :]) > threshold
        dropped = np.zeros(len(order), bool)
        for i in range(len(order)):
            if not dropped[i]:
                kept.append(i)
                dropped |= drops[i]
    else:
        rest = np.arange(len(order))
        while rest.size:
            i = int(rest[0])
            kept.append(i)
            others = rest[1:]
            rest = others[overlap(i, others) <= threshold]
    return order[np.asarray(kept, np.intp)]
