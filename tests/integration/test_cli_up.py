"""``lfr up``, ``lfr status`` and ``lfr down`` as an operator runs them, bad inputs included."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from lfr_actors.control.terminal import UPDATE_INTERVAL_S
from lfr_actors.models.cache import ModelCache
from lfr_actors.store.audit import SYSTEM
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.topology.loader import load_topology
from lfr_actors.topology.schema import NewDeployment
from tests.conftest import REPO, lfr_test_home
from tests.deployments import write_deployment
from tests.lfr_up import lfr_up

pytestmark = [pytest.mark.models, pytest.mark.data]


def lfr(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False,
    )  # fmt: skip


def _edit(path: Path, change: dict) -> None:
    data = yaml.safe_load(path.read_text())
    for dotted, value in change.items():
        target = data
        *parents, last = dotted.split(".")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_bad_topology_exits_2_with_the_line(tmp_path: Path, shared_data: Path) -> None:
    topology = write_deployment(tmp_path, shared_data, ["obama"])
    _edit(topology, {"cameras.0.fps": 0})
    result = lfr("up", str(topology), "--home", str(lfr_test_home()))
    assert result.returncode == 2
    assert f"{topology}:" in result.stderr and "cameras[0].fps" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing started


def test_watchlist_image_that_fails_enrolment_stops_up(
    model_cache: ModelCache, tmp_path: Path, shared_data: Path
) -> None:
    topology = write_deployment(tmp_path, shared_data, ["obama", "biden"])
    watchlist = tmp_path / "watchlist.yaml"
    data = yaml.safe_load(watchlist.read_text())
    data["entries"][1]["images"] = [str(shared_data / "detection" / "dogs.jpg")]
    data["entries"][0]["images"].append(str(shared_data / "faces/scenes/obama_and_biden.jpg"))
    watchlist.write_text(yaml.safe_dump(data))
    result = lfr("up", str(topology), "--home", str(lfr_test_home()))
    assert result.returncode == 1
    assert "watchlist enrolment failed" in result.stderr
    assert "biden:" in result.stderr and "dogs.jpg: no_face" in result.stderr
    assert "obama:" in result.stderr and "obama_and_biden.jpg: multiple_faces" in result.stderr
    assert "Traceback" not in result.stderr
    store = tmp_path / "data" / "alerts.sqlite3"
    with Database(store) as db:
        assert Deployments(db).find("itest") is None  # a refused start records nothing
    # The operator fixes the watchlist and, while at it, corrects a deployment field: the
    # next start is not blocked by a record of the one that never ran.
    data["entries"][1]["images"] = [str(shared_data / "faces/people/biden/biden.jpg")]
    data["entries"][0]["images"].pop()
    watchlist.write_text(yaml.safe_dump(data))
    _edit(topology, {"deployment.location": "the corrected place"})
    started = lfr("up", str(topology), "--until-eof", "--home", str(lfr_test_home()))
    assert started.returncode == 0, started.stderr[-3000:]
    # Off a terminal the serving line is the first JSON line, before any alert event.
    first = json.loads(started.stdout.splitlines()[0])
    assert first["event"] == "serving" and first["deployment"] == "itest"
    assert first["api"].startswith("http://127.0.0.1:") and not first["api"].endswith(":0")
    assert first["console"] == first["api"] + "/console"
    with Database(store) as db:
        assert Deployments(db).get("itest").location == "the corrected place"


def test_port_in_use_is_one_line(tmp_path: Path, shared_data: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        topology = write_deployment(tmp_path, shared_data, ["obama"])
        _edit(topology, {"api.port": port})
        result = lfr("up", str(topology), "--home", str(lfr_test_home()))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"api.port {port} on 127.0.0.1 is already in use" in lines[0]


def test_unreachable_ray_address_is_one_line(tmp_path: Path, shared_data: Path) -> None:
    topology = write_deployment(tmp_path, shared_data, ["obama"])
    started = time.monotonic()
    result = lfr("up", str(topology), "--address", "127.0.0.1:1", "--home", str(lfr_test_home()))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Ray at 127.0.0.1:1" in lines[0]
    assert time.monotonic() - started < 60


def test_status_and_down_with_an_unreachable_camera(
    model_cache: ModelCache, tmp_path: Path, shared_data: Path
) -> None:
    topology = write_deployment(tmp_path, shared_data, ["lin_manuel_miranda"], at_end="loop")
    data = yaml.safe_load(topology.read_text())
    data["cameras"].append(
        {
            "id": "cam_gate",
            "fps": 5,
            "source": {"type": "url", "url": "rtsp://127.0.0.1:9/stream"},
            "reconnect": {"initial_backoff_s": 0.2, "max_backoff_s": 1.0},
        }
    )
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    up = lfr_up(topology)
    try:
        deadline = time.monotonic() + 180
        status: dict = {}
        while time.monotonic() < deadline:
            time.sleep(1.0)
            assert up.poll() is None, up.communicate()[1][-3000:]
            result = lfr("status", str(topology), "--json", timeout=60)
            if result.returncode != 0:
                continue
            status = json.loads(result.stdout)
            stage = status["cameras"].get("cam_stage", {})
            gate = status["cameras"].get("cam_gate", {})
            if stage.get("frames_processed", 0) >= 10 and gate.get("reconnects", 0) >= 2:
                break
        else:
            pytest.fail(f"deployment did not reach the expected state: {status}")
        assert status["cameras"]["cam_gate"]["state"] in {"reconnecting", "connecting"}
        assert "cannot open" in (status["cameras"]["cam_gate"]["last_error"] or "")
        assert status["embedders"]["embedder"]["providers"] == ["CPUExecutionProvider"]
        human = lfr("status", str(topology), timeout=60)
        assert (
            human.returncode == 0 and "cam_gate" in human.stdout and "reconnecting" in human.stdout
        )
        down = lfr("down", str(topology), timeout=180)
        assert down.returncode == 0, down.stderr
        out, err = up.communicate(timeout=120)
        assert up.returncode == 0, err[-3000:]
        summary = json.loads(out[out.index("{\n") :])
        assert summary["frames"] >= 10
        assert not (tmp_path / "data" / "lfr.run.json").exists()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGKILL)
            up.wait()


def test_a_topology_that_differs_from_the_stored_deployment_is_refused(
    model_cache: ModelCache, tmp_path: Path, shared_data: Path
) -> None:
    topology = write_deployment(tmp_path, shared_data, ["obama"])
    _edit(topology, {"api.port": 0})
    with Database(tmp_path / "data" / "alerts.sqlite3") as db:
        record = load_topology(topology).deployment
        Deployments(db).create(
            NewDeployment(
                id=record.id,
                authorised_by="Supt Someone Else",
                purpose=record.purpose,
                location="another place",
                start=record.start,
                end=record.end,
                threshold=0.5,
            ),
            actor=SYSTEM,
        )
    result = lfr("up", str(topology), "--home", str(lfr_test_home()))
    assert result.returncode == 1
    message = result.stderr
    assert "differs from the topology file" in message
    assert "deployment authorised_by: the store has 'Supt Someone Else', the file 'test'" in message
    assert "deployment location: the store has 'another place', the file 'ci'" in message
    # The threshold is governed in the store (changed through the API, audited): it is not
    # a difference, the store's value is in force.
    assert "deployment threshold" not in message
    # The way on that the message names: print the record as a section, paste it in, start.
    store = tmp_path / "data" / "alerts.sqlite3"
    command = f"lfr deployments topology itest --db {store}"
    assert f"`{command}` prints the recorded section" in message
    printed = lfr(*command.split()[1:])
    assert printed.returncode == 0, printed.stderr
    data = yaml.safe_load(topology.read_text())
    data["deployment"] = yaml.safe_load(printed.stdout)["deployment"]
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    started = lfr("up", str(topology), "--until-eof", "--home", str(lfr_test_home()))
    assert started.returncode == 0, started.stderr[-3000:]
    assert json.loads(started.stdout.splitlines()[0])["event"] == "serving"


def test_serve_prepares_a_watchlist_before_the_window_opens(
    model_cache: ModelCache, tmp_path: Path, shared_data: Path
) -> None:
    topology = write_deployment(tmp_path, shared_data, ["obama"])
    later = time.time() + 86400
    _edit(
        topology,
        {
            "deployment.start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later)),
            "deployment.end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later + 3600)),
        },
    )
    serve = lfr_up(topology, command="serve", env=dict(os.environ))
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        assert "serving the API of deployment itest at http://127.0.0.1:" in line, (
            line + serve.stderr.read() if serve.poll() is not None else line
        )
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        with Database(tmp_path / "data" / "alerts.sqlite3") as db:
            secret = TokenStore(db).create("Insp Check", Role.AUTHORISER, by=SYSTEM).secret
        headers = {"Authorization": f"Bearer {secret}"}
        deadline = time.monotonic() + 120
        entries: list[dict] = []
        while time.monotonic() < deadline and not entries:
            reply = requests.get(f"{url}/v1/deployments/itest/entries", headers=headers, timeout=10)
            if reply.status_code == 200:
                entries = reply.json()["entries"]
            time.sleep(0.5)
        assert [(e["id"], e["state"], e["origin"]) for e in entries] == [
            ("obama", "active", "file")
        ]
        assert entries[0]["approved_by"] == "test"  # the deployment's authority
        # A second run from the same data folder is refused before it touches anything (it
        # would write the same store and revoke this run's tokens); this one serves on.
        second = lfr_up(topology, env=dict(os.environ))
        _, refused = second.communicate(timeout=120)
        assert second.returncode == 1, refused
        assert "another lfr up or lfr serve already runs from" in refused, refused
        again = requests.get(f"{url}/v1/deployments/itest/entries", headers=headers, timeout=10)
        assert again.status_code == 200
        deployment = requests.get(f"{url}/v1/deployments/itest", headers=headers, timeout=10)
        assert deployment.json()["state"] == "scheduled"
        console = requests.get(f"{url}/console", timeout=10)
        assert console.status_code == 200 and "text/html" in console.headers["Content-Type"]
        # Another deployment in the store whose window has passed: `serve` (no cameras, no
        # pipeline of it running) still closes it, destroying its watchlist (invariant 3).
        with Database(tmp_path / "data" / "alerts.sqlite3") as db:
            now = time.time()
            ended = make_deployment("ended", now - 60, now - 1, 0.5)
            Deployments(db).create(ended, actor=SYSTEM)
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline and state != "closed":
            time.sleep(0.5)
            reply = requests.get(f"{url}/v1/deployments/ended", headers=headers, timeout=10)
            state = reply.json()["state"]
        assert state == "closed"
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
        assert serve.returncode == 0, serve.stderr.read()[-3000:]
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_on_a_terminal_up_prints_where_it_serves_and_readable_alert_lines(
    model_cache: ModelCache, tmp_path: Path, shared_data: Path
) -> None:
    topology = write_deployment(tmp_path, shared_data, ["lin_manuel_miranda", "obama"])
    main, terminal = pty.openpty()
    started = time.monotonic()
    up = lfr_up(topology, "--until-eof", stdout=terminal)
    os.close(terminal)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        up.wait(timeout=300)
        elapsed_s = time.monotonic() - started
        errors = up.stderr.read() if up.stderr else ""
    finally:
        os.close(main)
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, errors[-3000:]
    lines = output.decode().splitlines()
    assert lines[0].startswith("lfr: deployment itest is running; API http://127.0.0.1:"), lines[:3]
    api = lines[0].split(" API ", 1)[1].split(",", 1)[0]
    assert not api.endswith(":0") and f"console {api}/console;" in lines[0]
    # One readable line per alert raised, its updates at most one per UPDATE_INTERVAL_S
    # (plus its last state at the end); no JSON event lines, and no per-sighting log lines.
    alert_lines = [line for line in lines if " alert " in line]
    raised = [line for line in alert_lines if line.split()[2] == "raised"]
    assert len(raised) == 1 and "lin_manuel_miranda" in raised[0], lines
    assert "best distance" in raised[0] and "obama" not in " ".join(alert_lines)
    assert {line.split()[-1] for line in alert_lines} == {raised[0].split()[-1]}  # one alert
    updates = [line for line in alert_lines if line.split()[2] == "updated"]
    assert len(updates) <= elapsed_s / UPDATE_INTERVAL_S + 1, (len(updates), elapsed_s)
    assert not any(line.startswith('{"event"') for line in lines), lines
    assert "alert_raised" not in errors and "alert_updated" not in errors, errors[-2000:]
