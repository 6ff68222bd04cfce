"""Signed webhooks: the signature, the retry rule, the schema, and delivery to a real receiver.

The delivery tests run a real aiohttp server on loopback as the control room's receiver,
over a real store and the API's real event hub: the requests verify with the shared
secret, a receiver down for a while is sent everything afterwards in order, a refusing
receiver is not retried for ever, and a restart resumes from the stored position.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import random
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lfr_actors.alerts import webhooks as signing
from lfr_actors.alerts.fusion import AlertEvent, Fuser, FusionConfig
from lfr_actors.alerts.webhooks import Outcome, backoff_s, decide, signature, verify
from lfr_actors.api.metrics import render_metrics
from lfr_actors.api.stream import EventHub
from lfr_actors.cli.status import status_lines
from lfr_actors.control.jsonl_sink import event_line
from lfr_actors.control.webhooks import Webhooks
from lfr_actors.store.alerts import AlertStore
from lfr_actors.testing.doubles import make_sighting
from lfr_actors.topology import TopologyError, check_files, load_topology, validate_command
from lfr_actors.topology.schema import Webhook
from lfr_actors.topology.secrets import SecretError, read_secret

SECRET = "s3cret-shared-with-the-control-room"
ENV = "LFR_TEST_WEBHOOK_SECRET"


# -- signing and the retry rule ---------------------------------------------------------


def test_signature_is_hmac_sha256_of_the_timestamp_dot_body() -> None:
    body = b'{"event":"raised","event_id":7}'
    header = signature(b"key", 1700000000, body)
    mac = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify(b"key", header, body, now=1700000010)
    assert not verify(b"other", header, body, now=1700000010)  # wrong secret
    assert not verify(b"key", header, body + b" ", now=1700000010)  # body changed
    assert not verify(b"key", header, body, now=1700000000 + 301)  # too old: a replay
    assert not verify(b"key", "v1=" + mac, body, now=1700000000)  # no timestamp


@pytest.mark.parametrize(
    ("status", "attempt", "outcome"),
    [
        (200, 1, Outcome.DELIVERED),
        (204, 5, Outcome.DELIVERED),
        (None, 1, Outcome.RETRY),  # timeout or connection error
        (None, 1000, Outcome.RETRY),
        (500, 1000, Outcome.RETRY),
        (503, 1, Outcome.RETRY),
        (408, 50, Outcome.RETRY),
        (429, 50, Outcome.RETRY),
        (400, 1, Outcome.RETRY),
        (400, signing.CLIENT_ERROR_ATTEMPTS - 1, Outcome.RETRY),
        (400, signing.CLIENT_ERROR_ATTEMPTS, Outcome.SKIP),
        (404, signing.CLIENT_ERROR_ATTEMPTS, Outcome.SKIP),
        (302, signing.CLIENT_ERROR_ATTEMPTS, Outcome.SKIP),
    ],
)
def test_what_each_answer_means(status: int | None, attempt: int, outcome: Outcome) -> None:
    assert decide(status, attempt) is outcome


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 40):
        ceiling = min(signing.MAX_BACKOFF_S, signing.FIRST_BACKOFF_S * 2 ** (attempt - 1))
        waits = [backoff_s(attempt, rng) for _ in range(50)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jittered over the whole range, not fixed
    assert max(backoff_s(60, rng) for _ in range(100)) <= signing.MAX_BACKOFF_S


# -- the topology -----------------------------------------------------------------------

TOPOLOGY = """\
version: 1
deployment:
  id: test-deploy
  authorised_by: Supt A. Example
  purpose: testing
  location: a test bench
  start: 2026-11-20T08:00:00Z
  end: 2026-11-20T20:00:00Z
cameras:
  - id: cam_a
    source: {type: url, url: "rtsp://192.0.2.10:554/s1"}
alerts:
  threshold: 0.6
  webhooks:
WEBHOOKS
storage:
  data_dir: data
