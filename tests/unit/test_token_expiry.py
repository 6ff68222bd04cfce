"""Expiring tokens: the run file's token dies by itself after a crash, and at the next start."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.api.app import create_app
from lfr_actors.control import Deployment
from lfr_actors.control.follow import Reconciler
from lfr_actors.control.registration import write_run_file
from lfr_actors.store.audit import Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.migrations import MIGRATIONS
from lfr_actors.store.tokens import (
    LOCAL_TOKEN_RENEW_S,
    LOCAL_TOKEN_TTL_S,
    Role,
    TokenStore,
    issue_local_token,
    renew_local_token,
    revoke_local_tokens,
)
from lfr_actors.topology.loader import load_topology
from tests.api_helpers import problem
from tests.topology_files import write_site_topology, write_watchlist

OPERATOR = Actor("cli:test")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def status_source() -> dict[str, str]:
    return {"deployment": "dep1"}


def test_the_local_tokens_ttl_leaves_slack_for_missed_renewals() -> None:
    # A crashed driver's token dies within minutes; a live one survives a few slow rounds.
    assert LOCAL_TOKEN_TTL_S <= 600
    assert LOCAL_TOKEN_TTL_S >= 3 * LOCAL_TOKEN_RENEW_S


def test_an_expiring_token_is_renewed_only_while_active(tmp_path: Path) -> None:
    clock = Clock()
    with Database(tmp_path / "alerts.sqlite3") as db:
        tokens = TokenStore(db, clock=clock)
        issued = tokens.create("local-cli", Role.ADMIN, by=OPERATOR, internal=True, ttl_s=300)
        assert issued.record.expires_at == clock.now + 300
        clock.now += 299
        assert not issued.record.expired(clock.now)
        renewed = tokens.renew(issued.record.id, 300)
        assert renewed.expires_at == clock.now + 300
        found = tokens.lookup(issued.secret)
        assert found is not None and found.expires_at == renewed.expires_at
        clock.now += 300
        assert found.expired(clock.now)
        # Past its expiry it stays dead: renewing does not bring it back.
        dead = tokens.renew(issued.record.id, 300)
        assert dead.expires_at == renewed.expires_at and dead.expired(clock.now)
        # Revoking an expired token still records who ended it.
        revoked = tokens.revoke(issued.record.id, by=OPERATOR)
        assert revoked.revoked and revoked.revoked_by == str(OPERATOR)
        assert tokens.renew(issued.record.id, 300).revoked


def test_an_operators_token_never_expires(tmp_path: Path) -> None:
    with Database(tmp_path / "alerts.sqlite3") as db:
        tokens = TokenStore(db)
        issued = tokens.create("PC Smith", Role.VIEWER, by=OPERATOR)
        assert issued.record.expires_at is None
        assert not issued.record.expired(1e12)
        assert tokens.renew(issued.record.id, 60).expires_at is None
        with pytest.raises(ValueError, match="ttl_s must be positive"):
            tokens.create("PC Jones", Role.VIEWER, by=OPERATOR, ttl_s=0)


def test_the_expiry_column_comes_with_its_own_migration(tmp_path: Path) -> None:
    with Database(tmp_path / "alerts.sqlite3") as db:
        columns = {r[1] for r in db.conn.execute("PRAGMA table_info(api_tokens)")}
    assert "expires_at" in columns
    assert any("expire" in m.description for m in MIGRATIONS)


def test_creation_with_a_ttl_is_audited_and_renewal_is_not(tmp_path: Path) -> None:
    db_path = tmp_path / "alerts.sqlite3"
    issued = issue_local_token(db_path, ttl_s=120)
    with Database(db_path) as db:
        for _ in range(3):
            renew_local_token(db, issued.record.id, ttl_s=120)
        entries = AuditLog(db).page().entries
    assert [e.action for e in entries] == ["token.create"]
    assert json.loads(entries[0].details)["ttl_s"] == 120


async def test_an_expired_token_is_refused_with_its_own_reason(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    db_path = tmp_path / "alerts.sqlite3"
    clock = Clock(now=0.0)  # created far in the past: already expired on the real clock
    with Database(db_path) as db:
        old = TokenStore(db, clock=clock).create(
            "local-cli", Role.ADMIN, by=OPERATOR, internal=True, ttl_s=60
        )
    live = issue_local_token(db_path, ttl_s=60)  # revokes `old`, so revive it by hand
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE api_tokens SET revoked_at = NULL WHERE id = ?", (old.record.id,))
    client = await aiohttp_client(create_app(db_path, status=status_source))
    ok = await client.get("/v1/status", headers={"Authorization": f"Bearer {live.secret}"})
    assert ok.status == 200
    body = await problem(
        await client.get("/v1/status", headers={"Authorization": f"Bearer {old.secret}"}), 401
    )
    assert body["detail"] == "The token has expired."


def test_a_crash_left_token_dies_by_expiry_and_at_the_next_start(tmp_path: Path) -> None:
    """The driver died without revoking: its token expires, and the next start revokes it."""
    db_path = tmp_path / "alerts.sqlite3"
    crashed = issue_local_token(db_path, ttl_s=300)  # the run, then kill -9: no revoke
    with Database(db_path) as db:
        found = TokenStore(db).lookup(crashed.secret)
        assert found is not None and found.active
        assert found.expires_at is not None
        assert found.expired(found.expires_at)  # by itself, TTL seconds after the crash
        assert not found.expired(found.expires_at - 1)
    assert revoke_local_tokens(db_path) == 1  # what the next start does first
    with Database(db_path) as db:
        found = TokenStore(db).lookup(crashed.secret)
        assert found is not None and found.revoked and found.revoked_by == "system"


async def test_the_running_driver_renews_its_token_until_it_is_revoked(tmp_path: Path) -> None:
    deployment = _deployment(tmp_path)
    db_path = deployment.paths.alerts_db
    issued = issue_local_token(db_path, ttl_s=LOCAL_TOKEN_TTL_S)
    first_expiry = issued.record.expires_at
    assert first_expiry is not None
    deployment.live.db = Database(db_path)
    deployment.live.local_token_id = issued.record.id
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(_renewal(deployment, stop))
        await asyncio.sleep(0.3)
        with Database(db_path, readonly=True) as db:
            renewed = TokenStore(db).get(issued.record.id)
        assert renewed is not None and renewed.expires_at is not None
        assert renewed.expires_at > first_expiry
        # Revoked by hand (or by another start on the folder): the loop stops renewing.
        with Database(db_path) as db:
            TokenStore(db).revoke(issued.record.id, by=OPERATOR)
        await asyncio.wait_for(task, 5)  # it ends by itself, having seen the revocation
        with Database(db_path, readonly=True) as db:
            after = TokenStore(db).get(issued.record.id)
        assert after is not None and after.revoked and not after.active
    finally:
        stop.set()
        deployment.live.db.close()


async def test_a_token_that_lapsed_while_the_driver_ran_is_replaced(tmp_path: Path) -> None:
    """The store was unwritable for longer than the TTL: a new token, in the run file."""
    deployment = _deployment(tmp_path)
    db_path = deployment.paths.alerts_db
    deployment.live.db = Database(db_path)
    try:
        write_run_file(deployment.paths, deployment.live)
        first = json.loads(deployment.paths.run_file.read_text())["token"]
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE api_tokens SET expires_at = 1.0")  # lapsed long ago
        stop = asyncio.Event()
        task = asyncio.create_task(_renewal(deployment, stop))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 5)
        second = json.loads(deployment.paths.run_file.read_text())["token"]
        assert second != first
        with Database(db_path, readonly=True) as db:
            tokens = TokenStore(db)
            old, new = tokens.lookup(first), tokens.lookup(second)
        assert old is not None and old.revoked
        assert new is not None and new.active and new.internal
        assert oct(deployment.paths.run_file.stat().st_mode & 0o777) == "0o600"
    finally:
        deployment.live.db.close()


def _renewal(deployment: Deployment, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
    """The reconcile loop running its local token step alone, every 0.05 s."""
    d = deployment
    loop = Reconciler(d.topology, d.live, d.kernel, d.paths, d.plan, renew_interval_s=0.05)
    return loop.run(stop, [step for step in loop.steps() if step.name == "local_token"])


def _deployment(tmp_path: Path) -> Deployment:
    write_watchlist(tmp_path / "w.yaml")
    topology = write_site_topology(
        tmp_path,
        cameras=[{"id": "cam0", "source": {"type": "url", "url": "rtsp://127.0.0.1/0"}}],
        storage={"data_dir": str(tmp_path / "data")},
    )
    return Deployment(load_topology(topology), None, home=tmp_path)
