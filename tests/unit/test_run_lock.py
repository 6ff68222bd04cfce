"""One ``lfr up`` (or ``lfr serve``) per data folder, and a run file a crash left behind.

The lock is a real ``flock`` held by a real second process; a crash is that process
killed with SIGKILL. ``lfr down`` against a run file whose run is gone must not signal
the process id it names: by then that id may be another program's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfr_actors.cli.main import main
from lfr_actors.control.paths import DeploymentError, DeploymentPaths
from tests.deployments import write_deployment

HOLDER = """
import sys, time
from pathlib import Path
from lfr_actors.control.paths import DeploymentPaths
DeploymentPaths(Path(sys.argv[1])).hold_run_lock()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``tmp_path/data``'s run lock, as a running lfr up does."""
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def nothing_running(tmp_path: Path, shared_data: Path) -> tuple[Path, DeploymentPaths]:
    """A deployment's topology and its (existing) data folder, with no run holding it."""
    topology = write_deployment(tmp_path, shared_data, ["obama"])
    paths = DeploymentPaths(tmp_path / "data")
    paths.data_dir.mkdir()
    return topology, paths


def test_a_second_run_from_the_same_folder_is_refused_naming_the_first(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    paths = DeploymentPaths(tmp_path / "data")
    paths.run_file.write_text(json.dumps({"pid": holder.pid, "api": "x", "token": "t"}))
    assert paths.run_lock_held()
    with pytest.raises(DeploymentError) as refused:
        paths.hold_run_lock()
    message = str(refused.value)
    assert f"another lfr up or lfr serve (process {holder.pid}) already runs from" in message
    assert "lfr down FILE" in message and "storage.data_dir" in message


def test_a_crashed_run_never_blocks_the_next(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    paths = DeploymentPaths(tmp_path / "data")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not paths.run_lock_held()
    fd = paths.hold_run_lock()  # the kernel dropped the dead process's lock
    try:
        assert paths.run_lock_held()
        assert oct(paths.run_lock.stat().st_mode & 0o777) == "0o600"
    finally:
        os.close(fd)
    assert not paths.run_lock_held()


def test_lfr_down_after_a_crash_signals_nobody_and_removes_the_run_file(
    nothing_running: tuple[Path, DeploymentPaths], capfd: pytest.CaptureFixture[str]
) -> None:
    topology, paths = nothing_running
    # The crashed run's process id now belongs to an unrelated program.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        paths.run_file.write_text(json.dumps({"pid": stranger.pid, "api": "x", "token": "t"}))
        assert main(["status", str(topology)]) == 1
        status_err = capfd.readouterr().err
        assert f"was left by a run (process {stranger.pid}) that ended without stopping" in (
            status_err
        )
        assert paths.run_file.exists()  # status only reads

        assert main(["down", str(topology)]) == 1
        err = capfd.readouterr().err
        assert "is not running here" in err and "removed it, nothing was signalled" in err
        time.sleep(0.2)
        assert stranger.poll() is None  # not signalled
        assert not paths.run_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_an_unreadable_run_file_is_one_line(
    nothing_running: tuple[Path, DeploymentPaths], capfd: pytest.CaptureFixture[str]
) -> None:
    topology, paths = nothing_running
    paths.run_file.write_text('{"pid": ')  # torn by hand or by a failing disk
    assert main(["status", str(topology)]) == 1
    [line] = capfd.readouterr().err.strip().splitlines()
    assert "is not running here" in line and str(paths.run_file) in line
