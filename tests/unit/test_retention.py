"""Retention of alert crops: a moved clock purges old crops, holds keep them, all audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.cli.common import UsageError
from lfr_actors.cli.main import build_parser
from lfr_actors.store.adjudications import Adjudications, Decision, DecisionRequest
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.retention import Holds, UnknownAlertError, purge_crops
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.doubles import SIGHTING_EPOCH, fake_jpeg, make_sighting

DAY = 86_400.0
OFFICER = Actor("authoriser one")
PROBLEM = "application/problem+json"


def seed(db: Path) -> dict[str, Any]:
    """Three alerts: "old" and "held" last seen on day 0, "young" on day 30."""
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    ids: dict[str, Any] = {}
    with AlertStore(db) as store:
        for name, n, entry, at in (
            ("old", 1, "E1", 0.0),
            ("held", 2, "E2", 0.0),
            ("young", 3, "E3", 30 * DAY),
        ):
            event = fuser.observe(make_sighting(n, entry=entry, at=at))
            assert event is not None
            store.apply(event)
            ids[name] = event.alert.id
            ids[f"{name}_jpeg"] = fake_jpeg(n)
            assert store.crop(event.alert.id) == fake_jpeg(n)
    return ids


def file_bytes(db: Path) -> bytes:
    data = db.read_bytes()
    wal = db.with_name(db.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def audited_actions(db: Path) -> list[str]:
    """The audit log's actions, oldest first, once its chain is checked intact."""
    with Database(db) as database:
        log = AuditLog(database)
        assert log.verify().intact
        return [e.action for e in log.page(limit=100).entries]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.sqlite3"


def test_purge_empties_old_crops_keeps_held_and_young_and_is_idempotent(db: Path) -> None:
    ids = seed(db)
    with Database(db) as database:
        Adjudications(database).decide(
            ids["old"], DecisionRequest(decision=Decision.UNSURE), officer=Actor("pc one")
        )
        Holds(database).hold(ids["held"], "case 42: disclosure", by=OFFICER)
    assert ids["old_jpeg"] in file_bytes(db)

    now = SIGHTING_EPOCH + 40 * DAY  # day 0 is 40 days old, day 30 is 10
    result = purge_crops(db, retention_days=31, now=now)
    assert result.count == 1
    assert result.alert_ids == [ids["old"]]

    with AlertStore(db) as store:
        assert store.crop(ids["old"]) == b""
        assert store.crop(ids["held"]) == ids["held_jpeg"]
        assert store.crop(ids["young"]) == ids["young_jpeg"]
        old = store.get(ids["old"])
        assert old is not None and old["sightings"] == 1 and old["best_distance"] > 0
    with Database(db) as database:
        holds = Holds(database)
        assert holds.crop_purged_at(ids["old"]) == now
        assert holds.crop_purged_at(ids["held"]) is None
        assert len(Adjudications(database).history(ids["old"])) == 1

    # The purged bytes are gone from the file (secure_delete zeroes them, WAL checkpointed).
    raw = file_bytes(db)
    assert ids["old_jpeg"] not in raw
    assert ids["held_jpeg"] in raw

    again = purge_crops(db, retention_days=31, now=now)
    assert again.count == 0 and again.alert_ids == []

    with Database(db) as database:
        log = AuditLog(database)
        check = log.verify()
        assert check.intact, check.summary()
        purges = [e for e in log.page(limit=100).entries if e.action == "retention.purge"]
    assert len(purges) == 2
    assert purges[0].actor == "system"
    details = purges[0].details_map()
    assert details["count"] == 1
    assert details["retention_days"] == 31
    assert details["cutoff"] == now - 31 * DAY


def test_a_released_hold_lets_the_next_purge_take_the_crop(db: Path) -> None:
    ids = seed(db)
    with Database(db) as database:
        holds = Holds(database)
        hold, created = holds.hold(ids["held"], "case 42", by=OFFICER)
        assert created and hold.active
        again, created_again = holds.hold(ids["held"], "another", by=OFFICER)
        assert not created_again and again.id == hold.id
        with pytest.raises(ValueError):
            holds.hold(ids["old"], "   ", by=OFFICER)
        with pytest.raises(UnknownAlertError):
            holds.hold("no-such-alert", "x", by=OFFICER)
    now = SIGHTING_EPOCH + 40 * DAY
    assert purge_crops(db, now=now).alert_ids == [ids["old"]]
    with Database(db) as database:
        released = Holds(database).release(ids["held"], by=OFFICER, reason="case closed")
        assert released is not None and not released.active
        assert Holds(database).release(ids["held"], by=OFFICER) is None
    assert purge_crops(db, now=now).alert_ids == [ids["held"]]
    actions = audited_actions(db)
    assert actions.count("alert.hold") == 1
    assert actions.count("alert.release") == 1


