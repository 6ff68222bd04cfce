"""Restarts from outside: ``lfr up`` killed with SIGKILL and started again, and a file run
started twice. A person continuously in view (Lin-Manuel Miranda on the Hamilton clip)
must keep ONE alert that goes on updating; no new sighting may be dropped as a
"duplicate" of the earlier run's (before the run epoch was in the sighting ids, 114 of 194
were after a driver crash, 36 of 162 after a clean restart).

Each test prints its figures: sightings received by the new run's alert actor, dropped as
duplicates, stored, alerts, and the recovery time.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO
from tests.deployments import write_deployment
from tests.integration.test_restarts_ray import PERSON, all_alerts_by_entry, seen
from tests.lfr_up import descendants, kill_all, lfr_up

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

FUSION_WINDOW_S = 300
"""Longer than a restart of ``lfr up`` takes on a loaded CI machine: such a restart must fuse."""


def _topology(tmp_path: Path, shared_data: Path, **kwargs: Any) -> Path:
    path = write_deployment(tmp_path, shared_data, [PERSON, "obama"], reembed_every=2, **kwargs)
    data = yaml.safe_load(path.read_text())
    data["alerts"]["fusion_window_s"] = FUSION_WINDOW_S
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_the_one_alert_kept(before: Any, after: Any, summary: dict[str, Any], data: Path) -> None:
    """The second run added to the first run's one alert (one alert per entry in all) and
    took none of its sightings for duplicates."""
    assert after.alert_ids == before.alert_ids and len(after.alert_ids) == 1
    assert all(n == 1 for n in all_alerts_by_entry(data).values())
    assert summary["sightings_duplicate"] == 0


def _summary(stdout: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(stdout[stdout.index("{\n") :])
    return summary


def _wait_for(condition: Any, timeout_s: float, what: str, up: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if up.poll() is not None:
            pytest.fail(f"lfr up ended while waiting for {what}: {up.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.5)


def test_a_driver_killed_with_sigkill_and_started_again_keeps_the_alert(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    topology = _topology(tmp_path, shared_data, at_end="loop", pace="realtime")
    data = tmp_path / "data"
    leftovers: list[int] = []
    first = lfr_up(topology)
    second: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: seen(data).sightings >= 3, 240, "alert", first)
        before = seen(data)
        leftovers = descendants(first.pid)
        killed_at = time.time()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = lfr_up(topology)
        restart = second
        _wait_for(
            lambda: (
                seen(data, since=killed_at).first_stored_after is not None
                and seen(data).sightings >= before.sightings + 8
            ),
            240,
            "sighting after the restart",
            restart,
        )
        restarted = seen(data, since=killed_at)
        down = subprocess.run(
            [sys.executable, "-m", "lfr_actors.cli", "down", str(topology)],
            capture_output=True, text=True, timeout=180, cwd=REPO, check=False,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr[-2000:]
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err[-3000:]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                leftovers += descendants(process.pid)
                process.kill()
                process.wait()
        kill_all(leftovers)
    summary = _summary(out)
    after = seen(data)
    recovery_s = round((restarted.first_stored_after or 0.0) - killed_at, 1)
    print(
        f"\n[driver kill -9] second run: sightings received {summary['sightings_received']}, "
        f"dropped as duplicates {summary['sightings_duplicate']}, stored "
        f"{after.sightings - before.sightings}, alerts {all_alerts_by_entry(data)}, "
        f"recovery (kill to first new sighting stored) {recovery_s} s"
    )
    assert_the_one_alert_kept(before, after, summary, data)
    assert after.sightings - before.sightings >= summary["sightings_received"] - 2 > 0
    assert len(after.epochs) == 2  # one camera run per lfr up
    assert summary["sightings_lost"] == 0


def _event_ids(data: Path) -> list[int]:
    with sqlite3.connect(f"file:{data / 'alerts.sqlite3'}?mode=ro", uri=True) as conn:
        return [int(r[0]) for r in conn.execute("SELECT event_id FROM alert_events ORDER BY 1")]


def test_a_file_run_started_twice_adds_to_the_same_alert(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    topology = _topology(tmp_path, shared_data)
    data = tmp_path / "data"
    jsonl = tmp_path / "alerts.jsonl"
    runs = []
    previous: list[int] = []
    for _ in (1, 2):
        up = lfr_up(topology, "--until-eof", "--alerts-jsonl", str(jsonl))
        try:
            out, err = up.communicate(timeout=600)
        finally:
            if up.poll() is None:
                kill_all(descendants(up.pid))
                up.kill()
                up.wait()
        assert up.returncode == 0, err[-3000:]
        # The drain writes the last event too: stdout has every event of this run, and
        # the JSONL (resumed by the second run) every event stored, the last one included.
        events = _event_ids(data)
        written = [json.loads(line)["event_id"] for line in jsonl.read_text().splitlines()]
        printed = [  # the alert events, not the line that says where the API serves
            line
            for line in out.splitlines()
            if line.startswith('{"event"') and json.loads(line)["event"] != "serving"
        ]
        assert written == events
        assert len(printed) == len(events) - len(previous) > 0
        previous = events
        runs.append((_summary(out), seen(data)))
    (first, seen_1), (second, seen_2) = runs
    stored_2 = seen_2.sightings - seen_1.sightings
    print(
        f"\n[clean restart of a file run] first run: received {first['sightings_received']}, "
        f"stored {seen_1.sightings}; second run: received {second['sightings_received']}, "
        f"dropped as duplicates {second['sightings_duplicate']}, stored {stored_2}, "
        f"alerts {all_alerts_by_entry(data)}"
    )
    assert_the_one_alert_kept(seen_1, seen_2, second, data)
    # The same frames, seen again: every sighting of the second run is a new one, stored.
    assert stored_2 >= 0.8 * seen_1.sightings > 0
    assert len(seen_2.epochs) == 2
