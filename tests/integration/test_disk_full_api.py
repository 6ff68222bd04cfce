"""Writes through the API on a really full disk: 503 with the fix, one log line, recovery.

The store lives on a small tmpfs (mounted for the test; root only, skipped with the
reason elsewhere) that a filler file fills to the last byte. Every write route is called:
each answers 503 with a problem body naming the data folder (never 500 with a
traceback), one error line is logged for all of them, ``/readyz`` is not ready, and
nothing stored changes. Once the filler is deleted, readiness comes back by itself and
every route works again, with the audit chain intact. Real SQLite, real HTTP on
loopback, real enrolment models.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from pytest_aiohttp import AiohttpClient
from structlog.testing import capture_logs

from lfr_actors.api.app import create_app
from lfr_actors.enrolment import Enroller
from tests.api_helpers import problem
from tests.disks import fill, small_tmpfs
from tests.integration.test_deployments_api import (
    Api,
    deployment_body,
    enroller,  # noqa: F401 - the module-scoped fixture, used by name
    issue_tokens,
    photos,  # noqa: F401 - the module-scoped fixture, used by name
    upload_form,
)

pytestmark = [pytest.mark.models, pytest.mark.data]

TMPFS_SIZE = "16m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, mounted for this test and unmounted after it."""
    with small_tmpfs(tmp_path / "small-disk", TMPFS_SIZE) as mount:
        yield mount


def stored(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, straight from the file."""
    raw = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in raw.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: raw.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        raw.close()


@pytest.fixture
async def api(
    aiohttp_client: AiohttpClient,
    small_disk: Path,
    enroller: Enroller,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[Api]:
    db = small_disk / "alerts.sqlite3"
    secrets = issue_tokens(db)
    app = create_app(db, enroller=enroller, status_interval_s=0.05)
    yield Api(await aiohttp_client(app), db, secrets)


async def wait_ready(api: Api, ready: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(600):
        resp = await api.client.get("/readyz")
        body = await resp.json(content_type=None)
        if (resp.status == 200) == ready:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never became {'ready' if ready else 'not ready'}: {body}")


async def test_every_write_on_a_full_disk_is_503_and_all_recover(
    api: Api,
    small_disk: Path,
    photos: dict[str, Path],  # noqa: F811 - the fixture imported above
) -> None:
    obama = photos["obama"].read_bytes()
    biden = photos["biden"].read_bytes()
    await api.create_deployment("dep1")
    await api.enrol("dep1", "pending-entry", obama, approve=False)
    await api.enrol("dep1", "active-entry", biden)
    (event,) = api.push_alerts("dep1", "active-entry")
    alert = event.alert.id
    await wait_ready(api, True)
    before = stored(api.db)

    writes: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", f"/v1/alerts/{alert}/adjudication", "evans", {"json": {"decision": "unsure"}}),
        ("POST", f"/v1/alerts/{alert}/hold", "adams", {"json": {"reason": "case 12/2026"}}),
        ("POST", "/v1/deployments", "adams", {"json": deployment_body("dep2")}),
        (
            "POST",
            "/v1/deployments/dep1/threshold",
            "adams",
            {"json": {"threshold": 0.5, "reason": "calibration"}},
        ),
        ("POST", "/v1/deployments/dep1/entries/pending-entry/approval", "baker", {}),
        ("DELETE", "/v1/deployments/dep1/entries/active-entry", "clark", {}),
        ("GET", f"/v1/alerts/{alert}/crop.jpg", "viewer", {}),  # each view is audited first
    ]

    filler = fill(small_disk / "filler.bin")
    try:
        with capture_logs() as logs:
            answers: list[ClientResponse] = []
            for method, url, who, kw in writes:
                answers.append(await api.request(method, url, who, **kw))
            data = upload_form("new-entry", obama)
            answers.append(
                await api.request("POST", "/v1/deployments/dep1/entries", "clark", data=data)
            )
            for resp in answers:
                body = await problem(resp, 503)
                assert body["store_error"] == "disk full", body
                assert f"free space in {small_disk}" in body["detail"]
                assert resp.headers["Retry-After"] == "30"
            not_ready = await wait_ready(api, False)
        assert "alert store: cannot be written (api)" in not_ready["not_ready"]
        failures = [e for e in logs if e["event"] == "store_write_failed"]
        assert len(failures) == 1, failures  # one line for eight refused writes
        assert not [e for e in logs if e["event"] == "request_failed"]  # no 500, no traceback
        assert not any("exc_info" in e or "exception" in e for e in logs)
        assert stored(api.db) == before  # a refused write harmed nothing stored
        reads = await api.request("GET", "/v1/alerts", "viewer")
        assert reads.status == 200  # reading goes on while the disk is full
    finally:
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()

    await wait_ready(api, True)  # space is back: ready again without any client writing
    for method, url, who, kw in writes:
        resp = await api.request(method, url, who, **kw)
        assert resp.status in (200, 201), (url, await resp.text())
    data = upload_form("new-entry", obama)
    resp = await api.request("POST", "/v1/deployments/dep1/entries", "clark", data=data)
    assert resp.status == 201, await resp.text()
    verify = await api.ok("GET", "/v1/audit/verify", "auditor")
    assert verify["intact"] is True, verify
