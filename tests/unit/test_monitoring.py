"""Monitoring categories in the store and through ``lfr monitoring``: rules, audit, CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from lfr_actors.cli.main import main
from lfr_actors.cli.monitoring import read_categories_file
from lfr_actors.store.adjudications import (
    Adjudications,
    Decision,
    DecisionRequest,
    InvalidDemographicsError,
    Outcome,
)
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.monitoring import (
    NOT_RECORDED,
    InvalidCategoriesError,
    MonitoringCategories,
    category_problems,
)
from tests.api_helpers import store_with_one_alert

ADMIN = Actor("Ch Insp Admin", "tok-admin")
CATEGORIES = {"perceived_sex": ["female", "male"], "age_band": ["18-24", "25-34"]}
EXAMPLE = Path(__file__).resolve().parents[2] / "topology/monitoring_categories.example.yaml"


def rows(db: Path, sql: str) -> list[Any]:
    raw = sqlite3.connect(db)
    try:
        return raw.execute(sql).fetchall()
    finally:
        raw.close()


def test_until_set_no_category_is_configured(tmp_path: Path) -> None:
    with Database(tmp_path / "s.db") as db:
        setting = MonitoringCategories(db).get()
    assert (setting.categories, setting.configured, setting.set_by) == ({}, False, None)


def test_setting_is_one_audited_change_and_a_repeat_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Database(path) as db:
        store = MonitoringCategories(db, clock=lambda: 100.0)
        setting, changed = store.set(CATEGORIES, actor=ADMIN, reason="equality duty")
        assert changed and setting.categories == CATEGORIES and setting.set_by == ADMIN.name
        again, changed = store.set(CATEGORIES, actor=ADMIN, reason="again")
        assert not changed and again == setting
        newer = {"perceived_sex": ["female", "male", "other"]}
        _, changed = store.set(newer, actor=Actor("Supt B"), reason="add a value")
        assert changed
        # Key order is the admin's, not sorted.
        assert list(store.get().categories) == ["perceived_sex"]
        assert (
            list(MonitoringCategories(db).get().categories["perceived_sex"])
            == newer["perceived_sex"]
        )
    audit = rows(
        path,
        "SELECT actor, actor_token, subject, details FROM audit_log "
        "WHERE action = 'policy.monitoring_categories' ORDER BY seq",
    )
    assert [(a, t, s) for a, t, s, _ in audit] == [
        ("Ch Insp Admin", "tok-admin", "monitoring_categories"),
        ("Supt B", None, "monitoring_categories"),
    ]
    first, second = (json.loads(d) for *_, d in audit)
    assert first == {"from": None, "to": CATEGORIES, "reason": "equality duty"}
    assert second == {"from": CATEGORIES, "to": newer, "reason": "add a value"}


def test_reordering_the_categories_is_a_change(tmp_path: Path) -> None:
    with Database(tmp_path / "s.db") as db:
        store = MonitoringCategories(db)
        store.set({"sex": ["female"], "age": ["18-24"]}, actor=ADMIN, reason="first")
        _, changed = store.set({"age": ["18-24"], "sex": ["female"]}, actor=ADMIN, reason="order")
        assert changed and list(store.get().categories) == ["age", "sex"]


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        ({"Age Band": ["a"]}, "categories.Age Band", "short identifier"),
        ({"x" * 41: ["a"]}, "categories." + "x" * 41, "short identifier"),
        ({"sex": []}, "categories.sex", "at least one value"),
        ({"sex": "female"}, "categories.sex", "list of values"),
        ({"sex": ["female", " Female "]}, "categories.sex.1", "repeats item 0"),
        ({"sex": ["female", "  "]}, "categories.sex.1", "non-blank"),
        ({"sex": ["a" * 61]}, "categories.sex.0", "at most 60"),
        ({"sex": ["Not Recorded"]}, "categories.sex.0", "always allowed"),
        ({"sex": [f"v{i}" for i in range(41)]}, "categories.sex", "at most 40 values"),
        ({f"c{i}": ["a"] for i in range(9)}, "categories", "at most 8 categories"),
        (["sex"], "categories", "map of category name"),
    ],
)
def test_bad_lists_are_refused_naming_the_path(
    tmp_path: Path, raw: Any, path: str, reason: str
) -> None:
    found = category_problems(raw)
    assert any(p == path and reason in r for p, r in found), found
    with Database(tmp_path / "s.db") as db, pytest.raises(InvalidCategoriesError):
        MonitoringCategories(db).set(raw, actor=ADMIN, reason="x")
    assert rows(tmp_path / "s.db", "SELECT * FROM store_settings") == []
    assert rows(tmp_path / "s.db", "SELECT * FROM audit_log") == []


def test_the_example_file_passes_the_rules() -> None:
    categories = read_categories_file(EXAMPLE)
    assert category_problems(categories) == []
    assert set(categories) == {"perceived_sex", "age_band", "ethnicity_group"}


def test_decisions_store_recorded_values_and_refuse_others(tmp_path: Path) -> None:
    path = store_with_one_alert(tmp_path / "s.db")
    alert_id = rows(path, "SELECT id FROM alerts")[0][0]
    with Database(path) as db:
        adjudications = Adjudications(db)
        with pytest.raises(InvalidDemographicsError, match="no monitoring categories"):
            adjudications.decide(
                alert_id,
                DecisionRequest(Decision.NOT_A_MATCH, demographics={"perceived_sex": "male"}),
                officer=ADMIN,
            )
        MonitoringCategories(db).set(CATEGORIES, actor=ADMIN, reason="duty")
        with pytest.raises(InvalidDemographicsError, match="'female', 'male', 'not recorded'"):
            adjudications.decide(
                alert_id,
                DecisionRequest(Decision.NOT_A_MATCH, demographics={"perceived_sex": "x"}),
                officer=ADMIN,
            )
        decided = adjudications.decide(
            alert_id,
            DecisionRequest(
                Decision.NOT_A_MATCH,
                demographics={"perceived_sex": "female", "age_band": NOT_RECORDED},
            ),
            officer=ADMIN,
        )
        assert decided.record.demographics == {"perceived_sex": "female"}
        # The same request again is a repeat, not a conflict.
        again = adjudications.decide(
            alert_id,
            DecisionRequest(Decision.NOT_A_MATCH, demographics={"perceived_sex": "female"}),
            officer=ADMIN,
        )
        assert not again.created
        corrected = adjudications.decide(
            alert_id,
            DecisionRequest(
                Decision.MATCH_CONFIRMED,
                outcome=Outcome.ARREST,
                correction=True,
                correction_reason="recognised on review",
                demographics={"age_band": "18-24"},
            ),
            officer=ADMIN,
        )
        assert corrected.record.demographics == {"age_band": "18-24"}
        # A correction may change only the values: a new row supersedes the last.
        values_only = adjudications.decide(
            alert_id,
            DecisionRequest(
                Decision.MATCH_CONFIRMED,
                outcome=Outcome.ARREST,
                correction=True,
                correction_reason="age band mistyped",
                demographics={"age_band": "25-34"},
            ),
            officer=ADMIN,
        )
        assert values_only.created and values_only.record.supersedes == corrected.record.id
        assert [r.demographics for r in adjudications.history(alert_id)] == [
            {"perceived_sex": "female"},
            {"age_band": "18-24"},
            {"age_band": "25-34"},
        ]
    details = [
        json.loads(d)
        for (d,) in rows(path, "SELECT details FROM audit_log WHERE action LIKE 'alert.%'")
    ]
    assert details[0]["demographics"] == {"perceived_sex": "female"}
    assert details[1]["demographics"] == {"age_band": "18-24"}
    assert details[1]["previous_demographics"] == {"perceived_sex": "female"}


def test_unsure_takes_no_demographics() -> None:
    request = DecisionRequest(Decision.UNSURE, demographics={})
    assert [name for name, _ in request.problems()] == ["demographics"]


# -- the CLI ---------------------------------------------------------------------------


def run_cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def test_cli_show_and_set(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    db = str(store_with_one_alert(tmp_path / "s.db"))
    code, out, _ = run_cli(capfd, "monitoring", "show", "--db", db)
    assert code == 0 and "no monitoring categories are configured" in out
    code, out, _ = run_cli(
        capfd, "monitoring", "set", "--file", str(EXAMPLE), "--reason", "duty", "--db", db
    )
    assert code == 0 and "monitoring categories set" in out
    assert '"White"' in out
    code, out, _ = run_cli(capfd, "monitoring", "show", "--json", "--db", db)
    shown = json.loads(out)
    assert shown["configured"] and shown["set_by"].startswith("cli:")
    assert shown["categories"]["perceived_sex"] == ["female", "male"]
    code, out, _ = run_cli(
        capfd, "monitoring", "set", "--file", str(EXAMPLE), "--reason", "again", "--db", db
    )
    assert code == 0 and "unchanged" in out
    audit = rows(
        Path(db), "SELECT actor FROM audit_log WHERE action = 'policy.monitoring_categories'"
    )
    assert len(audit) == 1 and audit[0][0].startswith("cli:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("categories:\n  sex: [a, a]\n", "line 2: categories.sex.1: 'a' repeats item 0"),
        ("categories:\n  sex: []\n", "line 2: categories.sex: list at least one value"),
        ("sex: [a]\n", "the file has one key, categories"),
        ("categories:\n  sex: [a]\n  sex: [b]\n", "'sex' is written twice"),
        ("categories: [\n", "invalid YAML"),
    ],
)
def test_cli_set_refuses_a_bad_file_in_one_line_and_writes_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    db = str(store_with_one_alert(tmp_path / "s.db"))
    before = rows(Path(db), "SELECT COUNT(*) FROM audit_log")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, out, err = run_cli(
        capfd, "monitoring", "set", "--file", str(bad), "--reason", "x", "--db", db
    )
    assert code != 0 and out == ""
    assert err.startswith("lfr: error: ") and expected in err, err
    assert rows(Path(db), "SELECT * FROM store_settings") == []
    assert rows(Path(db), "SELECT COUNT(*) FROM audit_log") == before


def test_cli_set_needs_a_reason(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    db = str(store_with_one_alert(tmp_path / "s.db"))
    code, _, err = run_cli(
        capfd, "monitoring", "set", "--file", str(EXAMPLE), "--reason", "  ", "--db", db
    )
    assert code == 2 and "--reason" in err and err.count("\n") == 1
    assert rows(Path(db), "SELECT * FROM store_settings") == []
