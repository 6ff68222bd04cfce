"""The console's "Stale entries" counter in headless Chromium, from ``GET /v1/status``.

The API is real (aiohttp on a TCP port, a real store); its status source stands in for a
running deployment whose index left out one stale entry (the shape
:func:`lfr_actors.control.status.stale_section` gives ``/v1/status``). The counter shows
the count and the ids, its title when each was approved and since when it is stale, and
it hides when no entry is stale.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lfr_actors.store.tokens import Role
from tests.browser import chromium_path
from tests.integration.test_console_browser import (
    DEPLOYMENT,
    WAIT_S,
    console_page,
    create_deployment,
    text_of,
)
from tests.integration.test_console_cameras import StatusSite

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="Debian's chromium is not installed: apt-get install chromium; .ci/run installs it",
    ),
]

STALE = {
    "entry_id": "W-0001",
    "approved_at": "2026-12-01T08:00:00.000Z",
    "stale_since": "2026-12-02T08:00:00.000Z",
}


class FreshnessSite(StatusSite):
    """A status source whose deployment section lists the stale entries the test sets."""

    def __init__(self, db: Path) -> None:
        super().__init__(db)
        self.stale: list[dict[str, Any]] = [STALE]

    async def status(self) -> dict[str, Any]:
        deployment = {
            "id": DEPLOYMENT,
            "watchlist_max_age_h": 24.0,
            "stale_entries": len(self.stale),
            "stale": self.stale,
        }
        return {"deployment": deployment, "cameras": {}}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[FreshnessSite]:
    db = tmp_path / "alerts.db"
    create_deployment(db)
    async with FreshnessSite(db) as served:
        yield served


async def test_the_console_lists_stale_entries_and_hides_the_counter_without_any(
    site: FreshnessSite,
) -> None:
    token = site.token("PC 11 Sam Example", Role.ADJUDICATOR)
    async with console_page(site, token) as browser:
        await browser.wait_for("!document.getElementById('stale-counter').hidden", WAIT_S)
        assert await browser.evaluate(text_of("count-stale")) == "1"
        assert await browser.evaluate(text_of("stale-list")) == "W-0001"
        title = await browser.evaluate("document.getElementById('stale-counter').title")
        assert title == (
            "W-0001: approved 2026-12-01T08:00:00.000Z, stale since "
            "2026-12-02T08:00:00.000Z; not searched"
        )
        site.stale = []  # re-enrolled and the stale one deleted
        await browser.wait_for("document.getElementById('stale-counter').hidden", WAIT_S)
