"""The officer's console in headless Chromium, against a real API server and store.

An officer signs in with a token, sees an alert raised before the page opened and one
raised while it is open, compares the live face with the watchlist image and confirms the
match; the decision is then read back through the API. A viewer's token is refused.
Everything the page does goes over HTTP to an aiohttp server on a real TCP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np
import pytest
import yaml
from aiohttp import ClientSession, web

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.control import Deployment
from lfr_actors.messages import Sighting
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM, Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled, Origin
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.topology.loader import load_topology, load_watchlist
from lfr_actors.topology.schema import NewEntry
from tests.browser import Chromium, chromium_path
from tests.conftest import REPO, lfr_test_home
from tests.integration.test_deployment_lifecycle import MIRANDA, write_topology

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="Debian's chromium is not installed: apt-get install chromium; .ci/run installs it",
    ),
]

ARTIFACTS = REPO / ".lfr" / "artifacts"
DEPLOYMENT = "westfield-2026-11"
ENTRIES = {"W-0001": "Jordan Example", "W-0002": "Casey Sample"}
WAIT_S = 45.0  # generous: the machine running this may be busy

BOTH_FACES_SHOWN = (
    "['live-face', 'watchlist-face'].every((id) => {"
    " const img = document.getElementById(id);"
    " return !img.hidden && img.complete && img.naturalWidth > 0; })"
)
ERROR_SHOWN = (
    "!document.getElementById('error').hidden && document.getElementById('error-text').textContent"
)


def face_jpeg(seed: int, width: int, height: int) -> bytes:
    """A drawn face (nobody's) as JPEG, so each <img> has something to show."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 70, (height, width, 3), dtype=np.uint8)
    skin = tuple(int(c) for c in rng.integers(110, 200, 3))
    cx, cy = width // 2, height // 2
    cv2.ellipse(image, (cx, cy), (width // 3, int(height * 0.4)), 0, 0, 360, skin, -1)
    for dx in (-width // 8, width // 8):
        cv2.circle(image, (cx + dx, int(height * 0.42)), max(2, width // 26), (40, 30, 25), -1)
    cv2.ellipse(
        image, (cx, int(height * 0.65)), (width // 9, height // 24), 0, 0, 180, (60, 50, 140), 3
    )
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(encoded.tobytes())


class Site:
    """The API on a real port over a fresh store: one deployment, two active entries."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.alerts = AlertStore(db)  # the alert actor's side: a fuser and the writing store
        self.fuser = Fuser(DEPLOYMENT, FusionConfig(threshold=0.5))
        self.sightings = 0
        self.streams: list[str | None] = []  # each stream request's Last-Event-ID

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve the API (again on the same port, after a stop)."""
        app = create_app(self.db, poll_interval_s=0.05, heartbeat_s=1.0)
        app.on_response_prepare.append(self._seen)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving (open streams end, as when a van's API restarts)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> Self:
        """Serve the API; at the block's end stop serving and close the writing store."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        self.alerts.close()

    async def _seen(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/v1/alerts/stream" and response.status == 200:
            self.streams.append(request.headers.get("Last-Event-ID"))

    def token(self, name: str, role: Role) -> str:
        with Database(self.db) as database:
            return TokenStore(database).create(name, role, by=SYSTEM).secret

    def raise_alert(
        self,
        entry_id: str,
        *,
        camera: str = "cam_a",
        distance: float = 0.31,
        track: tuple[str, int] | None = None,
        media: tuple[int, float] | None = None,
    ) -> str:
        """Store the alert one sighting of ``entry_id`` raises now; return its id.

        ``track`` is the sighting's (track id, faces of evidence); ``media`` its position
        in a recording (frame number, seconds).
        """
        self.sightings += 1
        n = self.sightings
        sighting = Sighting(
            sighting_id=f"{camera}:{n}:0",
            camera_id=camera,
            frame_seq=n,
            captured_at=time.time(),
            entry_id=entry_id,
            distance=distance,
            box=[100.0, 80.0, 160.0, 200.0],
            quality={"sharpness": 0.8},
            crop_jpeg=face_jpeg(100 + n, 120, 150),
            track_id=None if track is None else track[0],
            track_frames=1 if track is None else track[1],
            media_index=None if media is None else media[0],
            media_time_s=None if media is None else media[1],
        )
        event = self.fuser.observe(sighting)
        assert event is not None and event.kind == "raised", event
        self.alerts.apply(event)
        return event.alert.id

    async def get_alert(self, alert_id: str, token: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            ClientSession(self.url, headers=headers) as client,
            client.get(f"/v1/alerts/{alert_id}") as response,
        ):
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body


def create_deployment(db: Path) -> None:
    """The deployment's record and watchlist, as a topology file declares them."""
    now = time.time()
    with Database(db) as database:
        store = Deployments(database)
        store.create(
            make_deployment(
                DEPLOYMENT,
                now - 600,
                now + 3600,
                0.5,
                authorised_by="Supt. A. Example",
                purpose="Locate people wanted for serious offences",
                location="Westfield Stratford, east entrance",
                impact_assessment_ref="DPIA-2026-017",
            ),
            actor=SYSTEM,
        )
        authority = Actor("Supt. A. Example (signed watchlist file)")
        for seed, (entry_id, name) in enumerate(ENTRIES.items()):
            vector = np.random.default_rng(seed).standard_normal((1, 512)).astype(np.float32)
            store.add_entry(
                DEPLOYMENT,
                NewEntry(
                    id=entry_id,
                    display_name=name,
                    category="wanted",
                    legal_basis="PACE 1984 s.24",
                    source="custody record",
                    image_date="2025-03-14",
                ),
                Enrolled(
                    image=face_jpeg(seed, 240, 300),
                    image_type="image/jpeg",
                    embeddings=vector / np.linalg.norm(vector),
                    quality={"sharpness": 0.9},
                ),
                actor=authority,
                origin=Origin.FILE,
                approved_by=authority,
            )


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    db = tmp_path / "alerts.db"
    create_deployment(db)
    async with Site(db) as served:
        yield served


@contextlib.asynccontextmanager
async def console_page(
    site: Site | str, token: str, deployment: str = DEPLOYMENT
) -> AsyncIterator[Chromium]:
    """The console of the deployment in a fresh browser, signed in with ``token``.

    On a failure the page's console messages are printed (pytest shows them with the
    failure) and a screenshot is kept in .lfr/artifacts/console-failure.png.
    """
    async with Chromium.launch() as browser:
        try:
            base = site if isinstance(site, str) else site.url
            await browser.navigate(f"{base}/console?deployment={deployment}")
            await browser.wait_for("!document.getElementById('signin-panel').hidden", WAIT_S)
            await browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)}")
            await browser.click("#signin-submit")
            yield browser
        except BaseException:
            print(browser.console_text())
            with contextlib.suppress(Exception):
                await browser.screenshot(ARTIFACTS / "console-failure.png")
            raise


def item(alert_id: str) -> str:
    """The CSS selector of an alert's item in the queue."""
    return f'#queue li[data-alert-id="{alert_id}"]'


def shown(selector: str) -> str:
    """A JavaScript condition: an element matches ``selector``."""
    return f"document.querySelector({json.dumps(selector)}) !== null"


def text_of(element_id: str) -> str:
    return f"document.getElementById({json.dumps(element_id)}).textContent"


async def choose_outcome(browser: Chromium, outcome: str) -> None:
    await browser.evaluate(
        "(() => { const s = document.getElementById('outcome');"
        f" s.value = {json.dumps(outcome)}; s.dispatchEvent(new Event('change'));"
        " return s.value; })()"
    )


async def test_officer_confirms_a_live_alert(site: Site) -> None:
    officer = "PC 4521 Alex Example"
    token = site.token(officer, Role.ADJUDICATOR)
    earlier = site.raise_alert("W-0001")  # before the page opens: it comes from the list
    async with console_page(site, token) as browser:
        await browser.wait_for(shown(item(earlier)), WAIT_S)
        assert await browser.evaluate(text_of("stream-state")) == "live"
        signed_in = await browser.wait_for(f"{text_of('whoami')}", WAIT_S)
        assert signed_in == f"{officer} · adjudicator"
        chosen = await browser.evaluate("document.getElementById('deployment-select').value")
        assert chosen == DEPLOYMENT
        assert (
            await browser.evaluate(text_of("dep-location")) == "Westfield Stratford, east entrance"
        )

        live = site.raise_alert(  # while it is open: a track's decision, from a recording
            "W-0002", camera="cam_b", distance=0.274, track=("cam_b:1.7.0", 12), media=(1030, 41.2)
        )
        await browser.wait_for(shown(item(live)), WAIT_S)
        assert await browser.evaluate(text_of("count-open")) == "2"
        await browser.click(item(live) + " button")
        await browser.wait_for(BOTH_FACES_SHOWN, WAIT_S)
        await browser.wait_for(f"{text_of('fact-name')} === 'Casey Sample'", WAIT_S)
        assert await browser.evaluate(text_of("fact-category")) == "wanted"
        assert (await browser.evaluate(text_of("fact-distance"))).startswith(
            "0.274 (threshold 0.500"
        )
        assert await browser.evaluate(text_of("fact-cameras")) == "cam_b"
        assert await browser.evaluate(text_of("fact-track")) == "cam_b:1.7.0 (12 faces)"
        assert await browser.evaluate(text_of("fact-media")) == "frame 1030 at 00:41.2"

        # Confirming needs an outcome: the page says so and sends nothing.
        await browser.click("#confirm")
        assert "Choose an outcome" in await browser.wait_for(ERROR_SHOWN, WAIT_S)
        assert await browser.evaluate(shown(item(live)))

        await choose_outcome(browser, "arrest")
        await browser.evaluate("document.getElementById('note').value = 'Stopped at the exit.'")
        await browser.click("#confirm")
        await browser.wait_for(f"!({shown(item(live))})", WAIT_S)
        status = await browser.wait_for(text_of("status"), WAIT_S)
        assert status.startswith("Recorded: match confirmed (arrest) for entry W-0002"), status
        assert await browser.evaluate("document.getElementById('error').hidden")
        assert await browser.evaluate(text_of("count-decided")) == "1"
        assert await browser.evaluate(text_of("count-open")) == "1"

        # The remaining alert, selected, for the screenshot.
        await browser.click(item(earlier) + " button")
        await browser.wait_for(BOTH_FACES_SHOWN, WAIT_S)
        await browser.wait_for(f"{text_of('fact-name')} === 'Jordan Example'", WAIT_S)
        # A sighting without a track, from a live camera, says so.
        assert await browser.evaluate(text_of("fact-track")) == "– (no track)"
        assert await browser.evaluate(text_of("fact-media")) == "– (live)"
        shot = await browser.screenshot(ARTIFACTS / "console.png")

    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000, len(png)

    decided = await site.get_alert(live, token)
    assert decided["status"] == "adjudicated"
    [record] = decided["adjudications"]
    assert (record["decision"], record["outcome"]) == ("match_confirmed", "arrest")
    assert record["officer"] == officer
    assert record["note"] == "Stopped at the exit."
    assert (await site.get_alert(earlier, token))["status"] == "open"


async def report_tab(browser: Chromium) -> dict[str, Any]:
    """The browser's tab showing the deployment's report, once it has loaded."""
    deadline = time.monotonic() + WAIT_S
    title = f"Deployment report: {DEPLOYMENT}"
    while True:
        targets = (await browser.send("Target.getTargets"))["targetInfos"]
        found = [t for t in targets if t["type"] == "page" and t["title"] == title]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no tab titled {title!r}: {targets}")
        await asyncio.sleep(0.1)


async def test_without_a_pipeline_the_counters_are_the_stored_ones_and_the_report_opens(
    site: Site,
) -> None:
    # As under lfr serve, or after the cameras stop: no status source, figures in the store.
    with Database(site.db) as database:
        Deployments(database).add_counters(DEPLOYMENT, frames=92, faces=170, tracks=8)
    token = site.token("PC 11 Sam Example", Role.ADJUDICATOR)
    async with console_page(site, token) as browser:
        await browser.wait_for(f"{text_of('count-faces')} === '170'", WAIT_S)
        assert await browser.evaluate(text_of("count-frames")) == "92"
        assert await browser.evaluate(text_of("count-people")) == "8"
        source = "document.getElementById('faces-counter')"
        assert await browser.evaluate(f"{source}.dataset.source") == "stored"
        assert (await browser.evaluate(f"{source}.title")).startswith("stored: as last counted")

        # The report opens in a tab of its own, fetched with the console's token (the page's
        # blob is kept here to read what the tab was given).
        await browser.wait_for("!document.getElementById('open-report').hidden", WAIT_S)
        await browser.evaluate(
            "(() => { const made = URL.createObjectURL;"
            " URL.createObjectURL = (blob) => { window.reportBlob = blob; return made(blob); };"
            " })()"
        )
        await browser.click("#open-report")
        tab = await report_tab(browser)
        assert tab["url"].startswith("blob:"), tab
        assert not tab["canAccessOpener"]  # the report's tab cannot reach the console
        # (The console itself may not fetch a blob: its policy allows requests to the API only.)
        await browser.evaluate(
            "void window.reportBlob.text().then((t) => { window.reportText = t; })"
        )
        text = await browser.wait_for("window.reportText", WAIT_S)
        assert "Live facial recognition deployment report" in text
        assert "<tr><th>Faces seen</th><td>170</td></tr>" in text


async def test_viewer_is_refused_and_the_alert_stays_open(site: Site) -> None:
    token = site.token("Viewer Sam", Role.VIEWER)
    alert_id = site.raise_alert("W-0001")
    async with console_page(site, token) as browser:
        await browser.wait_for(shown(item(alert_id)), WAIT_S)
        await browser.click(item(alert_id) + " button")
        await browser.wait_for(BOTH_FACES_SHOWN, WAIT_S)
        await choose_outcome(browser, "arrest")
        await browser.click("#confirm")
        error = await browser.wait_for(ERROR_SHOWN, WAIT_S)
        assert "the token 'Viewer Sam' has the role viewer" in error, error
        assert error.startswith("Not allowed:"), error
        assert await browser.evaluate(shown(item(alert_id)))
        assert await browser.evaluate(text_of("status")) == ""

    body = await site.get_alert(alert_id, token)
    assert body["status"] == "open"
    assert body["adjudications"] == []


async def test_a_dropped_stream_resumes_from_the_last_event(site: Site) -> None:
    token = site.token("PC 7 Robin Example", Role.ADJUDICATOR)
    async with console_page(site, token) as browser:
        await browser.wait_for(f"{text_of('stream-state')} === 'live'", WAIT_S)
        first = site.raise_alert("W-0001")
        await browser.wait_for(shown(item(first)), WAIT_S)
        last_event_id = site.alerts.last_event_id()

        await site.stop()  # the stream ends; the page retries every 2 s
        await browser.wait_for(f"{text_of('stream-state')} === 'reconnecting'", WAIT_S)
        missed = site.raise_alert("W-0002")  # while the page is disconnected
        await site.start()
        await browser.wait_for(shown(item(missed)), WAIT_S)
        await browser.wait_for(f"{text_of('stream-state')} === 'live'", WAIT_S)
        assert await browser.evaluate(shown(item(first)))

    # The first stream started at the newest event; the second resumed after the last one.
    assert site.streams[:2] == [None, str(last_event_id)], site.streams


@pytest.mark.models
@pytest.mark.data
async def test_an_alert_from_the_pipeline_is_adjudicated_in_the_console(
    shared_data: Path, tmp_path: Path
) -> None:
    """The whole way: Ray pipeline -> alert store -> live stream -> page -> decision -> API."""
    topology_path = write_topology(tmp_path, shared_data, start=time.time() - 60,
                                   end=time.time() + 3600)  # fmt: skip
    people = shared_data / "faces" / "people"
    (tmp_path / "watchlist.yaml").write_text(
        json.dumps(
            {
                "version": 1,
                "entries": [
                    {
                        "id": "W-7",
                        "display_name": "Lin-Manuel Miranda",
                        "images": [str(people / MIRANDA)],
                        "category": "wanted",
                        "legal_basis": "test warrant",
                        "source": "shared test data",
                        "image_date": "2020-01-01",
                    }
                ],
            }
        )
    )
    data = yaml.safe_load(topology_path.read_text())
    data["watchlist"] = {"file": "watchlist.yaml"}
    topology_path.write_text(yaml.safe_dump(data))
    topology = load_topology(topology_path)
    assert topology.watchlist is not None
    deployment = Deployment(topology, load_watchlist(topology.watchlist.file), home=lfr_test_home())
    runner = asyncio.create_task(deployment.run())
    try:
        deadline = time.monotonic() + 180
        while not deployment.live.tasks:
            if runner.done():
                runner.result()
            assert time.monotonic() < deadline, "the deployment did not start"
            await asyncio.sleep(0.2)
        assert deployment.live.api_url is not None
        officer = "PC 77 Pipeline"
        with Database(deployment.paths.alerts_db) as database:
            token = TokenStore(database).create(officer, Role.ADJUDICATOR, by=SYSTEM).secret
        async with console_page(deployment.live.api_url, token, "lifecycle") as browser:
            first = "document.querySelector('#queue li[data-alert-id]')"
            await browser.wait_for(f"{first} !== null", 120.0)
            alert_id = await browser.evaluate(f"{first}.dataset.alertId")
            await browser.click(item(alert_id) + " button")
            await browser.wait_for(BOTH_FACES_SHOWN, WAIT_S)
            await browser.wait_for(f"{text_of('fact-name')} === 'Lin-Manuel Miranda'", WAIT_S)
            await browser.screenshot(ARTIFACTS / "console-pipeline.png")
            await choose_outcome(browser, "engaged_no_further_action")
            await browser.click("#confirm")
            await browser.wait_for(f"!({shown(item(alert_id))})", WAIT_S)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            ClientSession(deployment.live.api_url, headers=headers) as client,
            client.get(f"/v1/alerts/{alert_id}") as response,
        ):
            alert = await response.json()
        assert alert["entry_id"] == "W-7" and alert["status"] == "adjudicated"
        [record] = alert["adjudications"]
        assert (record["decision"], record["outcome"], record["officer"]) == (
            "match_confirmed",
            "engaged_no_further_action",
            officer,
        )
    finally:
        deployment.request_stop()
        await runner
