"""``lfr policy show`` / ``set``, and ``lfr up``'s and ``lfr validate``'s policy refusals.

The store file and the topology files are real; ``lfr up``'s registration runs with the
models and the enrolment as test doubles (as in tests/unit/test_registration.py), since the
policy is refused before either would run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lfr_actors.cli.main import main
from lfr_actors.control import registration
from lfr_actors.control.live import Live
from lfr_actors.control.paths import DeploymentError, DeploymentPaths
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.store.audit import Action, Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.policy import ThresholdPolicies
from lfr_actors.topology.loader import load_topology, load_watchlist
from tests.deployments import write_deployment

ADMIN = Actor("Ch Supt Admin")


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refuses bad arguments itself, with exit 2
        code = int(exc.code or 0)
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def audit_count(store: Path) -> int:
    with Database(store, readonly=True) as db:
        return len(AuditLog(db).page(limit=1000).entries)


def test_show_and_set_through_the_cli(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "alerts.sqlite3"
    code, out, err = run(capfd, "policy", "show", "--db", str(store))
    assert code == 1 and out == ""
    assert err.startswith(f"lfr: error: no alert store at {store}")
    Database(store).close()

    code, out, err = run(capfd, "policy", "show", "--db", str(store))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "deployment_max  0.6",
        "entry_max       0.6",
        "origin          the default model's declared threshold (dlib_resnet_v1: 0.6); no "
        "admin has set a policy",
    ]
    code, out, err = run(
        capfd, "policy", "set", "--deployment-max", "0.55", "--entry-max", "0.5",
        "--reason", "NPL calibration", "--db", str(store),
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith("threshold policy set (audited as policy.threshold)\n")
    code, out, _ = run(capfd, "policy", "show", "--json", "--db", str(store))
    shown = json.loads(out)
    assert (shown["deployment_max"], shown["entry_max"], shown["reason"]) == (
        0.55,
        0.5,
        "NPL calibration",
    )
    assert shown["set_by"].startswith("cli:")
    with Database(store, readonly=True) as db:
        [entry] = AuditLog(db).page(action=str(Action.POLICY_CHANGE)).entries
    assert entry.actor == shown["set_by"]
    assert entry.details_map()["to"] == {"deployment_max": 0.55, "entry_max": 0.5}

    # The same values again: unchanged, nothing written.
    before = audit_count(store)
    code, out, _ = run(
        capfd, "policy", "set", "--deployment-max", "0.55", "--entry-max", "0.5",
        "--reason", "again", "--db", str(store),
    )  # fmt: skip
    assert code == 0 and out.startswith("threshold policy unchanged")
    assert audit_count(store) == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--deployment-max", "2"], 2, "argument --deployment-max: '2' is not a distance"),
        (["--deployment-max", "x"], 2, "argument --deployment-max: 'x' is not a distance"),
        (
            ["--deployment-max", "0.5", "--entry-max", "0.6"],
            2,
            "lfr: error: --entry-max: got 0.6; an entry may not be looser than any deployment",
        ),
    ],
)
def test_bad_values_are_one_line_and_nothing_is_written(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    store = tmp_path / "alerts.sqlite3"
    Database(store).close()
    before = audit_count(store)
    got, out, err = run(capfd, "policy", "set", *args, "--reason", "r", "--db", str(store))
    assert (got, out) == (code, "")
    assert message in err.splitlines()[-1]
    assert audit_count(store) == before
    with Database(store, readonly=True) as db:
        assert ThresholdPolicies(db).get().is_default


def test_a_reason_that_is_not_plain_text_is_refused_and_nothing_is_written(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "alerts.sqlite3"
    Database(store).close()
    before = audit_count(store)
    got, out, err = run(
        capfd, "policy", "set", "--deployment-max", "0.5",
        "--reason", "ok\x1b[2J", "--db", str(store),
    )  # fmt: skip
    assert (got, out) == (2, "")
    assert "--reason must be plain text: U+001B at position 2" in err.splitlines()[-1]
    assert audit_count(store) == before


def test_a_policy_an_open_deployment_breaks_is_refused_naming_it(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    store = tmp_path / "data" / "alerts.sqlite3"
    store.parent.mkdir()
    with Database(store) as db:
        registration.register_deployment(Deployments(db), load_topology(path))
    before = audit_count(store)
    code, out, err = run(
        capfd, "policy", "set", "--deployment-max", "0.5", "--reason", "tighter",
        "--topology", str(path),
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err == (
        "lfr: error: the policy is broken by 1 deployment not closed: itest threshold 0.6 "
        "(> deployment_max 0.5); tighten their thresholds (or delete the entries, or close "
        "the deployments) first\n"
    )
    assert audit_count(store) == before


# -- lfr up and lfr validate -----------------------------------------------------------


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """No model work; the list records each enrolment, which a refusal must precede."""
    enrolled: list[bool] = []
    monkeypatch.setattr(registration, "prepare", lambda *a, **k: None)
    monkeypatch.setattr(registration.FacePipeline, "build", lambda *a, **k: object())
    monkeypatch.setattr(
        registration, "enrol_watchlist", lambda *a, **k: enrolled.append(True) or {}
    )
    return enrolled


def _edit(path: Path, section: str, **values: Any) -> None:
    data = yaml.safe_load(path.read_text())
    data[section].update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _entry_threshold(folder: Path, threshold: float) -> None:
    watchlist = folder / "watchlist.yaml"
    data = yaml.safe_load(watchlist.read_text())
    data["entries"][0]["threshold"] = threshold
    watchlist.write_text(yaml.safe_dump(data, sort_keys=False))


def _up(path: Path, tmp_path: Path) -> None:
    """``lfr up``'s registration step, as it runs it."""
    topology = load_topology(path)
    assert topology.watchlist is not None
    watchlist = load_watchlist(Path(topology.watchlist.file))
    paths = DeploymentPaths(Path(topology.storage.data_dir))
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    live = Live()
    try:
        registration.prepare_and_enrol(
            topology, watchlist, live=live, paths=paths, home=tmp_path, spec=DEFAULT_EMBEDDER_SPEC
        )
    finally:
        if live.db is not None:
            live.db.close()


