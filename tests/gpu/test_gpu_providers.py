"""GPU execution: run where onnxruntime-gpu and a CUDA device are present.

Skipped, with the reason, on machines without them (CI has no GPU).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from lfr_actors.models.cache import ModelCache
from lfr_actors.models.embedder import Embedder
from lfr_actors.models.runtime import RuntimeConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="onnxruntime-gpu with CUDAExecutionProvider is not installed here",
    ),
]


def test_embedder_really_runs_on_the_gpu_and_agrees_with_the_cpu(model_cache: ModelCache) -> None:
    gpu = Embedder.default(RuntimeConfig(device="gpu"), cache=model_cache)
    assert gpu.report.active[0] == "CUDAExecutionProvider"
    assert gpu.use_io_binding
    cpu = Embedder.default(RuntimeConfig(device="cpu"), cache=model_cache)
    chips = np.random.default_rng(5).integers(0, 256, (64, 150, 150, 3), dtype=np.uint8)
    np.testing.assert_allclose(gpu.embed(chips), cpu.embed(chips), atol=2e-3)
