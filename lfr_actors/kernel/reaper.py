"""Stop what a driver's local Ray leaves running when the driver dies without a shutdown.

``lfr up`` without ``--address`` starts Ray on this machine (``ray.init``). Killed with
SIGKILL, it cannot stop Ray; Ray's own processes notice, but two of them do not go at once:
the dashboard agent and the runtime-env agent each see their raylet die within a second,
then try to report the raylet's unexpected death to the GCS, which died with the driver,
and wait out a fixed 60-second timeout (``publish_error_to_driver`` in Ray 2.x, not
configurable) before they exit. Measured: 61-62 s idle, 80-90 s on a loaded machine.

So the driver starts this small watcher next to Ray (:func:`start`). It holds the read end
of a pipe whose write end only the driver has, and every second notes the processes Ray
started for the driver and all their descendants (by pid and start time, so that a reused
pid is never mistaken for one of them). When the pipe reaches end-of-file, the driver has
gone (or called :func:`Reaper.stop` after ``ray.shutdown``); after a short grace period,
in which Ray's workers exit by themselves, it sends SIGKILL to whichever of the noted
processes still run, and exits. It never touches a process it did not see descend from
the processes Ray started for this driver.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 2.0
"""How long Ray's own processes get to exit by themselves after the driver has gone."""

SCAN_INTERVAL_S = 1.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie or dead process: already gone
        return None
    return int(fields[1]), int(fields[19])


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] == pid:
                found.add(int(entry))
    return found


def _scan(tracked: dict[int, int]) -> None:
    """Add every live descendant of the tracked processes (that are still themselves)."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append((int(entry), stat[1]))
    todo = [pid for pid, start in tracked.items() if (_stat(pid) or (0, -1))[1] == start]
    while todo:
        for child, start in parents.get(todo.pop(), []):
            if child not in tracked:
                tracked[child] = start
                todo.append(child)


def watch(roots: list[int]) -> int:
    """Note the descendants of ``roots`` until stdin ends; then kill those still running."""
    tracked: dict[int, int] = {}
    for pid in roots:
        stat = _stat(pid)
        if stat is not None:
            tracked[pid] = stat[1]
    while True:
        _scan(tracked)
        ready, _, _ = select.select([sys.stdin], [], [], SCAN_INTERVAL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    time.sleep(GRACE_S)
    for pid, start in tracked.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == start:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return 0


class Reaper:
    """The watcher process of one local Ray, from :func:`start`."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def stop(self) -> None:
        """After ``ray.shutdown()``: end the watch; it stops whatever Ray left, and exits."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


def start(roots: set[int]) -> Reaper | None:
    """Watch ``roots`` (the processes Ray started for this driver) and their descendants.

    In a session of its own, so that a terminal's hang-up or Ctrl-C does not end it with
    the driver. None where /proc is not there to read (not Linux): nothing is watched.
    """
    if not roots or not Path("/proc/self/stat").exists():
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", "lfr_actors.kernel.reaper", *map(str, sorted(roots))],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    return Reaper(process)


if __name__ == "__main__":
    sys.exit(watch([int(arg) for arg in sys.argv[1:]]))
