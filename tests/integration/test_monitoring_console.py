"""The console's monitoring selects in headless Chromium, against a real API and store.

With categories configured, an officer deciding "not a match" picks a value for one
category and leaves the other "not recorded"; the decision read back through the API holds
just the value picked. "Unsure" sends none.
"""

from __future__ import annotations

import json

import pytest

from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.monitoring import MonitoringCategories
from lfr_actors.store.tokens import Role
from tests.integration.test_console_browser import (
    WAIT_S,
    Site,
    console_page,
    item,
    shown,
    site,  # noqa: F401  (the fixture)
    text_of,
)

pytestmark = pytest.mark.slow

CATEGORIES = {"perceived_sex": ["female", "male"], "ethnicity_group": ["Asian", "Black", "White"]}
LOADED = "document.getElementById('monitoring').dataset.loaded === 'true'"
SELECTS = "document.querySelectorAll('#monitoring-fields select').length"


async def test_the_officer_records_categories_with_a_not_a_match(site: Site) -> None:  # noqa: F811
    with Database(site.db) as database:
        MonitoringCategories(database).set(CATEGORIES, actor=Actor("admin"), reason="duty")
    token = site.token("PC 77 Example", Role.ADJUDICATOR)
    first = site.raise_alert("W-0001")
    second = site.raise_alert("W-0002")
    async with console_page(site, token) as browser:
        await browser.wait_for(shown(item(first)), WAIT_S)
        await browser.wait_for(f"{SELECTS} === 2", WAIT_S)
        assert not await browser.evaluate("document.getElementById('monitoring').hidden")
        await browser.click(item(first) + " button")
        await browser.wait_for(f"{text_of('fact-name')} === 'Jordan Example'", WAIT_S)
        picked = await browser.evaluate(
            "(() => { const s = document.querySelector("
            "'#monitoring-fields select[data-category=\"ethnicity_group\"]');"
            f" s.value = {json.dumps('Black')}; return s.value; }})()"
        )
        assert picked == "Black"
        await browser.click("#dismiss")
        await browser.wait_for(f"!({shown(item(first))})", WAIT_S)
        # The selects are back at "not recorded" for the next alert.
        values = await browser.evaluate(
            "[...document.querySelectorAll('#monitoring-fields select')].map((s) => s.value)"
        )
        assert values == ["not recorded", "not recorded"]
        # Unsure sends none, even with a value picked.
        await browser.click(item(second) + " button")
        await browser.wait_for(f"{text_of('fact-name')} === 'Casey Sample'", WAIT_S)
        await browser.evaluate(
            "document.querySelector('#monitoring-fields select').value = 'female'"
        )
        await browser.click("#unsure")
        await browser.wait_for(f"!({shown(item(second))})", WAIT_S)

    [record] = (await site.get_alert(first, token))["adjudications"]
    assert record["decision"] == "not_a_match"
    assert record["demographics"] == {"ethnicity_group": "Black"}
    [record] = (await site.get_alert(second, token))["adjudications"]
    assert (record["decision"], record["demographics"]) == ("unsure", None)


async def test_a_viewer_sees_no_selects(site: Site) -> None:  # noqa: F811
    with Database(site.db) as database:
        MonitoringCategories(database).set(CATEGORIES, actor=Actor("admin"), reason="duty")
    token = site.token("Control room", Role.VIEWER)
    alert = site.raise_alert("W-0001")
    async with console_page(site, token) as browser:
        await browser.wait_for(shown(item(alert)), WAIT_S)
        await browser.wait_for(LOADED, WAIT_S)  # the categories were asked for, and refused
        assert await browser.evaluate(SELECTS) == 0
        assert await browser.evaluate("document.getElementById('monitoring').hidden")
