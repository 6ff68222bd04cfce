"""RTSP fault soak: one camera under ``lfr up`` through repeated server faults.

The long version of ``tests/faults/test_rtsp.py``. A real RTSP server on loopback
(Debian's ``rtsp-server-perl``, fed the Hamilton clip in a loop by ``ffmpeg``) serves one
camera of a deployment run as an operator runs it (``lfr up`` in its own process, watched
through its API). Cycle after cycle, each kind of fault in turn:

- **kill**: the server is killed, stays down ``--down-s``, and is started again;
- **freeze**: the server is stopped (SIGSTOP) for ``--freeze-s``, then continued;
- **source**: the picture behind the live server stops (the publisher ends) for
  ``--down-s``, then returns.

Per kind: how soon the camera left ``running`` (``detect_s``) and how soon after the
fault ended it ran again with new frames (``recovery_s``), p50 and max, and the stalls and
reconnects counted. Baseline in the same run: the cost of opening this stream at all,
OpenCV opening it directly in this process (``open_s``, the median of a few opens) and
reading its first frame; ``recovery_ratio`` = recovery p50 / open p50 says how much the
reconnection policy (the backoff, capped at 5 s by default) adds to that floor.

    python loadtest/soak_rtsp.py [--cycles 3] [--down-s 4] [--freeze-s 8]
                                 [--stall-timeout-s 3] [--home DIR]

About 2 minutes per cycle on 2 cores; the servers and ``lfr up`` are ended at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
from machine import cpu_model  # loadtest/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fault tests' harness lives in tests/faults/rtsp.py

from lfr_actors.video import OPEN_TIMEOUT_S  # noqa: E402
from tests.faults.rtsp import (  # noqa: E402
    MISSING,
    START_TIMEOUT_S,
    RtspServer,
    Up,
    flowing,
    write_rtsp_deployment,
)

CAMERA = "cam_rtsp"


def open_cost(url: str, tries: int = 3) -> float:
    """Median seconds for OpenCV to open the stream and read its first frame (UDP)."""
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;udp"
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(OPEN_TIMEOUT_S * 1000)]
    times = []
    for _ in range(tries):
        started = time.monotonic()
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        ok = capture.isOpened() and capture.read()[0]
        times.append(time.monotonic() - started)
        capture.release()
        if not ok:
            raise SystemExit(f"cannot open {url} directly: the baseline needs the stream")
    return statistics.median(times)


FAULTS: dict[str, tuple[Callable[[RtspServer], None], Callable[[RtspServer], None]]] = {
    "kill": (RtspServer.stop, RtspServer.start),
    "freeze": (RtspServer.freeze, RtspServer.thaw),
    "source": (RtspServer.stop_publisher, RtspServer.start_publisher),
}
"""How each kind of fault is caused, and how it is cured."""


def one_fault(kind: str, up: Up, rtsp: RtspServer, args: argparse.Namespace) -> dict[str, Any]:
    _, before = up.wait_for("running", flowing(0), 60)
    cause, cure = FAULTS[kind]
    began = time.monotonic()
    cause(rtsp)
    left, during = up.wait_for("not running", lambda c: c.get("state") != "running", 60)
    time.sleep(max(0.0, (args.freeze_s if kind == "freeze" else args.down_s) - (left - began)))
    ended = time.monotonic()
    cure(rtsp)
    recovered, after = up.wait_for("running again", flowing(int(before["frames_read"])), 120)
    return {
        "kind": kind,
        "state_seen": during["state"],
        "detect_s": round(left - began, 2),
        "recovery_s": round(recovered - ended, 2),
        "stalls": int(after["stalls"]) - int(before["stalls"]),
        "reconnects": int(after["reconnects"]) - int(before["reconnects"]),
    }


def summarise(runs: list[dict[str, Any]], open_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("kill", "freeze", "source"):
        mine = [r for r in runs if r["kind"] == kind]
        if not mine:
            continue
        detect = [r["detect_s"] for r in mine]
        recovery = [r["recovery_s"] for r in mine]
        out[kind] = {
            "faults": len(mine),
            "states_seen": sorted({r["state_seen"] for r in mine}),
            "detect_s_p50": round(statistics.median(detect), 2),
            "detect_s_max": max(detect),
            "recovery_s_p50": round(statistics.median(recovery), 2),
            "recovery_s_max": max(recovery),
            "recovery_ratio": round(statistics.median(recovery) / open_s, 2),
            "stalls": sum(r["stalls"] for r in mine),
            "reconnects": sum(r["reconnects"] for r in mine),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--down-s", type=float, default=4.0)
    parser.add_argument("--freeze-s", type=float, default=8.0)
    parser.add_argument("--stall-timeout-s", type=float, default=3.0)
    parser.add_argument("--home", type=Path, default=None, help="the lfr home with models")
    args = parser.parse_args()
    if MISSING:
        print(f"not installed: {', '.join(MISSING)} (apt-get install rtsp-server-perl ffmpeg)")
        return 1
    if args.home is not None:
        os.environ["LFR_TEST_HOME"] = str(args.home)
    shared = REPO.parent / "shared" / "data"
    with tempfile.TemporaryDirectory(prefix="lfr-soak-rtsp-") as tmp:
        folder = Path(tmp)
        rtsp = RtspServer(shared / "video" / "short_hamilton_clip.mp4", folder)
        rtsp.start()
        up: Up | None = None
        try:
            time.sleep(1.0)  # the publisher's first packets
            open_s = open_cost(rtsp.url)
            topology = write_rtsp_deployment(
                folder / "deployment", shared, rtsp.url, CAMERA, args.stall_timeout_s
            )
            up = Up(topology, CAMERA)
            up.wait_ready()
            up.wait_for("running with frames", flowing(0), START_TIMEOUT_S)
            runs = []
            for cycle in range(args.cycles):
                for kind in ("kill", "freeze", "source"):
                    run = one_fault(kind, up, rtsp, args)
                    print(json.dumps({"cycle": cycle, **run}), flush=True)
                    runs.append(run)
        finally:
            if rtsp.server is not None:
                rtsp.thaw()
            if up is not None:
                up.stop()
            rtsp.stop()
    report = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "settings": {
            "cycles": args.cycles,
            "down_s": args.down_s,
            "freeze_s": args.freeze_s,
            "stall_timeout_s": args.stall_timeout_s,
            "reconnect": "defaults (0.5 s doubling to 5 s, 20% jitter)",
        },
        "baseline": {"open_s": round(open_s, 2)},
        "faults": summarise(runs, open_s),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