"""


def topology_file(folder: Path, webhooks: str) -> Path:
    block = textwrap.indent(textwrap.dedent(webhooks), "    ")
    path = folder / "topo.yaml"
    path.write_text(TOPOLOGY.replace("WEBHOOKS\n", block), "utf-8")
    return path


def issues_of(path: Path) -> list[Any]:
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return caught.value.issues


def test_a_webhook_reads_with_its_defaults(tmp_path: Path) -> None:
    path = topology_file(
        tmp_path,
        f"""\
        - url: https://user:pw@control.example.org/lfr?token=abc
          secret_env: {ENV}
        - name: second
          url: http://127.0.0.1:9000/hook
          secret_file: secrets/hook.key
          events: [raised, adjudicated]
          timeout_s: 0.5
        """,
    )
    alerts = load_topology(path).alerts
    first, second = alerts.webhooks
    assert (first.events, first.timeout_s) == (("raised", "updated", "adjudicated"), 5.0)
    assert alerts.webhook_names() == ["webhook-0", "second"]
    assert second.secret_file == tmp_path / "secrets" / "hook.key"  # relative to the file
    # Only scheme://host:port is ever shown: the user part, path and query may be secrets.
    assert first.shown() == "https://control.example.org:443"
    assert second.shown() == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("webhook", "where", "message"),
    [
        (
            "- {url: ftp://x.example/h, secret_env: A}",
            "alerts.webhooks[0].url",
            "url must start with http:// or https://",
        ),
        (
            "- {url: 'https:///h', secret_env: A}",
            "alerts.webhooks[0].url",
            "url has no host",
        ),
        (
            "- {url: https://x.example/h}",
            "alerts.webhooks[0]",
            "a webhook needs a secret: secret_env or secret_file",
        ),
        (
            "- {url: https://x.example/h, secret_env: A, secret_file: k}",
            "alerts.webhooks[0].secret_env",
            "exactly one of secret_env and secret_file",
        ),
        (
            "- {url: https://x.example/h, secret_env: A, events: [raised, closed]}",
            "alerts.webhooks[0].events[1]",
            "events must be one of raised, updated, adjudicated",
        ),
        (
            "- {url: https://x.example/h, secret_env: A, timeout_s: 0.1}",
            "alerts.webhooks[0].timeout_s",
            "0.5",
        ),
        (
            "- {url: https://x.example/h, secret_env: A, timeout_s: 61}",
            "alerts.webhooks[0].timeout_s",
            "60",
        ),
        (
            "- {url: https://x.example/h, secret_env: 'not a name'}",
            "alerts.webhooks[0].secret_env",
            "",
        ),
    ],
)
def test_bad_webhooks_are_topology_errors_with_their_line(
    tmp_path: Path, webhook: str, where: str, message: str
) -> None:
    path = topology_file(tmp_path, webhook + "\n")
    issues = issues_of(path)
    assert [i.path for i in issues] == [where], [str(i) for i in issues]
    issue = issues[0]
    assert issue.line == 15  # the webhook's line in the file
    assert message in issue.message
    assert str(path) in str(issue) and ":15" in str(issue)


def test_webhook_names_must_differ(tmp_path: Path) -> None:
    path = topology_file(
        tmp_path,
        """\
        - {name: room, url: https://a.example/h, secret_env: A}
        - {name: room, url: https://b.example/h, secret_env: A}
        """,
    )
    issues = issues_of(path)
    assert {i.path for i in issues} == {"alerts.webhooks[0].name", "alerts.webhooks[1].name"}


def _secret_issue(tmp_path: Path, webhook: str) -> str:
    topology = load_topology(topology_file(tmp_path, webhook + "\n"))
    issues = [i for i in check_files(topology, None) if "webhooks" in i.path]
    assert len(issues) == 1, [str(i) for i in issues]
    assert issues[0].line == 15
    return issues[0].message


def test_a_secret_that_cannot_be_used_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    env_hook = f"- {{url: https://x.example/h, secret_env: {ENV}}}"
    assert (
        _secret_issue(tmp_path, env_hook)
        == f"the environment variable {ENV} (secret_env) is not set"
    )
    monkeypatch.setenv(ENV, "  ")
    assert _secret_issue(tmp_path, env_hook) == f"the environment variable {ENV} is empty"
    monkeypatch.setenv(ENV, "short")
    assert "use at least 16" in _secret_issue(tmp_path, env_hook)
    monkeypatch.setenv(ENV, SECRET)
    topology = load_topology(topology_file(tmp_path, env_hook + "\n"))
    assert not [i for i in check_files(topology, None) if "webhooks" in i.path]

    key = tmp_path / "hook.key"
    file_hook = "- {url: https://x.example/h, secret_file: hook.key}"
    assert _secret_issue(tmp_path, file_hook) == f"the secret file {key} does not exist"
    key.write_text(SECRET + "\n")
    key.chmod(0o644)
    assert _secret_issue(tmp_path, file_hook) == (
        f"the secret file {key} has mode 0644; it must be readable by its owner only "
        f"(chmod 600 {key})"
    )
    key.chmod(0o600)
    topology = load_topology(topology_file(tmp_path, file_hook + "\n"))
    assert not [i for i in check_files(topology, None) if "webhooks" in i.path]
    assert read_secret(topology.alerts.webhooks[0]) == SECRET.encode()  # newline not part
    key.write_text("\n")
    assert _secret_issue(tmp_path, file_hook) == f"the secret file {key} is empty"
    # The value is never in a message.
    monkeypatch.setenv(ENV, "x" * 10)
    with pytest.raises(SecretError) as caught:
        read_secret(Webhook(url="https://x.example/h", secret_env=ENV))
    assert "xxxxxxxxxx" not in str(caught.value)


def test_lfr_validate_exits_2_on_a_secret_that_is_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = topology_file(
        tmp_path, f"- {{name: room, url: 'https://u:p@x.example/h?k=1', secret_env: {ENV}}}\n"
    )
    monkeypatch.delenv(ENV, raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert validate_command(path, out, err) == 2
    assert f"{path}:15" in err.getvalue() and f"{ENV} (secret_env) is not set" in err.getvalue()
    monkeypatch.setenv(ENV, SECRET)
    out, err = io.StringIO(), io.StringIO()
    assert validate_command(path, out, err) == 0, err.getvalue()
    summary = out.getvalue()
    assert "webhook      room: https://x.example:443, raised, updated, adjudicated" in summary
    assert SECRET not in summary and "u:p" not in summary and "k=1" not in summary


# -- delivery to a real receiver on loopback --------------------------------------------


@dataclass
class Receiver:
    """A control room's endpoint: verifies each request and answers as told."""

    secret: bytes
    answers: dict[int, list[int]] = field(default_factory=dict)
    """Per event id, the statuses to answer in turn (200 once they run out)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert verify(self.secret, request.headers["X-LFR-Signature"], body, time.time())
        document = json.loads(body)
        assert request.headers["X-LFR-Event-Id"] == str(document["event_id"])
        assert request.headers["X-LFR-Event"] == document["event"]
        assert request.content_type == "application/json"
        self.requests.append(document)
        queue = self.answers.get(document["event_id"], [])
        return web.Response(status=queue.pop(0) if queue else 200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self) -> list[int]:
        return [r["event_id"] for r in self.requests]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries every 0.05 to 0.2 s: the rule is tested above; here, that retries happen."""
    monkeypatch.setattr(signing, "FIRST_BACKOFF_S", 0.05)
    monkeypatch.setattr(signing, "MAX_BACKOFF_S", 0.2)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(ENV, SECRET)
    yield ENV


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture
async def hub(db: Path) -> AsyncIterator[EventHub]:
    with AlertStore.open_readonly(db, create=True) as reader:
        hub = EventHub(reader, 0.01, lambda e: b"")
        poller = asyncio.create_task(hub.run())
        try:
            yield hub
        finally:
            poller.cancel()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver(SECRET.encode())
    await server.start()
    try:
        yield server
    finally:
        if server.runner is not None:
            await server.stop()


class Events:
    """Alert events written to the store as the alert actor writes them."""

    def __init__(self, db: Path) -> None:
        self.store = AlertStore(db)
        self.fuser = Fuser("dep1", FusionConfig(threshold=0.5))
        self.n = 0

    def add(self, count: int = 1, entry: str = "E1") -> None:
        for _ in range(count):
            self.n += 1
            event: AlertEvent | None = self.fuser.observe(
                make_sighting(self.n, entry=entry, at=float(self.n))
            )
            assert event is not None
            self.store.apply(event)

    def stored(self) -> list[dict[str, Any]]:
        return self.store.events_after(0, 500)


@pytest.fixture
def events(db: Path) -> Iterator[Events]:
    written = Events(db)
    yield written
    written.store.close()


def hooks(url: str, *, name: str = "room", **fields: Any) -> Webhooks:
    webhook = Webhook(url=url, secret_env=ENV, name=name, **fields)
    return Webhooks([webhook], [name], hub_db[0])


hub_db: list[Path] = []


@pytest.fixture(autouse=True)
def _db_for_hooks(db: Path) -> Iterator[None]:
    hub_db[:] = [db]
    yield
    hub_db.clear()


async def until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def start(hub: EventHub, webhooks: Webhooks, **options: Any) -> tuple[asyncio.Event, Any]:
    """Run ``webhooks`` until the returned event is set; once each knows its position."""
    stop = asyncio.Event()
    task = asyncio.create_task(webhooks.run(hub, stop, wait_s=0.05, **options))
    await until(lambda: bool(webhooks.senders) and all(s.state.started for s in webhooks.senders))
    return stop, task


async def test_each_event_is_posted_signed_in_order_as_its_jsonl_line(
    secret_env: str, hub: EventHub, receiver: Receiver, events: Events
) -> None:
    webhooks = hooks(receiver.url)
    stop, task = await start(hub, webhooks)
    events.add(3)
    await until(lambda: len(receiver.requests) == 3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert receiver.requests == [event_line(e) for e in events.stored()]
    assert receiver.ids() == [1, 2, 3]
    (state,) = webhooks.states()
    status = state.as_status()
    assert (status["delivered"], status["failed"], status["pending"]) == (3, 0, 0)
    assert status["position"] == 3 and status["up"] and status["last_success"] is not None
    assert status["target"] == f"http://127.0.0.1:{receiver.port}"
    assert hub.followers == 0


async def test_a_receiver_down_for_a_while_then_gets_everything_in_order_once(
    secret_env: str, hub: EventHub, receiver: Receiver, events: Events
) -> None:
    webhooks = hooks(receiver.url)
    stop, task = await start(hub, webhooks)
    events.add(1)
    await until(lambda: receiver.ids() == [1])
    await receiver.stop()
    events.add(3)
    (state,) = webhooks.states()
    await until(lambda: state.attempts_failed >= 3 and state.pending == 3)  # retried meanwhile
    assert state.failing
    assert state.last_error is not None and state.last_error.startswith("cannot connect")
    await receiver.start()  # back, on the same port
    events.add(1)
    await until(lambda: len(receiver.requests) >= 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert receiver.ids() == [1, 2, 3, 4, 5]
    # Nothing sent twice with a different id: each id always carries the same document.
    by_id = {e["event_id"]: event_line(e) for e in events.stored()}
    assert all(r == by_id[r["event_id"]] for r in receiver.requests)
    assert (state.delivered, state.pending, state.failing) == (5, 0, False)


async def test_a_refused_event_is_tried_a_few_times_then_skipped(
    secret_env: str, hub: EventHub, receiver: Receiver, events: Events
) -> None:
    receiver.answers = {1: [400] * 100, 2: [503, 500]}
    webhooks = hooks(receiver.url)
    stop, task = await start(hub, webhooks)
    events.add(3)
    await until(lambda: 3 in receiver.ids())
    stop.set()
    await asyncio.wait_for(task, 5)
    # Event 1: CLIENT_ERROR_ATTEMPTS tries, then skipped; event 2: retried until accepted.
    assert receiver.ids() == [1] * signing.CLIENT_ERROR_ATTEMPTS + [2, 2, 2, 3]
    (state,) = webhooks.states()
    assert (state.delivered, state.failed, state.pending) == (2, 1, 0)
    assert state.attempts_failed == signing.CLIENT_ERROR_ATTEMPTS + 2


async def test_a_restart_resumes_from_the_stored_position(
    secret_env: str, hub: EventHub, receiver: Receiver, events: Events
) -> None:
    first = hooks(receiver.url)
    stop, task = await start(hub, first)
    events.add(2)
    await until(lambda: len(receiver.requests) == 2)
    stop.set()
    await asyncio.wait_for(task, 5)
    events.add(2)  # while nothing runs
    again = hooks(receiver.url)
    newcomer = Webhooks([Webhook(url=receiver.url, secret_env=ENV, name="new")], ["new"], hub_db[0])
    stop, task = await start(hub, again)
    stop2, task2 = await start(hub, newcomer)
    await until(lambda: len(receiver.requests) == 4)
    await until(lambda: bool(newcomer.senders) and newcomer.states()[0].position == 4)
    events.add(1)
    await until(lambda: len(receiver.requests) == 6)  # both get event 5
    stop.set()
    stop2.set()
    await asyncio.wait_for(asyncio.gather(task, task2), 5)
    # The resumed webhook: 3 and 4 it missed, then 5; the new one starts at the newest.
    assert receiver.ids() == [1, 2, 3, 4, 5, 5]
    assert again.states()[0].delivered == 3 and newcomer.states()[0].delivered == 1


async def test_only_the_kinds_asked_for_are_sent(
    secret_env: str, hub: EventHub, receiver: Receiver, events: Events
) -> None:
    webhooks = hooks(receiver.url, events=["raised"])
    stop, task = await start(hub, webhooks)
    events.add(3)  # raised, updated, updated
    events.add(1, entry="E2")  # raised
    await until(lambda: webhooks.states()[0].position == 4)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert receiver.ids() == [1, 4]
    assert {r["event"] for r in receiver.requests} == {"raised"}
    assert webhooks.states()[0].pending == 0


async def test_the_drain_leaves_a_receiver_that_is_down_after_a_bounded_time(
    secret_env: str, hub: EventHub, receiver: Receiver, events: Events
) -> None:
    webhooks = hooks(receiver.url)
    await receiver.stop()
    stop, task = await start(hub, webhooks, drain_s=0.5)
    events.add(2)
    await until(lambda: webhooks.states()[0].attempts_failed >= 1)
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - began < 3
    state = webhooks.states()[0]
    assert (state.delivered, state.position, state.pending) == (0, 0, 2)  # kept for next start


async def test_a_slow_receiver_times_out_and_is_retried(
    secret_env: str, hub: EventHub, events: Events
) -> None:
    calls: list[int] = []

    async def slow_then_quick(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(2)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", slow_then_quick)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        webhooks = hooks(f"http://127.0.0.1:{port}/hook", timeout_s=0.5)
        stop, task = await start(hub, webhooks)
        events.add(1)
        await until(lambda: webhooks.states()[0].delivered == 1)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert webhooks.states()[0].attempts_failed == 1
        assert webhooks.states()[0].last_error == "no answer within 0.5 s"
    finally:
        await runner.cleanup()


def test_metrics_show_each_webhook_by_name_and_host_only() -> None:
    webhook = Webhook(url="https://user:pw@control.example.org:8443/x?token=abc", secret_env=ENV)
    status = {
        "webhooks": [
            {
                "name": "room",
                "target": webhook.shown(),
                "delivered": 4,
                "failed": 1,
                "attempts_failed": 7,
                "pending": 2,
                "up": False,
                "last_error": "HTTP 503",
                "last_success_unix": 1700000000.0,
            }
        ]
    }
    text = render_metrics(status)
    labels = '{target="https://control.example.org:8443",webhook="room"}'
    assert f"lfr_webhook_delivered_total{labels} 4.0" in text
    assert f"lfr_webhook_failed_total{labels} 1.0" in text
    assert f"lfr_webhook_pending{labels} 2.0" in text
    assert f"lfr_webhook_up{labels} 0.0" in text
    assert f"lfr_webhook_last_success_timestamp_seconds{labels} 1.7e+09" in text
    assert "pw" not in text and "token" not in text and os.environ.get(ENV, "§") not in text


def test_lfr_status_shows_each_webhook_in_one_line() -> None:
    status: dict[str, Any] = {
        "deployment": {"id": "d", "location": "l", "start": "s", "end": "e", "threshold": 0.6},
        "api": "http://127.0.0.1:8080",
        "uptime_s": 1.0,
        "cameras": {},
        "embedders": {},
        "webhooks": [
            {
                "name": "room",
                "target": "https://control.example.org:443",
                "delivered": 4,
                "failed": 1,
                "pending": 2,
                "up": False,
                "last_error": "HTTP 503",
                "last_success": "2026-12-01T20:00:00.000Z",
            }
        ],
    }
    assert (
        "  webhook room https://control.example.org:443 FAILING: delivered 4 failed 1 pending 2 "
        "last success 2026-12-01T20:00:00.000Z  last error: HTTP 503"
    ) in status_lines(status)


async def test_a_webhook_that_is_down_holds_back_no_other(
    secret_env: str, hub: EventHub, receiver: Receiver, events: Events
) -> None:
    down = Receiver(SECRET.encode())
    await down.start()
    await down.stop()  # its port now refuses connections
    both = Webhooks(
        [
            Webhook(url=down.url, secret_env=ENV, name="down"),
            Webhook(url=receiver.url, secret_env=ENV, name="up"),
        ],
        ["down", "up"],
        hub_db[0],
    )
    stop, task = await start(hub, both, drain_s=0.5)
    events.add(3)
    await until(lambda: receiver.ids() == [1, 2, 3])
    gone, fine = both.states()
    await until(lambda: gone.pending == 3 and fine.pending == 0)
    assert (gone.failing, gone.delivered, gone.pending) == (True, 0, 3)
    assert (fine.failing, fine.delivered, fine.pending) == (False, 3, 0)
    stop.set()
    await asyncio.wait_for(task, 15)
