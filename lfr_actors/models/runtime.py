"""The one place that builds ONNX Runtime inference sessions.

Execution providers come from configuration, never from what happens to be installed.
After a session is built, the providers it *really* runs on are read back with
``session.get_providers()`` (``get_available_providers()`` lists CUDA whenever the GPU
wheel is installed, even when the CUDA libraries are missing, and ONNX Runtime then falls
back to the CPU with only a log line). A GPU asked for but not running is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

from lfr_actors.errors import ModelError, ProviderUnavailableError
from lfr_actors.logs import get_logger

log = get_logger(__name__)

Device = Literal["cpu", "gpu", "auto"]

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})


@dataclass(frozen=True)
class RuntimeConfig:
    """How to run a model: on which device, with which providers and threads.

    ``device="gpu"`` demands a GPU provider and fails if none really runs; ``"auto"`` uses a
    GPU when one works and says so in the log otherwise; ``"cpu"`` never touches a GPU.
    ``cudnn_conv_algo_search`` defaults to HEURISTIC because the exhaustive search repeats
    for every new input shape, which made the variable-shape detectors 10-25x slower.
    """

    device: Device = "cpu"
    gpu_id: int = 0
    use_tensorrt: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "HEURISTIC"
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    extra_session_options: dict[str, str] = field(default_factory=dict)

    def provider_list(self) -> list[tuple[str, dict[str, Any]]]:
        """The providers to ask ONNX Runtime for, most preferred first."""
        providers: list[tuple[str, dict[str, Any]]] = []
        if self.device in ("gpu", "auto"):
            if self.use_tensorrt:
                providers.append((TENSORRT, {"device_id": self.gpu_id}))
            providers.append(
                (
                    CUDA,
                    {
                        "device_id": self.gpu_id,
                        "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
                    },
                )
            )
        providers.append((CPU, {}))
        return providers


_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionReport:
    """What a built session really runs on."""

    name: str
    requested: tuple[str, ...]
    active: tuple[str, ...]

    @property
    def on_gpu(self) -> bool:
        """True when the first active provider is a GPU provider."""
        return bool(self.active) and self.active[0] in GPU_PROVIDERS


def build_session(
    model: Path | bytes, config: RuntimeConfig, *, name: str
) -> tuple[ort.InferenceSession, SessionReport]:
    """Build a session for ``model`` (a path or serialised ONNX bytes) as ``config`` says.

    Returns the session and a report of the providers that really run; logs the report.
    Raises :class:`ProviderUnavailableError` when ``config.device == "gpu"`` and no GPU
    provider is active, and :class:`ModelError` when ONNX Runtime cannot load the model.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    if config.intra_op_threads:
        options.intra_op_num_threads = config.intra_op_threads
    if config.inter_op_threads:
        options.inter_op_num_threads = config.inter_op_threads
    for key, value in config.extra_session_options.items():
        options.add_session_config_entry(key, value)
    options.log_severity_level = 3  # ORT's own warnings go through our report instead

    wanted = config.provider_list()
    available = set(ort.get_available_providers())
    requested = [(p, opts) for p, opts in wanted if p in available]
    source = str(model) if isinstance(model, Path) else model
    try:
        session = ort.InferenceSession(
            source,
            sess_options=options,
            providers=[p for p, _ in requested],
            provider_options=[opts for _, opts in requested],
        )
    except Exception as exc:  # ORT raises its own exception types, not exported stably
        where = str(model) if isinstance(model, Path) else f"<{name} bytes>"
        raise ModelError(f"ONNX Runtime could not load model {name!r} from {where}: {exc}") from exc

    report = SessionReport(
        name=name,
        requested=tuple(p for p, _ in wanted),
        active=tuple(session.get_providers()),
    )
    if config.device == "gpu" and not report.on_gpu:
        raise ProviderUnavailableError(
            f"model {name!r}: the configuration demands a GPU but ONNX Runtime runs it on "
            f"{', '.join(report.active) or 'nothing'} (providers installed: "
            f"{', '.join(sorted(available))}). Install onnxruntime-gpu with working CUDA and "
            "cuDNN libraries, or set the device to 'cpu' or 'auto'."
        )
    if config.device == "auto" and not report.on_gpu:
        log.warning("session_gpu_unavailable_using_cpu", model=name, active=list(report.active))
    log.info(
        "session_built", model=name, requested=list(report.requested), active=list(report.active)
    )
    return session, report


def describe_providers(providers: Sequence[str]) -> str:
    """A short human word for a provider list: 'tensorrt', 'cuda' or 'cpu'."""
    first = providers[0] if providers else CPU
    return {TENSORRT: "tensorrt", CUDA: "cuda", CPU: "cpu"}.get(first, first)
