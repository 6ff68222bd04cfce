"""One cached status for every health route: gathered in the background, never per request.

Asking every actor for its figures costs the actors time (a Ray call each, on the same
cores as recognition), so no request may cause one: an anonymous flood of ``/readyz``
would otherwise starve the pipeline. :class:`StatusCache` runs one task in the API's
process that gathers the deployment's status (the kernel's ``stats`` of every actor) and
the store's row counts every ``interval_s``, one gather at a time, and keeps the last
result with the moment it was taken. ``/readyz``, ``/v1/status``, ``/metrics`` (and so
``lfr status`` and the console, which read ``/v1/status``) answer from it.

Promises, in plain words:

- A request never calls the status source or the store's counts; it reads memory. Before
  the first gather has finished, a request waits for it (at most a bounded time), it does
  not start another.
- At most one gather is in flight; a gather that takes longer than ``timeout_s`` is given
  up and counted as failed, and the previous status is kept with its age.
- A status older than ``stale_after_s`` (the gatherer stuck or failing) is stale, and a
  stale status is not ready.
- The store's own write failures, as the API meets them (a full disk), are kept in
  :class:`StoreHealth`; readiness reads them with the alert actor's ``store_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lfr_actors import logs
from lfr_actors.store.alerts import AlertStore

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_STALE_AFTER_S",
    "DEFAULT_TIMEOUT_S",
    "CachedStatus",
    "StatusCache",
    "StatusSource",
    "StoreHealth",
    "not_ready",
]

_T = TypeVar("_T")

StatusSource = Callable[[], Awaitable[dict[str, Any]]]
"""An async callable that returns the deployment's status (from the kernel)."""

DEFAULT_INTERVAL_S = 1.0
"""How often the status is gathered."""
DEFAULT_TIMEOUT_S = 8.0
"""How long one gather may take before it is given up (the kernel's per-actor limit is 5 s)."""
DEFAULT_STALE_AFTER_S = 10.0
"""A status older than this is stale: the gatherer is stuck or failing, so not ready."""

_SAFE_STATE = re.compile(r"[^a-z_]")
"""A camera state is one of the actor's own words; anything else is masked, not echoed."""

_log = logs.get_logger(__name__)

STORE_LOG_EVERY_S = 60.0
"""At most one error line per this many seconds while the store cannot be written."""
STORE_FREE_MARGIN_BYTES = 1 << 20
"""Free space in the data folder's file system at which the store counts as writable again."""


class StoreHealth:
    """Whether the API's own writes to the store fail for want of space (or I/O).

    A write that fails so is answered 503 and noted here; the error is logged as one line
    (no traceback) at most once per :data:`STORE_LOG_EVERY_S`, with the number of refused
    writes since the last line. The store counts as writable again after the next write
    that succeeds, or once the data folder's file system has
    :data:`STORE_FREE_MARGIN_BYTES` free (checked by the status gatherer, so that
    readiness recovers without waiting for a client to write).
    """

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.failing: str | None = None
        """The cause ("disk full", "I/O error") while writes fail, else None."""
        self.refused = 0
        """Writes refused since the store stopped being writable."""
        self._logged_at: float | None = None
        self._suppressed = 0
        self._lock = threading.Lock()

    def note_failure(self, cause: str, route: str) -> None:
        """A write failed for ``cause``: remember it, log one line now and then."""
        with self._lock:
            self.failing = cause
            self.refused += 1
            now = self.clock()
            if self._logged_at is not None and now - self._logged_at < STORE_LOG_EVERY_S:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._logged_at = self._suppressed, 0, now
        _log.error(
            "store_write_failed",
            cause=cause,
            route=route,
            data_dir=str(self.data_dir),
            refused_since_last_line=suppressed,
            fix=f"free space in {self.data_dir}",
        )

    def note_success(self) -> None:
        """A write succeeded: the store is writable again (logged once)."""
        if self.failing is None:
            return
        with self._lock:
            cause, refused = self.failing, self.refused
            self.failing, self.refused, self._logged_at, self._suppressed = None, 0, None, 0
        if cause is not None:
            _log.warning("store_writable_again", after=cause, refused=refused)

    def recheck(self) -> None:
        """While failing for a full disk: writable again once space has come back."""
        if self.failing != "disk full":
            return
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return
        if free >= STORE_FREE_MARGIN_BYTES:
            self.note_success()


