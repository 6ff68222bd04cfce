"""kill -9 of every actor of a running deployment, from outside, one after another.

A real ``lfr up`` (subprocess, its own local Ray) on the Hamilton clip looping in real time,
Lin-Manuel Miranda on the watchlist and in view. Each actor's process is found by the pid
the deployment reports for it (checked against the process title Ray gives it,
``ray::CameraActor`` etc., so that nothing else is ever killed) and sent SIGKILL: camera,
embedder, index router, index shard, alert actor. For each, the figures: the time until
the actor is back (a new process, answering) and frames flow through the pipeline again.
Throughout, the API answers; at the end the drain exits 0, no alert id is stored twice,
every alert is for the person in view, the store passes SQLite's integrity check and the
audit chain verifies. The alerts per watchlist entry are printed as a figure: whether a
person continuously in view keeps one alert across restarts depends on the sighting ids
(issue 8 item 1), which this test does not yet assert.

Needs ../shared/data and the default models.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO
from tests.deployments import stored_alerts, write_deployment
from tests.integration.test_multinode import RunningDeployment, flowing
from tests.lfr_up import descendants, kill_all

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

# (status group, actor id, the class Ray names the process after)
ACTORS = [
    ("cameras", "cam_stage", "CameraActor"),
    ("embedders", "embedder", "EmbedderActor"),
    ("index", "index", "IndexRouterActor"),
    ("index", "index-0", "IndexShardActor"),
    ("alerts", "alerts", "AlertActor"),
]


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def actor(status: dict[str, Any], group: str, actor_id: str) -> dict[str, Any]:
    found: dict[str, Any] = status[group][actor_id]
    return found


def replaced(status: dict[str, Any], *, group: str, actor_id: str, restarts: int, pid: int) -> bool:
    """The actor answers again, restarted once more, in another process."""
    a = actor(status, group, actor_id)
    return "unavailable" not in a and a["restarts"] > restarts and a["pid"] != pid


def looping_miranda(tmp_path: Path, shared_data: Path) -> RunningDeployment:
    """``lfr up`` of one looping, real-time camera on Miranda's clip, one index shard."""
    topology = write_deployment(
        tmp_path,
        shared_data,
        ["lin_manuel_miranda"],
        at_end="loop",
        pace="realtime",
        shards=1,
        reembed_every=2,
    )
    return RunningDeployment(topology)


def test_kill_9_of_each_actor_recovers(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    up = looping_miranda(tmp_path, shared_data)
    figures: dict[str, float] = {}
    sightings: list[str] = []  # the alert's sightings after each recovery: a figure
    try:
        up.wait_for(
            "the first alert",
            lambda s: s["alerts"]["store"].get("alerts", 0) >= 1,
            timeout_s=300,
        )
        flowing(up)
        for group, actor_id, cls in ACTORS:
            before = actor(up.wait_for("status", lambda s: True, 30), group, actor_id)
            pid, restarts = before["pid"], before["restarts"]
            assert isinstance(pid, int) and pid != os.getpid()
            title = process_title(pid)
            assert title.startswith(f"ray::{cls}"), (actor_id, pid, title)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)

            up.wait_for(
                f"{actor_id} restarted after kill -9",
                partial(replaced, group=group, actor_id=actor_id, restarts=restarts, pid=pid),
                timeout_s=120,
            )
            flowing(up)
            figures[actor_id] = time.monotonic() - killed_at
            assert figures[actor_id] < 90, figures  # 5-10 s measured; a loaded machine is slow
            stored = stored_alerts(up.data_dir)
            sightings.append(f"{actor_id} {sum(a['sightings'] for a in stored)}")
            assert not Path(f"/proc/{pid}").exists() or not process_title(pid).startswith("ray::")
        final = up.wait_for("status", lambda s: True, 30)
        assert up.api_failures == 0  # the API answered every request, through every kill
        stats_alerts = actor(final, "alerts", "alerts")
    finally:
        output = up.stop()
    assert up.proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]

    alerts = stored_alerts(up.data_dir)
    ids = [a["id"] for a in alerts]
    assert len(ids) == len(set(ids))
    per_entry = Counter(a["entry_id"] for a in alerts)
    assert set(per_entry) == {"lin_manuel_miranda"}
    with sqlite3.connect(f"file:{up.data_dir / 'alerts.sqlite3'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    verify = subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "audit", "verify", "--topology", str(up.topology)],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print(
        "\nkill -9, seconds until the actor is back and frames flow again: "
        + ", ".join(f"{name} {s:.1f}" for name, s in figures.items())
        + f"\nsightings stored after each recovery: {', '.join(sightings)}"
        + f"\nalerts per entry: {dict(per_entry)}; alert actor after its restart: "
        f"duplicates {stats_alerts.get('duplicates')}, "
        f"sightings received {stats_alerts.get('sightings_received')}"
    )


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_kill_9_of_the_driver_leaves_no_ray_process_behind(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    """Ray's agents used to outlive a killed driver by 60-90 s; now all go within seconds."""
    up = looping_miranda(tmp_path, shared_data)
    try:
        flowing(up)
        left = {pid: process_title(pid) for pid in descendants(up.proc.pid)}
        titles = set(left.values())
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= titles, titles
        assert any(t.startswith("ray::CameraActor") for t in titles), titles
        killed_at = time.monotonic()
        up.proc.kill()
        up.proc.wait()
        while time.monotonic() - killed_at < 60:
            left = {pid: title for pid, title in left.items() if running(pid)}
            if not left:
                break
            time.sleep(0.25)
        gone_s = time.monotonic() - killed_at
    finally:
        kill_all(descendants(up.proc.pid))  # nothing, unless the test failed early
        up.stop()
    assert not left, f"still running {gone_s:.0f} s after the driver was killed: {left}"
    assert gone_s < 20
    with sqlite3.connect(f"file:{up.data_dir / 'alerts.sqlite3'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    print(f"\nkill -9 of the driver: every Ray process it started gone after {gone_s:.1f} s")
