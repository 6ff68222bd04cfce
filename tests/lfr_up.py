"""``lfr up`` in its own process, as the fault and integration tests start it, and the
processes it leaves below it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO, lfr_test_home


def lfr_up(
    topology: Path,
    *extra: str,
    command: str = "up",
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[str]:
    """Start ``lfr <command> <topology> --home <the test home> <extra...>`` from the
    repository, in text mode. Its stdout and stderr are pipes unless ``popen`` names
    others; its environment is ``env``, or this one with ``LFR_LOG_LEVEL=WARNING``."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "lfr_actors.cli", command, str(topology),
         "--home", str(lfr_test_home()), *extra],
        text=True, cwd=REPO, env=env or {**os.environ, "LFR_LOG_LEVEL": "WARNING"}, **popen,
    )  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), to clean up after a SIGKILL."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` that is still there (and ours to kill)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
