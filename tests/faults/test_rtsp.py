"""A real RTSP server on loopback, stopped, frozen and outlived, under a running ``lfr up``.

Debian's ``rtsp-server-perl`` serves the stream; ``ffmpeg`` publishes the Hamilton clip to
it in a loop (the camera reads it over UDP transport, the one that server relays). The
deployment runs as an operator runs it, ``lfr up`` in its own process, and is watched from
outside through its API, as ``lfr status`` and a Prometheus scrape see it:

- the server is killed and comes back: how soon the camera leaves ``running``, and how
  soon after the server's return it runs again (the bounded backoff);
- the server is frozen (SIGSTOP): the watchdog makes the camera ``stalled`` within its
  ``stall_timeout_s``, shown in the status, ``lfr status`` and ``/metrics``; after SIGCONT
  it runs again;
- the picture behind a live server dies (the publisher stops): stalled likewise, and
  running again once the picture returns;
- SIGTERM to ``lfr up`` while the stream is frozen and a read is blocked: how long until it
  has drained and exited (it used to wait 11.9 s on the read).

The four share one deployment, in this order; each prints its figures.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO
from tests.faults.rtsp import (
    MISSING,
    START_TIMEOUT_S,
    RtspServer,
    Up,
    flowing,
    write_rtsp_deployment,
)

pytestmark = [
    pytest.mark.models,
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"not installed: {', '.join(MISSING)} (Debian packages; apt-get install "
        "rtsp-server-perl ffmpeg, or .ci/run, installs them)",
    ),
]

CAMERA = "cam_rtsp"
STALL_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def rtsp(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[RtspServer]:
    folder = tmp_path_factory.mktemp("rtsp")
    server = RtspServer(shared_data / "video" / "short_hamilton_clip.mp4", folder)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def up(
    rtsp: RtspServer,
    model_cache: ModelCache,
    tmp_path_factory: pytest.TempPathFactory,
    shared_data: Path,
) -> Iterator[Up]:
    folder = tmp_path_factory.mktemp("deployment")
    # The reconnect backoff keeps its defaults: 0.5 s doubling up to 5 s.
    topology = write_rtsp_deployment(folder, shared_data, rtsp.url, CAMERA, STALL_TIMEOUT_S)
    deployment = Up(topology, CAMERA)
    try:
        deployment.wait_ready()
        deployment.wait_for("running with frames", flowing(0), START_TIMEOUT_S)
        yield deployment
    finally:
        with contextlib.suppress(Exception):
            rtsp.thaw()
        deployment.stop()


def test_a_server_that_stops_is_noticed_and_found_again(up: Up, rtsp: RtspServer) -> None:
    down_s = 4.0
    _, before = up.wait_for("running", flowing(0), 30)
    killed = time.monotonic()
    rtsp.stop()
    left, figures = up.wait_for("not running", lambda c: c.get("state") != "running", 30)
    assert figures["state"] in {"reconnecting", "stalled"}, figures
    time.sleep(max(0.0, down_s - (time.monotonic() - killed)))
    back = time.monotonic()
    rtsp.start()
    recovered, after = up.wait_for("running again", flowing(int(before["frames_read"])), 60)
    detect_s, recovery_s = left - killed, recovered - back
    print(
        f"\nRTSP server killed: camera left running in {detect_s:.1f} s "
        f"(state {figures['state']}); server down {back - killed:.1f} s; running again "
        f"{recovery_s:.1f} s after it returned; reconnects {after['reconnects']}"
    )
    assert detect_s < 5.0, detect_s
    # The backoff is capped at 5 s, and opening this stream takes about 2.5 s.
    assert recovery_s < 20.0, recovery_s
    assert after["reconnects"] > before["reconnects"]


def test_a_frozen_server_stalls_the_camera_until_it_thaws(up: Up, rtsp: RtspServer) -> None:
    freeze_s = 8.0
    _, before = up.wait_for("running", flowing(0), 60)
    frozen = time.monotonic()
    rtsp.freeze()
    try:
        stalled, figures = up.wait_for("stalled", lambda c: c.get("state") == "stalled", 30)
        noticed_s = stalled - frozen
        assert figures["stalls"] == before["stalls"] + 1, figures
        assert figures["last_error"].startswith("no frame for "), figures
        assert f"(stall_timeout_s {STALL_TIMEOUT_S:g}); reconnecting" in figures["last_error"]
        lines = up.metrics()
        assert f'lfr_camera_state{{camera="{CAMERA}",state="stalled"}} 1.0' in lines
        assert f'lfr_camera_up{{camera="{CAMERA}"}} 0.0' in lines
        assert f'lfr_camera_stalls_total{{camera="{CAMERA}"}} {float(figures["stalls"])}' in lines
        human = subprocess.run(
            [sys.executable, "-m", "lfr_actors.cli", "status", str(up.topology)],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        )  # fmt: skip
        assert human.returncode == 0, human.stderr
        [row] = [line for line in human.stdout.splitlines() if line.strip().startswith(CAMERA)]
        assert "stalled" in row and "no frame for" in row, human.stdout
        time.sleep(max(0.0, freeze_s - (time.monotonic() - frozen)))
        still = up.camera()
        assert still["state"] == "stalled", still  # a reopen against a frozen server fails
    finally:
        thawed = time.monotonic()
        rtsp.thaw()
    recovered, after = up.wait_for("running again", flowing(int(before["frames_read"])), 60)
    recovery_s = recovered - thawed
    print(
        f"\nRTSP server frozen: camera stalled {noticed_s:.1f} s after the freeze "
        f"(stall_timeout_s {STALL_TIMEOUT_S:g}); frozen {thawed - frozen:.1f} s; running "
        f"again {recovery_s:.1f} s after SIGCONT; stalls {after['stalls']}"
    )
    assert noticed_s < STALL_TIMEOUT_S + 4.0, noticed_s
    assert recovery_s < 20.0, recovery_s
    assert after["stalls"] == before["stalls"] + 1 and after["last_error"] is None


def test_a_dead_source_behind_a_live_server_stalls_the_camera(up: Up, rtsp: RtspServer) -> None:
    _, before = up.wait_for("running", flowing(0), 60)
    died = time.monotonic()
    rtsp.stop_publisher()
    try:
        stalled, figures = up.wait_for("stalled", lambda c: c.get("state") == "stalled", 30)
        assert figures["stalls"] == before["stalls"] + 1, figures
        time.sleep(2.0)  # reopening finds no stream to relay: still stalled, and says why
        still = up.camera()
        assert still["state"] == "stalled", still
    finally:
        back = time.monotonic()
        rtsp.start_publisher()
    recovered, _ = up.wait_for("running again", flowing(int(before["frames_read"])), 60)
    noticed_s, recovery_s = stalled - died, recovered - back
    print(
        f"\nRTSP source dead behind a live server: camera stalled {noticed_s:.1f} s later; "
        f"running again {recovery_s:.1f} s after the source returned; last error while "
        f"stalled: {still['last_error']!r}"
    )
    assert noticed_s < STALL_TIMEOUT_S + 4.0, noticed_s
    assert recovery_s < 20.0, recovery_s


def test_sigterm_during_a_frozen_stream_exits_at_once(up: Up, rtsp: RtspServer) -> None:
    up.wait_for("running", flowing(0), 60)
    rtsp.freeze()
    time.sleep(STALL_TIMEOUT_S / 2)  # a read is blocked; the watchdog has not fired yet
    sent = time.monotonic()
    up.process.send_signal(signal.SIGTERM)
    up.process.wait(timeout=60)
    exit_s = time.monotonic() - sent
    out, err = up.stdout.read_text("utf-8"), up.stderr.read_text("utf-8", "replace")
    print(f"\nSIGTERM to lfr up with the stream frozen: exited {exit_s:.1f} s later")
    assert up.process.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    summary = json.loads(out[out.index("{\n") :])
    assert summary["frames"] > 0
    assert not up.run_file.exists()
    assert exit_s < 10.0, exit_s
