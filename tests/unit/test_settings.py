"""Store-wide settings rows (lfr_actors/store/settings.py): a row changed on disk is one
clear error naming the setting, through the store, the CLI and the API, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.api.app import create_app
from lfr_actors.cli.main import main
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.monitoring import MonitoringCategories
from lfr_actors.store.policy import ThresholdPolicies
from lfr_actors.store.settings import SettingError
from lfr_actors.store.tokens import Role
from tests.api_helpers import bearer, problem

ADMIN = Actor("Ch Supt Admin")


def _damage(path: Path, name: str, value: str) -> None:
    with Database(path) as db:
        db.conn.execute("UPDATE store_settings SET value = ? WHERE name = ?", (value, name))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.sqlite3"
    with Database(path) as db:
        ThresholdPolicies(db).set(0.55, 0.5, actor=ADMIN, reason="calibrated")
        MonitoringCategories(db).set({"age_band": ["18-24"]}, actor=ADMIN, reason="monitoring")
    return path


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("threshold_policy", "{not json"),
        ("threshold_policy", '{"deployment_max": 0.5}'),
        ("monitoring_categories", '["age_band"]'),
    ],
)
def test_a_damaged_row_is_one_error_naming_the_setting(store: Path, name: str, value: str) -> None:
    _damage(store, name, value)
    with Database(store) as db, pytest.raises(SettingError) as raised:
        if name == "threshold_policy":
            ThresholdPolicies(db).get()
        else:
            MonitoringCategories(db).get()
    message = str(raised.value)
    assert f"the store's {name} setting cannot be read" in message and "\n" not in message


def test_the_cli_says_it_in_one_line(store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _damage(store, "threshold_policy", "{not json")
    code = main(["policy", "show", "--db", str(store)])
    err = capfd.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "threshold_policy setting cannot be read" in err


async def test_the_api_answers_a_problem_not_a_traceback(
    aiohttp_client: AiohttpClient, store: Path
) -> None:
    headers = bearer(store, Role.ADMIN)
    _damage(store, "threshold_policy", "{not json")
    client = await aiohttp_client(create_app(store))
    body = await problem(await client.get("/v1/policy", headers=headers), 500)
    assert "Traceback" not in str(body)
