"""``lfr tokens`` and ``lfr audit verify`` as an operator runs them, and tokens at the real API."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession, web

from lfr_actors.api.app import create_app
from lfr_actors.cli.common import ALERTS_DB_FILE
from tests.conftest import REPO

EXAMPLE_TOPOLOGY = REPO / "topology" / "demo.yaml"


def lfr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    """The demo topology with its data folder moved into the test's folder."""
    data = yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())
    data["storage"]["data_dir"] = str(tmp_path / "data")
    data["watchlist"]["file"] = str(EXAMPLE_TOPOLOGY.parent / data["watchlist"]["file"])
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_store_file_is_where_the_deployment_keeps_it(tmp_path: Path) -> None:
    from lfr_actors.control import DeploymentPaths  # noqa: PLC0415 - imports Ray

    assert DeploymentPaths(tmp_path).alerts_db == tmp_path / ALERTS_DB_FILE


def test_create_list_revoke_and_verify(topology: Path, tmp_path: Path) -> None:
    db = tmp_path / "data" / ALERTS_DB_FILE
    created = lfr("tokens", "create", "--name", "PC Smith", "--role", "adjudicator",
                  "--topology", str(topology))  # fmt: skip
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n"  # the secret alone on stdout, for scripts
    assert secret.startswith("lfr_") and len(secret) == 47
    assert "shown only now" in created.stderr and secret not in created.stderr
    assert db.is_file()
    raw = sqlite3.connect(db)
    try:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    assert secret.encode() not in b"".join(p.read_bytes() for p in db.parent.iterdir())

    listed = lfr("tokens", "list", "--topology", str(topology))
    assert listed.returncode == 0, listed.stderr
    assert "PC Smith" in listed.stdout and "adjudicator" in listed.stdout
    assert "active" in listed.stdout and secret not in listed.stdout
    token_id = listed.stdout.splitlines()[1].split()[0]

    revoked = lfr("tokens", "revoke", token_id, "--db", str(db))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked token {token_id} (PC Smith, adjudicator)\n"
    assert "revoked" in lfr("tokens", "list", "--db", str(db)).stdout.splitlines()[1]
    unknown = lfr("tokens", "revoke", "no-such-id", "--db", str(db))
    assert unknown.returncode == 1
    assert "no token with id 'no-such-id'" in unknown.stderr

    verified = lfr("audit", "verify", "--topology", str(topology))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("2 entries, chain intact")

    raw = sqlite3.connect(db)
    try:
        raw.execute("DROP TRIGGER audit_log_no_delete")
        raw.execute("DELETE FROM audit_log WHERE seq = 1")
        raw.commit()
    finally:
        raw.close()
    broken = lfr("audit", "verify", "--db", str(db))
    assert broken.returncode == 1
    assert broken.stdout.startswith("audit chain broken at seq 1: seq 1 missing")


def test_bad_arguments_exit_2(topology: Path, tmp_path: Path) -> None:
    bad_role = lfr("tokens", "create", "--name", "x", "--role", "boss", "--topology", str(topology))
    assert bad_role.returncode == 2 and "invalid choice: 'boss'" in bad_role.stderr
    bad_name = lfr("tokens", "create", "--name", "system", "--role", "viewer", "--db", "x.db")
    assert bad_name.returncode == 2 and "reserved" in bad_name.stderr
    no_store = lfr("tokens", "list")
    assert no_store.returncode == 2 and "--topology --db is required" in no_store.stderr
    bad_topology = tmp_path / "bad.yaml"
    bad_topology.write_text("version: 1\ndeployment: {}\n")
    broken = lfr("audit", "verify", "--topology", str(bad_topology))
    assert broken.returncode == 2 and f"{bad_topology}:" in broken.stderr
    assert not (REPO / "x.db").exists()


@pytest.fixture
async def api_url(tmp_path: Path) -> AsyncIterator[str]:
    async def status() -> dict[str, Any]:
        return {"deployment": {"id": "itest"}}

    runner = web.AppRunner(create_app(tmp_path / "data" / ALERTS_DB_FILE, status=status))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def alfr(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lfr_actors.cli", *args,
        cwd=REPO, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_cli_token_opens_the_running_api_until_revoked(
    api_url: str, topology: Path
) -> None:
    code, secret, _ = await alfr(
        "tokens", "create", "--name", "Control room", "--role", "viewer",
        "--topology", str(topology),
    )  # fmt: skip
    assert code == 0
    secret = secret.strip()
    env = {"LFR_TOKEN": secret}

    code, out, err = await alfr("status", "--url", api_url, "--json", env=env)
    assert code == 0, err
    assert '"id": "itest"' in out

    code, _, err = await alfr("status", "--url", api_url, env={"LFR_TOKEN": ""})
    assert code == 1
    assert f"the API at {api_url} answered 401" in err and "LFR_TOKEN" in err

    async with ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
        async with session.get(f"{api_url}/v1/audit") as resp:
            assert resp.status == 403
        async with session.get(f"{api_url}/v1/alerts") as resp:
            assert resp.status == 200

    code, listed, _ = await alfr("tokens", "list", "--topology", str(topology))
    token_id = listed.splitlines()[1].split()[0]
    assert (await alfr("tokens", "revoke", token_id, "--topology", str(topology)))[0] == 0
    code, _, err = await alfr("status", "--url", api_url, env=env)
    assert code == 1 and "The token was revoked." in err


def test_a_deployment_created_through_the_api_gets_its_topology_section(
    topology: Path, tmp_path: Path
) -> None:
    from lfr_actors.control.registration import register_deployment  # noqa: PLC0415 - imports Ray
    from lfr_actors.store.audit import SYSTEM  # noqa: PLC0415
    from lfr_actors.store.db import Database  # noqa: PLC0415
    from lfr_actors.store.deployments import Deployments  # noqa: PLC0415
    from lfr_actors.topology.loader import load_topology  # noqa: PLC0415
    from lfr_actors.topology.schema import NewDeployment  # noqa: PLC0415

    db = tmp_path / "data" / ALERTS_DB_FILE
    db.parent.mkdir(parents=True)
    with Database(db) as store:
        Deployments(store).create(
            NewDeployment(
                id="stratford-2027-01",
                authorised_by="Supt Ann Example: authority LFR-2027-002",
                purpose="Locate people wanted for serious offences",
                location="Stratford station, east exit",
                start=datetime.fromtimestamp(1_800_000_000.0, UTC),
                end=datetime.fromtimestamp(1_800_036_000.0, UTC),
                threshold=0.55,
                impact_assessment_ref="DPIA-2027-001",
            ),
            actor=SYSTEM,
        )
    listed = lfr("deployments", "list", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    assert "stratford-2027-01" in listed.stdout and "scheduled" in listed.stdout

    printed = lfr("deployments", "topology", "stratford-2027-01", "--db", str(db))
    assert printed.returncode == 0, printed.stderr
    sections = yaml.safe_load(printed.stdout)
    data = yaml.safe_load(topology.read_text())
    data["deployment"] = sections["deployment"]
    data["alerts"]["threshold"] = sections["alerts"]["threshold"]
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    # The pasted sections make a valid topology that matches the record exactly.
    with Database(db) as store:
        record = register_deployment(Deployments(store), load_topology(topology))
    assert record.id == "stratford-2027-01" and record.threshold == 0.55

    unknown = lfr("deployments", "topology", "nope", "--db", str(db))
    assert unknown.returncode == 1 and "no deployment with id 'nope'" in unknown.stderr
