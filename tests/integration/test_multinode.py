"""Two Ray nodes on this machine, as an operator starts them, and one of them lost.

``ray start --head`` and ``ray start --address`` (each in its own process group, the head
in its own temp folder, so that no other Ray on this machine finds or joins it); ``lfr up
--address`` places the camera and the embedder on the node with ``camera_node`` and the
alert actor and index on the head (the driver's node, which has ``store_node``). The
Hamilton clip (Lin-Manuel Miranda) runs to its alert; then the worker node is killed (every
process of it, SIGKILL: a machine lost) and the deployment must say which actors are gone
and why, keep its API and store, and bring them back when a node with ``camera_node`` joins.

Nodes are stopped by their process groups, never by ``ray stop`` (which would stop every
Ray on the machine). Needs ../shared/data and the default models.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO, lfr_test_home
from tests.deployments import stored_alerts, write_deployment
from tests.lfr_up import lfr_up

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
"""The head's node health checks, as docs/topology.md suggests for a deployment."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayCluster:
    """A head and worker nodes started with the ``ray`` CLI, each in its own process group."""

    def __init__(self) -> None:
        # Short: Ray's socket paths under it must stay within the 107-byte limit.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lfr-ray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.groups: dict[str, int] = {}
        # Ray's token authentication with a token of this cluster's own (not ~/.ray's, which
        # another Ray on the machine may have made): every node and driver is given it.
        token = self.temp_dir / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))
            },
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
        }

    def _start(self, name: str, args: list[str]) -> None:
        common = ["--disable-usage-stats", "--dashboard-agent-listen-port=0"]
        env = self.env
        proc = subprocess.Popen(
            [RAY, "start", *args, *common],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
        out, _ = proc.communicate(timeout=120)
        self.groups[name] = proc.pid  # the daemons it started stay in its process group
        assert proc.returncode == 0, out[-3000:]

    def start_head(self, resources: dict[str, float]) -> None:
        self._start(
            "head",
            ["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
             "--include-dashboard=false", f"--dashboard-port={free_port()}",
             f"--ray-client-server-port={free_port()}", "--num-cpus=2",
             f"--resources={json.dumps(resources)}",
             # a lost node declared dead after 3 missed 1-s checks, not Ray's 5 x 3 s
             f"--system-config={json.dumps(HEALTH_CHECKS)}"],
        )  # fmt: skip

    def start_worker(self, name: str, resources: dict[str, float]) -> None:
        self._start(
            name,
            [f"--address={self.address}", "--num-cpus=2", f"--resources={json.dumps(resources)}"],
        )

    def kill(self, name: str) -> None:
        """SIGKILL every process of a node: its raylet, agents and actors' workers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.groups.pop(name), signal.SIGKILL)

    def shutdown(self) -> None:
        for name in list(self.groups):
            self.kill(name)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_cluster() -> Iterator[RayCluster]:
    cluster = RayCluster()
    try:
        yield cluster
    finally:
        cluster.shutdown()


class RunningDeployment:
    """``lfr up`` as a subprocess, read through its API with the run file's admin token."""

    def __init__(self, topology: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.topology = topology
        self.data_dir = topology.parent / "data"
        env = {**(env or os.environ), "LFR_LOG_LEVEL": "WARNING"}
        env.pop("RAY_ADDRESS", None)
        self.log = (topology.parent / "lfr-up.log").open("w")
        self.proc = lfr_up(topology, *extra, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.api: str | None = None
        self.headers: dict[str, str] = {}
        self.api_failures = 0
        """Requests to a serving API that got no answer (after its first answer)."""

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.topology.parent / "lfr-up.log").read_text(errors="replace")

    def status(self) -> dict[str, Any] | None:
        """The API's /v1/status, or None while the deployment is not serving it yet."""
        assert self.proc.poll() is None, self.output()[-4000:]
        if self.api is None:
            try:
                info = json.loads((self.data_dir / "lfr.run.json").read_text())
            except (FileNotFoundError, ValueError):
                return None
            self.api, self.headers = info["api"], {"Authorization": f"Bearer {info['token']}"}
        try:
            response = requests.get(f"{self.api}/v1/status", headers=self.headers, timeout=30)
        except requests.RequestException:
            self.api_failures += 1
            return None
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    def wait_for(
        self, what: str, test: Callable[[dict[str, Any]], bool], timeout_s: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            current = self.status()
            if current is not None:
                status = current
                if test(status):
                    return status
            time.sleep(0.5)
        pytest.fail(f"{what}: not within {timeout_s} s; last status: {json.dumps(status)[:3000]}")

    def stop(self, timeout_s: float = 120) -> str:
        """SIGINT (drain), as Ctrl-C; the whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.output()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def frames(status: dict[str, Any], camera: str = "cam_stage") -> int:
    return int(status["cameras"].get(camera, {}).get("frames_processed") or 0)


def flowing(
    deployment: RunningDeployment, camera: str = "cam_stage", timeout_s: float = 120
) -> int:
    """Wait until the camera's processed-frame count grows; the count reached."""
    first = deployment.wait_for(
        f"{camera} answering", lambda s: "unavailable" not in s["cameras"][camera], timeout_s
    )
    start = frames(first, camera)
    reached = deployment.wait_for(
        f"{camera} frames flowing", lambda s: frames(s, camera) >= start + 3, timeout_s
    )
    return frames(reached, camera)


def test_two_nodes_placement_loss_and_recovery(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path, ray_cluster: RayCluster
) -> None:
    ray_cluster.start_head({"store_node": 1})
    topology = write_deployment(
        tmp_path, shared_data, ["lin_manuel_miranda"], at_end="loop", pace="realtime", shards=1
    )
    data = yaml.safe_load(topology.read_text())
    data["cameras"][0]["resources"] = {"camera_node": 1}
    data["embedder"]["resources"] = {"camera_node": 1}
    data["alerts"]["resources"] = {"store_node": 0.1}
    data["index"]["resources"] = {"store_node": 0.1}
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    # --- no node has camera_node yet: refused in one line, nothing left running ----------
    refused = subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "up", str(topology),
         "--address", ray_cluster.address, "--home", str(lfr_test_home())],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=ray_cluster.env,
        check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr[-3000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert "cannot be placed: no node has resource camera_node (needs 1)" in last, last
    assert "--resources '{\"camera_node\": 1.0}'" in last and "Traceback" not in refused.stderr
    assert not (tmp_path / "data" / "lfr.run.json").exists()

    ray_cluster.start_worker("worker", {"camera_node": 4})
    up = RunningDeployment(topology, "--address", ray_cluster.address, env=ray_cluster.env)
    try:
        # --- placed by resources; the clip runs to its alert -----------------------------
        status = up.wait_for(
            "the Hamilton clip's alert",
            lambda s: s["alerts"]["store"].get("alerts", 0) >= 1,
            timeout_s=300,
        )
        nodes = status["nodes"]
        (worker,) = [n for n, v in nodes.items() if "camera_node" in v["resources"]]
        (head,) = [n for n, v in nodes.items() if "store_node" in v["resources"]]
        assert nodes[head]["driver"] and not nodes[worker]["driver"]
        assert status["cameras"]["cam_stage"]["node_id"] == worker
        assert status["embedders"]["embedder"]["node_id"] == worker
        assert status["alerts"]["alerts"]["node_id"] == head
        assert {a["node_id"] for a in status["index"].values()} == {head}
        # and, independently of what Ray reports, each actor's process was started by that
        # node's raylet (Ray puts each worker in a process group of its own)
        for actor, node in [
            (status["cameras"]["cam_stage"], "worker"),
            (status["embedders"]["embedder"], "worker"),
            (status["alerts"]["alerts"], "head"),
            *[(a, "head") for a in status["index"].values()],
        ]:
            assert os.getpgid(parent_of(actor["pid"])) == ray_cluster.groups[node], (actor, node)
        assert [a["entry_id"] for a in stored_alerts(up.data_dir)] == ["lin_manuel_miranda"]

        # --- the worker node is lost ----------------------------------------------------
        lost_at = time.monotonic()
        ray_cluster.kill("worker")

        def pair(s: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            return s["cameras"]["cam_stage"], s["embedders"]["embedder"]

        def said(actor: dict[str, Any]) -> str:
            return f"{actor.get('unavailable')} {actor.get('supervisor_error')}"

        up.wait_for(
            "the camera reported unavailable",
            lambda s: any(a.get("supervisor_error") or "unavailable" in a for a in pair(s)),
            timeout_s=60,
        )
        unavailable_s = time.monotonic() - lost_at
        up.wait_for(
            "the lost node named",
            lambda s: all("node lost" in said(a) for a in pair(s)),
            timeout_s=90,
        )
        node_lost_s = time.monotonic() - lost_at
        status = up.wait_for(
            "the replacements pending for camera_node",
            lambda s: all(
                "pending: no node has resource camera_node" in str(a.get("unavailable"))
                for a in (s["cameras"]["cam_stage"], s["embedders"]["embedder"])
            ),
            timeout_s=90,
        )
        assert status["nodes"][worker]["alive"] is False
        # the head's actors, the API and the store carry on
        assert "unavailable" not in status["alerts"]["alerts"]
        assert all("unavailable" not in a for a in status["index"].values())
        human = subprocess.run(
            [sys.executable, "-m", "lfr_actors.cli", "status", str(topology)],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        )  # fmt: skip
        assert human.returncode == 0, human.stderr
        assert "pending: no node has resource camera_node" in human.stdout
        assert "DEAD" in human.stdout and "Traceback" not in human.stderr

        # --- a node with camera_node returns ---------------------------------------------
        returned_at = time.monotonic()
        ray_cluster.start_worker("worker2", {"camera_node": 4})
        flowing(up, timeout_s=240)
        recover_s = time.monotonic() - returned_at
        status = up.status()
        assert status is not None
        cam, emb = status["cameras"]["cam_stage"], status["embedders"]["embedder"]
        assert cam["restarts"] >= 1 and emb["restarts"] >= 1
        assert cam["node_id"] == emb["node_id"] != worker
        assert cam["node_id"] in status["nodes"] and status["nodes"][cam["node_id"]]["alive"]
        assert status["alerts"]["alerts"]["restarts"] == 0
        assert unavailable_s < 30 and node_lost_s < 60 and recover_s < 180
        assert up.api_failures == 0
        print(
            f"\nmultinode: actors unavailable {unavailable_s:.1f} s and their node named as lost "
            f"{node_lost_s:.1f} s after the node was killed; frames flowing {recover_s:.1f} s "
            f"after a node with camera_node joined\n{human.stdout}"
        )

        # --- lost again, and stopped while its replacements wait: the drain still ends ----
        ray_cluster.kill("worker2")
        up.wait_for(
            "the second loss reported",
            lambda s: all("unavailable" in a for a in pair(s)),
            timeout_s=90,
        )
        stopping_at = time.monotonic()
        output = up.stop(timeout_s=90)
        print(f"drain with the worker node lost: {time.monotonic() - stopping_at:.1f} s")
    finally:
        output = up.stop()
    assert up.proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    alerts = stored_alerts(up.data_dir)
    assert {a["entry_id"] for a in alerts} == {"lin_manuel_miranda"}, alerts
