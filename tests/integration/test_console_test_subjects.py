"""The console's "Test subjects" panel in headless Chromium, against a real API and store.

A deployment with two suspects and one test subject (a volunteer enrolled with a
``consent_ref``); alerts are written through the real :class:`AlertStore`, as the alert
actor writes them, and passes through :class:`TestSubjectPasses`, as the API records them.
The officers' queue shows the suspect's alert and never the volunteer's, neither from the
list read at sign-in, nor live from the stream, nor after the page is loaded again; the
panel, once opened, lists the volunteer's alerts and each recorded pass, alerted or not as
the store says.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession

from lfr_actors.messages import Sighting
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled, Origin
from lfr_actors.store.test_subjects import TestSubjectPasses
from lfr_actors.store.tokens import Role
from lfr_actors.testing.declarations import make_entry
from tests.browser import Chromium, chromium_path
from tests.integration.test_console_browser import (
    DEPLOYMENT,
    WAIT_S,
    Site,
    console_page,
    create_deployment,
    face_jpeg,
    item,
    shown,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="Debian's chromium is not installed: apt-get install chromium; .ci/run installs it",
    ),
]

VOLUNTEER = "TS-0001"
VOLUNTEER_NAME = "Robin Volunteer"
AUTHORITY = Actor("Supt. A. Example")
QUEUE_IDS = (
    "JSON.stringify([...document.querySelectorAll('#queue li')].map((li) => li.dataset.alertId))"
)
PANEL_ALERTS = (
    "JSON.stringify([...document.querySelectorAll('#test-subject-alerts li')]"
    ".map((li) => li.textContent))"
)
PANEL_TEXT = "document.getElementById('test-subject-alerts').textContent"
PANEL_PASSES = (
    "JSON.stringify([...document.querySelectorAll('#test-passes tr')]"
    ".map((tr) => [...tr.cells].map((td) => td.textContent)))"
)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    """The console's deployment (suspects W-0001, W-0002) and a test subject, approved a
    minute ago so that passes can be recorded for the last few seconds."""
    db = tmp_path / "alerts.db"
    create_deployment(db)
    approved = time.time() - 60.0
    vector = np.random.default_rng(7).standard_normal((1, 512)).astype(np.float32)
    with Database(db) as database:
        Deployments(database, clock=lambda: approved).add_entry(
            DEPLOYMENT,
            make_entry(
                VOLUNTEER,
                display_name=VOLUNTEER_NAME,
                category="test subject",
                source="photographed on the day",
                image_date="2026-11-30",
                consent_ref="CONSENT-2026-031",
            ),
            Enrolled(
                image=face_jpeg(7, 240, 300),
                image_type="image/jpeg",
                embeddings=vector / np.linalg.norm(vector),
                quality={"sharpness": 0.9},
            ),
            actor=AUTHORITY,
            origin=Origin.FILE,
            approved_by=AUTHORITY,
        )
    async with Site(db) as served:
        yield served


def record_pass(site: Site, camera: str, passed_at: float) -> None:
    with Database(site.db) as database:
        TestSubjectPasses(database).record(
            DEPLOYMENT, VOLUNTEER, camera, passed_at, actor=Actor("PC 12 Test Lead")
        )


def sight_again(site: Site, entry_id: str, camera: str, alert_id: str) -> None:
    """Store the update one more sighting of ``entry_id`` makes to its open alert."""
    site.sightings += 1
    n = site.sightings
    event = site.fuser.observe(
        Sighting(
            sighting_id=f"{camera}:{n}:0",
            camera_id=camera,
            frame_seq=n,
            captured_at=time.time(),
            entry_id=entry_id,
            distance=0.29,
            box=[100.0, 80.0, 160.0, 200.0],
            quality={"sharpness": 0.8},
            crop_jpeg=face_jpeg(100 + n, 120, 150),
        )
    )
    assert event is not None and event.kind == "updated" and event.alert.id == alert_id, event
    site.alerts.apply(event)


async def api_get(site: Site, token: str, path: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with ClientSession(site.url, headers=headers) as client, client.get(path) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def queue_ids(browser: Chromium) -> list[str]:
    ids: list[str] = json.loads(await browser.evaluate(QUEUE_IDS))
    return ids


async def queue_holds_no_volunteer(browser: Chromium, volunteer_alerts: list[str]) -> None:
    """Nothing of the test subject in the officers' queue: none of its alerts, neither
    its entry id nor its name, and the counter counts only what the queue lists."""
    ids = await queue_ids(browser)
    assert not set(ids) & set(volunteer_alerts), ids
    text = await browser.evaluate("document.getElementById('queue').textContent")
    assert VOLUNTEER not in text and VOLUNTEER_NAME not in text, text
    assert await browser.evaluate("document.getElementById('count-open').textContent") == str(
        len(ids)
    )


async def test_test_subjects_stay_out_of_the_queue_and_show_in_their_panel(site: Site) -> None:
    token = site.token("PC 11 Sam Example", Role.ADJUDICATOR)
    now = time.time()
    record_pass(site, "cam_a", now - 8.0)  # the alert below sees it, about 8 s later
    record_pass(site, "cam_gate", now - 4.0)  # no camera cam_gate alert: not alerted
    suspect = site.raise_alert("W-0001")
    volunteer = site.raise_alert(VOLUNTEER)

    # What the store says, through the API the page reads.
    listed = await api_get(site, token, f"/v1/alerts?deployment={DEPLOYMENT}&queue=test_subjects")
    assert [a["id"] for a in listed["alerts"]] == [volunteer]
    passes = (await api_get(site, token, f"/v1/deployments/{DEPLOYMENT}/test-passes"))["passes"]
    assert [(p["camera_id"], p["alerted"], p["alert_id"]) for p in passes] == [
        ("cam_a", True, volunteer),
        ("cam_gate", False, None),
    ]
    assert passes[0]["seconds_to_alert"] == pytest.approx(8.0, abs=1.0)

    async with console_page(site, token) as browser:
        await browser.wait_for(shown(item(suspect)), WAIT_S)
        assert await queue_ids(browser) == [suspect]
        await queue_holds_no_volunteer(browser, [volunteer])
        # Closed, the panel has read nothing.
        assert not await browser.evaluate("document.getElementById('test-subjects').open")
        assert await browser.evaluate(PANEL_ALERTS) == "[]"

        await browser.click("#test-subjects summary")
        await browser.wait_for("document.querySelectorAll('#test-passes tr').length === 2", WAIT_S)
        await browser.wait_for(
            "document.querySelectorAll('#test-subject-alerts li').length === 1", WAIT_S
        )
        [line] = json.loads(await browser.evaluate(PANEL_ALERTS))
        assert line.endswith(f" {VOLUNTEER} on cam_a, distance 0.310"), line
        assert "W-0001" not in await browser.evaluate(PANEL_TEXT)
        assert await browser.evaluate("document.getElementById('error').hidden")
        rows = json.loads(await browser.evaluate(PANEL_PASSES))
        seconds = f"{passes[0]['seconds_to_alert']:.1f}"
        assert [row[1:] for row in rows] == [
            [VOLUNTEER, "cam_a", f"yes, {seconds} s"],
            [VOLUNTEER, "cam_gate", "no"],
        ]
        assert all(row[0] not in ("", "–") for row in rows), rows  # each pass's time
        passed = await browser.evaluate(
            "JSON.stringify([...document.querySelectorAll('#test-passes time')]"
            ".map((t) => t.dateTime))"
        )
        assert json.loads(passed) == [p["passed_at"] for p in passes]

        # Live: the volunteer seen again on another camera (its alert updated) and a
        # second suspect. The stream brings the suspect's alert into the queue and keeps
        # the volunteer's out.
        sight_again(site, VOLUNTEER, "cam_b", volunteer)
        second_suspect = site.raise_alert("W-0002")
        await browser.wait_for(shown(item(second_suspect)), WAIT_S)
        assert sorted(await queue_ids(browser)) == sorted([suspect, second_suspect])
        await queue_holds_no_volunteer(browser, [volunteer])
        # The panel's Refresh reads the volunteer's alert as it is now.
        await browser.click("#test-subjects-refresh")
        await browser.wait_for(f"{PANEL_TEXT}.includes('cam_b')", WAIT_S)
        [line] = json.loads(await browser.evaluate(PANEL_ALERTS))
        assert f" {VOLUNTEER} on cam_a, cam_b, distance " in line, line

        # Loaded again (the token kept for the tab): the queue read afresh, still suspects.
        await browser.navigate(f"{site.url}/console?deployment={DEPLOYMENT}")
        await browser.wait_for(shown(item(second_suspect)), WAIT_S)
        await browser.wait_for(shown(item(suspect)), WAIT_S)
        assert sorted(await queue_ids(browser)) == sorted([suspect, second_suspect])
        await queue_holds_no_volunteer(browser, [volunteer])
        # No script failed and no request but the status one (no deployment runs here,
        # so /v1/status is a 503) was refused.
        failures = [
            line
            for line in browser.console
            if line.startswith(("exception", "console.error"))
            or (line.startswith("log.error") and not line.endswith("/v1/status)"))
        ]
        assert failures == [], failures
