"""``lfr up`` stores the topology's ``alerts.calibration`` once its checks have passed.

Models and enrolment are test doubles (as in test_registration.py); the store, the topology
file (its relative path) and the calibration file are real.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from lfr_actors.control import preflight, registration
from lfr_actors.control.paths import DeploymentError
from lfr_actors.store.calibrations import false_alerts
from lfr_actors.store.deployments import Deployments
from lfr_actors.topology.validate import CheckReport
from tests.calibration_samples import sample_calibration
from tests.deployments import write_deployment
from tests.unit.test_registration import _files, _start, _store


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model preparation or loading: these tests are about the record, not the faces."""
    monkeypatch.setattr(registration, "prepare", lambda *a, **k: None)
    monkeypatch.setattr(registration.FacePipeline, "build", lambda *a, **k: object())


def _with_calibration(path: Path, document: Any, name: str = "calibration.json") -> None:
    (path.parent / name).write_text(document if isinstance(document, str) else json.dumps(document))
    data = yaml.safe_load(path.read_text())
    data["alerts"]["calibration"] = name  # relative to the topology file's folder
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _audit(db_path: Path) -> list[tuple[str, str]]:
    raw = sqlite3.connect(db_path)
    try:
        return raw.execute(
            "SELECT actor, subject FROM audit_log WHERE action = 'deployment.calibration'"
        ).fetchall()
    finally:
        raw.close()


def test_the_topologys_calibration_is_stored_once_and_shown(
    tmp_path: Path, shared_data: Path, no_models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    _with_calibration(path, sample_calibration(0.001))
    monkeypatch.setattr(registration, "enrol_watchlist", lambda *a, **k: {})
    db = _start(*_files(path), tmp_path)
    try:
        figures = false_alerts(Deployments(db), "itest")
    finally:
        db.close()
    assert figures["calibration"]["model"] == "dlib_resnet_v1"
    assert figures["expected_per_1000"] == 0.0  # no entry enrolled by the double: N = 0
    store = tmp_path / "data" / "alerts.sqlite3"
    assert _audit(store) == [("topology file", "itest")]
    _start(*_files(path), tmp_path).close()  # the same file again: nothing new audited
    assert _audit(store) == [("topology file", "itest")]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", r"calibration.json:1: not valid JSON"),
        ({"format": "lfr-calibration", "version": 9}, "version 9; this program reads version 1"),
        ("other-model", "calibrates model arcface 2 .cosine., but the deployment's embedder"),
    ],
)
def test_a_bad_or_other_models_calibration_refuses_the_start_writing_nothing(
    tmp_path: Path,
    shared_data: Path,
    no_models: None,
    monkeypatch: pytest.MonkeyPatch,
    document: Any,
    message: str,
) -> None:
    if document == "other-model":
        document = sample_calibration(0.001)
        document["model"].update(name="arcface", version="2", metric="cosine")
    path = write_deployment(tmp_path, shared_data, ["obama"])
    _with_calibration(path, document)
    enrolled: list[bool] = []
    monkeypatch.setattr(registration, "enrol_watchlist", lambda *a, **k: enrolled.append(True))
    with pytest.raises(DeploymentError, match=message):
        _start(*_files(path), tmp_path)
    assert enrolled == []  # refused before the models and the enrolment
    with _store(tmp_path) as db:
        assert Deployments(db).find("itest") is None


def test_validate_checks_the_calibration_file(tmp_path: Path, shared_data: Path) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    _with_calibration(path, sample_calibration(0.001))
    report = CheckReport()
    preflight._check_calibration(_files(path)[0], report)
    assert report.problems == [] and report.checked[0].startswith("calibration  dlib_resnet_v1")
    _with_calibration(path, "[]")
    report = CheckReport()
    preflight._check_calibration(_files(path)[0], report)
    assert len(report.problems) == 1 and "a JSON object is expected" in report.problems[0]


def test_a_stored_calibration_damaged_on_disk_refuses_the_start_in_one_line(
    tmp_path: Path, shared_data: Path, no_models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    _with_calibration(path, sample_calibration(0.001))
    monkeypatch.setattr(registration, "enrol_watchlist", lambda *a, **k: {})
    _start(*_files(path), tmp_path).close()
    raw = sqlite3.connect(tmp_path / "data" / "alerts.sqlite3")
    with raw:
        raw.execute("UPDATE deployments SET calibration = '[]' WHERE id = 'itest'")
    raw.close()
    data = yaml.safe_load(path.read_text())
    del data["alerts"]["calibration"]  # the file names none: the stored one is checked
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(DeploymentError) as refused:
        _start(*_files(path), tmp_path)
    message = str(refused.value)
    assert "the calibration stored for deployment 'itest' cannot be read" in message
    assert "\n" not in message
