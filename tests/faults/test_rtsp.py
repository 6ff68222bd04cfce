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
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO, lfr_test_home
from tests.integration.test_pipeline_ray import write_deployment

RTSP_SERVER = shutil.which("rtsp-server-perl")
FFMPEG = shutil.which("ffmpeg")

pytestmark = [
    pytest.mark.models,
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(
        RTSP_SERVER is None or FFMPEG is None,
        reason="Debian's rtsp-server-perl and ffmpeg are not installed: apt-get install "
        "rtsp-server-perl ffmpeg; .ci/run installs them",
    ),
]

CAMERA = "cam_rtsp"
STALL_TIMEOUT_S = 3.0
POLL_S = 0.2
START_TIMEOUT_S = 240.0  # lfr up on a busy two-core machine: Ray, models, warm-up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RtspServer:
    """rtsp-server-perl on loopback, fed by ffmpeg looping a clip; stop, start, freeze."""

    def __init__(self, clip: Path, folder: Path) -> None:
        self.clip = clip
        self.folder = folder
        self.client_port = _free_port()
        self.source_port = _free_port()
        self.rtp_port = _free_port()
        self.server: subprocess.Popen[bytes] | None = None
        self.publisher: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.client_port}/hamilton"

    def start(self) -> None:
        assert RTSP_SERVER is not None and FFMPEG is not None
        with (self.folder / "rtsp-server.log").open("ab") as log:
            self.server = subprocess.Popen(
                [RTSP_SERVER, "--clientport", str(self.client_port),
                 "--serverport", str(self.source_port),
                 "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
                 "--rtp_start_port", str(self.rtp_port), "--loglevel", "1"],
                stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while not (_accepts(self.client_port) and _accepts(self.source_port)):
            assert self.server.poll() is None, (self.folder / "rtsp-server.log").read_text()
            assert time.monotonic() < deadline, "rtsp-server-perl did not start listening"
            time.sleep(0.05)
        self.start_publisher()

    def start_publisher(self) -> None:
        """Publish the clip in a loop (the camera's picture behind the server)."""
        assert FFMPEG is not None
        with (self.folder / "ffmpeg.log").open("ab") as log:
            self.publisher = subprocess.Popen(
                [FFMPEG, "-nostdin", "-loglevel", "warning", "-re", "-stream_loop", "-1",
                 "-i", str(self.clip), "-an", "-c:v", "copy", "-f", "rtsp",
                 f"rtsp://127.0.0.1:{self.source_port}/hamilton"],
                stdout=log, stderr=log,
            )  # fmt: skip

    def stop(self) -> None:
        """Kill the server and its publisher (as a crashed or switched-off server)."""
        for process in (self.server, self.publisher):
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                process.wait(10)
        self.server = self.publisher = None

    def stop_publisher(self) -> None:
        """Stop the publisher alone: the server stays up with nothing to relay.

        With SIGTERM, so that ffmpeg tears its session down: rtsp-server-perl keeps the
        mount of a publisher that vanished without TEARDOWN and refuses the next one (403).
        """
        assert self.publisher is not None
        self.publisher.terminate()
        self.publisher.wait(10)
        self.publisher = None

    def freeze(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGCONT)


class Up:
    """``lfr up`` in its own process, watched through its API with the run file's token.

    Its output goes to files (a pipe nobody reads while it runs could fill and block it).
    """

    def __init__(self, topology: Path) -> None:
        self.topology = topology
        self.run_file = topology.parent / "data" / "lfr.run.json"
        self.stdout = topology.parent / "up.stdout"
        self.stderr = topology.parent / "up.stderr"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lfr_actors.cli", "up", str(topology),
                 "--home", str(lfr_test_home())],
                stdout=out, stderr=err, cwd=REPO,
                env={**os.environ, "LFR_LOG_LEVEL": "WARNING"},
            )  # fmt: skip
        self.api = ""
        self.headers: dict[str, str] = {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.run_file.exists():
            self.check_alive()
            assert time.monotonic() < deadline, "lfr up did not start"
            time.sleep(0.5)
        info = json.loads(self.run_file.read_text("utf-8"))
        self.api = info["api"]
        self.headers = {"Authorization": f"Bearer {info['token']}"}

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            err = self.stderr.read_text("utf-8", "replace")
            pytest.fail(f"lfr up exited {self.process.returncode}: {err[-3000:]}")

    def camera(self) -> dict[str, Any]:
        """The camera's figures from ``GET /v1/status`` ({} while the API cannot say)."""
        self.check_alive()
        try:
            reply = requests.get(f"{self.api}/v1/status", headers=self.headers, timeout=10)
        except requests.RequestException:
            return {}
        if reply.status_code != 200:
            return {}
        figures: dict[str, Any] = reply.json()["cameras"].get(CAMERA, {})
        return figures

    def metrics(self) -> list[str]:
        reply = requests.get(f"{self.api}/metrics", headers=self.headers, timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.text.splitlines()

    def wait_for(
        self, what: str, condition: Callable[[dict[str, Any]], bool], timeout_s: float
    ) -> tuple[float, dict[str, Any]]:
        """Poll until ``condition(camera figures)``; returns (monotonic time, figures)."""
        deadline = time.monotonic() + timeout_s
        figures: dict[str, Any] = {}
        while time.monotonic() < deadline:
            figures = self.camera()
            if figures and condition(figures):
                return time.monotonic(), figures
            time.sleep(POLL_S)
        pytest.fail(f"the camera did not become {what} within {timeout_s:g} s: {figures}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
    topology = write_deployment(folder, shared_data, ["lin_manuel_miranda"], pace="realtime")
    data = yaml.safe_load(topology.read_text())
    data["cameras"] = [
        {
            "id": CAMERA,
            "fps": 5,
            "stall_timeout_s": STALL_TIMEOUT_S,
            "source": {"type": "url", "url": rtsp.url, "transport": "udp"},
        }
    ]  # the reconnect backoff keeps its defaults: 0.5 s doubling up to 5 s
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    deployment = Up(topology)
    try:
        deployment.wait_ready()
        deployment.wait_for("running with frames", _flowing(0), START_TIMEOUT_S)
        yield deployment
    finally:
        with contextlib.suppress(Exception):
            rtsp.thaw()
        deployment.stop()


def _flowing(after: int) -> Callable[[dict[str, Any]], bool]:
    """Running, with frames read beyond ``after``."""
    return lambda c: c.get("state") == "running" and int(c.get("frames_read") or 0) > after


def test_a_server_that_stops_is_noticed_and_found_again(up: Up, rtsp: RtspServer) -> None:
    down_s = 4.0
    _, before = up.wait_for("running", _flowing(0), 30)
    killed = time.monotonic()
    rtsp.stop()
    left, figures = up.wait_for("not running", lambda c: c.get("state") != "running", 30)
    assert figures["state"] in {"reconnecting", "stalled"}, figures
    time.sleep(max(0.0, down_s - (time.monotonic() - killed)))
    back = time.monotonic()
    rtsp.start()
    recovered, after = up.wait_for("running again", _flowing(int(before["frames_read"])), 60)
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
    _, before = up.wait_for("running", _flowing(0), 60)
    frozen = time.monotonic()
    rtsp.freeze()
    try:
        stalled, figures = up.wait_for("stalled", lambda c: c.get("state") == "stalled", 30)
        noticed_s = stalled - frozen
        assert figures["stalls"] == before["stalls"] + 1, figures
        assert figures["last_error"].startswith("no frame for "), figures
        assert f"(stall_timeout_s {STALL_TIMEOUT_S:g}); reconnecting" in figures["last_error"]
        lines = up.metrics()
        assert f'lfr_camera_state{{camera="{CAMERA}",state="stalled"}} 1' in lines
        assert f'lfr_camera_up{{camera="{CAMERA}"}} 0' in lines
        assert f'lfr_camera_stalls_total{{camera="{CAMERA}"}} {figures["stalls"]}' in lines
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
    recovered, after = up.wait_for("running again", _flowing(int(before["frames_read"])), 60)
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
    _, before = up.wait_for("running", _flowing(0), 60)
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
    recovered, _ = up.wait_for("running again", _flowing(int(before["frames_read"])), 60)
    noticed_s, recovery_s = stalled - died, recovered - back
    print(
        f"\nRTSP source dead behind a live server: camera stalled {noticed_s:.1f} s later; "
        f"running again {recovery_s:.1f} s after the source returned; last error while "
        f"stalled: {still['last_error']!r}"
    )
    assert noticed_s < STALL_TIMEOUT_S + 4.0, noticed_s
    assert recovery_s < 20.0, recovery_s


def test_sigterm_during_a_frozen_stream_exits_at_once(up: Up, rtsp: RtspServer) -> None:
    up.wait_for("running", _flowing(0), 60)
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
