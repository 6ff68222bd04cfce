"""The hash-chained audit log: appends, triggers, tampering found, the API and `lfr audit`."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.api.app import create_app
from lfr_actors.cli import main
from lfr_actors.store.audit import (
    GENESIS_HASH,
    SYSTEM,
    Action,
    Actor,
    AuditEntry,
    AuditLog,
    append_entry,
    canonical_details,
    entry_hash,
)
from lfr_actors.store.db import Database
from lfr_actors.store.migrations import MIGRATIONS
from lfr_actors.store.tokens import Role
from tests.api_helpers import bearer

OFFICER = Actor("PC Smith", "tok1")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.sqlite3"


def fill(db: Path, n: int) -> None:
    """``n`` entries with varied actors, details and times."""
    clock = iter(1_800_000_000.0 + i * 0.125 for i in range(n))
    with Database(db) as store:
        log = AuditLog(store, clock=lambda: next(clock))
        for i in range(n):
            actor = SYSTEM if i % 3 == 0 else OFFICER
            log.append(actor, Action.ALERT_VIEW, f"alert-{i}", {"part": "crop", "n": i, "é": 1.5})


def tamper(db: Path, *statements: str) -> None:
    """Change the file as someone with write access could: triggers dropped first."""
    raw = sqlite3.connect(db)
    try:
        raw.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        raw.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        for statement in statements:
            raw.execute(statement)
        raw.commit()
    finally:
        raw.close()


def verify(db: Path) -> Any:
    with Database(db, readonly=True) as store:
        return AuditLog(store).verify()


def test_entries_are_numbered_and_chained(db: Path) -> None:
    fill(db, 4)
    with Database(db) as store:
        entries = AuditLog(store).page().entries
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == GENESIS_HASH
    for before, entry in itertools.pairwise(entries):
        assert entry.prev_hash == before.hash
    for entry in entries:
        assert entry.hash == entry_hash(entry) and len(entry.hash) == 64
    assert entries[1].actor == "PC Smith" and entries[1].actor_token == "tok1"
    assert entries[0].actor == "system" and entries[0].actor_token is None
    assert entries[1].details == '{"n":1,"part":"crop","é":1.5}'
    assert canonical_details(entries[1].details_map()) == entries[1].details
    check = verify(db)
    assert check.intact and check.entries == 4
    assert (check.head_seq, check.head_hash) == (4, entries[-1].hash)
    assert check.summary().startswith("4 entries, chain intact")


def test_an_empty_log_is_intact(db: Path) -> None:
    Database(db).close()
    check = verify(db)
    assert (check.intact, check.entries, check.head_hash) == (True, 0, GENESIS_HASH)


def test_the_table_refuses_update_and_delete(db: Path) -> None:
    fill(db, 2)
    raw = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="audit_log is append-only"):
            raw.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="audit_log is append-only"):
            raw.execute("DELETE FROM audit_log WHERE seq = 2")
        raw.rollback()
    finally:
        raw.close()
    assert verify(db).intact
    assert any("audit" in m.description for m in MIGRATIONS)


def test_an_edited_entry_is_found(db: Path) -> None:
    fill(db, 5)
    tamper(db, "UPDATE audit_log SET actor = 'someone else' WHERE seq = 3")
    check = verify(db)
    assert (check.intact, check.bad_seq, check.entries, check.head_seq) == (False, 3, 2, 2)
    assert check.reason is not None and "edited" in check.reason


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link(db: Path) -> None:
    fill(db, 5)
    with Database(db) as store:
        third = AuditLog(store).page(after_seq=2, limit=1).entries[0]
    forged = dataclasses.replace(third, subject="another-alert")
    tamper(
        db,
        f"UPDATE audit_log SET subject = 'another-alert', hash = '{entry_hash(forged)}' "
        "WHERE seq = 3",
    )
    check = verify(db)
    assert (check.bad_seq, check.head_seq) == (4, 3)
    assert check.reason is not None and "prev_hash does not match the hash of seq 3" in check.reason


def test_a_removed_entry_is_found(db: Path) -> None:
    fill(db, 5)
    tamper(db, "DELETE FROM audit_log WHERE seq = 2")
    check = verify(db)
    assert (check.intact, check.bad_seq) == (False, 2)
    assert check.reason == "seq 2 missing: entries were removed (the next present is 3)"
    tamper(db, "DELETE FROM audit_log WHERE seq IN (3, 4)")
    assert verify(db).reason == "seq 2..4 missing: entries were removed (the next present is 5)"


def test_removing_the_newest_entries_is_found(db: Path) -> None:
    fill(db, 5)
    tamper(db, "DELETE FROM audit_log WHERE seq >= 4")
    check = verify(db)
    assert (check.intact, check.bad_seq, check.entries) == (False, 4, 3)
    assert check.reason == "entries after seq 3 were removed (the log had reached seq 5)"
    tamper(db, "DELETE FROM audit_log")
    assert verify(db).reason == "entries after seq 0 were removed (the log had reached seq 5)"


def test_reordered_entries_are_found(db: Path) -> None:
    fill(db, 5)
    columns = "at, actor, actor_token, action, subject, details, prev_hash, hash"
    tamper(
        db,
        f"CREATE TEMP TABLE swap AS SELECT seq, {columns} FROM audit_log WHERE seq IN (2, 3)",
        *(
            f"UPDATE audit_log SET {c} = (SELECT {c} FROM swap WHERE swap.seq = "
            "5 - audit_log.seq) WHERE seq IN (2, 3)"
            for c in columns.split(", ")
        ),
    )
    with Database(db) as store:
        assert [e.subject for e in AuditLog(store).page().entries][:4] == [
            "alert-0",
            "alert-2",
            "alert-1",
            "alert-3",
        ]
    check = verify(db)
    assert (check.intact, check.bad_seq) == (False, 2)
    assert check.reason is not None and "prev_hash" in check.reason


def test_append_needs_the_callers_transaction(db: Path) -> None:
    with Database(db) as store, pytest.raises(RuntimeError, match="write transaction"):
        append_entry(store.conn, SYSTEM, Action.AUDIT_VERIFY, "audit_log", at=0.0)


def test_paging_and_filters(db: Path) -> None:
    fill(db, 7)
    with Database(db) as store:
        log = AuditLog(store)
        first = log.page(limit=3)
        assert [e.seq for e in first.entries] == [1, 2, 3] and first.next_after == 3
        rest = log.page(after_seq=3, limit=4)
        assert [e.seq for e in rest.entries] == [4, 5, 6, 7] and rest.next_after is None
        assert [e.seq for e in log.page(subject="alert-4").entries] == [5]
        assert log.page(action="token.create").entries == []
        with pytest.raises(ValueError, match="limit"):
            log.page(limit=0)


# -- `lfr audit verify` ------------------------------------------------------------------


def test_cli_verify_exit_codes(db: Path, capfd: pytest.CaptureFixture[str]) -> None:
    fill(db, 3)
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert capfd.readouterr().out.startswith("3 entries, chain intact")
    tamper(db, "UPDATE audit_log SET details = '{}' WHERE seq = 2")
    assert main(["audit", "verify", "--db", str(db)]) == 1
    assert capfd.readouterr().out == (
        "audit chain broken at seq 2: entry was edited: its hash does not match its contents\n"
    )
    assert main(["audit", "verify", "--db", str(db.parent / "missing.sqlite3")]) == 1
    assert "no alert store at" in capfd.readouterr().err


# -- the API ----------------------------------------------------------------------------


def auditor_headers(db: Path, role: Role = Role.AUDITOR) -> dict[str, str]:
    return bearer(db, role, f"an {role}")


async def test_api_pages_the_log_with_what_recomputes_the_chain(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    fill(db, 4)
    headers = auditor_headers(db)  # entry 5: its token's creation
    client = await aiohttp_client(create_app(db), headers=headers)
    resp = await client.get("/v1/audit", params={"limit": "2"})
    assert resp.status == 200
    page = await resp.json()
    assert [e["seq"] for e in page["entries"]] == [1, 2] and page["next_after"] == 2
    resp = await client.get("/v1/audit", params={"after": "2", "limit": "10"})
    rest = await resp.json()
    assert [e["seq"] for e in rest["entries"]] == [3, 4, 5] and rest["next_after"] is None
    assert rest["entries"][-1]["action"] == "token.create"
    entries = page["entries"] + rest["entries"]
    prev = GENESIS_HASH
    for e in entries:  # anyone can recompute the chain from what the API returns
        assert e["at"].endswith("Z")
        fields = {k: e[k] for k in ("seq", "actor", "actor_token", "action", "subject", "hash")}
        recomputed = entry_hash(
            AuditEntry(
                **fields,
                at=e["at_unix"],
                details=canonical_details(e["details"]),
                prev_hash=e["prev_hash"],
            )
        )
        assert e["prev_hash"] == prev and recomputed == e["hash"]
        prev = e["hash"]
    resp = await client.get("/v1/audit", params={"action": "token.create"})
    assert [e["seq"] for e in (await resp.json())["entries"]] == [5]
    resp = await client.get("/v1/audit", params={"subject": "alert-1"})
    assert [e["seq"] for e in (await resp.json())["entries"]] == [2]


async def test_api_refuses_bad_audit_queries(aiohttp_client: AiohttpClient, db: Path) -> None:
    client = await aiohttp_client(create_app(db), headers=auditor_headers(db))
    resp = await client.get(
        "/v1/audit",
        params={"after": "-1", "limit": "501", "action": "alert.delete", "x": "1"},
    )
    assert resp.status == 400
    body = await resp.json(content_type="application/problem+json")
    assert sorted(p["name"] for p in body["invalid_params"]) == ["action", "after", "limit", "x"]
    reasons = {p["name"]: p["reason"] for p in body["invalid_params"]}
    assert "alert.adjudicate" in reasons["action"]
    resp = await client.get("/v1/audit", params={"after": "9" * 40})
    assert resp.status == 400


async def test_api_verify_reports_and_is_audited(aiohttp_client: AiohttpClient, db: Path) -> None:
    fill(db, 3)
    client = await aiohttp_client(create_app(db), headers=auditor_headers(db))
    resp = await client.get("/v1/audit/verify")
    assert resp.status == 200
    body = await resp.json()
    assert (body["intact"], body["entries"], body["bad_seq"]) == (True, 4, None)
    assert body["head"]["seq"] == 4
    with Database(db) as store:
        last = AuditLog(store).page(after_seq=4).entries
    assert [(e.seq, e.action, e.actor, e.subject) for e in last] == [
        (5, "audit.verify", "an auditor", "audit_log")
    ]
    assert json.loads(last[0].details)["intact"] is True

    tamper(db, "UPDATE audit_log SET subject = 'x' WHERE seq = 2")
    body = await (await client.get("/v1/audit/verify")).json()
    assert (body["intact"], body["bad_seq"]) == (False, 2)
    assert "edited" in body["reason"]


async def test_an_adjudicator_cannot_read_the_audit_log(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await aiohttp_client(create_app(db), headers=auditor_headers(db, Role.ADJUDICATOR))
    for path in ("/v1/audit", "/v1/audit/verify"):
        resp = await client.get(path)
        assert resp.status == 403
        body = await resp.json(content_type="application/problem+json")
        assert body["allowed_roles"] == ["admin", "auditor"]
    with Database(db) as store:
        assert [e.action for e in AuditLog(store).page().entries] == ["token.create"]
