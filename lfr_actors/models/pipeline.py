"""The face pipeline on a batch of images: detect, align, assess quality, embed.

This is the whole per-image work of the embedder actor and of ``lfr evaluate``, in one
process: both call :meth:`FacePipeline.analyse_batch` (``analyse`` is its one-image
case), so evaluation measures the path production runs. Detection, alignment and quality
run in one detector call per batch (:meth:`FacePipeline.find_batch`: CenterFace infers the
whole batch at once, MTCNN goes image by image); the chosen faces of the whole batch are
embedded in ONE call. It
holds inference sessions, so build it where it runs (inside an actor), never pass it
across an actor call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lfr_actors.models.align import align_faces
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.centerface import CenterFaceConfig
from lfr_actors.models.detector import DetectorConfig
from lfr_actors.models.detectors import Detector, DetectorChoice, build_detector
from lfr_actors.models.embedder import Embedder
from lfr_actors.models.enrol import EnrolmentConfig, choose_enrolment_face
from lfr_actors.models.quality import FaceQuality, QualityConfig, assess
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC, EmbedderSpec
from lfr_actors.models.types import Detections, FloatArray, UInt8Array


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the face pipeline; the detector's settings' type chooses the detector."""

    detector: DetectorChoice = field(default_factory=DetectorConfig)
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


EmbedChoice = Literal["passed", "all", "none", "largest"]
"""Which faces are embedded: those that met the quality minimums, all, none, or the one
largest face of each image whatever its quality (how evaluation compares photos)."""


