"""Schemathesis fuzzes the live API from its own OpenAPI document: no request gets a 5xx.

The server is a real aiohttp ``TCPSite`` on 127.0.0.1 (an ephemeral port) in a thread of its
own, since schemathesis sends blocking HTTP requests. The document is fetched from the live
``/v1/openapi.json``, so the fuzzing covers what the API says about itself; every generated
request (valid by the schema, and invalid where schemathesis can break it) carries an admin
token and must be answered below 500, in the media type and shape the document declares.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
requests = pytest.importorskip("requests")

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
from lfr_actors.store.alerts import AlertStore  # noqa: E402
from lfr_actors.store.audit import SYSTEM  # noqa: E402
from lfr_actors.store.schema import Database  # noqa: E402
from lfr_actors.store.tokens import Role, TokenStore  # noqa: E402
from lfr_actors.testing.doubles import make_sighting  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLES_PER_MODE = 25  # positive + negative: at most 50 requests an operation
SKIPPED = {("GET", "/v1/alerts/stream")}  # an endless event stream
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
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    ids = []
    try:
        sightings = [
            make_sighting(1, entry="E1", camera="cam_a", at=0.0),
            make_sighting(2, entry="E1", camera="cam_b", at=1.0),
            make_sighting(3, entry="E2", camera="cam_a", at=2.0),
            make_sighting(4, entry="E3", camera="cam_b", at=3.0, distance=0.2),
        ]
        for sighting in sightings:
            event = fuser.observe(sighting)
            if event is not None:
                store.apply(event)
                ids.append(event.alert.id)
    finally:
        store.close()
    return sorted(set(ids))


def alert_counts(path: Path) -> tuple[int, int]:
    store = AlertStore(path)
    try:
        counts = store.counts()
    finally:
        store.close()
    return counts["alerts"], counts["events"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture
def server(db: Path) -> Iterator[LiveServer]:
    async def status() -> dict[str, Any]:
        return {"deployment": "dep1", "cameras": {"cam_a": {"fps": 10.0}}}

    with LiveServer(create_app(db, status=status, heartbeat_s=0.2)) as live:
        yield live


def test_no_generated_request_gets_a_server_error(db: Path, server: LiveServer) -> None:
    alert_ids = seed(db)
    assert len(alert_ids) == 3
    with Database(db) as governance:
        secret = TokenStore(governance).create("fuzzer", Role.ADMIN, by=SYSTEM).secret
    auth = {"Authorization": f"Bearer {secret}"}
    before = alert_counts(db)
    started = time.monotonic()

    session = requests.Session()
    document = session.get(f"{server.base_url}/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    fuzzed = []
    seen: set[tuple[str, int]] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in SKIPPED:
            continue
        fuzzed.append(key)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(generation_mode=mode)]
            if "{alert_id}" in operation.path:  # the seeded alerts too, not only random ids
                strategies += [
                    operation.as_strategy(generation_mode=mode, path_parameters={"alert_id": i})
                    for i in alert_ids
                ]
            fuzz(st.one_of(strategies), mode, server.base_url, session, auth, seen)

    operations = sum(len(item) for item in document["paths"].values())
    assert len(fuzzed) == operations - len(SKIPPED)
    # The seeded alerts were reached, not only random ids: crops served, decisions recorded.
    assert {
        ("/v1/alerts/{alert_id}", 200),
        ("/v1/alerts/{alert_id}/crop.jpg", 200),
        ("/v1/alerts/{alert_id}/adjudication", 201),
    } <= seen
    assert alert_counts(db) == before  # the API never writes alerts, refused or not
    assert time.monotonic() - started < 120


def fuzz(
    strategy: st.SearchStrategy[Any],
    mode: GenerationMode,
    base_url: str,
    session: Any,
    auth: dict[str, str],
    seen: set[tuple[str, int]],
) -> None:
    """Up to EXAMPLES_PER_MODE requests from ``strategy``; each must pass CHECKS."""

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
        seen.add((case.path, response.status_code))
        case.validate_response(response, checks=CHECKS, headers=auth)

    try:
        run()
    except Unsatisfiable:
        # Negative mode cannot break an operation with no parameters and no body.
        if mode is not GenerationMode.NEGATIVE:
            raise
