"""What the RTSP fault tests (and the RTSP soak in loadtest/) run: a real RTSP server on
loopback, and ``lfr up`` in its own process watched from outside through its API.

Debian's ``rtsp-server-perl`` serves the stream and ``ffmpeg`` publishes a clip to it in a
loop; the camera reads it over UDP transport, the one that server relays.
:data:`MISSING` names what is not installed (empty when both are).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.deployments import write_deployment
from tests.lfr_up import lfr_up

RTSP_SERVER = shutil.which("rtsp-server-perl")
FFMPEG = shutil.which("ffmpeg")
MISSING = [
    name for name, path in (("rtsp-server-perl", RTSP_SERVER), ("ffmpeg", FFMPEG)) if not path
]
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

    def __init__(self, topology: Path, camera: str) -> None:
        self.topology = topology
        self.camera_id = camera
        self.run_file = topology.parent / "data" / "lfr.run.json"
        self.stdout = topology.parent / "up.stdout"
        self.stderr = topology.parent / "up.stderr"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = lfr_up(topology, stdout=out, stderr=err)
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
            raise AssertionError(f"lfr up exited {self.process.returncode}: {err[-3000:]}")

    def camera(self) -> dict[str, Any]:
        """The camera's figures from ``GET /v1/status`` ({} while the API cannot say)."""
        self.check_alive()
        try:
            reply = requests.get(f"{self.api}/v1/status", headers=self.headers, timeout=10)
        except requests.RequestException:
            return {}
        if reply.status_code != 200:
            return {}
        figures: dict[str, Any] = reply.json()["cameras"].get(self.camera_id, {})
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
        raise AssertionError(f"the camera did not become {what} within {timeout_s:g} s: {figures}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def flowing(after: int) -> Callable[[dict[str, Any]], bool]:
    """Running, with frames read beyond ``after``."""
    return lambda c: c.get("state") == "running" and int(c.get("frames_read") or 0) > after


def write_rtsp_deployment(
    folder: Path, shared_data: Path, url: str, camera: str, stall_timeout_s: float
) -> Path:
    """A deployment with one camera on ``url`` (UDP transport, 5 fps) and Miranda listed."""
    topology = write_deployment(folder, shared_data, ["lin_manuel_miranda"], pace="realtime")
    data = yaml.safe_load(topology.read_text())
    data["cameras"] = [
        {
            "id": camera,
            "fps": 5,
            "stall_timeout_s": stall_timeout_s,
            "source": {"type": "url", "url": url, "transport": "udp"},
        }
    ]
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    return topology
