"""Registration writes the deployment's record only once the start has passed its checks.

The models and the enrolment are test doubles here (the real ones run in
tests/integration/test_cli_up.py); the store, the topology and the checks are real.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lfr_actors.control import registration
from lfr_actors.control.live import Live
from lfr_actors.control.paths import DeploymentError, DeploymentPaths
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.topology.loader import load_topology, load_watchlist
from lfr_actors.topology.schema import Topology, Watchlist
from tests.deployments import write_deployment


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model preparation or loading: these tests are about the record, not the faces."""
    monkeypatch.setattr(registration, "prepare", lambda *a, **k: None)
    monkeypatch.setattr(registration.FacePipeline, "build", lambda *a, **k: object())


def _files(path: Path) -> tuple[Topology, Watchlist]:
    topology = load_topology(path)
    assert topology.watchlist is not None
    return topology, load_watchlist(Path(topology.watchlist.file))


def _start(topology: Topology, watchlist: Watchlist | None, tmp_path: Path) -> Database:
    paths = DeploymentPaths(Path(topology.storage.data_dir))
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    live = Live()
    try:
        registration.prepare_and_enrol(
            topology,
            watchlist,
            live=live,
            paths=paths,
            home=tmp_path,
            spec=DEFAULT_EMBEDDER_SPEC,
        )
    except BaseException:
        if live.db is not None:
            live.db.close()
        raise
    assert live.db is not None
    return live.db


def _edit(path: Path, **deployment: Any) -> None:
    data = yaml.safe_load(path.read_text())
    data["deployment"].update(deployment)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _store(tmp_path: Path) -> Database:
    return Database(tmp_path / "data" / "alerts.sqlite3")


def test_a_failed_enrolment_writes_no_record_and_a_corrected_file_starts(
    tmp_path: Path, shared_data: Path, no_models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])

    def rejected(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise DeploymentError("watchlist enrolment failed; fix or remove these images")

    monkeypatch.setattr(registration, "enrol_watchlist", rejected)
    with pytest.raises(DeploymentError, match="watchlist enrolment failed"):
        _start(*_files(path), tmp_path)
    with _store(tmp_path) as db:
        assert Deployments(db).find("itest") is None
        assert Deployments(db).list() == []

    # The operator fixes the watchlist and, while at it, a deployment field.
    monkeypatch.setattr(registration, "enrol_watchlist", lambda *a, **k: {})
    _edit(path, location="the corrected place")
    db = _start(*_files(path), tmp_path)
    try:
        record = Deployments(db).get("itest")
        assert record.location == "the corrected place"
        assert record.created_by == "topology file"
    finally:
        db.close()


def test_a_window_already_ended_writes_no_record(
    tmp_path: Path, shared_data: Path, no_models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    now = time.time()
    _edit(
        path,
        start=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 7200)),
        end=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
    )
    enrolled: list[bool] = []
    monkeypatch.setattr(registration, "enrol_watchlist", lambda *a, **k: enrolled.append(True))
    with pytest.raises(DeploymentError, match="'itest''s authorised window ended"):
        _start(*_files(path), tmp_path)
    assert enrolled == []  # refused before minutes of enrolment, not after
    with _store(tmp_path) as db:
        assert Deployments(db).find("itest") is None


def test_a_record_that_ran_and_differs_names_the_command_that_prints_it(
    tmp_path: Path, shared_data: Path, no_models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    monkeypatch.setattr(registration, "enrol_watchlist", lambda *a, **k: {})
    _start(*_files(path), tmp_path).close()
    _edit(path, location="somewhere else")
    with pytest.raises(DeploymentError) as refused:
        _start(*_files(path), tmp_path)
    message = str(refused.value)
    assert "deployment location: the store has 'ci', the file 'somewhere else'" in message
    store = tmp_path / "data" / "alerts.sqlite3"
    assert f"`lfr deployments topology itest --db {store}`" in message
    with _store(tmp_path) as db:
        assert Deployments(db).get("itest").location == "ci"  # the record is untouched