@dataclass(frozen=True)
class AnalysedBatch:
    """The faces of a batch of images, and one embedding array for all the chosen ones.

    ``images[i]`` is image ``i``'s :class:`AnalysedImage` (its ``embeddings`` are its rows
    of ``embeddings``). Row ``r`` of ``embeddings`` (and of ``chips``, the aligned chips
    that were embedded) is face ``face_index[r]`` of image ``image_index[r]``, image by
    image, in face order. ``detect_s`` is the time spent detecting, aligning and
    assessing; ``embed_s`` the time of the one embedding call.
    """

    images: list[AnalysedImage]
    chips: UInt8Array
    embeddings: FloatArray
    image_index: np.ndarray
    face_index: np.ndarray
    detect_s: float
    embed_s: float


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

    def __init__(
        self,
        detector: Detector,
        embedder: Embedder,
        config: PipelineConfig,
        *,
        cache: ModelCache | None = None,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.config = config
        self.cache = cache
        self._enrolment: FacePipeline | None = None

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

        ``detector_runtime`` defaults to :func:`default_detector_runtime`: MTCNN on the CPU,
        CenterFace where the embedder runs.
        """
        config = config or PipelineConfig()
        cache = cache or ModelCache.default()
        detector = build_detector(
            config.detector,
            detector_runtime or default_detector_runtime(config.detector, runtime),
            cache,
        )
        embedder = Embedder.from_spec(config.embedder, runtime, cache=cache)
        return cls(detector, embedder, config, cache=cache)

    def for_enrolment(self) -> FacePipeline:
        """The pipeline enrolment runs: MTCNN finds the face (:func:`enrolment_config`).

        The same pipeline when it already detects with MTCNN; otherwise one that shares
        this embedder, its MTCNN built once on the CPU from this pipeline's model cache.
        """
        config = enrolment_config(self.config)
        if config is self.config:
            return self
        if self._enrolment is None:
            cache = self.cache or ModelCache.default()
            detector = build_detector(config.detector, RuntimeConfig(device="cpu"), cache)
            self._enrolment = FacePipeline(detector, self.embedder, config, cache=cache)
        return self._enrolment

    def warm_up(self) -> None:
        """One inference through every model (every batch shape of a fixed-shape detector)."""
        self.detector.warm_up()
        self.embedder.warm_up()

    def _align(self, image: UInt8Array, detections: Detections) -> UInt8Array:
        spec = self.config.embedder
        return align_faces(image, detections.landmarks, spec.template, spec.chip_size)

    def analyse(self, image: UInt8Array, *, embed: EmbedChoice = "passed") -> AnalysedImage:
        """All faces of an RGB image: :meth:`analyse_batch` of that one image."""
        return self.analyse_batch([image], embed=embed).images[0]

    def find(self, image: UInt8Array) -> AnalysedImage:
        """Every face of an RGB image, aligned and assessed, none embedded yet."""
        return self.find_batch([image])[0]

    def find_batch(
        self, images: Sequence[UInt8Array], timings: dict[str, float] | None = None
    ) -> list[AnalysedImage]:
        """Every face of each RGB image, from ONE detector call for the batch.

        Faces are aligned from each full-resolution image (a detector may look at a
        smaller copy). ``timings``, when given, receives ``detect`` and ``align`` seconds
        (alignment includes the quality assessment).
        """
        started = time.perf_counter()
        found = self.detector.detect_batch(images)
        aligned = time.perf_counter()
        analysed = [
            self._assess(image, detections) for image, detections in zip(images, found, strict=True)
        ]
        if timings is not None:
            timings["detect"] = aligned - started
            timings["align"] = time.perf_counter() - aligned
        return analysed

    def _assess(self, image: UInt8Array, detections: Detections) -> AnalysedImage:
        chips = self._align(image, detections)
        quality = assess(detections, chips)
        passed = np.array([not q.failures(self.config.quality) for q in quality], dtype=bool)
        empty = np.zeros((0, self.embedder.dimension), np.float32)
        return AnalysedImage(detections, chips, quality, passed, np.zeros((0,), np.intp), empty)

    def embed_chips(self, chips: UInt8Array) -> FloatArray:
        """ONE embedding call for aligned chips ``[N, S, S, 3]`` (none: an empty array)."""
        if chips.shape[0] == 0:
            return np.zeros((0, self.embedder.dimension), np.float32)
        return self.embedder.embed(chips)

    def analyse_batch(
        self, images: Sequence[UInt8Array], *, embed: EmbedChoice = "passed"
    ) -> AnalysedBatch:
        """All faces of each RGB image, and ONE embedding call for the chosen faces of all."""
        if embed not in ("passed", "all", "none", "largest"):
            raise ValueError(f"embed must be 'passed', 'all', 'none' or 'largest', got {embed!r}")
        started = time.perf_counter()
        found = []
        for seen in self.find_batch(images):
            chosen = _chosen(seen.detections, seen.passed, embed)
            found.append((seen.detections, seen.chips, seen.quality, seen.passed, chosen))
        detect_s = time.perf_counter() - started
        started = time.perf_counter()
        counts = np.array([chosen.size for *_, chosen in found], dtype=np.intp)
        side = self.config.embedder.chip_size
        chosen_chips = np.concatenate(
            [np.zeros((0, side, side, 3), np.uint8)]
            + [chips[chosen] for _, chips, _, _, chosen in found]
        )
        embeddings = self.embed_chips(chosen_chips)
        embed_s = time.perf_counter() - started
        ends = np.cumsum(counts)
        analysed = [
            AnalysedImage(detections, chips, quality, passed, chosen, embeddings[end - n : end])
            for (detections, chips, quality, passed, chosen), n, end in zip(
                found, counts, ends, strict=True
            )
        ]
        return AnalysedBatch(
            images=analysed,
            chips=chosen_chips,
            embeddings=embeddings,
            image_index=np.repeat(np.arange(len(found), dtype=np.intp), counts),
            face_index=(
                np.concatenate([chosen for *_, chosen in found])
                if found
                else np.zeros((0,), np.intp)
            ),
            detect_s=detect_s,
            embed_s=embed_s,
        )

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


ENROLMENT_MTCNN = DetectorConfig(min_face_px=40)
"""The detector of enrolment when a deployment's own is not MTCNN: a still photo's face is
at least 60 px (EnrolmentConfig), so the pyramid can start at 40 px."""


def enrolment_config(config: PipelineConfig) -> PipelineConfig:
    """``config`` for enrolling watchlist photos: always MTCNN.

    Enrolment keeps MTCNN whatever detector a deployment watches with. Its rules (a
    detection score of 0.95, one dominant face) are calibrated on MTCNN's scores, which
    CenterFace's do not share (a clear 275-px face scored 0.91 there); a stored template
    then stays valid whichever detector a later deployment uses; and a photo is one image,
    where MTCNN's pyramid costs nothing that matters. Faces aligned on either detector's
    landmarks embed alike (MODELS.md; measured in the README's detector section).
    """
    if isinstance(config.detector, DetectorConfig):
        return config
    return dataclasses.replace(config, detector=ENROLMENT_MTCNN)


def default_detector_runtime(detector: DetectorChoice, runtime: RuntimeConfig) -> RuntimeConfig:
    """Where a detector runs: MTCNN on the CPU, CenterFace where the embedder runs.

    MTCNN's input shapes change with every pyramid level and candidate count, which made
    it no faster on a GPU (MODELS.md). CenterFace has a fixed input and a few batch
    sizes, so cuDNN's EXHAUSTIVE algorithm search runs once per shape, at warm-up, and
    its choice holds for every later frame (HEURISTIC, the embedder's default, guesses
    without timing and suits shapes that keep changing).
    """
    if isinstance(detector, CenterFaceConfig):
        return dataclasses.replace(runtime, cudnn_conv_algo_search="EXHAUSTIVE")
    return RuntimeConfig(device="cpu", intra_op_threads=runtime.intra_op_threads)


def _chosen(detections: Detections, passed: np.ndarray, embed: EmbedChoice) -> np.ndarray:
    """The indices of the faces of one image that ``embed`` asks to embed."""
    if embed == "all":
        return np.arange(len(detections), dtype=np.intp)
    if embed == "passed":
        return np.flatnonzero(passed).astype(np.intp)
    if embed == "largest" and len(detections):
        boxes = detections.boxes
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return np.array([int(np.argmax(areas))], dtype=np.intp)
    return np.zeros((0,), dtype=np.intp)
