"""CenterFace on a GPU: it really runs on CUDA and finds what the CPU finds.

Skipped, with the reason, where onnxruntime-gpu with the CUDA provider is not installed
(CI has no GPU) or no real photo is at hand.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from lfr_actors.models.cache import ModelCache
from lfr_actors.models.centerface import CenterFaceConfig, CenterFaceDetector
from lfr_actors.models.detectors import build_detector
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import default_detector_runtime
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.types import Detections
from tests.conftest import SHARED_DATA, lfr_test_home

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="onnxruntime-gpu with CUDAExecutionProvider is not installed here",
    ),
]

# A GPU host gets the repository without ../shared/data: the registry's sample group
# photo (extracted into the model home by `lfr models prepare`/the demo) stands in.
PHOTOS = (
    SHARED_DATA / "faces" / "scenes" / "obama_and_biden.jpg",
    lfr_test_home() / "samples" / "group_t1.jpg",
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    for path in PHOTOS:
        if path.is_file():
            return load_image(path)
    pytest.skip(f"no real photo with faces found at {', '.join(str(p) for p in PHOTOS)}")


STRONG = 0.6
"""Faces this confident on one device must be found on the other; a face near the score
threshold (0.5) may fall either side of it by a rounding difference."""


def _detectors(cache: ModelCache) -> tuple[CenterFaceDetector, CenterFaceDetector]:
    config = CenterFaceConfig()
    gpu = build_detector(config, default_detector_runtime(config, RuntimeConfig("gpu")), cache)
    cpu = build_detector(config, RuntimeConfig("cpu"), cache)
    assert isinstance(gpu, CenterFaceDetector) and isinstance(cpu, CenterFaceDetector)
    return gpu, cpu


def _assert_same(on_gpu: Detections, on_cpu: Detections) -> None:
    """Every strong face of either device has one of the other within a pixel."""
    for mine, theirs in ((on_cpu, on_gpu), (on_gpu, on_cpu)):
        for k in np.flatnonzero(mine.scores >= STRONG):
            gap = np.abs(theirs.boxes - mine.boxes[k]).max(axis=1, initial=0.0)
            assert gap.size and gap.min() <= 1.0, (mine.boxes[k], theirs.boxes)
            j = int(np.argmin(gap))
            np.testing.assert_allclose(theirs.landmarks[j], mine.landmarks[k], atol=1.0)
            assert abs(float(theirs.scores[j]) - float(mine.scores[k])) <= 2e-3


def test_centerface_runs_on_cuda_and_finds_the_boxes_the_cpu_finds(
    model_cache: ModelCache, photo: np.ndarray
) -> None:
    gpu, cpu = _detectors(model_cache)
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    assert gpu.on_gpu and not cpu.on_gpu
    gpu.warm_up()
    on_cpu = cpu.detect(photo)
    assert int((on_cpu.scores >= STRONG).sum()) >= 2  # a photo of several people
    _assert_same(gpu.detect(photo), on_cpu)


def test_a_padded_gpu_batch_of_mixed_sizes_matches_the_cpu_frame_by_frame(
    model_cache: ModelCache, photo: np.ndarray
) -> None:
    gpu, cpu = _detectors(model_cache)
    h, w = photo.shape[:2]
    frames = [photo, np.ascontiguousarray(photo[: h // 2, : w // 2]), np.fliplr(photo).copy()]
    on_gpu = gpu.detect_batch(frames)  # three frames: padded to a batch of four on the GPU
    assert len(on_gpu) == 3
    for frame, found in zip(frames, on_gpu, strict=True):
        _assert_same(found, cpu.detect(frame))
