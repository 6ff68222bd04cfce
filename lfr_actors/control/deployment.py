"""A deployment on Ray: the topology's actors started, wired, supervised and drained.

This is where the parts meet: the kernel (generic), the actor roles (registered by name),
the plan (:mod:`.plan`), registration (:mod:`.registration`), the reconcile loop
(:mod:`.follow`), the status (:mod:`.status`), the alert API and the JSONL sink
(:mod:`.jsonl_sink`). Start-up order, so that every bad input stops things before
anything runs:

0. the data folder's disk has room and the store is checked (:mod:`lfr_actors.store.check`:
   ``quick_check``, the schema, and a store lost where its marker or an index snapshot
   says one was made); a fault is one line naming the file and the ``lfr store`` command,
   and nothing is written;
1. the API port is bound (a port in use is a one-line error), and the reconcile loop
   starts sweeping ended deployments;
2. the deployment's record is looked up in the store and checked against the topology's
   ``deployment`` section (a closed deployment, or a record that differs from the file,
   stops ``lfr up``);
3. the models are prepared and the watchlist file's new entries are enrolled in this
   process (an image that fails the enrolment rules stops ``lfr up`` with every entry and
   reason listed); only then is the record created, when the store had none, and the
   entries stored as active entries, approved by the deployment's authority, so a start
   refused before this point leaves no record to block the next one;
4. Ray is started or reached; index shards and router (loaded with the store's active
   entries), alert actor, embedders (each warmed up before it reports ready), then
   cameras, in that order.

Index snapshots are derived data: the index is rebuilt from the store's active entries at
every start, so a missing or corrupt snapshot is a warning, never a reason not to start.
An active entry whose templates fail their checksum or are not finite is *damaged*: left
out of the index, logged once, and counted and listed in the status.

While it runs, the store is the watchlist's source of truth (:mod:`.follow`): entries
enrolled and approved through the API, or deleted, reach the index within about a second.
When the deployment is closed (through the API, or by its window ending) the cameras stop
and the index and its snapshots are destroyed; the API stays up, so officers can still
adjudicate the alerts already raised, until ``lfr down``. ``serve`` runs steps 1-3 only:
the API over the deployment's store with enrolment models, to prepare a watchlist before
the window opens, and the window sweep.

Drain (on ``lfr down``, SIGINT, SIGTERM, or every file source ended with ``--until-eof``):
cameras stop and their in-flight frames finish, the embedders hand over any sightings they
still hold, the alert actor flushes, the alert followers (stdout, ``--alerts-jsonl`` and the
webhooks, which keep trying a receiver that is down for 10 s at most) make one last read
that starts after all of that, then the actors are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from aiohttp import web

from lfr_actors.actors.alerts import AlertActor
from lfr_actors.actors.camera import CameraActor
from lfr_actors.actors.embedder import EmbedderActor
from lfr_actors.actors.index import IndexRouterActor, IndexShardActor
from lfr_actors.api.app import api_runner, create_app
from lfr_actors.api.stream import HUB
from lfr_actors.control import registration, status
from lfr_actors.control.follow import Reconciler
from lfr_actors.control.jsonl_sink import (
    CallbackFollower,
    Follower,
    JsonlSink,
    OutputHealth,
    follow_events,
)
from lfr_actors.control.live import Live
from lfr_actors.control.paths import DeploymentError, DeploymentPaths, disk_full_is_one_line
from lfr_actors.control.plan import finite_cameras, gpu_shortfall, plan_actors
from lfr_actors.control.preflight import port_in_use_message
from lfr_actors.control.thresholds import in_force
from lfr_actors.control.webhooks import Webhooks
from lfr_actors.enrolment import EnrolmentUnavailableError
from lfr_actors.kernel.kernel import ActorSpec, Kernel, check_reachable, start_ray, stop_ray
from lfr_actors.kernel.registry import Registry
from lfr_actors.logs import get_logger
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled
from lfr_actors.store.tokens import revoke_local_tokens
from lfr_actors.topology.schema import Topology, Watchlist
from lfr_actors.topology.secrets import SecretError, read_secret

log = get_logger("lfr.deployment")

ROLES: Registry[type] = Registry("actor role")
ROLES.register("camera", CameraActor)
ROLES.register("embedder", EmbedderActor)
ROLES.register("index_shard", IndexShardActor)
ROLES.register("index_router", IndexRouterActor)
ROLES.register("alerts", AlertActor)


class Deployment:
    """One running deployment: ``await run()`` until stopped, then it drains itself."""

    def __init__(
        self,
        topology: Topology,
        watchlist: Watchlist | None,
        *,
        home: Path,
        address: str | None = None,
        alerts_jsonl: Path | None = None,
        until_eof: bool = False,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
        health_interval_s: float = 2.0,
        handle_signals: bool = False,
    ) -> None:
        self.topology = topology
        self.watchlist = watchlist
        self.home = home
        self.address = address
        self.alerts_jsonl = alerts_jsonl
        self.until_eof = until_eof
        self.on_alert = on_alert
        self.handle_signals = handle_signals
        self.namespace = topology.deployment.id
        self.paths = DeploymentPaths(Path(topology.storage.data_dir))
        self.kernel = Kernel(self.namespace, ROLES, health_interval_s=health_interval_s)
        self.live = Live()
        self._started_ray = False
        self._jsonl: JsonlSink | None = None
        self._run_lock: int | None = None
        """The data folder's run lock while this deployment holds it (a descriptor)."""
        self.spec = registration.embedder_spec(topology)
        self.reconciler = Reconciler(topology, self.live, self.kernel, self.paths, self._replan)

    def plan(self, *, cluster_gpus: float = 0.0) -> dict[str, list[ActorSpec]]:
        """The actors of this topology, by start-up stage, at the thresholds in force.

        An embedder with ``device: auto`` is given GPUs when the cluster has enough for
        every replica (``cluster_gpus``), and runs on the CPU otherwise.
        """
        return plan_actors(
            self.topology,
            self.spec,
            in_force(self.topology, self.watchlist, self.live),
            paths=self.paths,
            home=self.home,
            cluster_gpus=cluster_gpus,
        )

    def _replan(self) -> dict[str, list[ActorSpec]]:
        return self.plan(cluster_gpus=float(ray.cluster_resources().get("GPU", 0.0)))

    async def status(self, *, store_counts: bool = True) -> dict[str, Any]:
        """Cameras, embedders, index, alerts and restarts: one gather from every actor.

        The API calls this once a second from its status cache (with ``store_counts``
        off: it reads the counts over its own connection), never per request; ``lfr
        status`` reads that cache through ``/v1/status``.
        """
        return await status.status(
            self.topology,
            self.kernel,
            self.live,
            threshold=in_force(self.topology, self.watchlist, self.live).deployment,
            alerts_db=self.paths.alerts_db,
            store_counts_too=store_counts,
        )

    async def summary(self) -> dict[str, Any]:
        """Frames, faces, tracks, alerts, drops and capture-to-result latency percentiles."""
        return await status.summary(
            self.kernel, self.live, namespace=self.namespace, alerts_db=self.paths.alerts_db
        )

    # --- starting ----------------------------------------------------------------------

    async def _bind_api(self) -> None:
        """Bind the API, then start the reconcile loop (the window sweep runs from here)."""
        api = self.topology.api
        store = AlertStore.open_readonly(self.paths.alerts_db, create=True)
        store.close()
        # The API gathers the status once a second in the background and reads the store's
        # counts itself; requests answer from that cache and never reach the actors.
        app = create_app(
            self.paths.alerts_db,
            status=functools.partial(self.status, store_counts=False),
            enroller=self._enrol,
        )
        runner = api_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, api.host, api.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise DeploymentError(port_in_use_message(api.host, api.port)) from exc
            raise DeploymentError(f"cannot listen on {api.host}:{api.port}: {exc}") from exc
        host, port = runner.addresses[0][:2]
        self.live.runner = runner
        self.live.api_url = f"http://{host}:{port}"
        self.live.reconciler = asyncio.create_task(
            self.reconciler.run(self.live.stop), name="reconcile"
        )

    def _enrol(self, data: bytes, name: str) -> Enrolled:
        """The API's enroller: available once the models are loaded (503 before)."""
        enroller = self.live.enroller
        if enroller is None:
            raise EnrolmentUnavailableError(
                "the enrolment models are still loading; try again in a few seconds"
            )
        return enroller(data, name)

    def _prepare_and_enrol(self) -> None:
        registration.prepare_and_enrol(
            self.topology,
            self.watchlist,
            live=self.live,
            paths=self.paths,
            home=self.home,
            spec=self.spec,
        )

    async def _open(self) -> None:
        """Steps 0 and 1: check the data, make it private, bind the API."""
        registration.check_data(self.paths)  # reads only: a refused start changes nothing
        with disk_full_is_one_line(self.paths.data_dir):
            self.paths.secure()
            # Before anything of an earlier run is touched (its tokens): one run a folder.
            if self._run_lock is None:
                self._run_lock = self.paths.hold_run_lock()
            try:
                await asyncio.to_thread(
                    registration.revoke_earlier_local_tokens, self.paths, self.namespace
                )
                await self._bind_api()
            except BaseException:
                self._release_run_lock()
                raise

    def _on_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    async def serve(self) -> None:
        """The API alone over this deployment's store, with enrolment, until stopped.

        For preparing a watchlist before the window opens (``lfr serve``): no Ray, no
        cameras. Registers the deployment and stores the watchlist file's entries first;
        deployments whose window ends meanwhile are closed (the reconcile loop's sweep).
        """
        await self._open()
        try:
            with disk_full_is_one_line(self.paths.data_dir):
                await asyncio.to_thread(self._prepare_and_enrol)
            if self.handle_signals:
                self._on_signals()
            log.info("api_serving", deployment=self.namespace, api=self.live.api_url)
            await self.live.stop.wait()
        finally:
            await self._shutdown_quietly()

    async def start(self) -> None:
        """Bind the API, enrol the watchlist, and start every actor."""
        if self.until_eof and not finite_cameras(self.topology):
            raise DeploymentError(
                "--until-eof stops when every file or synthetic source has ended, but no "
                "camera has one that ends (type file or synthetic with at_end: stop)"
            )
        for name, webhook in zip(
            self.topology.alerts.webhook_names(), self.topology.alerts.webhooks, strict=True
        ):
            try:
                read_secret(webhook)
            except SecretError as exc:
                raise DeploymentError(f"webhook {name}: {exc}") from None
        self._open_jsonl()
        await self._open()
        try:
            if self.address:
                check_reachable(self.address)  # before minutes of model loading, not after
            with disk_full_is_one_line(self.paths.data_dir):
                await asyncio.to_thread(self._prepare_and_enrol)
            assert self.live.db is not None
            record = Deployments(self.live.db).get(self.namespace)
            registration.refuse_ended_window(self.namespace, record.ends_at)
            logging_cfg = self.topology.logging
            start_ray(
                self.address,
                self.namespace,
                env_vars={"LFR_LOG_LEVEL": logging_cfg.level, "LFR_LOG_FORMAT": logging_cfg.format},
            )
            self._started_ray = self.address is None
            if self.handle_signals:
                # After ray.init: Ray's core installs its own SIGTERM handler, which would
                # end this process at once instead of draining.
                self._on_signals()
            self._check_gpus()
            stages = self._replan()
            self.kernel.on_restart.append(self.reconciler.rebuild_restarted_shard)
            await self.kernel.check_placement([spec for stage in stages.values() for spec in stage])
            await self.kernel.start(stages["index"])
            # The store is the source of truth: whatever a snapshot from an earlier run
            # holds is replaced by the entries active now.
            await self.kernel.handle(self.topology.index.id).destroy.remote()
            await self.reconciler.sync_watchlist()
            await self.kernel.start(stages["alerts"])
            await self.kernel.start(stages["embedders"])
            await self.kernel.start(stages["cameras"])
        except BaseException:
            await self._shutdown_quietly()
            raise
        registration.write_run_file(self.paths, self.live)
        self.live.actors_started = True
        log.info(
            "deployment_started",
            deployment=self.namespace,
            api=self.live.api_url,
            cameras=len(self.topology.cameras),
            watchlist_entries=len(self.live.indexed),
        )

    def _open_jsonl(self) -> None:
        """Read where ``--alerts-jsonl`` resumes, before anything starts.

        A file that cannot be resumed (its last line is not an event line, it cannot be
        read) refuses the start in one line.
        """
        if not self.alerts_jsonl or self._jsonl is not None:
            return
        try:
            self._jsonl = JsonlSink(self.alerts_jsonl)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DeploymentError(f"--alerts-jsonl {self.alerts_jsonl}: {reason}") from None

    def _check_gpus(self) -> None:
        """Refuse at once when the topology demands GPUs the cluster does not have.

        Ray would otherwise wait for ever to place a GPU embedder on a machine with none.
        """
        shortfall = gpu_shortfall(self.topology, float(ray.cluster_resources().get("GPU", 0.0)))
        if shortfall is not None:
            raise DeploymentError(shortfall)

    # --- running -----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Start, run until stopped (or every file source ended), drain; return a summary."""
        self.live.cameras_wanted = True
        await self.start()
        live = self.live
        live.tasks.append(asyncio.create_task(self.kernel.supervise(live.stop)))
        live.tasks.append(asyncio.create_task(self._follow_alerts(live.stop)))
        if self.until_eof:
            live.tasks.append(asyncio.create_task(self._stop_when_sources_end()))
        await live.stop.wait()
        return await self.drain()

    def request_stop(self) -> None:
        """Ask the deployment to drain and stop (signal handlers call this)."""
        self.live.stop.set()

    async def _stop_when_sources_end(self) -> None:
        finite = finite_cameras(self.topology)
        while not self.live.stop.is_set():
            await asyncio.sleep(0.5)
            ended = await asyncio.gather(
                *(self.kernel.handle(cam_id).ended.remote() for cam_id in finite),
                return_exceptions=True,
            )
            if all(e is True for e in ended):
                self.live.stop.set()

    async def _follow_alerts(self, stop: asyncio.Event) -> None:
        """Print (via ``on_alert``), write to JSONL and POST to the webhooks every alert event.

        All follow the API's event feed; stdout starts at the newest event, the JSONL
        file after its own last line, each webhook after its stored position.
        """
        assert self.live.runner is not None
        hub = self.live.runner.app[HUB]
        followers: list[Follower] = []
        if self.on_alert:
            newest = await asyncio.to_thread(hub.store.last_event_id)
            followers.append(CallbackFollower(self.on_alert, newest))
        if self._jsonl is not None:  # opened by start(), before anything ran
            followers.append(self._jsonl)
        health: dict[str, OutputHealth] = {}
        self.live.alert_outputs = lambda: [
            health[f.name].as_status(f.position) for f in followers if f.name in health
        ]
        alerts = self.topology.alerts
        webhooks = Webhooks(list(alerts.webhooks), alerts.webhook_names(), self.paths.alerts_db)
        self.live.webhooks = lambda: [s.as_status() for s in webhooks.states()]
        # Each in its own task: a receiver that is down never holds back stdout or the file,
        # and a file that cannot be written (its disk full) never holds back the rest.
        results = await asyncio.gather(
            follow_events(hub, followers, stop, health=health),
            webhooks.run(hub, stop),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Exception):
                log.error("alert_follower_failed", reason=f"{type(result).__name__}: {result}")

    async def drain(self) -> dict[str, Any]:
        """Stop cameras (in-flight frames finish), flush alerts, write out, stop actors."""
        await self.kernel.stop_role("camera", "stop")
        unstored = 0
        with contextlib.suppress(Exception):
            held = await asyncio.gather(
                *(h.flush.remote() for h in self.kernel.of_role("embedder"))
            )
            unstored = int(sum(held))
        if unstored:
            log.error("sightings_not_stored_at_stop", deployment=self.namespace, held=unstored)
        if self.live.db is not None and not self.live.closing:
            with contextlib.suppress(Exception):
                await self.reconciler.count_frames()
        summary = await self.summary()
        with contextlib.suppress(Exception):
            await self.kernel.handle(self.topology.alerts.id).flush.remote()
        # The alert followers' last read starts after this: everything flushed is written.
        self.live.stop.set()
        for task in self.live.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await self._shutdown_quietly()
        log.info("deployment_stopped", deployment=self.namespace)
        return summary

    async def _shutdown_quietly(self) -> None:
        live = self.live
        live.stop.set()  # ends the reconcile loop (and anything else still following)
        if live.reconciler is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(live.reconciler, 30)
            live.reconciler = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kernel.handle(self.topology.alerts.id).close.remote(), 10)
        self.kernel.kill_all()
        if live.runner is not None:
            with contextlib.suppress(Exception):
                await live.runner.cleanup()
            live.runner = None
        if self._started_ray and ray.is_initialized():
            stop_ray()
            self._started_ray = False
        with contextlib.suppress(Exception):
            revoke_local_tokens(self.paths.alerts_db)
        self.paths.run_file.unlink(missing_ok=True)
        if live.db is not None:
            live.db.close()
            live.db = None
        self._release_run_lock()  # last: the folder is free for the next start

    def _release_run_lock(self) -> None:
        """Close the run lock's descriptor (the kernel drops the lock with it), if held."""
        if self._run_lock is not None:
            os.close(self._run_lock)
            self._run_lock = None
