"""The reconcile loop: the running deployment brought in line with its store, step by step.

The store is the source of truth while a deployment runs. Once a second the loop looks
at it and, for each concern, does what a change asks:

- ``closure``: the deployment was closed (through the API, or by its window ending):
  the index and its snapshots are destroyed, then the cameras stop;
- ``watchlist``: entries enrolled and approved, or deleted, reach the index; an entry
  that goes stale (approved longer ago than the deployment's ``watchlist_max_age_h``,
  :mod:`lfr_actors.store.freshness`) leaves it within about a second of the moment;
- ``thresholds``: a threshold changed through the API (or an entry's own, approved
  since) reaches the alert actor and the embedders;
- ``frame_counts`` (every 5 s): the frames, faces and face tracks counted are added to
  the deployment's record;
- ``local_token`` (every ``LOCAL_TOKEN_RENEW_S``): the run file's local admin token is
  renewed (or replaced when it lapsed; a revoked one stays revoked, and renewing stops);
- ``window_sweep`` (every 5 s): every deployment in the store whose window has passed is
  closed and its watchlist destroyed, whether or not a pipeline of it is running to
  notice (invariant 3). ``lfr serve`` runs this step alone.

Each step runs on its own: a step that fails is logged (a store fault, such as a full
disk, one line a minute; anything else with its traceback) and tried again when next
due, and never keeps the others from running. The steps that drive actors wait until
every actor is started; the sweep runs from the moment the API is bound. An index
shard restarted without a usable snapshot is filled again from the store
(:meth:`Reconciler.rebuild_restarted_shard`, a kernel restart hook).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lfr_actors.control.live import Live
from lfr_actors.control.paths import DeploymentPaths
from lfr_actors.control.registration import write_run_file
from lfr_actors.control.status import camera_stats
from lfr_actors.control.thresholds import Planner, apply_threshold
from lfr_actors.kernel.kernel import ActorSpec, Kernel
from lfr_actors.logs import get_logger
from lfr_actors.messages import EnrolVectors, RemoveEntry
from lfr_actors.store.db import Database, store_cause
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import LOCAL_TOKEN_RENEW_S, renew_local_token
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.schema import Topology

log = get_logger("lfr.deployment")

INDEX_BATCH = 1000
"""Entries per call when the index is loaded or brought in line with the store."""
STORE_ERROR_EVERY_S = 60.0
"""A step that keeps failing on the store logs one line this often, not one a round."""


def _batches(items: list[str], size: int = INDEX_BATCH) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class StepDone(Exception):
    """Raised by a step that has nothing more to do: the loop stops running it."""


@dataclass
class Step:
    """One concern of the reconcile loop, run every ``every_s`` while ``when()`` holds."""

    name: str
    run: Callable[[], Awaitable[None]]
    every_s: float
    event: str = "store_follow_failed"
    """What a failure is logged as."""
    first_after_s: float = 0.0
    when: Callable[[], bool] = lambda: True
    due: float = 0.0
    store_error_logged_at: float | None = field(default=None, repr=False)


async def reconcile(steps: list[Step], stop: asyncio.Event, *, tick_s: float = 1.0) -> None:
    """Run each step when due until ``stop`` is set (or no step is left).

    A step's failure is caught and logged on its own; the others run as if it had not
    happened, and it is tried again when next due. :class:`StepDone` retires a step.
    """
    loop = asyncio.get_running_loop()
    pending = list(steps)
    start = loop.time()
    for step in pending:
        step.due = start + step.first_after_s
    while pending and not stop.is_set():
        for step in list(pending):
            now = loop.time()
            if stop.is_set() or now < step.due:
                continue
            step.due = now + step.every_s
            if step.when() and not await _attempt(step):
                pending.remove(step)
        if pending:
            wait_s = min(tick_s, max(0.0, min(s.due for s in pending) - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)


async def _attempt(step: Step) -> bool:
    """Run ``step`` once; False when it retired itself."""
    try:
        await step.run()
    except StepDone:
        return False
    except sqlite3.Error as exc:
        # The store cannot be read or written (a full disk, say): one line a minute, not a
        # traceback a second; the next round tries again.
        now = time.monotonic()
        last = step.store_error_logged_at
        if last is None or now - last >= STORE_ERROR_EVERY_S:
            step.store_error_logged_at = now
            log.error(step.event, step=step.name, reason=store_cause(exc))
    except Exception:
        log.exception(step.event, step=step.name)
    else:
        step.store_error_logged_at = None
    return True


class Reconciler:
    """The reconcile loop of one deployment, and the index upkeep it shares with the start."""

    def __init__(
        self,
        topology: Topology,
        live: Live,
        kernel: Kernel,
        paths: DeploymentPaths,
        plan: Planner,
        *,
        interval_s: float = 1.0,
        sweep_interval_s: float = 5.0,
        renew_interval_s: float = LOCAL_TOKEN_RENEW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topology = topology
        self.namespace = topology.deployment.id
        self.live = live
        self.kernel = kernel
        self.paths = paths
        self.plan = plan
        self.interval_s = interval_s
        self.sweep_interval_s = sweep_interval_s
        self.renew_interval_s = renew_interval_s
        self.clock = clock
        """The wall clock entries go stale by (Unix seconds)."""
        self._sweep_db: Database | None = None

    def steps(self) -> list[Step]:
        """Every step, in the order a round runs them."""
        following = self._following
        return [
            Step("closure", self._check_closure, self.interval_s, when=following),
            Step("watchlist", self._follow_watchlist, self.interval_s, when=following),
            Step("thresholds", self._follow_thresholds, self.interval_s, when=following),
            Step(
                "frame_counts",
                self.count_frames,
                5 * self.interval_s,
                first_after_s=4 * self.interval_s,
                when=following,
            ),
            Step(
                "local_token",
                self.renew_local_token,
                self.renew_interval_s,
                event="local_token_renewal_failed",
                first_after_s=self.renew_interval_s,
                when=lambda: self.live.local_token_id is not None,
            ),
            Step(
                "window_sweep",
                self.sweep,
                self.sweep_interval_s,
                event="deployment_sweep_failed",
            ),
        ]

    async def run(self, stop: asyncio.Event, steps: list[Step] | None = None) -> None:
        """Run ``steps`` (all of them by default) until ``stop`` is set."""
        try:
            await reconcile(self.steps() if steps is None else steps, stop, tick_s=self.interval_s)
        finally:
            if self._sweep_db is not None:
                self._sweep_db.close()
                self._sweep_db = None

    def _following(self) -> bool:
        return self.live.actors_started and not self.live.closing and self.live.db is not None

    async def _revision(self) -> tuple[int, float | None]:
        assert self.live.db is not None
        return await asyncio.to_thread(Deployments(self.live.db).revision, self.namespace)

    async def _check_closure(self) -> None:
        _, closed_at = await self._revision()
        if closed_at is not None and not self.live.closing:
            await self.on_closed()

    async def _follow_watchlist(self) -> None:
        revision, _ = await self._revision()
        due = self.live.next_stale_at
        if revision != self.live.revision or (due is not None and self.clock() >= due):
            await self.sync_watchlist()

    async def _follow_thresholds(self) -> None:
        assert self.live.db is not None
        revision, _ = await self._revision()
        if revision == self.live.threshold_revision:
            return
        record = await asyncio.to_thread(Deployments(self.live.db).get, self.namespace)
        await apply_threshold(
            record.threshold,
            topology=self.topology,
            live=self.live,
            kernel=self.kernel,
            plan=self.plan,
        )
        self.live.threshold_revision = revision

    async def sync_watchlist(self) -> None:
        """Bring the index in line with the store's searched entries (then snapshot it).

        Searched: active, not damaged, not stale at this moment. The moment the next entry
        goes stale is kept (``live.next_stale_at``) so the loop comes back then.
        """
        live = self.live
        assert live.db is not None
        loaded = await asyncio.to_thread(
            functools.partial(Deployments(live.db).load_templates, self.namespace, now=self.clock())
        )
        revision, templates = loaded.revision, loaded.templates
        live.next_stale_at = loaded.next_stale_at
        if revision == live.revision and loaded.stale == live.stale:
            return
        known = {s.entry_id for s in live.stale}
        for stale in loaded.stale:
            if stale.entry_id not in known:  # once per entry
                log.warning(
                    "watchlist_entry_stale",
                    deployment=self.namespace,
                    entry=stale.entry_id,
                    approved_at=iso_utc(stale.approved_at),
                    stale_since=iso_utc(stale.stale_since),
                    indexed=False,
                )
        live.stale = loaded.stale
        for entry_id, reason in sorted(loaded.damaged.items()):
            if live.damaged.get(entry_id) != reason:  # once per entry and fault
                log.error(
                    "watchlist_entry_damaged",
                    deployment=self.namespace,
                    entry=entry_id,
                    reason=reason,
                    indexed=False,
                )
        live.damaged = dict(loaded.damaged)
        router = self.kernel.handle(self.topology.index.id)
        gone = live.indexed - templates.keys()
        new = templates.keys() - live.indexed
        for batch in _batches(sorted(gone)):
            await router.remove_many.remote([RemoveEntry(e).encode() for e in batch])
            live.indexed.difference_update(batch)
        for batch in _batches(sorted(new)):
            await router.enrol_many.remote([EnrolVectors(e, templates[e]).encode() for e in batch])
            live.indexed.update(batch)
        await router.snapshot.remote()
        live.revision = revision
        if gone or new:
            log.info(
                "watchlist_synced",
                deployment=self.namespace,
                added=len(new),
                removed=len(gone),
                entries=len(live.indexed),
                stale=len(live.stale),
            )

    async def rebuild_restarted_shard(self, spec: ActorSpec) -> None:
        """A shard restarted without a usable snapshot is filled again from the store."""
        if spec.role != "index_shard" or self.live.closing:
            return
        stats = await self.kernel.handle(spec.name).stats.remote()
        if not stats.get("snapshot_fault"):
            return
        log.warning(
            "index_shard_rebuilt",
            deployment=self.namespace,
            shard=spec.actor_id,
            reason=stats["snapshot_fault"],
        )
        # Enrolling every entry again replaces identical templates in the other shards and
        # fills the empty one; the next snapshot is whole again.
        self.live.indexed.clear()
        self.live.revision = -1
        await self.sync_watchlist()

    async def on_closed(self) -> None:
        """The deployment was closed: destroy the index, then stop the cameras.

        The index goes first: it is the watchlist's biometric data, and a camera still
        running for the moment it takes to stop finds nothing in an empty index.
        ``closed`` (what the status shows) is set once both are done.
        """
        self.live.closing = True
        await self.kernel.handle(self.topology.index.id).destroy.remote()
        self.live.indexed.clear()
        await self.kernel.stop_role("camera", "stop")
        await self.count_frames()
        self.live.closed = True
        log.warning(
            "deployment_closed",
            deployment=self.namespace,
            cameras="stopped",
            watchlist="destroyed",
        )

    async def count_frames(self) -> None:
        """Add the frames, faces and tracks counted since the last call to the record."""
        live = self.live
        assert live.db is not None
        cameras = await camera_stats(self.kernel, live)
        now = (
            sum(int(c.get("frames_processed") or 0) for c in cameras.values()),
            sum(int(c.get("faces") or 0) for c in cameras.values()),
            sum(int(c.get("tracks") or 0) for c in cameras.values()),
        )
        frames, faces, tracks = (max(0, n - b) for n, b in zip(now, live.counted, strict=True))
        if frames or faces or tracks:
            await asyncio.to_thread(
                Deployments(live.db).add_counters,
                self.namespace,
                frames=frames,
                faces=faces,
                tracks=tracks,
            )
        # Only once recorded: when the store cannot be written the counts wait for the next try.
        live.counted = now

    async def renew_local_token(self) -> None:
        """Keep the run file's token alive while this driver runs (it expires otherwise).

        A renewal that fails (the store busy or its disk full) is logged and tried again at
        the next round; the token's TTL leaves several rounds of slack. A token that expired
        all the same (the store unwritable for minutes) is replaced by a new one in the run
        file; one that was revoked (by hand, or by another start on this data folder) stays
        revoked, and renewing stops.
        """
        token_id, db = self.live.local_token_id, self.live.db
        if token_id is None or db is None:
            raise StepDone
        record = await asyncio.to_thread(renew_local_token, db, token_id)
        if record.revoked:
            log.warning("local_token_revoked", token=token_id)
            raise StepDone
        if record.expired():
            await asyncio.to_thread(write_run_file, self.paths, self.live)
            log.warning("local_token_replaced", expired=token_id)

    async def sweep(self) -> None:
        """Close every deployment in the store whose window has passed (invariant 3)."""
        if self._sweep_db is None:
            # A connection of its own: the start may be writing the watchlist file's entries
            # over the deployment's connection in another thread meanwhile.
            self._sweep_db = await asyncio.to_thread(Database, self.paths.alerts_db)
        closed = await asyncio.to_thread(Deployments(self._sweep_db).close_ended)
        for deployment_id in closed:
            log.info("deployment_closed", deployment=deployment_id, reason="window ended")