@dataclass(frozen=True)
class CachedStatus:
    """What the last gathers found, as the routes read it."""

    status: dict[str, Any] | None
    """The last status gathered (with ``alerts.store`` the store's counts), or None."""
    age_s: float | None
    """Seconds since that status was gathered (None before the first success)."""
    stale: bool
    """Whether it is older than the cache's ``stale_after_s`` (or there is none)."""
    error: str | None
    """Why the last gather failed (for logs and authenticated status only), or None."""
    store_counts: dict[str, Any] | None
    """The store's row counts from the last gather that could read them, or None."""
    store_readable: bool
    """Whether the last gather could read the store."""
    gathered: bool
    """Whether any gather (successful or not) has finished yet."""
    has_source: bool
    """Whether a status source (a running deployment) is attached."""

    store_error: str | None = None
    """Why the API's own writes fail ("disk full"), or None while they succeed."""

    @property
    def up(self) -> bool:
        """The status source answered the last gather and its answer is not stale."""
        return self.has_source and self.error is None and not self.stale


class StatusCache:
    """The deployment's status, gathered by one background task at a fixed rate."""

    def __init__(
        self,
        source: StatusSource | None,
        store: AlertStore,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        store_health: StoreHealth | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.store = store
        self.store_health = store_health
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.gathers = 0
        """Gathers started (each calls the source once): requests never add to it."""
        self._status: dict[str, Any] | None = None
        self._gathered_at: float | None = None
        self._error: str | None = None
        self._counts: dict[str, Any] | None = None
        self._store_readable = True
        self._version = 0
        self._derived: dict[str, tuple[tuple[int, object], Any]] = {}
        self._first = asyncio.Event()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """One gather: the source's status and the store's counts. Never raises.

        Calls that overlap wait for the one in flight (at most one gather at a time).
        """
        async with self._lock:
            self.gathers += 1
            await self._gather_store()
            if self.source is not None:
                await self._gather_source()
            self._version += 1
            self._first.set()

    async def _gather_store(self) -> None:
        if self.store_health is not None and self.store_health.failing:
            await asyncio.to_thread(self.store_health.recheck)
        try:
            counts = await asyncio.wait_for(asyncio.to_thread(self.store.counts), self.timeout_s)
        except Exception as exc:
            if self._store_readable:
                _log.error("status_store_unreadable", reason=_reason(exc))
            self._store_readable = False
            return
        if not self._store_readable:
            _log.info("status_store_readable_again")
        self._store_readable = True
        self._counts = counts

    async def _gather_source(self) -> None:
        assert self.source is not None
        try:
            status = dict(await asyncio.wait_for(self.source(), self.timeout_s))
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g} s"
        except Exception as exc:
            error = _reason(exc)
        else:
            if self._counts is not None:
                alerts = status.get("alerts")
                merged = dict(alerts) if isinstance(alerts, Mapping) else {}
                merged["store"] = self._counts
                status["alerts"] = merged
            if self._error is not None:
                _log.info("status_gathered_again")
            self._status, self._gathered_at, self._error = status, self.clock(), None
            return
        if self._error is None:
            # Once per outage, not once per second.
            _log.warning("status_gather_failed", reason=error)
        self._error = error

    async def run(self) -> None:
        """Gather every ``interval_s`` until cancelled (a gather's time counts in the interval).

        On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives as its
        inner call finishes (fixed in 3.12), and the API's shutdown would then wait for this
        task for ever; so the loop also ends when the task has been asked to cancel.
        """
        task = asyncio.current_task()
        while True:
            started = self.clock()
            try:
                await self.refresh()
            except Exception:
                # refresh() catches what the source and the store raise; this is for a bug,
                # and the loop goes on (a status that stops changing turns stale, not ready).
                _log.exception("status_gather_crashed")
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(max(0.0, self.interval_s - (self.clock() - started)))

    async def first(self, wait_s: float) -> CachedStatus:
        """The cache, after waiting (at most ``wait_s``) for the first gather to finish."""
        if not self._first.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), wait_s)
        return self.snapshot()

    def encoded(self) -> bytes | None:
        """The last status as JSON, encoded once per gather (not once per request)."""
        status = self._status
        if status is None:
            return None
        return self.derived(
            "status_json", None, lambda: json.dumps(status, separators=(",", ":")).encode()
        )

    def derived(self, name: str, key: object, build: Callable[[], _T]) -> _T:
        """``build()``, computed once per gather and ``key`` (e.g. a rendered scrape)."""
        stamp = (self._version, key)
        found = self._derived.get(name)
        if found is not None and found[0] == stamp:
            value: _T = found[1]
            return value
        value = build()
        self._derived[name] = (stamp, value)
        return value

    def snapshot(self) -> CachedStatus:
        """The cache as it is now (no call to anything)."""
        age = None if self._gathered_at is None else max(0.0, self.clock() - self._gathered_at)
        stale = age is None or age > self.stale_after_s
        error = self._error
        if self.source is not None and not self._first.is_set():
            error = "not gathered yet"
        return CachedStatus(
            status=self._status,
            age_s=age,
            stale=stale,
            error=error,
            store_counts=self._counts,
            store_readable=self._store_readable,
            gathered=self._first.is_set(),
            has_source=self.source is not None,
            store_error=None if self.store_health is None else self.store_health.failing,
        )