def test_retention_days_must_be_sensible(db: Path) -> None:
    seed(db)
    for bad in (-1, float("nan"), True):
        with pytest.raises(ValueError):
            purge_crops(db, retention_days=bad)


def lfr(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_cli_purge_prints_the_count_and_moves_the_clock(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = seed(db)
    # 20 days after day 0: nothing is past 31 days yet.
    assert lfr("retention", "purge", "--db", str(db), "--now", "2023-12-04T22:13:20Z") == 0
    assert "purged 0 alert crop(s)" in capsys.readouterr().out
    # Day 40: the two day-0 alerts.
    now = "2023-12-24T22:13:20Z"
    assert lfr("retention", "purge", "--db", str(db), "--now", now) == 0
    assert "purged 2 alert crop(s)" in capsys.readouterr().out
    assert lfr("retention", "purge", "--db", str(db), "--now", now, "--days", "5") == 0
    assert "purged 1 alert crop(s)" in capsys.readouterr().out
    with AlertStore(db) as store:
        assert store.crop(ids["young"]) == b""
    assert lfr("audit", "verify", "--db", str(db)) == 0
    with pytest.raises(UsageError):
        lfr("retention", "purge", "--db", str(db), "--now", "yesterday")


async def test_api_hold_release_and_410_for_a_purged_crop(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    ids = seed(db)
    with Database(db) as database:
        tokens = TokenStore(database)
        secret = {
            role: tokens.create(f"holder {role}", role, by=Actor("cli:test")).secret
            for role in (Role.VIEWER, Role.AUTHORISER, Role.ADMIN)
        }

    def auth(role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret[role]}"}

    client = await aiohttp_client(create_app(db))
    hold_url = f"/v1/alerts/{ids['held']}/hold"

    resp = await client.post(hold_url, json={"reason": "x"}, headers=auth(Role.VIEWER))
    assert resp.status == 403
    resp = await client.delete(hold_url, headers=auth(Role.VIEWER))
    assert resp.status == 403
    resp = await client.post(hold_url, json={}, headers=auth(Role.AUTHORISER))
    assert resp.status == 422
    resp = await client.post(
        "/v1/alerts/nope/hold", json={"reason": "x"}, headers=auth(Role.AUTHORISER)
    )
    assert resp.status == 404

    resp = await client.post(hold_url, json={"reason": "case 42"}, headers=auth(Role.AUTHORISER))
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["changed"] is True and body["hold"]["reason"] == "case 42"
    resp = await client.post(hold_url, json={"reason": "again"}, headers=auth(Role.ADMIN))
    assert resp.status == 200
    assert (await resp.json())["hold"]["reason"] == "case 42"

    resp = await client.get(f"/v1/alerts/{ids['held']}", headers=auth(Role.VIEWER))
    detail = await resp.json()
    assert detail["hold"]["set_by"] == "holder authoriser"
    assert detail["crop_purged_at"] is None

    purge_crops(db, now=SIGHTING_EPOCH + 40 * DAY)

    resp = await client.get(f"/v1/alerts/{ids['old']}/crop.jpg", headers=auth(Role.VIEWER))
    assert resp.status == 410
    assert resp.content_type == PROBLEM
    problem = await resp.json(content_type=PROBLEM)
    assert problem["status"] == 410 and "purged" in problem["detail"]
    resp = await client.get(f"/v1/alerts/{ids['held']}/crop.jpg", headers=auth(Role.VIEWER))
    assert resp.status == 200 and await resp.read() == ids["held_jpeg"]
    resp = await client.get(f"/v1/alerts/{ids['old']}", headers=auth(Role.VIEWER))
    old = await resp.json()
    assert old["crop_purged_at"] is not None and old["hold"] is None

    resp = await client.delete(
        hold_url,
        data=json.dumps({"reason": "closed"}),
        headers={**auth(Role.AUTHORISER), "Content-Type": "application/json"},
    )
    assert resp.status == 200
    released = await resp.json()
    assert released["changed"] is True and released["hold"]["released_at"] is not None
    resp = await client.delete(hold_url, headers=auth(Role.ADMIN))
    assert resp.status == 200 and (await resp.json()) == {
        "alert_id": ids["held"],
        "hold": None,
        "changed": False,
    }

    actions = audited_actions(db)
    assert actions.count("alert.hold") == 1
    assert actions.count("alert.release") == 1
