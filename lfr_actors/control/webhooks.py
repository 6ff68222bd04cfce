"""Alert events POSTed to the topology's webhooks, signed, at least once, in order.

Each webhook (``alerts.webhooks``) has a sender: an asyncio task in the driver, beside the
JSONL sink, that follows the store's event log from the webhook's stored position
(:mod:`lfr_actors.store.webhooks`). It sends one event at a time, in event id order, and
moves the stored position on once the receiver answered 2xx (or refused the event for
good, see :mod:`lfr_actors.alerts.webhooks`); a restart resumes after the last event
answered, so an event may arrive twice (the receiver de-duplicates by ``event_id``) but
is never left out. Events of kinds the webhook does not take are passed over, and so are
the events of test subjects' alerts (volunteers measuring live accuracy): webhooks carry
suspects' alerts only.

A receiver that is down costs the pipeline and the API nothing: the senders only read
the store (as a live stream does) and wait on the network in their own tasks, with one
request in flight per webhook and :data:`MAX_CONNECTIONS` for them all; the store is
read and written in worker threads. While the receiver is away its events wait in the
store, and ``pending`` in the status counts them. At the drain a sender keeps trying for
:data:`DRAIN_S` at most; what is still unsent then is sent after the next start.

Nothing here logs, shows or counts a secret or a URL beyond ``scheme://host:port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from lfr_actors.alerts.webhooks import (
    EVENT_ID_HEADER,
    EVENT_KIND_HEADER,
    SIGNATURE_HEADER,
    Outcome,
    backoff_s,
    decide,
    signature,
)
from lfr_actors.api.stream import EventHub
from lfr_actors.control.jsonl_sink import event_line, first_of
from lfr_actors.logs import get_logger
from lfr_actors.store.db import Database
from lfr_actors.store.webhooks import WebhookPositions
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.schema import Webhook
from lfr_actors.topology.secrets import SecretError, read_secret

log = get_logger("lfr.webhooks")

MAX_CONNECTIONS = 8
"""Requests in flight for all the webhooks together (one per webhook at most)."""
DRAIN_S = 10.0
"""How long, at the drain, a sender keeps trying to deliver before it leaves the rest."""
_PAGE = 200
_WAIT_S = 1.0


def body_of(event: dict[str, Any]) -> bytes:
    """The request body: the event's ``--alerts-jsonl`` document, compact UTF-8 JSON."""
    return json.dumps(event_line(event), separators=(",", ":")).encode("utf-8")


@dataclass
class WebhookState:
    """What the status and ``/metrics`` show of one webhook (never its URL's secrets)."""

    name: str
    target: str
    """``scheme://host:port`` of the receiver."""
    events: list[str]
    position: int = 0
    """The id of the last event handled (delivered, refused or not of the webhook's kinds)."""
    delivered: int = 0
    failed: int = 0
    """Events skipped because the receiver refused them (see ``decide``)."""
    attempts_failed: int = 0
    pending: int = 0
    last_error: str | None = None
    last_success_at: float | None = None
    failing: bool = False
    started: bool = False
    """The position was read from the store: events from now on are this webhook's."""

    def as_status(self) -> dict[str, Any]:
        """The status entry."""
        return {
            "name": self.name,
            "target": self.target,
            "events": self.events,
            "position": self.position,
            "delivered": self.delivered,
            "failed": self.failed,
            "attempts_failed": self.attempts_failed,
            "pending": self.pending,
            "up": not self.failing,
            "last_error": self.last_error,
            "last_success": None if self.last_success_at is None else iso_utc(self.last_success_at),
            "last_success_unix": self.last_success_at,
        }


class _Stopped(Exception):
    """The drain's time is up: leave the event for the next start."""


