"""What the console reads when no pipeline runs: the store's counters and the report page.

The console (``static/console.html``) shows the cameras' live counters from ``/v1/status``
while a pipeline runs; under ``lfr serve`` (status 503) it reads the counters the store
keeps for the deployment from ``GET /v1/deployments/{id}``, the figures the report
publishes. Its "Report" button fetches ``report.html`` with the console's own bearer
token. These tests call the same routes over loopback with one viewer's token.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from pytest_aiohttp import AiohttpClient

from lfr_actors.api.app import create_app
from lfr_actors.api.deployments import REPORT_STYLE
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import Role
from lfr_actors.testing.declarations import make_deployment
from tests.api_helpers import bearer, problem


def _store_with_totals(db: Path) -> None:
    with Database(db) as store:
        deployments = Deployments(store)
        deployments.create(make_deployment("dep1", 1e9, 1e9 + 3600), actor=Actor("Insp Adams"))
        deployments.add_counters("dep1", frames=92, faces=170, tracks=9)


async def test_without_a_pipeline_the_counters_come_from_the_store(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    db = tmp_path / "alerts.sqlite3"
    _store_with_totals(db)
    viewer = bearer(db, Role.VIEWER)
    client = await aiohttp_client(create_app(db))  # no status source: as under `lfr serve`
    await problem(await client.get("/v1/status", headers=viewer), 503)
    resp = await client.get("/v1/deployments/dep1", headers=viewer)
    assert resp.status == 200, await resp.text()
    stored = await resp.json()
    assert (stored["frames"], stored["faces_seen"], stored["tracks_seen"]) == (92, 170, 9)
    resp = await client.get("/v1/deployments/dep1/report", headers=viewer)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    # The console's figures are the report's.
    assert (report["frames"], report["faces_seen"], report["tracks_seen"]) == (92, 170, 9)


async def test_the_report_page_is_served_to_the_consoles_bearer_token(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    db = tmp_path / "alerts.sqlite3"
    _store_with_totals(db)
    client = await aiohttp_client(create_app(db))
    await problem(await client.get("/v1/deployments/dep1/report.html"), 401)  # a plain link
    for role in (Role.VIEWER, Role.ADJUDICATOR):
        resp = await client.get("/v1/deployments/dep1/report.html", headers=bearer(db, role))
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/html"
        page = await resp.text()
        assert "<th>Faces seen</th><td>170</td>" in page
    # The console opens the page from a blob: URL, which keeps the console's policy: that
    # policy allows the report's style by its hash.
    resp = await client.get("/console")
    digest = base64.b64encode(hashlib.sha256(REPORT_STYLE.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in resp.headers["Content-Security-Policy"]
    assert f"<style>{REPORT_STYLE}</style>" in page
