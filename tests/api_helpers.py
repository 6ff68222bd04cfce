"""Helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse

PROBLEM = "application/problem+json"


async def problem(resp: ClientResponse, status: int) -> dict[str, Any]:
    """Assert ``resp`` is an RFC 9457 problem with ``status``; return its body."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body: dict[str, Any] = await resp.json(content_type=PROBLEM)
    assert body["status"] == status
    return body
