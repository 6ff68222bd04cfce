"""Schemathesis fuzzes the live API from its own OpenAPI document: no request gets a 5xx.

The server is a real aiohttp ``TCPSite`` on 127.0.0.1 (an ephemeral port) in a thread of its
own, since schemathesis sends blocking HTTP requests. The document is fetched from the live
``/v1/openapi.json``, so the fuzzing covers what the API says about itself; every generated
request (valid by the schema, and invalid where schemathesis can break it) carries an admin
token and must be answered below 500, in the media type and shape the document declares.

Random ids mostly meet 404s, so each operation with a path parameter is also fuzzed at
seeded objects: three alerts, an open deployment with an active, a pending and a deletable
watchlist entry, and a second deployment the fuzzer may close. Uploads go through the real
enrolment models (the model cache), so enrolment is never "not available" (503).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
requests = pytest.importorskip("requests")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from aiohttp import web  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lfr_actors.alerts.fusion import Fuser, FusionConfig  # noqa: E402
from lfr_actors.api.app import create_app  # noqa: E402
from lfr_actors.enrolment import pipeline_enroller  # noqa: E402
from lfr_actors.models.cache import ModelCache  # noqa: E402
from lfr_actors.models.pipeline import FacePipeline  # noqa: E402
from lfr_actors.models.runtime import RuntimeConfig  # noqa: E402
from lfr_actors.store.alerts import AlertStore  # noqa: E402
from lfr_actors.store.audit import SYSTEM, Actor  # noqa: E402
from lfr_actors.store.db import Database  # noqa: E402
from lfr_actors.store.deployments import Deployments  # noqa: E402
from lfr_actors.store.records import Enrolled  # noqa: E402
from lfr_actors.store.tokens import Role, TokenStore  # noqa: E402
from lfr_actors.testing.declarations import make_deployment, make_entry  # noqa: E402
from lfr_actors.testing.doubles import fake_jpeg, make_sighting  # noqa: E402
from lfr_actors.topology.schema import ACTOR_ID_PATTERN, ENTRY_ID_PATTERN  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.models]

EXAMPLES_PER_MODE = 25  # positive + negative: at most 50 requests an operation
SKIPPED = {("GET", "/v1/alerts/stream")}  # an endless event stream
AIOHTTP_MAX_LINE = 8190
"""aiohttp's default limit on the request line (a long negative-mode query exceeds it)."""
DEPLOYMENT = "fuzz-dep"
"""The seeded open deployment: its alerts, entries and report are fuzzed."""
CLOSING = "fuzz-close"
"""A second open deployment, the one the close operation is fuzzed at."""
ENTRY = "W-1"  # active
PENDING = "W-2"  # for the approval operation
DELETABLE = "W-3"  # for the delete operation, so the others keep their image
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class LiveServer:
    """An aiohttp application served on 127.0.0.1 from an event loop in its own thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(app)
        self.base_url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def seed(path: Path) -> list[str]:
    """Three alerts (two entries, two cameras) written as the alert actor writes them."""
    store = AlertStore(path)
    fuser = Fuser(DEPLOYMENT, FusionConfig(threshold=0.5))
    ids = []
    try:
        sightings = [
            make_sighting(1, entry=ENTRY, camera="cam_a", at=0.0),
            make_sighting(2, entry=ENTRY, camera="cam_b", at=1.0),
            make_sighting(3, entry=PENDING, camera="cam_a", at=2.0),
            make_sighting(4, entry=DELETABLE, camera="cam_b", at=3.0, distance=0.2),
        ]
        for sighting in sightings:
            event = fuser.observe(sighting)
            if event is not None:
                store.apply(event)
                ids.append(event.alert.id)
    finally:
        store.close()
    return sorted(set(ids))


def seed_deployments(path: Path) -> None:
    """Two deployments open now; the first with an active, a pending and a third entry."""
    now = time.time()
    manager, authoriser = Actor("PC Clark"), Actor("Insp Adams")
    with Database(path) as db:
        deployments = Deployments(db)
        for deployment_id in (DEPLOYMENT, CLOSING):
            new = make_deployment(
                deployment_id, now - 3600, now + 3600, authorised_by="Supt Baker", purpose="fuzzing"
            )
            deployments.create(new, actor=authoriser)
        for n, entry_id in enumerate((ENTRY, PENDING, DELETABLE), start=1):
            enrolled = Enrolled(
                image=fake_jpeg(n),
                image_type="image/jpeg",
                embeddings=np.full((1, 128), n / 10, dtype=np.float32),
                quality={"size_px": 120.0},
            )
            new_entry = make_entry(
                entry_id, display_name=f"Person {n}", source="custody", image_date="2026-01-02"
            )
            approved_by = None if entry_id == PENDING else authoriser
            deployments.add_entry(
                DEPLOYMENT, new_entry, enrolled, actor=manager, approved_by=approved_by
            )


def path_examples(method: str, path: str, alert_ids: list[str]) -> list[dict[str, str]]:
    """The seeded objects an operation's path parameters can name."""
    if "{alert_id}" in path:
        return [{"alert_id": i} for i in alert_ids]
    if "{entry_id}" in path:
        entry = ENTRY
        if path.endswith("/approval"):
            entry = PENDING
        elif method == "DELETE":
            entry = DELETABLE
        return [{"deployment_id": DEPLOYMENT, "entry_id": entry}]
    if "{deployment_id}" in path:
        return [{"deployment_id": CLOSING if path.endswith("/close") else DEPLOYMENT}]
    return []


