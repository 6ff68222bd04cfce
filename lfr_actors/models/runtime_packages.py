"""Exactly one ONNX Runtime package must be installed: check before anything runs.

``onnxruntime`` (CPU), ``onnxruntime-gpu`` (CUDA, TensorRT), ``onnxruntime-directml``
and ``onnxruntime-openvino`` are separate distributions that all install the same
``onnxruntime`` module. With two of them installed, whichever pip wrote last has
overwritten the other's files: the module may be a mix, and the CUDA provider can vanish
without an error until a session is built. pip does not refuse the mix, so start-up
does: :func:`check_runtime_packages` reads the installed distributions' metadata (it
imports nothing) and names the one command that repairs the environment.

The package's extras install one of them each: ``lfr-actors[cpu]`` and
``lfr-actors[gpu]`` (see pyproject.toml and the README).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

from lfr_actors.errors import ProviderUnavailableError

__all__ = ["RUNTIME_DISTRIBUTIONS", "check_runtime_packages", "installed_runtimes"]

RUNTIME_DISTRIBUTIONS: tuple[str, ...] = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
)
"""The distributions that provide the ``onnxruntime`` module."""

CPU_INSTALL = "pip install 'lfr-actors[cpu]'"
GPU_INSTALL = "pip install 'lfr-actors[gpu]'"

VersionLookup = Callable[[str], str]
"""A distribution's installed version by name; raises ``PackageNotFoundError`` if absent."""


def _installed_version(name: str) -> str:
    return metadata.version(name)


def installed_runtimes(version: VersionLookup | None = None) -> dict[str, str]:
    """The installed ONNX Runtime distributions and their versions, in a fixed order.

    ``version`` looks a distribution up (default: the installed packages' metadata).
    """
    lookup = version or _installed_version
    found = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            found[name] = lookup(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def check_runtime_packages(version: VersionLookup | None = None) -> str:
    """The one installed ONNX Runtime distribution's name, or a one-line error.

    Raises :class:`~lfr_actors.errors.ProviderUnavailableError` when none is installed,
    or more than one: then the message lists them and gives the commands that leave one.
    """
    found = installed_runtimes(version)
    if not found:
        raise ProviderUnavailableError(
            "no ONNX Runtime package is installed; install one: "
            f"{CPU_INSTALL}, or on a GPU host {GPU_INSTALL}"
        )
    if len(found) > 1:
        listed = ", ".join(f"{name} {v}" for name, v in found.items())
        remove = f"pip uninstall -y {' '.join(found)}"
        raise ProviderUnavailableError(
            f"{len(found)} ONNX Runtime packages are installed ({listed}); they write the "
            "same onnxruntime module over each other, so which one runs is an accident. "
            f"Keep one: {remove} && {GPU_INSTALL} on a GPU host, or {remove} && "
            f"{CPU_INSTALL} on a CPU-only one"
        )
    return next(iter(found))
