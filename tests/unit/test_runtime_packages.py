"""Exactly one ONNX Runtime package: none or two installed stop the model commands with one
line and exit 1, before anything starts."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from lfr_actors.cli import models as models_cli
from lfr_actors.cli.main import main
from lfr_actors.errors import ProviderUnavailableError
from lfr_actors.models import runtime_packages
from lfr_actors.models.runtime_packages import check_runtime_packages, installed_runtimes


def installed(**versions: str) -> Callable[[str], str]:
    """A metadata lookup that knows only these distributions (``onnxruntime_gpu=...``)."""
    known = {name.replace("_", "-"): v for name, v in versions.items()}

    def version(name: str) -> str:
        if name not in known:
            raise metadata.PackageNotFoundError(name)
        return known[name]

    return version


def test_one_runtime_is_named() -> None:
    assert check_runtime_packages(installed(onnxruntime="1.22.0")) == "onnxruntime"
    gpu = installed(onnxruntime_gpu="1.22.0", numpy="2.0")
    assert check_runtime_packages(gpu) == "onnxruntime-gpu"
    assert installed_runtimes(gpu) == {"onnxruntime-gpu": "1.22.0"}


def test_this_environment_has_exactly_one() -> None:
    # The real metadata of the environment the tests run in (make test installs [cpu]).
    found = installed_runtimes()
    assert len(found) == 1, found
    assert check_runtime_packages() in runtime_packages.RUNTIME_DISTRIBUTIONS


def test_both_runtimes_are_refused_with_the_fix() -> None:
    both = installed(onnxruntime="1.22.0", onnxruntime_gpu="1.22.1")
    with pytest.raises(ProviderUnavailableError) as caught:
        check_runtime_packages(both)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "2 ONNX Runtime packages are installed (onnxruntime 1.22.0, onnxruntime-gpu 1.22.1)"
    )
    assert (
        "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'lfr-actors[gpu]' on a "
        "GPU host" in message
    )
    assert "pip install 'lfr-actors[cpu]' on a CPU-only one" in message


def test_every_build_of_the_module_counts() -> None:
    mixed = installed(onnxruntime_gpu="1.20.0", onnxruntime_openvino="1.20.0")
    with pytest.raises(ProviderUnavailableError, match="pip uninstall -y onnxruntime-gpu "):
        check_runtime_packages(mixed)
    assert set(installed_runtimes(installed(onnxruntime_directml="1.2"))) == {
        "onnxruntime-directml"
    }


def test_no_runtime_is_refused_with_the_install_command() -> None:
    with pytest.raises(ProviderUnavailableError) as caught:
        check_runtime_packages(installed())
    assert str(caught.value) == (
        "no ONNX Runtime package is installed; install one: pip install 'lfr-actors[cpu]', "
        "or on a GPU host pip install 'lfr-actors[gpu]'"
    )


def _must_not_run(*_: object, **__: object) -> None:
    raise AssertionError("the command went on past the runtime check")


@pytest.mark.parametrize("command", ["up", "serve", "demo", "models prepare"])
@pytest.mark.parametrize("versions", [{"onnxruntime": "1.22", "onnxruntime_gpu": "1.22"}, {}])
def test_model_commands_stop_at_start_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    command: str,
    versions: dict[str, str],
) -> None:
    monkeypatch.setattr(runtime_packages, "_installed_version", installed(**versions))
    # Whatever runs after the check would fail the test loudly instead of starting Ray.
    stand_in = types.ModuleType("stand_in")
    stand_in.run_demo = _must_not_run  # type: ignore[attr-defined]
    stand_in.Deployment = _must_not_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lfr_actors.demo", stand_in)
    monkeypatch.setitem(sys.modules, "lfr_actors.control", stand_in)
    monkeypatch.setattr(models_cli, "prepare_models", _must_not_run)
    topology = tmp_path / "t.yaml"
    topology.write_text("version: 1\n")
    argv = {
        "up": ["up", str(topology)],
        "serve": ["serve", str(topology)],
        "demo": ["demo", "--home", str(tmp_path)],
        "models prepare": ["models", "prepare", "--home", str(tmp_path)],
    }[command]
    assert main(argv) == 1
    captured = capfd.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("lfr: error: ")
    assert "ONNX Runtime package" in lines[0]
    assert "Traceback" not in captured.err