def alert_rows(path: Path) -> tuple[int, int, list[str]]:
    """How many alerts and sightings there are, and the kinds of the events, oldest first."""
    store = AlertStore(path)
    try:
        counts = store.counts()
        kinds = [event["kind"] for event in store.events_after(0, 500)]
    finally:
        store.close()
    return counts["alerts"], counts["sightings"], kinds


DAY = 86_400


def _text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Plain text (lfr_actors.plaintext): no control characters, no lone surrogates."""
    letters = st.characters(exclude_categories=("Cc", "Cs"))
    return st.text(letters, min_size=1, max_size=max_size).filter(str.strip)


@st.composite
def new_deployments(draw: st.DrawFn) -> dict[str, Any]:
    """Deployments a careful client could declare: windows around now, in any UTC offset.

    Random date-times from the schema almost never make a window that ends in the future
    and lasts at most 31 days, so without these the create operation only ever met 422.
    """
    now = datetime.now(UTC)
    start = now + timedelta(seconds=draw(st.integers(-7 * DAY, 400 * DAY)))
    end = start + timedelta(seconds=draw(st.integers(1, 31 * DAY)))
    zone = timezone(timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
    body = {
        "id": draw(st.from_regex(ACTOR_ID_PATTERN, fullmatch=True)),
        "authorised_by": draw(_text()),
        "purpose": draw(_text()),
        "location": draw(_text()),
        "start": start.astimezone(zone).isoformat(),
        "end": end.astimezone(zone).isoformat(),
        "threshold": draw(st.floats(0.0, 2.0, exclude_min=True, exclude_max=True)),
    }
    if draw(st.booleans()):
        body["impact_assessment_ref"] = draw(_text())
    return body


@st.composite
def photos(draw: st.DrawFn) -> bytes:
    """An encoded picture of noise in any accepted format and size, whole or damaged."""
    height, width = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(
        0, 256, (height, width, 3), dtype=np.uint8
    )
    ok, encoded = cv2.imencode(
        draw(st.sampled_from([".jpg", ".png", ".bmp", ".tiff", ".webp"])), pixels
    )
    assert ok
    data = encoded.tobytes()
    damage = draw(st.sampled_from(["none", "truncated", "flipped", "header only"]))
    if damage == "header only":  # the format's signature and nothing to decode
        return data[:12]
    if damage == "truncated":
        return data[: draw(st.integers(8, max(8, len(data) - 1)))]
    if damage == "flipped":
        at = draw(st.integers(8, len(data) - 1))
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


@st.composite
def uploads(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed enrolment forms with a real (faceless) picture, so uploads reach the
    enrolment models; schema-generated image bytes are almost never an image at all."""
    return {
        "id": draw(st.from_regex(ENTRY_ID_PATTERN, fullmatch=True)),
        "display_name": draw(_text()),
        "category": draw(_text()),
        "legal_basis": draw(_text()),
        "source": draw(_text()),
        "image_date": draw(st.dates()).isoformat(),
        "image": draw(photos()),
    }


def crafted(operation: Any) -> list[st.SearchStrategy[Any]]:
    """Cases with bodies the schema's own generation rarely makes, for the positive mode."""
    key = (operation.method.upper(), operation.path)
    if key == ("POST", "/v1/deployments"):
        return [
            new_deployments().map(
                lambda body: operation.Case(body=body, media_type="application/json")
            )
        ]
    if key == ("POST", "/v1/deployments/{deployment_id}/entries"):
        return [
            uploads().map(
                lambda body: operation.Case(
                    body=body,
                    media_type="multipart/form-data",
                    path_parameters={"deployment_id": DEPLOYMENT},
                )
            )
        ]
    return []


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture(scope="module")
def pipeline(model_cache: ModelCache) -> FacePipeline:
    return FacePipeline.build(RuntimeConfig(device="cpu"), cache=model_cache)


@pytest.fixture
def server(db: Path, pipeline: FacePipeline) -> Iterator[LiveServer]:
    async def status() -> dict[str, Any]:
        return {"deployment": DEPLOYMENT, "cameras": {"cam_a": {"state": "running", "fps": 10.0}}}

    app = create_app(db, status=status, heartbeat_s=0.2, enroller=pipeline_enroller(pipeline))
    with LiveServer(app) as live:
        yield live


