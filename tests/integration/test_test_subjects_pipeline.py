"""A test subject through the real pipeline: ``lfr up`` on the Hamilton clip, then a pass.

Lin-Manuel Miranda (who appears in the clip) is enrolled as a test subject from his shared
photo, beside a suspect who does not appear. The run's alert of him is a test subject's:
flagged in the store and in the JSON lines, out of the suspects' queue; a pass recorded
with ``lfr test-subjects pass`` at the time the cameras started is alerted in the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lfr_actors.models.cache import ModelCache
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from tests.conftest import REPO
from tests.deployments import write_deployment
from tests.lfr_up import lfr_up

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]


def test_a_test_subjects_alert_stays_out_of_the_suspects_queue_and_proves_the_pass(
    model_cache: ModelCache, tmp_path: Path, shared_data: Path
) -> None:
    topology = write_deployment(tmp_path, shared_data, ["lin_manuel_miranda", "obama"])
    watchlist_path = tmp_path / "watchlist.yaml"
    watchlist = yaml.safe_load(watchlist_path.read_text())
    volunteer = watchlist["entries"][0]
    del volunteer["legal_basis"]
    volunteer.update(test_subject=True, consent_ref="CONSENT-ITEST-1")
    watchlist_path.write_text(yaml.safe_dump(watchlist, sort_keys=False))

    started = time.monotonic()
    up = lfr_up(topology, "--until-eof")
    out, err = up.communicate(timeout=600)
    elapsed_s = time.monotonic() - started
    assert up.returncode == 0, err[-3000:]
    # Off a terminal, each alert event is a JSON line (log lines are JSON too: no distance).
    lines = [json.loads(line) for line in out.splitlines() if '"best_distance": ' in line]
    assert lines and {line["entry_id"] for line in lines} == {"lin_manuel_miranda"}, out
    assert all(line["test_subject"] is True for line in lines)

    store_path = tmp_path / "data" / "alerts.sqlite3"
    with AlertStore(store_path, readonly=True) as alerts:
        assert alerts.list_alerts(deployment_id="itest", test_subject=False).alerts == []
        (alert,) = alerts.list_alerts(deployment_id="itest", test_subject=True).alerts
    with Database(store_path, readonly=True) as db:
        entry = Deployments(db).entry("itest", "lin_manuel_miranda")
    assert entry.approved_at is not None
    # The volunteer walked past when the cameras started: the entry's approval at start.
    recorded = subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "test-subjects", "pass", "--db",
         str(store_path), "--deployment", "itest", "--entry", "lin_manuel_miranda",
         "--camera", "cam_stage", "--at", str(entry.approved_at)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    assert "(alerted)" in recorded.stdout, recorded.stdout
    with Database(store_path) as db:
        report = Deployments(db).report("itest")
    figures = report["test_subjects"]
    assert (figures["passes_recorded"], figures["passes_alerted"]) == (1, 1)
    assert figures["true_positive_rate"] == 1.0
    assert report["alerts"]["total"] == 0  # the suspect, who is not in the clip
    seconds = figures["seconds_to_alert"]["median"]
    print(
        f"test subject alert {alert['id']}: pass to first sighting {seconds:.1f} s, "
        f"run {elapsed_s:.0f} s"
    )
