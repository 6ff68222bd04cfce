"""The console's camera and delivery strips in headless Chromium: each camera's state,
stalled included, and each webhook's and alert output's, failing included.

The API is real (aiohttp on a TCP port, a real store); its status source is a plain
function standing in for a running deployment's ``Deployment.status`` (the shape of
``GET /v1/status``), so the page shows cameras in every kind of state at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lfr_actors.api.app import create_app
from lfr_actors.store.tokens import Role
from tests.browser import chromium_path
from tests.integration.test_console_browser import (
    ARTIFACTS,
    DEPLOYMENT,
    WAIT_S,
    Site,
    console_page,
    create_deployment,
    text_of,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="Debian's chromium is not installed: apt-get install chromium; .ci/run installs it",
    ),
]

STALLED_ERROR = "no frame for 14 s (stall_timeout_s 5); reconnecting"


class StatusSite(Site):
    """The console's API with a status source whose cameras the test sets."""

    def __init__(self, db: Path) -> None:
        super().__init__(db)
        self.cameras: dict[str, Any] = {}
        self.webhooks: list[dict[str, Any]] = []
        self.alert_outputs: list[dict[str, Any]] = []

    async def status(self) -> dict[str, Any]:
        return {
            "deployment": {"id": DEPLOYMENT},
            "cameras": self.cameras,
            "webhooks": self.webhooks,
            "alert_outputs": self.alert_outputs,
        }

    async def start(self) -> None:
        app = create_app(self.db, status=self.status, poll_interval_s=0.05, heartbeat_s=1.0)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]


async def pills(browser: Any, selector: str, key: str, count: int) -> dict[str, list[str]]:
    """Once ``count`` pills match ``selector``: each by its ``data-<key>``, as
    [state, text, title, colour]."""
    await browser.wait_for(f"document.querySelectorAll('{selector}').length === {count}", WAIT_S)
    found = await browser.evaluate(
        f"JSON.stringify([...document.querySelectorAll('{selector}')].map((p) =>"
        f" [p.dataset.{key}, p.dataset.state, p.textContent, p.title,"
        " getComputedStyle(p).color]))"
    )
    return {name: rest for name, *rest in json.loads(found)}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[StatusSite]:
    db = tmp_path / "alerts.db"
    create_deployment(db)
    served = StatusSite(db)
    served.cameras = {
        "cam_north": {"state": "running", "frames_processed": 120, "faces": 9, "tracks": 2},
        "cam_gate": {
            "state": "stalled",
            "last_error": STALLED_ERROR,
            "frames_processed": 30,
            "tracks": 1,
        },
        "cam_yard": {"state": "reconnecting", "last_error": "cam_yard: cannot open rtsp://x"},
        "cam_lost": {"unavailable": "GetTimeoutError: stats timed out", "role": "camera"},
    }
    async with served:
        yield served


async def test_the_strip_shows_every_camera_and_a_stalled_one_in_red(site: StatusSite) -> None:
    token = site.token("PC 11 Sam Example", Role.ADJUDICATOR)
    async with console_page(site, token) as browser:
        shown = await pills(browser, "#camera-strip .cam", "camera", 4)
        assert shown["cam_north"][:2] == ["running", "cam_north running"]
        assert shown["cam_gate"][:3] == ["stalled", "cam_gate stalled", STALLED_ERROR]
        assert shown["cam_yard"][:2] == ["reconnecting", "cam_yard reconnecting"]
        assert shown["cam_lost"][:2] == ["unreachable", "cam_lost unreachable"]
        red, green = "rgb(153, 27, 27)", "rgb(22, 101, 52)"
        assert (shown["cam_gate"][3], shown["cam_lost"][3]) == (red, red)
        assert shown["cam_north"][3] == green
        assert shown["cam_yard"][3] not in (red, green)
        assert not await browser.evaluate("document.getElementById('camera-strip').hidden")
        # No webhook and no alert output in this status: no delivery strip at all.
        assert await browser.evaluate("document.getElementById('delivery-strip').hidden")
        assert await browser.evaluate(text_of("count-frames")) == "150"
        # People (face tracks) beside faces: what the deployment has seen, not frames.
        assert await browser.evaluate(text_of("count-people")) == "3"
        assert await browser.evaluate(text_of("count-faces")) == "9"
        await browser.screenshot(ARTIFACTS / "console-cameras.png")

        site.cameras["cam_gate"] = {"state": "running", "last_error": None}  # it recovers
        gate = "document.querySelector('#camera-strip .cam[data-camera=\"cam_gate\"]')"
        await browser.wait_for(f"{gate}.dataset.state === 'running'", WAIT_S)
        assert await browser.evaluate(f"{gate}.textContent") == "cam_gate running"


CONTROL_ROOM_ERROR = "request failed: ClientConnectorError"


async def test_the_delivery_strip_shows_a_failing_control_room_in_red_until_it_recovers(
    site: StatusSite,
) -> None:
    site.webhooks = [
        {
            "name": "control_room",
            "target": "https://cr.example:8443",
            "up": False,
            "delivered": 4,
            "pending": 3,
            "failed": 0,
            "last_error": CONTROL_ROOM_ERROR,
            "last_success": "2026-12-02T09:00:00Z",
        },
        {"name": "audit_mirror", "target": "http://10.0.0.9:80", "up": True, "delivered": 7},
    ]
    site.alert_outputs = [
        {"name": "alerts_jsonl", "up": True, "delivered": 7, "position": 7, "last_error": None}
    ]
    token = site.token("PC 11 Sam Example", Role.ADJUDICATOR)
    async with console_page(site, token) as browser:
        shown = await pills(browser, "#delivery-strip .out", "output", 3)
        red, green = "rgb(153, 27, 27)", "rgb(22, 101, 52)"
        room = shown["webhook:control_room"]
        assert room[:2] == ["failing", "webhook control_room failing"]
        assert CONTROL_ROOM_ERROR in room[2] and "waiting 3" in room[2]
        assert "2026-12-02T09:00:00Z" in room[2]
        assert room[3] == red
        assert shown["webhook:audit_mirror"][:2] == ["up", "webhook audit_mirror up"]
        assert shown["webhook:audit_mirror"][3] == green
        assert shown["output:alerts_jsonl"][:2] == ["up", "output alerts_jsonl up"]
        assert "up to event 7" in shown["output:alerts_jsonl"][2]
        await browser.screenshot(ARTIFACTS / "console-deliveries.png")

        site.webhooks[0] = {**site.webhooks[0], "up": True, "pending": 0, "last_error": None}
        site.alert_outputs[0] = {**site.alert_outputs[0], "up": False, "last_error": "OSError"}
        room_pill = (
            "document.querySelector('#delivery-strip [data-output=\"webhook:control_room\"]')"
        )
        await browser.wait_for(f"{room_pill}.dataset.state === 'up'", WAIT_S)
        jsonl = "document.querySelector('#delivery-strip [data-output=\"output:alerts_jsonl\"]')"
        assert await browser.evaluate(f"{jsonl}.dataset.state") == "failing"
        assert "OSError" in await browser.evaluate(f"{jsonl}.title")