def test_no_generated_request_gets_a_server_error(db: Path, server: LiveServer) -> None:
    alert_ids = seed(db)
    assert len(alert_ids) == 3
    seed_deployments(db)
    with Database(db) as governance:
        secret = TokenStore(governance).create("fuzzer", Role.ADMIN, by=SYSTEM).secret
    auth = {"Authorization": f"Bearer {secret}"}
    alerts, sightings, kinds = alert_rows(db)
    started = time.monotonic()

    session = requests.Session()
    document = session.get(f"{server.base_url}/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    fuzzed = []
    seen: set[tuple[str, str, int]] = set()
    reasons: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in SKIPPED:
            continue
        fuzzed.append(key)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(generation_mode=mode)]
            # The seeded objects too, not only random ids.
            strategies += [
                operation.as_strategy(generation_mode=mode, path_parameters=params)
                for params in path_examples(key[0], operation.path, alert_ids)
            ]
            if mode is GenerationMode.POSITIVE:
                strategies += crafted(operation)
            fuzz(st.one_of(strategies), mode, server.base_url, session, auth, seen, reasons)

    operations = sum(len(item) for item in document["paths"].values())
    assert len(fuzzed) == operations - len(SKIPPED)
    # The seeded objects were reached, not only random ids: crops and photos served,
    # decisions and approvals recorded, reports exported, an entry deleted, a deployment
    # closed.
    deployment = "/v1/deployments/{deployment_id}"
    entry = f"{deployment}/entries/{{entry_id}}"
    assert {
        ("GET", "/v1/alerts/{alert_id}", 200),
        ("GET", "/v1/alerts/{alert_id}/crop.jpg", 200),
        ("POST", "/v1/alerts/{alert_id}/adjudication", 201),
        ("GET", deployment, 200),
        ("POST", f"{deployment}/close", 200),
        ("GET", f"{deployment}/report", 200),
        ("GET", f"{deployment}/report.html", 200),
        ("GET", f"{deployment}/entries", 200),
        ("GET", entry, 200),
        ("GET", f"{entry}/image", 200),
        ("POST", f"{entry}/approval", 201),
        ("DELETE", entry, 200),
    } <= seen
    assert ("POST", "/v1/deployments", 201) in seen
    # Uploads reached the enrolment models (never a 503): pictures were decoded and
    # searched for a face, damaged ones refused as unreadable. Which of those the
    # generated uploads hit depends on the examples drawn (derandomize seeds them from
    # this module's code), so one of each is also sent here, whatever was drawn.
    noise = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = cv2.imencode(".png", noise)[1].tobytes()
    for n, picture in enumerate((whole, whole[:12])):
        form = {
            "id": f"FIXED-{n}",
            "display_name": "Fixed Upload",
            "category": "wanted",
            "legal_basis": "PACE s.24",
            "source": "custody",
            "image_date": "2026-01-02",
        }
        answer = session.post(
            f"{server.base_url}/v1/deployments/{DEPLOYMENT}/entries",
            data=form,
            files={"image": ("p.png", picture, "image/png")},
            headers=auth,
            timeout=30,
        )
        assert answer.status_code == 422, answer.text
        reasons.add(answer.json()["reason"])
    assert {"no_face", "unreadable"} <= reasons, reasons
    # The API never writes alerts or sightings, refused or not; an adjudication adds
    # an event to the live stream, and nothing else does.
    after = alert_rows(db)
    assert after[:2] == (alerts, sightings)
    assert after[2][: len(kinds)] == kinds
    assert set(after[2][len(kinds) :]) == {"adjudicated"}
    assert time.monotonic() - started < 120


def fuzz(
    strategy: st.SearchStrategy[Any],
    mode: GenerationMode,
    base_url: str,
    session: Any,
    auth: dict[str, str],
    seen: set[tuple[str, str, int]],
    reasons: set[str],
) -> None:
    """Up to EXAMPLES_PER_MODE requests from ``strategy``; each must pass CHECKS.

    Each answer is added to ``seen`` (method, path template, status), and the ``reason``
    of each problem that gives one to ``reasons``.
    """

    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=auth, timeout=10)
        assert response.status_code < 500, (response.status_code, case.as_curl_command())
        request_line = f"{case.method.upper()} {response.request.path_url} HTTP/1.1"
        if len(request_line.encode()) > AIOHTTP_MAX_LINE:
            # aiohttp's HTTP parser refuses the request before the application sees it,
            # in its own text/plain 400 that no route's document can describe.
            assert response.status_code == 400, response.status_code
            return
        seen.add((case.method.upper(), case.path, response.status_code))
        case.validate_response(response, checks=CHECKS, headers=auth)
        if response.status_code >= 400:  # a problem body: the checks above said so
            reason = response.json().get("reason")
            if isinstance(reason, str):
                reasons.add(reason)

    try:
        run()
    except Unsatisfiable:
        # Negative mode cannot break an operation with no parameters and no body.
        if mode is not GenerationMode.NEGATIVE:
            raise
