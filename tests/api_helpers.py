"""Helpers shared by the API tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import ClientResponse

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM
from lfr_actors.store.db import Database
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.doubles import make_sighting

PROBLEM = "application/problem+json"


async def problem(resp: ClientResponse, status: int) -> dict[str, Any]:
    """Assert ``resp`` is an RFC 9457 problem with ``status``; return its body."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body: dict[str, Any] = await resp.json(content_type=PROBLEM)
    assert body["status"] == status
    return body


def store_with_one_alert(path: Path) -> Path:
    """Create the alert store at ``path`` holding one alert (deployment ``dep1``); return
    ``path``."""
    event = Fuser("dep1", FusionConfig(threshold=0.5)).observe(make_sighting(1))
    assert event is not None
    with AlertStore(path) as store:
        store.apply(event)
    return path


def bearer(db: Path, role: Role, name: str | None = None) -> dict[str, str]:
    """Headers carrying a new token of ``role`` issued in the store at ``db`` (named
    ``name``, by default ``test <role>``)."""
    with Database(db) as store:
        secret = TokenStore(store).create(name or f"test {role}", role, by=SYSTEM).secret
    return {"Authorization": f"Bearer {secret}"}
