"""The face embedder: aligned chips in, embeddings out, batched, conventions declared.

The default model's graph takes uint8 chips and does its own cast and scaling, so a GPU
receives a quarter of the bytes float32 would need (on an H200, float32 chips copied from
host memory capped this model at ~22k faces/s against 60-78k with GPU-resident input).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from lfr_actors.errors import ModelError
from lfr_actors.logs import get_logger
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.runtime import RuntimeConfig, SessionReport, build_session
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC, EmbedderSpec
from lfr_actors.models.types import FloatArray, UInt8Array

log = get_logger(__name__)

_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


class Embedder:
    """Runs one embedding model as its :class:`EmbedderSpec` declares.

    The session's input and output are checked against the declaration when the embedder
    is built; a model that does not match its declaration is refused, never adapted.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        spec: EmbedderSpec,
        report: SessionReport,
        *,
        use_io_binding: bool | None = None,
    ) -> None:
        self.session = session
        self.spec = spec
        self.report = report
        self.use_io_binding = report.on_gpu if use_io_binding is None else use_io_binding
        self._check_graph()

    @classmethod
    def from_spec(
        cls, spec: EmbedderSpec, runtime: RuntimeConfig, *, cache: ModelCache | None = None
    ) -> Embedder:
        """Build from an operator's declared model (``spec.path``) or a cached default model."""
        if spec.path is not None:
            if not spec.path.is_file():
                raise ModelError(f"embedder {spec.name!r}: model file {spec.path} does not exist")
            model_path = spec.path
        else:
            model_path = (cache or ModelCache.default()).load(spec.name).file("model.onnx")
        session, report = build_session(model_path, runtime, name=spec.name)
        return cls(session, spec, report)

    @classmethod
    def default(cls, runtime: RuntimeConfig, *, cache: ModelCache | None = None) -> Embedder:
        """The default dlib ResNet embedder from the model cache."""
        return cls.from_spec(DEFAULT_EMBEDDER_SPEC, runtime, cache=cache)

    def _check_graph(self) -> None:
        spec = self.spec
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        problems = []
        if spec.input_name not in inputs:
            problems.append(f"no input named {spec.input_name!r} (inputs: {sorted(inputs)})")
        else:
            graph_input = inputs[spec.input_name]
            if graph_input.type != _ORT_TYPES[spec.input_dtype]:
                problems.append(
                    f"input {spec.input_name!r} is {graph_input.type}, declared {spec.input_dtype}"
                )
            want = _input_shape(spec, batch=None)
            got = list(graph_input.shape)
            if len(got) != 4 or any(
                isinstance(g, int) and g != w for g, w in zip(got[1:], want[1:], strict=True)
            ):
                problems.append(f"input shape {got} does not fit declared {want}")
        if spec.output_name not in outputs:
            problems.append(f"no output named {spec.output_name!r} (outputs: {sorted(outputs)})")
        else:
            out_shape = list(outputs[spec.output_name].shape)
            last = out_shape[-1] if out_shape else None
            if isinstance(last, int) and last != spec.dimension:
                problems.append(f"output dimension {last}, declared {spec.dimension}")
        if problems:
            raise ModelError(
                f"embedder {spec.name!r} does not match its declaration: " + "; ".join(problems)
            )

    @property
    def dimension(self) -> int:
        """Length of one embedding."""
        return self.spec.dimension

    def warm_up(self) -> None:
        """Run one full batch so the first real call pays no start-up cost."""
        self.embed(np.zeros((1, self.spec.chip_size, self.spec.chip_size, 3), np.uint8))

    def embed(self, chips: UInt8Array) -> FloatArray:
        """Embeddings ``[N, D]`` float32 for aligned RGB uint8 chips ``[N, S, S, 3]``."""
        size = self.spec.chip_size
        if chips.ndim != 4 or chips.shape[1:] != (size, size, 3) or chips.dtype != np.uint8:
            raise ValueError(
                f"chips must be [N, {size}, {size}, 3] uint8 RGB, got {chips.shape} {chips.dtype}"
            )
        out = np.empty((chips.shape[0], self.spec.dimension), dtype=np.float32)
        step = self.spec.max_batch
        for start in range(0, chips.shape[0], step):
            batch = self._prepare(chips[start : start + step])
            out[start : start + step] = self._run(batch)
        if self.spec.l2_normalise:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    def _prepare(self, chips: UInt8Array) -> np.ndarray:
        spec = self.spec
        batch: np.ndarray = chips
        if spec.colour_order == "BGR":
            batch = batch[..., ::-1]
        if spec.input_dtype == "float32":
            batch = (batch.astype(np.float32) - spec.input_mean) / spec.input_std
        if spec.input_layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if not self.use_io_binding:
            result: Any = self.session.run([self.spec.output_name], {self.spec.input_name: batch})
            return np.asarray(result[0], dtype=np.float32)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.spec.input_name, batch)
        binding.bind_output(self.spec.output_name)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)


def _input_shape(spec: EmbedderSpec, batch: int | None) -> list[int | None]:
    s = spec.chip_size
    return [batch, s, s, 3] if spec.input_layout == "NHWC" else [batch, 3, s, s]


def distances(a: FloatArray, b: FloatArray, metric: str) -> FloatArray:
    """Distance matrix ``[len(a), len(b)]``: Euclidean, or ``1 - cosine`` for cosine."""
    a64 = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b64 = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if metric == "euclidean":
        sq = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2.0 * a64 @ b64.T
        return np.sqrt(np.maximum(sq, 0.0)).astype(np.float32)
    if metric == "cosine":
        an = a64 / np.maximum(np.linalg.norm(a64, axis=1, keepdims=True), 1e-12)
        bn = b64 / np.maximum(np.linalg.norm(b64, axis=1, keepdims=True), 1e-12)
        return (1.0 - an @ bn.T).astype(np.float32)
    raise ValueError(f"unknown metric {metric!r}; expected 'euclidean' or 'cosine'")
