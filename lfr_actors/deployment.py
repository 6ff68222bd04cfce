"""A deployment on Ray: the topology's actors started, wired, supervised and drained.

This is where the parts meet: the kernel (generic), the actor roles (registered by name),
the watchlist enrolment, the alert API and the JSONL sink. Start-up order, so that every
bad input stops things before anything runs:

1. the API port is bound (a port in use is a one-line error);
2. the models are prepared and the watchlist is enrolled in this process (an image that
   fails the enrolment rules stops ``lfr up`` with every entry and reason listed);
3. Ray is started or reached; index shards and router, alert actor, embedders (each
   warmed up before it reports ready), then cameras, in that order.

Drain (on ``lfr down``, SIGINT, SIGTERM, or every file source ended with ``--until-eof``):
cameras stop and their in-flight frames finish, the alert actor flushes, the API and the
JSONL sink write what is stored, then the actors are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from aiohttp import web

from lfr_actors.actors.alerts import AlertActor
from lfr_actors.actors.camera import CameraActor
from lfr_actors.actors.embedder import EmbedderActor, pipeline_config
from lfr_actors.actors.index import IndexRouterActor, IndexShardActor
from lfr_actors.alerts.jsonl import JsonlSink
from lfr_actors.api.app import create_app
from lfr_actors.errors import EnrolmentRejectedError, ImageError, LfrError
from lfr_actors.fsutil import atomic_write
from lfr_actors.kernel.kernel import ActorSpec, Kernel, check_reachable, start_ray
from lfr_actors.kernel.registry import Registry
from lfr_actors.logs import get_logger
from lfr_actors.messages import EnrolVectors
from lfr_actors.models.cache import ModelCache, default_fetcher, prepare
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC, EmbedderSpec
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.tokens import issue_local_token, revoke_local_tokens
from lfr_actors.topology.loader import load_embedder_spec
from lfr_actors.topology.schema import Topology, Watchlist

log = get_logger("lfr.deployment")

ROLES: Registry[type] = Registry("actor role")
ROLES.register("camera", CameraActor)
ROLES.register("embedder", EmbedderActor)
ROLES.register("index_shard", IndexShardActor)
ROLES.register("index_router", IndexRouterActor)
ROLES.register("alerts", AlertActor)


class DeploymentError(LfrError):
    """The deployment cannot start: a port in use, a watchlist that fails enrolment, ..."""


@dataclass(frozen=True)
class DeploymentPaths:
    """Where a deployment keeps its data, all under the topology's ``storage.data_dir``."""

    data_dir: Path

    @property
    def alerts_db(self) -> Path:
        """The alert store (SQLite, WAL)."""
        return self.data_dir / "alerts.sqlite3"

    @property
    def index_dir(self) -> Path:
        """Index shard snapshots (watchlist embeddings only)."""
        return self.data_dir / "index"

    @property
    def run_file(self) -> Path:
        """Process id and API address of the running ``lfr up``."""
        return self.data_dir / "lfr.run.json"


def embedder_spec(topology: Topology) -> EmbedderSpec:
    """The embedding model the topology asks for: the default, or an operator's declared one."""
    if topology.embedder.model_file is not None:
        return load_embedder_spec(Path(topology.embedder.model_file))
    return DEFAULT_EMBEDDER_SPEC


