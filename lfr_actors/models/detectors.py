"""Face detectors as plugins: one protocol, a settings type per detector, one factory.

Every detector returns the same :class:`~lfr_actors.models.types.Detections` (boxes,
scores, five landmarks in MTCNN's order), so alignment, quality, tracking and enrolment
do not know which one found a face. A detector is chosen by the type of its settings:
:class:`~lfr_actors.models.detector.DetectorConfig` builds MTCNN,
:class:`~lfr_actors.models.centerface.CenterFaceConfig` builds CenterFace.

``detect_batch`` is the embedder's path: one call per batch of frames (CenterFace makes
one inference call for the whole batch; MTCNN, whose shapes change with every image,
runs image by image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from lfr_actors.models.cache import ModelCache
from lfr_actors.models.centerface import CenterFaceConfig, CenterFaceDetector
from lfr_actors.models.detector import DetectorConfig, MtcnnDetector
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import CENTERFACE_NAME, MTCNN_NAME
from lfr_actors.models.types import Detections, UInt8Array

__all__ = [
    "DETECTOR_NAMES",
    "DETECTOR_SCORES",
    "Detector",
    "DetectorChoice",
    "build_detector",
    "detector_name",
]

DETECTOR_NAMES: tuple[str, ...] = (MTCNN_NAME, CENTERFACE_NAME)
"""The detectors a topology may name, in the order error messages list them."""

DetectorChoice = DetectorConfig | CenterFaceConfig
"""A detector's settings; their type says which detector they build."""

DETECTOR_SCORES: dict[str, tuple[float, float]] = {"mtcnn": (0.90, 0.9), "centerface": (0.5, 0.7)}
"""Per detector, the defaults of ``quality.min_score`` and ``tracking.high_score``.

The detectors' scores are on different scales: MTCNN's O-Net gives a clear face 0.99 or
more, while CenterFace's heatmap peak is 0.5-0.95 on the same faces (median 0.66 on the
Hamilton clip's faces, 0.999 for MTCNN). MTCNN keeps the values the product had; for
CenterFace the quality gate takes every face it reports (its own threshold is 0.5), and a
track starts from a face over 0.7 (above its median, as ByteTrack's high threshold sits
above the detection threshold; 0.6 split the clip's tracks more)."""


@runtime_checkable
class Detector(Protocol):
    """What the pipeline needs of a face detector."""

    name: str

    @property
    def providers(self) -> list[str]:
        """The execution providers the detector's sessions really run on."""
        ...

    def detect(self, image_rgb: UInt8Array) -> Detections:
        """Faces in one RGB uint8 image, the most confident first."""
        ...

    def detect_batch(self, images: Sequence[UInt8Array]) -> list[Detections]:
        """Faces in each of several RGB uint8 images (sizes may differ), in image order."""
        ...

    def warm_up(self) -> None:
        """Run once on a blank input, so the first real frame pays no start-up cost."""
        ...


def detector_name(config: DetectorChoice) -> str:
    """The name of the detector ``config`` builds (``mtcnn`` or ``centerface``)."""
    return CENTERFACE_NAME if isinstance(config, CenterFaceConfig) else MTCNN_NAME


def build_detector(
    config: DetectorChoice, runtime: RuntimeConfig, cache: ModelCache
) -> MtcnnDetector | CenterFaceDetector:
    """The detector ``config`` names, its sessions built from the verified model cache."""
    if isinstance(config, CenterFaceConfig):
        model = cache.load(CENTERFACE_NAME)
        return CenterFaceDetector.from_model(model.file("centerface.onnx"), runtime, config)
    mtcnn = cache.load(MTCNN_NAME)
    return MtcnnDetector.from_models(
        {stage: mtcnn.file(f"{stage}.onnx") for stage in ("pnet", "rnet", "onet")},
        runtime,
        config,
    )
