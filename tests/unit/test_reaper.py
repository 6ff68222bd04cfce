"""The watcher that stops what a dead driver's local Ray leaves: real processes, no Ray.

A stand-in for Ray's processes (a parent that starts a child which outlives it, as Ray's
agents outlive their raylet) is watched; when the watcher's pipe ends, as it does when the
driver dies, both go, and a process outside the watched tree is left alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfr_actors.kernel import reaper

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

# A parent that starts a long-lived child, prints the child's pid, then lives on itself.
TREE = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def alive(pid: int) -> bool:
    return reaper._stat(pid) is not None


def wait_gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_watched_processes_and_their_children_are_stopped_when_the_pipe_ends() -> None:
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert reaper.children_of(parent.pid) == {child}
        watcher = reaper.start({parent.pid})
        assert watcher is not None
        time.sleep(reaper.SCAN_INTERVAL_S * 2.5)  # it has seen the child by now
        assert alive(parent.pid) and alive(child)  # nothing happens while the pipe is open
        ended_at = time.monotonic()
        watcher.stop()  # what the driver's death does to the pipe
        assert wait_gone([parent.pid, child], reaper.GRACE_S + 10)
        assert time.monotonic() - ended_at >= reaper.GRACE_S * 0.9  # a grace period first
        assert watcher.process.wait(10) == 0
        assert bystander.poll() is None
    finally:
        for proc in (parent, bystander):
            proc.kill()
            proc.wait()


def test_nothing_to_watch_starts_nothing() -> None:
    assert reaper.start(set()) is None