@dataclass
class WebhookSender:
    """Delivers the store's events to one webhook, in order, from its stored position."""

    webhook: Webhook
    name: str
    secret: bytes = field(repr=False)
    positions: WebhookPositions
    session: aiohttp.ClientSession
    drain_s: float = DRAIN_S
    wait_s: float = _WAIT_S
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time
    state: WebhookState = field(init=False)

    def __post_init__(self) -> None:
        self.state = WebhookState(self.name, self.webhook.shown(), list(self.webhook.events))
        self._deadline: float | None = None

    async def run(self, hub: EventHub, stop: asyncio.Event) -> None:
        """Send every event after the stored position until ``stop``, then drain (bounded)."""
        loop = asyncio.get_running_loop()
        start = await asyncio.to_thread(self.positions.start, self.name, self.webhook.url)
        self.state.position = start.event_id
        self.state.started = True
        await self._count_pending()
        hub.followers += 1
        try:
            while True:
                stopping = stop.is_set()
                if stopping and self._deadline is None:
                    self._deadline = loop.time() + self.drain_s
                changed = hub.waiter()
                events = await self._events_after(hub, from_store=stopping)
                if events:
                    try:
                        await self._handle(events, stop)
                    except _Stopped:
                        return
                    finally:
                        await self._count_pending()
                elif stopping:
                    return
                else:
                    await first_of(changed, stop, self.wait_s)
        finally:
            hub.followers -= 1

    async def _events_after(self, hub: EventHub, *, from_store: bool) -> list[dict[str, Any]]:
        after = self.state.position
        if not from_store:
            cached = hub.cached_after(after, None)
            if cached is not None:
                return [e.event for e in cached]
        return await asyncio.to_thread(hub.store.events_after, after, _PAGE)

    async def _handle(self, events: list[dict[str, Any]], stop: asyncio.Event) -> None:
        kinds = set(self.webhook.events)
        passed_over = None
        await self._count_pending()  # what waits while the first of these is retried
        for event in events:
            if event["event_id"] <= self.state.position:
                continue
            if event["kind"] not in kinds or event["alert"].get("test_subject"):
                # Webhooks are for suspects' alerts; a test subject's never leaves.
                passed_over = event["event_id"]
                self.state.position = passed_over
                continue
            delivered = await self._send(event, stop)
            self.state.position = event["event_id"]
            passed_over = None
            await asyncio.to_thread(
                self.positions.advance,
                self.name,
                event["event_id"],
                delivered=int(delivered),
                failed=int(not delivered),
            )
        if passed_over is not None:
            await asyncio.to_thread(self.positions.advance, self.name, passed_over)

    async def _send(self, event: dict[str, Any], stop: asyncio.Event) -> bool:
        """Deliver one event: True once delivered, False when refused for good."""
        body = body_of(event)
        event_id = event["event_id"]
        attempt = 0
        while True:
            attempt += 1
            status, error = await self._attempt(event, body)
            outcome = decide(status, attempt)
            if outcome is Outcome.DELIVERED:
                self.state.delivered += 1
                self.state.last_success_at = self.clock()
                if self.state.failing:
                    self.state.failing = False
                    log.info("webhook_recovered", webhook=self.name, target=self.state.target)
                return True
            self.state.attempts_failed += 1
            self.state.last_error = error
            if outcome is Outcome.SKIP:
                self.state.failed += 1
                log.error(
                    "webhook_event_refused",
                    webhook=self.name,
                    target=self.state.target,
                    event_id=event_id,
                    error=error,
                    attempts=attempt,
                    action="skipped",
                )
                return False
            if not self.state.failing:
                # Once per outage, not once per retry.
                self.state.failing = True
                log.warning(
                    "webhook_failing",
                    webhook=self.name,
                    target=self.state.target,
                    event_id=event_id,
                    error=error,
                    action="retrying with backoff",
                )
            await self._count_pending()  # what waits behind it grows while it is retried
            await self._wait(backoff_s(attempt, self.rng), stop)

    async def _attempt(self, event: dict[str, Any], body: bytes) -> tuple[int | None, str | None]:
        stamp = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "lfr-actors-webhook",
            SIGNATURE_HEADER: signature(self.secret, stamp, body),
            EVENT_ID_HEADER: str(event["event_id"]),
            EVENT_KIND_HEADER: str(event["kind"]),
        }
        limit_s = self.webhook.timeout_s
        if self._deadline is not None:  # draining: no request outlasts the drain
            left = self._deadline - asyncio.get_running_loop().time()
            limit_s = max(0.1, min(limit_s, left))
        timeout = aiohttp.ClientTimeout(total=limit_s)
        try:
            async with self.session.post(
                self.webhook.url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            return None, f"no answer within {limit_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            return None, f"cannot connect: {reason}"
        except aiohttp.ClientError as exc:
            # The class only: some aiohttp messages repeat the URL, which may hold a secret.
            return None, f"request failed: {type(exc).__name__}"
        return status, None if 200 <= status < 300 else f"HTTP {status}"

    async def _wait(self, delay_s: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
        if stop.is_set():
            if self._deadline is None:
                self._deadline = loop.time() + self.drain_s
            left = self._deadline - loop.time()
            if left <= 0:
                raise _Stopped
            await asyncio.sleep(min(delay_s, left))
            if loop.time() >= self._deadline:
                raise _Stopped

    async def _count_pending(self) -> None:
        self.state.pending = await asyncio.to_thread(
            self.positions.pending, self.state.position, self.webhook.events
        )


class Webhooks:
    """Every webhook's sender over one HTTP session and one store connection."""

    def __init__(self, webhooks: list[Webhook], names: list[str], alerts_db: Path) -> None:
        self.webhooks = webhooks
        self.names = names
        self.alerts_db = alerts_db
        self.senders: list[WebhookSender] = []

    def states(self) -> list[WebhookState]:
        """Each webhook's state (what the status shows)."""
        return [s.state for s in self.senders]

    async def run(self, hub: EventHub, stop: asyncio.Event, **sender_options: Any) -> None:
        """Deliver to every webhook until ``stop`` (then drain, bounded)."""
        if not self.webhooks:
            return
        try:
            secrets = [read_secret(w) for w in self.webhooks]
        except SecretError as exc:  # checked at the start: this is a secret changed since
            log.error("webhooks_not_started", reason=str(exc))
            return
        db = await asyncio.to_thread(Database, self.alerts_db)
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                positions = WebhookPositions(db)
                self.senders = [
                    WebhookSender(w, n, s, positions, session, **sender_options)
                    for w, n, s in zip(self.webhooks, self.names, secrets, strict=True)
                ]
                await asyncio.gather(*(_supervised(s, hub, stop) for s in self.senders))
        finally:
            await asyncio.to_thread(db.close)


async def _supervised(sender: WebhookSender, hub: EventHub, stop: asyncio.Event) -> None:
    """Run a sender; one that fails (the store unreadable, say) is logged and started again."""
    while True:
        try:
            await sender.run(hub, stop)
            return
        except Exception as exc:
            log.error(
                "webhook_sender_failed",
                webhook=sender.name,
                reason=f"{type(exc).__name__}: {exc}",
                action="restarting in 5 s" if not stop.is_set() else "stopped",
            )
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
