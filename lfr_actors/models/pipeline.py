"""The face pipeline on one image: detect, align, assess quality, embed.

This is the whole per-image work of the embedder actor and of ``lfr evaluate``, in one
process. It holds inference sessions, so build it where it runs (inside an actor), never
pass it across an actor call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lfr_actors.models.align import align_faces
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.detector import DetectorConfig, MtcnnDetector
from lfr_actors.models.embedder import Embedder
from lfr_actors.models.enrol import EnrolmentConfig, choose_enrolment_face
from lfr_actors.models.quality import FaceQuality, QualityConfig, assess
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC, MTCNN_NAME, EmbedderSpec
from lfr_actors.models.types import Detections, FloatArray, UInt8Array


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the face pipeline."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    enrolment: EnrolmentConfig = field(default_factory=EnrolmentConfig)
    embedder: EmbedderSpec = DEFAULT_EMBEDDER_SPEC


@dataclass(frozen=True)
class AnalysedImage:
    """Every face found in one image, with its chip, quality, and (if asked) embedding.

    ``passed[i]`` says whether face ``i`` met the quality minimums; ``embeddings`` has a row
    for each face that was embedded, in face order, and ``embedded`` lists which those are.
    """

    detections: Detections
    chips: UInt8Array
    quality: list[FaceQuality]
    passed: np.ndarray
    embedded: np.ndarray
    embeddings: FloatArray


@dataclass(frozen=True)
class EnrolledFace:
    """The one face an enrolment image yields."""

    index: int
    box: FloatArray
    quality: FaceQuality
    chip: UInt8Array
    embedding: FloatArray


class FacePipeline:
    """Detector, aligner, quality gate and embedder, built once and used many times."""

    def __init__(self, detector: MtcnnDetector, embedder: Embedder, config: PipelineConfig) -> None:
        self.detector = detector
        self.embedder = embedder
        self.config = config

    @classmethod
    def build(
        cls,
        runtime: RuntimeConfig,
        config: PipelineConfig | None = None,
        *,
        cache: ModelCache | None = None,
        detector_runtime: RuntimeConfig | None = None,
    ) -> FacePipeline:
        """Build the sessions for the configured models from the cache (or the spec's path).

        ``detector_runtime`` defaults to the CPU: MTCNN's input shapes change with every
        pyramid level and candidate count, which made it no faster on a GPU (MODELS.md).
        """
        config = config or PipelineConfig()
        cache = cache or ModelCache.default()
        mtcnn = cache.load(MTCNN_NAME)
        detector = MtcnnDetector.from_models(
            {stage: mtcnn.file(f"{stage}.onnx") for stage in ("pnet", "rnet", "onet")},
            detector_runtime or RuntimeConfig(device="cpu"),
            config.detector,
        )
        embedder = Embedder.from_spec(config.embedder, runtime, cache=cache)
        return cls(detector, embedder, config)

    def warm_up(self) -> None:
        """One inference through every model, so the first frame pays no start-up cost."""
        self.detector.detect(np.zeros((120, 160, 3), np.uint8))
        self.embedder.warm_up()

    def _align(self, image: UInt8Array, detections: Detections) -> UInt8Array:
        spec = self.config.embedder
        return align_faces(image, detections.landmarks, spec.template, spec.chip_size)

    def analyse(self, image: UInt8Array, *, embed: str = "passed") -> AnalysedImage:
        """All faces of an RGB image; ``embed`` is ``"passed"``, ``"all"`` or ``"none"``."""
        detections = self.detector.detect(image)
        chips = self._align(image, detections)
        quality = assess(detections, chips)
        passed = np.array([not q.failures(self.config.quality) for q in quality], dtype=bool)
        if embed == "all":
            chosen = np.arange(len(detections))
        elif embed == "passed":
            chosen = np.flatnonzero(passed)
        elif embed == "none":
            chosen = np.zeros((0,), dtype=np.intp)
        else:
            raise ValueError(f"embed must be 'passed', 'all' or 'none', got {embed!r}")
        embeddings = (
            self.embedder.embed(chips[chosen])
            if chosen.size
            else np.zeros((0, self.embedder.dimension), np.float32)
        )
        return AnalysedImage(detections, chips, quality, passed, chosen, embeddings)

    def enrol(self, image: UInt8Array) -> EnrolledFace:
        """The one face an enrolment photo yields, or :class:`EnrolmentRejectedError`."""
        detections = self.detector.detect(image)
        chips = self._align(image, detections)
        quality = assess(detections, chips)
        index = choose_enrolment_face(detections, quality, self.config.enrolment)
        embedding = self.embedder.embed(chips[index : index + 1])[0]
        return EnrolledFace(
            index=index,
            box=detections.boxes[index],
            quality=quality[index],
            chip=chips[index],
            embedding=embedding,
        )