def not_ready(cached: CachedStatus) -> list[str]:
    """What is not ready, by component and topology id, never with an error's text.

    Not ready: the store cannot be read, or cannot be written (the alert actor's
    ``store_error``, or a write the API itself could not make); the status was never
    gathered, or is stale; a camera or embedder does not answer; or no camera is running
    (every one disconnected, stalled, reconnecting...) while the deployment runs.
    """
    out: list[str] = []
    if not cached.store_readable:
        out.append("alert store: cannot be read")
    writers: list[str] = []
    if cached.store_error:
        writers.append("api")
    if cached.status is not None and not cached.stale:
        alerts = cached.status.get("alerts")
        if isinstance(alerts, Mapping):
            for actor_id, figures in alerts.items():
                if (
                    actor_id != "store"
                    and isinstance(figures, Mapping)
                    and figures.get("store_error")
                ):
                    writers.append(str(actor_id))
    if writers:
        out.append("alert store: cannot be written (" + ", ".join(writers) + ")")
    if not cached.has_source:
        return out
    if cached.status is None:
        if not cached.gathered or cached.error == "not gathered yet":
            out.append("deployment status: not gathered yet")
        else:
            out.append("deployment status: could not be read")
        return out
    if cached.stale:
        age = cached.age_s if cached.age_s is not None else math.inf
        out.append(f"deployment status: stale, last gathered {age:.0f} s ago")
        return out
    out.extend(_unreachable(cached.status))
    out.extend(_no_camera_running(cached.status))
    return out


def _unreachable(status: Mapping[str, Any]) -> list[str]:
    out = []
    for section, kind in (("cameras", "camera"), ("embedders", "embedder")):
        entries = status.get(section)
        if not isinstance(entries, Mapping):
            continue
        for actor_id, figures in entries.items():
            if not isinstance(figures, Mapping) or "unavailable" in figures:
                out.append(f"{kind} {actor_id}: unreachable")
    return out


def _no_camera_running(status: Mapping[str, Any]) -> list[str]:
    """Every camera in a state other than ``running`` while the deployment runs."""
    deployment = status.get("deployment")
    if isinstance(deployment, Mapping) and deployment.get("state", "running") != "running":
        return []  # closing or closed: the cameras were stopped on purpose
    cameras = status.get("cameras")
    if not isinstance(cameras, Mapping) or not cameras:
        return []
    states = {
        str(cam_id): _SAFE_STATE.sub("_", str(figures.get("state", "unknown")))[:40]
        for cam_id, figures in cameras.items()
        if isinstance(figures, Mapping) and "unavailable" not in figures
    }
    if any(state == "running" for state in states.values()):
        return []
    shown = ", ".join(f"{cam_id} {state}" for cam_id, state in sorted(states.items()))
    return [f"cameras: none running ({shown})" if shown else "cameras: none running"]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0][:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
