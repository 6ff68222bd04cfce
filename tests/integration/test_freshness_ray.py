"""A stale watchlist entry raises no alert through ``lfr up``; a fresh one does.

The deployment declares ``watchlist_max_age_h: 24``. Lin-Manuel Miranda's entry is in the
store approved 25 h ago (stale from the start); Alex Lacamoire's comes from the watchlist
file (all three of his photos), approved as the deployment starts (fresh). On the Hamilton
clip both alert when fresh (tests/integration/test_pipeline_ray.py); here only Lacamoire
does, the start logs Miranda's entry as stale and not indexed, and the report lists it as
stale, still active and whole. Needs ../shared/data and the default
models, and real Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lfr_actors.control.registration import enrolment_pipeline, register_deployment
from lfr_actors.enrolment import enrol_image
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.images import load_image
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Origin
from lfr_actors.testing.declarations import make_entry
from lfr_actors.topology.loader import load_topology
from tests.conftest import REPO, lfr_test_home
from tests.deployments import (
    EVERY_PHOTO,
    PEOPLE,
    stored_alerts,
    write_deployment,
)

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]


def test_a_stale_entry_raises_no_alert_and_a_fresh_one_does(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    path = write_deployment(
        tmp_path, shared_data, ["alex_lacamoire"], min_sightings=1, photos=EVERY_PHOTO
    )
    data = yaml.safe_load(path.read_text())
    data["deployment"]["watchlist_max_age_h"] = 24
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    topology = load_topology(path)
    (tmp_path / "data").mkdir()
    # The same enrolment as the start's (the topology's detector settings).
    pipeline = enrolment_pipeline(topology, DEFAULT_EMBEDDER_SPEC, lfr_test_home(), progress=False)
    photo = load_image(shared_data / "faces" / "people" / PEOPLE["lin_manuel_miranda"])
    approved_at = time.time() - 25 * 3600
    with Database(tmp_path / "data" / "alerts.sqlite3") as db:
        register_deployment(Deployments(db), topology)
        Deployments(db, clock=lambda: approved_at).add_entry(
            "itest",
            make_entry("lin_manuel_miranda", category="test", legal_basis="test"),
            enrol_image(pipeline, photo),
            actor=Actor("PC Brown"),
            origin=Origin.API,
            approved_by=Actor("Supt Clarke"),
        )
    result = subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "up", str(path), "--until-eof",
         "--home", str(lfr_test_home())],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    stale = [e for e in logged if e.get("event") == "watchlist_entry_stale"]
    assert [(e["entry"], e["indexed"]) for e in stale] == [("lin_manuel_miranda", False)]
    summary = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert summary["faces"] >= 60
    per_entry = [a["entry_id"] for a in stored_alerts(tmp_path / "data")]
    assert "lin_manuel_miranda" not in per_entry  # stale: not searched
    assert per_entry.count("alex_lacamoire") >= 1  # fresh: searched
    with Database(tmp_path / "data" / "alerts.sqlite3", readonly=True) as db:
        store = Deployments(db)
        report = store.report("itest")
        entry = store.entry("itest", "lin_manuel_miranda")
    assert report["watchlist"]["stale_entries"] == ["lin_manuel_miranda"]
    assert report["watchlist_max_age_h"] == 24
    assert (str(entry.state), entry.templates) == ("active", 1)  # nothing destroyed