def enrol_watchlist(
    watchlist: Watchlist,
    pipeline: FacePipeline,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Template embeddings per entry; every rejected image is listed in one error."""
    templates: dict[str, np.ndarray] = {}
    failures: list[str] = []
    for entry in watchlist.entries:
        vectors = []
        for image in entry.images:
            try:
                vectors.append(pipeline.enrol(load_image(Path(image))).embedding)
            except EnrolmentRejectedError as exc:
                failures.append(f"  {entry.id}: {image}: {exc.reason}: {exc.detail}")
            except ImageError as exc:
                failures.append(f"  {entry.id}: {exc}")
        if vectors:
            templates[entry.id] = np.stack(vectors).astype(np.float32)
        if progress:
            progress(entry.id)
    if failures:
        raise DeploymentError(
            "watchlist enrolment failed; fix or remove these images and run again:\n"
            + "\n".join(failures)
        )
    return templates


@dataclass
class _Live:
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    api_url: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)


class Deployment:
    """One running deployment: ``await run()`` until stopped, then it drains itself."""

    def __init__(
        self,
        topology: Topology,
        watchlist: Watchlist,
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
        self.live = _Live()
        self._started_ray = False
        self.spec = embedder_spec(topology)

    # --- the plan ----------------------------------------------------------------------

    def _shard_ids(self) -> list[str]:
        return [f"{self.topology.index.id}-{i}" for i in range(self.topology.index.shards)]

    def _embedder_ids(self) -> list[str]:
        e = self.topology.embedder
        return [e.id if e.replicas == 1 else f"{e.id}-{i}" for i in range(e.replicas)]

    def _threshold(self) -> float:
        per_entry = [e.threshold for e in self.watchlist.entries if e.threshold is not None]
        return max([self.topology.alerts.threshold, *per_entry])

    def plan(self, *, cluster_gpus: float = 0.0) -> dict[str, list[ActorSpec]]:
        """The actors of this topology, by start-up stage.

        An embedder with ``device: auto`` is given GPUs when the cluster has enough for
        every replica (``cluster_gpus``), and runs on the CPU otherwise.
        """
        t = self.topology
        ns = self.namespace
        index_cfg = {
            "dimension": self.spec.dimension,
            "metric": self.spec.metric,
            "mode": t.index.mode,
            "dtype": t.index.dtype,
            "exact_below": t.index.exact_below,
            "connectivity": t.index.connectivity,
            "expansion_add": t.index.expansion_add,
            "expansion_search": t.index.expansion_search,
        }
        shards = [
            ActorSpec(
                sid,
                "index_shard",
                (sid, index_cfg, str(self.paths.index_dir / sid)),
                on_driver_node=True,
            )
            for sid in self._shard_ids()
        ]
        shard_names = [s.name for s in shards]
        router = ActorSpec(
            t.index.id, "index_router", (t.index.id, shard_names, ns), on_driver_node=True
        )
        fusion = {
            "actor_id": t.alerts.id,
            "threshold": t.alerts.threshold,
            "fusion_window_s": t.alerts.fusion_window_s,
            "min_sightings": t.alerts.min_sightings,
            "entry_thresholds": {
                e.id: e.threshold for e in self.watchlist.entries if e.threshold is not None
            },
        }
        # The alert store and the index snapshots are files in the driver's data folder:
        # the actors that write them run where the driver (and the API reading them) runs.
        alerts = ActorSpec(
            t.alerts.id,
            "alerts",
            (t.deployment.id, str(self.paths.alerts_db), fusion),
            on_driver_node=True,
        )
        embedder_cfg = t.embedder.model_dump(mode="json")
        embedder_cfg["model_spec"] = self.spec.model_dump(mode="json")
        wiring = {
            "namespace": ns,
            "router": router.name,
            "alerts": alerts.name,
            "threshold": self._threshold(),
            "top_k": t.alerts.top_k,
        }
        wanted_gpus = t.embedder.gpus_per_replica * t.embedder.replicas
        gpu = t.embedder.device == "gpu" or (
            t.embedder.device == "auto" and cluster_gpus >= wanted_gpus
        )
        embedders = [
            ActorSpec(
                eid,
                "embedder",
                (eid, t.deployment.id, embedder_cfg, wiring, str(self.home)),
                num_cpus=t.embedder.cpus_per_replica,
                num_gpus=t.embedder.gpus_per_replica if gpu else 0.0,
            )
            for eid in self._embedder_ids()
        ]
        embedder_names = [e.name for e in embedders]
        deployment = {
            "id": t.deployment.id,
            "start": t.deployment.start.isoformat(),
            "end": t.deployment.end.isoformat(),
        }
        cameras = []
        for i, cam in enumerate(t.cameras):
            # Each camera prefers one replica (so its frames batch together) and fails over.
            order = (
                embedder_names[i % len(embedder_names) :]
                + embedder_names[: i % len(embedder_names)]
            )
            cameras.append(
                ActorSpec(
                    cam.id,
                    "camera",
                    (cam.id, deployment, cam.model_dump(mode="json"), order, ns),
                    start_method="start",
                    resources=dict(cam.resources),
                )
            )
        return {
            "index": [*shards, router],
            "alerts": [alerts],
            "embedders": embedders,
            "cameras": cameras,
        }

    # --- running -----------------------------------------------------------------------

    async def _bind_api(self) -> None:
        api = self.topology.api
        store = AlertStore.open_readonly(self.paths.alerts_db, create=True)
        store.close()
        app = create_app(self.paths.alerts_db, status=self.status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, api.host, api.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise DeploymentError(
                    f"api.port {api.port} on {api.host} is already in use; stop what uses it "
                    "or set api.port in the topology (0 picks a free port)"
                ) from exc
            raise DeploymentError(f"cannot listen on {api.host}:{api.port}: {exc}") from exc
        host, port = runner.addresses[0][:2]
        self.live.runner = runner
        self.live.api_url = f"http://{host}:{port}"

    def _prepare_and_enrol(self) -> dict[str, np.ndarray]:
        cache = ModelCache(self.home / "models")
        prepare(cache, default_fetcher(self.home), progress=False)
        pipeline = FacePipeline.build(
            RuntimeConfig(device="cpu"),
            pipeline_config(self.topology.embedder.model_dump(mode="json"), self.spec),
            cache=cache,
        )
        return enrol_watchlist(self.watchlist, pipeline)

    async def start(self) -> None:
        """Bind the API, enrol the watchlist, and start every actor."""
        if self.until_eof and not self._finite_cameras():
            raise DeploymentError(
                "--until-eof stops when every file or synthetic source has ended, but no "
                "camera has one that ends (type file or synthetic with at_end: stop)"
            )
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        await self._bind_api()
        try:
            if self.address:
                check_reachable(self.address)  # before minutes of model loading, not after
            templates = await asyncio.to_thread(self._prepare_and_enrol)
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
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.request_stop)
            self._check_gpus()
            stages = self.plan(cluster_gpus=float(ray.cluster_resources().get("GPU", 0.0)))
            await self.kernel.start(stages["index"])
            router = self.kernel.handle(self.topology.index.id)
            for entry_id, vectors in templates.items():
                await router.enrol.remote(EnrolVectors(entry_id, vectors).encode())
            await router.snapshot.remote()
            await self.kernel.start(stages["alerts"])
            await self.kernel.start(stages["embedders"])
            await self.kernel.start(stages["cameras"])
        except BaseException:
            await self._shutdown_quietly()
            raise
        # The run file (mode 0600) carries an admin token for the operator's local CLI
        # (`lfr status`); it is revoked when the deployment stops.
        run_info = {
            "pid": os.getpid(),
            "api": self.live.api_url,
            "token": issue_local_token(self.paths.alerts_db),
        }
        atomic_write(self.paths.run_file, json.dumps(run_info).encode())
        log.info(
            "deployment_started",
            deployment=self.namespace,
            api=self.live.api_url,
            cameras=len(self.topology.cameras),
            watchlist_entries=len(templates),
        )

    def _check_gpus(self) -> None:
        """Refuse at once when the topology demands GPUs the cluster does not have.

        Ray would otherwise wait for ever to place a GPU embedder on a machine with none.
        """
        e = self.topology.embedder
        if e.device != "gpu":
            return
        wanted = e.gpus_per_replica * e.replicas
        available = float(ray.cluster_resources().get("GPU", 0.0))
        if available < wanted:
            raise DeploymentError(
                f"embedder.device is gpu and needs {wanted:g} GPU(s) "
                f"({e.replicas} replica(s) x {e.gpus_per_replica:g}), but the Ray cluster has "
                f"{available:g}; add GPU nodes, lower embedder.replicas or gpus_per_replica, or "
                "set embedder.device to cpu or auto"
            )

    async def run(self) -> dict[str, Any]:
        """Start, run until stopped (or every file source ended), drain; return a summary."""
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

    def _finite_cameras(self) -> list[str]:
        """Cameras whose source ends: files and synthetic scenes that stop at their end."""
        return [
            c.id
            for c in self.topology.cameras
            if c.source.type in ("file", "synthetic") and c.at_end == "stop"
        ]

    async def _stop_when_sources_end(self) -> None:
        finite = self._finite_cameras()
        while not self.live.stop.is_set():
            await asyncio.sleep(0.5)
            ended = await asyncio.gather(
                *(self.kernel.handle(cam_id).ended.remote() for cam_id in finite),
                return_exceptions=True,
            )
            if all(e is True for e in ended):
                self.live.stop.set()

    async def _follow_alerts(self, stop: asyncio.Event) -> None:
        """Print (via ``on_alert``) and write to JSONL every stored alert event."""
        sink = JsonlSink(self.paths.alerts_db, self.alerts_jsonl) if self.alerts_jsonl else None
        store = AlertStore.open_readonly(self.paths.alerts_db)
        last = store.last_event_id()
        try:
            while True:
                events = await asyncio.to_thread(store.events_after, last, 500)
                for event in events:
                    last = event["event_id"]
                    if self.on_alert:
                        self.on_alert(event)
                if sink is not None:
                    await asyncio.to_thread(sink.drain)
                if stop.is_set() and not events:
                    break
                if not events:
                    await asyncio.sleep(0.2)
        finally:
            store.close()
            if sink is not None:
                sink.close()

    async def status(self) -> dict[str, Any]:
        """Cameras, embedders, index, alerts and restarts, for ``lfr status`` and the API."""
        t = self.topology
        figures = await self.kernel.stats()
        by_role: dict[str, dict[str, Any]] = {}
        for name, stats in figures.items():
            by_role.setdefault(stats["role"], {})[name.split("/", 1)[1]] = stats
        counts = self._store_counts()
        return {
            "deployment": {
                "id": t.deployment.id,
                "location": t.deployment.location,
                "start": t.deployment.start.isoformat(),
                "end": t.deployment.end.isoformat(),
                "threshold": t.alerts.threshold,
                "watchlist_entries": len(self.watchlist.entries),
            },
            "api": self.live.api_url,
            "uptime_s": round(time.time() - self.live.started_at, 1),
            "cameras": by_role.get("camera", {}),
            "embedders": by_role.get("embedder", {}),
            "index": {**by_role.get("index_router", {}), **by_role.get("index_shard", {})},
            "alerts": {"store": counts, **by_role.get("alerts", {})},
        }

    def _store_counts(self) -> dict[str, Any]:
        with AlertStore.open_readonly(self.paths.alerts_db) as store:
            return store.counts()

    async def drain(self) -> dict[str, Any]:
        """Stop cameras (in-flight frames finish), flush alerts, write out, stop actors."""
        await self.kernel.stop_role("camera", "stop")
        summary = await self.summary()
        with contextlib.suppress(Exception):
            await self.kernel.handle(self.topology.alerts.id).flush.remote()
        self.live.stop.set()
        for task in self.live.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await self._shutdown_quietly()
        log.info("deployment_stopped", deployment=self.namespace)
        return summary

    async def summary(self) -> dict[str, Any]:
        """Frames, faces, alerts, drops and capture-to-result latency percentiles."""
        cameras = await self.kernel.stats("camera")
        latencies: list[float] = []
        for handle in self.kernel.of_role("camera", include_stopped=True):
            with contextlib.suppress(Exception):
                latencies += await handle.latencies.remote()
        counts = self._store_counts()

        def total(key: str) -> int:
            return int(sum(int(c.get(key) or 0) for c in cameras.values()))

        ms = sorted(x * 1000 for x in latencies)

        def pct(q: float) -> float | None:
            return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1) if ms else None

        restarts = {
            n.split("/", 1)[1]: e.restarts for n, e in self.kernel.actors.items() if e.restarts
        }
        return {
            "deployment": self.namespace,
            "cameras": len(cameras),
            "frames": total("frames_processed"),
            "frames_sampled": total("frames_sampled"),
            "frames_dropped": total("frames_dropped"),
            "frames_failed": total("frames_failed"),
            "corrupt_frames": total("corrupt_frames"),
            "faces": total("faces"),
            "alerts": counts.get("alerts", 0),
            "alert_sightings": counts.get("sightings", 0),
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)},
            "restarts": restarts,
            "duration_s": round(time.time() - self.live.started_at, 1),
        }

    async def _shutdown_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kernel.handle(self.topology.alerts.id).close.remote(), 10)
        self.kernel.kill_all()
        if self.live.runner is not None:
            with contextlib.suppress(Exception):
                await self.live.runner.cleanup()
            self.live.runner = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False
        with contextlib.suppress(Exception):
            revoke_local_tokens(self.paths.alerts_db)
        self.paths.run_file.unlink(missing_ok=True)