def _set_policy(store: Path, deployment_max: float, entry_max: float) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    with Database(store) as db:
        ThresholdPolicies(db).set(deployment_max, entry_max, actor=ADMIN, reason="calibration")


def test_up_refuses_a_threshold_looser_than_the_default_policy_before_enrolling(
    tmp_path: Path, shared_data: Path, no_models: list[bool]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    _edit(path, "alerts", threshold=0.65)
    with pytest.raises(DeploymentError) as refused:
        _up(path, tmp_path)
    assert str(refused.value).startswith(
        "alerts.threshold 0.65 is looser than the store's threshold policy allows: "
        "deployment_max 0.6 (the default model's declared threshold (dlib_resnet_v1: 0.6)"
    )
    assert "`lfr policy set --deployment-max X --reason TEXT`" in str(refused.value)
    assert no_models == []
    with Database(tmp_path / "data" / "alerts.sqlite3", readonly=True) as db:
        assert Deployments(db).list() == []


def test_up_refuses_what_an_admins_policy_refuses_and_starts_within_it(
    tmp_path: Path, shared_data: Path, no_models: list[bool]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    store = tmp_path / "data" / "alerts.sqlite3"
    _set_policy(store, 0.55, 0.5)
    _entry_threshold(tmp_path, 0.52)
    with pytest.raises(DeploymentError) as refused:
        _up(path, tmp_path)
    lines = str(refused.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        "alerts.threshold 0.6 is looser than the store's threshold policy allows: "
        "deployment_max 0.55 (set by Ch Supt Admin at "
    )
    assert lines[1].startswith(
        "watchlist entry 'obama''s threshold 0.52 is looser than the store's threshold "
        "policy allows: entry_max 0.5"
    )
    assert no_models == []
    with Database(store, readonly=True) as db:
        assert Deployments(db).list() == []

    _edit(path, "alerts", threshold=0.55)
    _entry_threshold(tmp_path, 0.5)
    _up(path, tmp_path)
    with Database(store, readonly=True) as db:
        assert Deployments(db).get("itest").threshold == 0.55


def test_the_stored_threshold_is_the_one_held_to_the_policy(
    tmp_path: Path, shared_data: Path, no_models: list[bool]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    store = tmp_path / "data" / "alerts.sqlite3"
    _up(path, tmp_path)  # recorded at the file's 0.6
    with Database(store) as db:
        Deployments(db).change_threshold("itest", 0.5, actor=ADMIN, reason="tighter")
        ThresholdPolicies(db).set(0.5, 0.5, actor=ADMIN, reason="tighter everywhere")
    # The file still says 0.6, but the store's 0.5 is in force, and within the policy.
    _up(path, tmp_path)


def test_validate_reports_the_policy_refusal(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    _edit(path, "alerts", threshold=0.65)
    # No store yet: a new one would start with the default policy.
    code, out, err = run(capfd, "validate", "--offline-only", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}: alerts.threshold 0.65 is looser than the store's")
    assert err.splitlines()[-1] == f"{path}: 1 problem; nothing was started."
    assert not (tmp_path / "data").exists()

    store = tmp_path / "data" / "alerts.sqlite3"
    _set_policy(store, 0.5, 0.5)
    _edit(path, "alerts", threshold=0.6)
    before = store.stat().st_mtime_ns
    code, out, err = run(capfd, "validate", "--offline-only", str(path))
    assert (code, out) == (2, "")
    assert "alerts.threshold 0.6 is looser than the store's threshold policy allows: " in err
    assert "deployment_max 0.5 (set by Ch Supt Admin at " in err
    assert store.stat().st_mtime_ns == before  # read only

    _edit(path, "alerts", threshold=0.5)
    code, out, err = run(capfd, "validate", "--offline-only", str(path))
    assert (code, err) == (0, "")
