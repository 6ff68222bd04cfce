"""A deployment on Ray: the topology's actors started, wired, supervised and drained.

This is where the parts meet: the kernel (generic), the actor roles (registered by name),
the watchlist enrolment, the alert API and the JSONL sink. Start-up order, so that every
bad input stops things before anything runs:

0. the data folder's disk has room and the store is checked (:mod:`lfr_actors.store.check`:
   ``quick_check``, the schema, and a store lost where its marker or an index snapshot
   says one was made); a fault is one line naming the file and the ``lfr store`` command,
   and nothing is written;
1. the API port is bound (a port in use is a one-line error);
2. the deployment's record is found or created in the store from the topology's
   ``deployment`` section (a closed deployment, or a record that differs from the file,
   stops ``lfr up``);
3. the models are prepared and the watchlist file's new entries are enrolled in this
   process and stored as active entries, approved by the deployment's authority (an image
   that fails the enrolment rules stops ``lfr up`` with every entry and reason listed);
4. Ray is started or reached; index shards and router (loaded with the store's active
   entries), alert actor, embedders (each warmed up before it reports ready), then
   cameras, in that order.

Index snapshots are derived data: the index is rebuilt from the store's active entries at
every start, so a missing or corrupt snapshot is a warning, never a reason not to start.
An active entry whose templates fail their checksum or are not finite is *damaged*: left
out of the index, logged once, and counted and listed in the status.

While it runs, the store is the watchlist's source of truth: entries enrolled and
approved through the API, or deleted, reach the index within about a second. When the
deployment is closed (through the API, or by its window ending) the cameras stop and the
index and its snapshots are destroyed; the API stays up, so officers can still adjudicate
the alerts already raised, until ``lfr down``. ``serve`` runs steps 1-3 only: the API
over the deployment's store with enrolment models, to prepare a watchlist before the
window opens.

Drain (on ``lfr down``, SIGINT, SIGTERM, or every file source ended with ``--until-eof``):
cameras stop and their in-flight frames finish, the embedders hand over any sightings they
still hold, the alert actor flushes, the alert follower (stdout and ``--alerts-jsonl``)
makes one last read that starts after all of that, then the actors are stopped.

A camera actor that is restarted counts from zero again; the driver keeps each camera's
totals over its runs (:class:`CameraTotals`), so the summary and ``lfr status`` never lose
the counts of an earlier run (except those of its last second before it died).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
from aiohttp import web

from lfr_actors.actors.alerts import AlertActor, store_cause
from lfr_actors.actors.camera import COUNTERS as CAMERA_COUNTERS
from lfr_actors.actors.camera import CameraActor
from lfr_actors.actors.embedder import EmbedderActor
from lfr_actors.actors.index import IndexRouterActor, IndexShardActor
from lfr_actors.actors.settings import (
    alert_settings,
    camera_settings,
    embedder_settings,
    pipeline_config,
    router_settings,
    shard_settings,
)
from lfr_actors.alerts.jsonl import JsonlSink
from lfr_actors.api.app import api_runner, create_app
from lfr_actors.enrolment import (
    MAX_ENROL_PIXELS,
    EnrolmentUnavailableError,
    combine,
    enrol_image,
    pipeline_enroller,
)
from lfr_actors.errors import EnrolmentRejectedError, ImageError, LfrError
from lfr_actors.fsutil import atomic_write, private_dir, tighten_tree
from lfr_actors.index.shard import SNAPSHOT_MANIFEST
from lfr_actors.kernel.kernel import (
    ActorSpec,
    Kernel,
    check_reachable,
    start_ray,
    stop_ray,
)
from lfr_actors.kernel.registry import Registry
from lfr_actors.logs import get_logger
from lfr_actors.messages import EnrolVectors, RemoveEntry
from lfr_actors.models.cache import ModelCache, default_fetcher, prepare
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC, EmbedderSpec
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM, Actor
from lfr_actors.store.check import check_before_start, require_free_space
from lfr_actors.store.deployments import (
    DeploymentRecord,
    Deployments,
    Enrolled,
    EntryState,
    NewDeployment,
    NewEntry,
    Origin,
)
from lfr_actors.store.schema import Database
from lfr_actors.store.tokens import (
    LOCAL_TOKEN_RENEW_S,
    TokenStore,
    issue_local_token,
    renew_local_token,
    revoke_local_tokens,
)
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
        """Process id, API address and local admin token of the running ``lfr up``."""
        return self.data_dir / "lfr.run.json"

    def secure(self) -> None:
        """Make the data folder its owner's only: 0700, and 0600 for every file in it.

        A new folder is created so; an existing one with looser modes (made by hand, by an
        earlier version, or copied with ``cp``) is tightened, with one warning naming how
        many paths changed. Files created later keep these modes themselves
        (:mod:`lfr_actors.fsutil`). :class:`DeploymentError` (one line) when a mode cannot
        be set, e.g. in a folder another user owns.
        """
        try:
            changed = private_dir(self.data_dir) + tighten_tree(self.data_dir)
        except OSError as exc:
            where = exc.filename or self.data_dir
            raise DeploymentError(
                f"cannot make the data folder {self.data_dir} readable by its owner only: "
                f"{where}: {exc.strerror or exc}; run lfr as the user who owns it, or give it "
                "to that user (chown -R), or set storage.data_dir to a folder of your own"
            ) from exc
        if changed:
            log.warning(
                "data_folder_tightened",
                data_dir=str(self.data_dir),
                paths=len(changed),
                modes_were=sorted({f"{mode:04o}" for _, mode in changed}),
            )


@contextlib.contextmanager
def _disk_full_is_one_line(folder: Path) -> Iterator[None]:
    """Turn "no space left" (from the OS or SQLite) into one line naming the folder."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "full" not in str(exc).lower():
            raise
        raise DeploymentError(
            f"the disk holding {folder} is full ({exc}); free space there or set "
            "storage.data_dir to a folder on another disk"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DeploymentError(
            f"the disk holding {folder} is full ({exc.strerror}); free space there or set "
            "storage.data_dir to a folder on another disk"
        ) from None


def embedder_spec(topology: Topology) -> EmbedderSpec:
    """The embedding model the topology asks for: the default, or an operator's declared one."""
    if topology.embedder.model_file is not None:
        return load_embedder_spec(Path(topology.embedder.model_file))
    return DEFAULT_EMBEDDER_SPEC


def enrol_watchlist(
    watchlist: Watchlist,
    pipeline: FacePipeline,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Enrolled]:
    """Each entry's templates (one per image) and first image, except the ids in ``skip``.

    Every rejected image is listed in one :class:`DeploymentError`.
    """
    enrolled: dict[str, Enrolled] = {}
    failures: list[str] = []
    for entry in watchlist.entries:
        if entry.id in skip:
            continue
        photos = []
        for image_path in entry.images:
            try:
                image = load_image(Path(image_path), max_pixels=MAX_ENROL_PIXELS)
                photos.append(enrol_image(pipeline, image))
            except EnrolmentRejectedError as exc:
                failures.append(f"  {entry.id}: {image_path}: {exc.reason}: {exc.detail}")
            except ImageError as exc:
                failures.append(f"  {entry.id}: {exc}")
        if photos:
            enrolled[entry.id] = combine(photos)
        if progress:
            progress(entry.id)
    if failures:
        raise DeploymentError(
            "watchlist enrolment failed; fix or remove these images and run again:\n"
            + "\n".join(failures)
        )
    return enrolled


INDEX_BATCH = 1000
"""Entries per call when the index is loaded or brought in line with the store."""


def _batches(items: list[str], size: int = INDEX_BATCH) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def declared_deployment(topology: Topology) -> NewDeployment:
    """The deployment record a topology file declares."""
    return NewDeployment.of(topology)


def register_deployment(deployments: Deployments, topology: Topology) -> DeploymentRecord:
    """The topology's deployment record: created from the file, or checked against it.

    Raises :class:`DeploymentError` when the deployment was closed (it never runs again)
    or when the stored record (created through the API, or by an earlier run of another
    file) differs from the file, naming every field that differs. The threshold is the
    exception: it may have been changed through the API (audited), and the store's value
    is the one in force; the file's ``alerts.threshold`` only sets the first one.
    """
    declared = declared_deployment(topology)
    record = deployments.find(declared.id)
    if record is None:
        return deployments.create(declared, actor=Actor("topology file"), origin=Origin.FILE)
    if record.closed_at is not None:
        raise DeploymentError(
            f"deployment {record.id!r} was closed {_iso(record.closed_at)} by "
            f"{record.closed_by} ({record.close_reason}); its watchlist was destroyed and it "
            "cannot run again. A new deployment needs a new authority and a new deployment.id."
        )
    stored = record.declared().as_dict()
    differences = [
        f"  deployment {name}: the store has {_shown(stored[name], name)}, the file "
        f"{_shown(value, name)}"
        for name, value in declared.as_dict().items()
        if stored[name] != value and name != "threshold"
    ]
    if differences:
        raise DeploymentError(
            f"the store's record of deployment {record.id!r} (created by {record.created_by}) "
            "differs from the topology file; make the file match the authority as recorded "
            "(the threshold is governed in the store and may differ):\n" + "\n".join(differences)
        )
    if record.threshold != declared.threshold:
        log.warning(
            "threshold_from_store",
            deployment=record.id,
            threshold=record.threshold,
            file_threshold=declared.threshold,
        )
    return record


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")


def _shown(value: Any, name: str) -> str:
    if name in ("starts_at", "ends_at") and isinstance(value, float):
        return _iso(value)
    return repr(value)


class CameraTotals:
    """Each camera's counters summed over its runs, told apart by their ``epoch``.

    Give it every ``stats()`` read of a camera (:meth:`observe`); it answers the same
    figures with the counters replaced by their totals over every run seen so far. The
    last figures read from a run that then died are kept; what it counted after that
    read is lost, so read often (the driver reads every second). A late answer of an
    earlier run (read before a newer run was seen) changes nothing.
    """

    def __init__(self) -> None:
        self._epoch: dict[str, str] = {}
        self._ended: dict[str, set[str]] = {}
        self._current: dict[str, dict[str, int]] = {}
        self._earlier: dict[str, dict[str, int]] = {}
        self._runs: dict[str, int] = {}

    def observe(self, name: str, stats: dict[str, Any]) -> dict[str, Any]:
        """``stats`` of camera ``name`` with its counters totalled over its runs."""
        epoch = stats.get("epoch")
        earlier = self._earlier.setdefault(name, dict.fromkeys(CAMERA_COUNTERS, 0))
        ended = self._ended.setdefault(name, set())
        if isinstance(epoch, str) and epoch not in ended:
            if self._epoch.get(name) != epoch:
                if name in self._epoch:
                    ended.add(self._epoch[name])
                    for key, value in self._current.get(name, {}).items():
                        earlier[key] += value
                self._epoch[name] = epoch
                self._runs[name] = self._runs.get(name, 0) + 1
            self._current[name] = {key: int(stats.get(key) or 0) for key in CAMERA_COUNTERS}
        current = self._current.get(name, {})
        totals = {key: earlier[key] + current.get(key, 0) for key in CAMERA_COUNTERS}
        return {**stats, **totals, "runs": self._runs.get(name, 0)}

    def observe_all(self, cameras: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """:meth:`observe` for every camera of a ``Kernel.stats`` answer."""
        return {name: self.observe(name, stats) for name, stats in cameras.items()}


@dataclass
class _Live:
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    api_url: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    pipeline: FacePipeline | None = None
    enroller: Callable[[bytes, str], Enrolled] | None = None
    db: Database | None = None
    indexed: set[str] = field(default_factory=set)
    local_token_id: str | None = None
    revision: int = -1
    closing: bool = False
    closed: bool = False
    threshold: float | None = None
    entry_thresholds: dict[str, float] = field(default_factory=dict)
    counted: tuple[int, int] = (0, 0)
    camera_totals: CameraTotals = field(default_factory=CameraTotals)
    damaged: dict[str, str] = field(default_factory=dict)


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
        self.live = _Live()
        self._started_ray = False
        self._cameras_wanted = False
        """Set by :meth:`run`: the cameras are to run (``serve`` runs none)."""
        self.spec = embedder_spec(topology)

    # --- the plan ----------------------------------------------------------------------

    def _shard_ids(self) -> list[str]:
        return [f"{self.topology.index.id}-{i}" for i in range(self.topology.index.shards)]

    def _embedder_ids(self) -> list[str]:
        e = self.topology.embedder
        return [e.id if e.replicas == 1 else f"{e.id}-{i}" for i in range(e.replicas)]

    def _entry_thresholds(self) -> dict[str, float]:
        """Entries' own (stricter) thresholds: the store's when running, else the file's."""
        if self.live.db is not None:
            entries = Deployments(self.live.db).entries(self.namespace, state=EntryState.ACTIVE)
            return {e.id: e.threshold for e in entries if e.threshold is not None}
        if self.watchlist is None:
            return {}
        return {e.id: e.threshold for e in self.watchlist.entries if e.threshold is not None}

    def _deployment_threshold(self) -> float:
        """The threshold in force: the store's once registered, else the file's."""
        if self.live.threshold is not None:
            return self.live.threshold
        return self.topology.alerts.threshold

    def _threshold(self) -> float:
        """The embedder's search limit: the loosest threshold of any entry."""
        return max([self._deployment_threshold(), *self._entry_thresholds_in_force().values()])

    def _entry_thresholds_in_force(self) -> dict[str, float]:
        """What the actors were given: read from the store at start and on every change."""
        return self.live.entry_thresholds if self.live.db is not None else self._entry_thresholds()

    def plan(self, *, cluster_gpus: float = 0.0) -> dict[str, list[ActorSpec]]:
        """The actors of this topology, by start-up stage.

        An embedder with ``device: auto`` is given GPUs when the cluster has enough for
        every replica (``cluster_gpus``), and runs on the CPU otherwise.
        """
        t = self.topology
        ns = self.namespace
        shards = [
            ActorSpec(
                sid,
                "index_shard",
                (shard_settings(t, self.spec, sid, str(self.paths.index_dir / sid)),),
                on_driver_node=True,
                resources=dict(t.index.resources),
            )
            for sid in self._shard_ids()
        ]
        shard_names = [s.name for s in shards]
        router = ActorSpec(
            t.index.id,
            "index_router",
            (router_settings(t, shard_names, ns),),
            on_driver_node=True,
            resources=dict(t.index.resources),
        )
        # The alert store and the index snapshots are files in the driver's data folder:
        # the actors that write them run where the driver (and the API reading them) runs.
        alerts = ActorSpec(
            t.alerts.id,
            "alerts",
            (
                alert_settings(
                    t,
                    str(self.paths.alerts_db),
                    self._deployment_threshold(),
                    self._entry_thresholds_in_force(),
                ),
            ),
            on_driver_node=True,
            resources=dict(t.alerts.resources),
        )
        wanted_gpus = t.embedder.gpus_per_replica * t.embedder.replicas
        gpu = t.embedder.device == "gpu" or (
            t.embedder.device == "auto" and cluster_gpus >= wanted_gpus
        )
        embedders = [
            ActorSpec(
                eid,
                "embedder",
                (
                    embedder_settings(
                        t,
                        self.spec,
                        eid,
                        namespace=ns,
                        router=router.name,
                        alerts=alerts.name,
                        threshold=self._threshold(),
                        models_home=str(self.home),
                    ),
                ),
                num_cpus=t.embedder.cpus_per_replica,
                num_gpus=t.embedder.gpus_per_replica if gpu else 0.0,
                resources=dict(t.embedder.resources),
            )
            for eid in self._embedder_ids()
        ]
        embedder_names = [e.name for e in embedders]
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
                    (camera_settings(t, cam, order, ns),),
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
                raise DeploymentError(
                    f"api.port {api.port} on {api.host} is already in use; stop what uses it "
                    "or set api.port in the topology (0 picks a free port)"
                ) from exc
            raise DeploymentError(f"cannot listen on {api.host}:{api.port}: {exc}") from exc
        host, port = runner.addresses[0][:2]
        self.live.runner = runner
        self.live.api_url = f"http://{host}:{port}"

    def _enrol(self, data: bytes, name: str) -> Enrolled:
        """The API's enroller: available once the models are loaded (503 before)."""
        enroller = self.live.enroller
        if enroller is None:
            raise EnrolmentUnavailableError(
                "the enrolment models are still loading; try again in a few seconds"
            )
        return enroller(data, name)

    def _revoke_earlier_local_tokens(self) -> None:
        """Revoke the local admin tokens of earlier runs, before this run's API answers.

        A driver that died (kill -9, a power cut) left its token in the run file; it
        expires by itself within minutes (``tokens.LOCAL_TOKEN_TTL_S``), and is revoked here
        outright, so no API over this store accepts it again.
        """
        with Database(self.paths.alerts_db) as db:
            revoked = TokenStore(db).revoke_internal(by=SYSTEM)
        if revoked:
            log.warning(
                "earlier_local_tokens_revoked",
                deployment=self.namespace,
                tokens=[r.id for r in revoked],
            )

    def _prepare_and_enrol(self) -> None:
        """Register the deployment, load the models, store the watchlist file's new entries."""
        db = Database(self.paths.alerts_db)
        self.live.db = db
        deployments = Deployments(db)
        self.live.threshold = register_deployment(deployments, self.topology).threshold
        cache = ModelCache(self.home / "models")
        prepare(cache, default_fetcher(self.home), progress=False)
        pipeline = FacePipeline.build(
            RuntimeConfig(device="cpu"),
            pipeline_config(self.topology.embedder, self.spec),
            cache=cache,
        )
        if self.watchlist is not None:
            # Entries already stored (from an earlier run, or deleted through the API since)
            # are not enrolled again: a deleted entry stays deleted.
            known = deployments.entry_ids(self.namespace)
            enrolled = enrol_watchlist(self.watchlist, pipeline, skip=known)
            file_name = (
                "watchlist file"
                if self.topology.watchlist is None
                else (f"watchlist file {self.topology.watchlist.file.name}")
            )
            authority = Actor(self.topology.deployment.authorised_by)
            for entry in self.watchlist.entries:
                if entry.id not in enrolled:
                    continue
                deployments.add_entry(
                    self.namespace,
                    NewEntry(
                        id=entry.id,
                        display_name=entry.display_name,
                        category=entry.category,
                        legal_basis=entry.legal_basis,
                        source=entry.source,
                        image_date=entry.image_date,
                        threshold=entry.threshold,
                    ),
                    enrolled[entry.id],
                    actor=Actor(file_name),
                    origin=Origin.FILE,
                    approved_by=authority,
                )
        self.live.pipeline = pipeline
        self.live.entry_thresholds = self._entry_thresholds()
        self.live.enroller = pipeline_enroller(pipeline)

    def check_data(self) -> None:
        """Refuse, in one line and before anything is written, a start that would lose data.

        The data folder's disk must have room, and the store must pass
        :func:`lfr_actors.store.check.check_before_start`; index snapshot manifests left
        by an earlier run are evidence that a store existed.
        """
        require_free_space(self.paths.data_dir)
        evidence: list[Path] = []
        if self.paths.index_dir.is_dir():
            evidence = [p / SNAPSHOT_MANIFEST for p in self.paths.index_dir.iterdir()]
        with _disk_full_is_one_line(self.paths.data_dir):
            check_before_start(self.paths.alerts_db, evidence=evidence)

    async def serve(self) -> None:
        """The API alone over this deployment's store, with enrolment, until stopped.

        For preparing a watchlist before the window opens (``lfr serve``): no Ray, no
        cameras. Registers the deployment and stores the watchlist file's entries first.
        """
        self.check_data()  # reads only: a refused start changes nothing
        with _disk_full_is_one_line(self.paths.data_dir):
            self.paths.secure()
            await asyncio.to_thread(self._revoke_earlier_local_tokens)
            await self._bind_api()
        try:
            with _disk_full_is_one_line(self.paths.data_dir):
                await asyncio.to_thread(self._prepare_and_enrol)
            if self.handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.request_stop)
            log.info("api_serving", deployment=self.namespace, api=self.live.api_url)
            await self.live.stop.wait()
        finally:
            await self._shutdown_quietly()

    async def start(self) -> None:
        """Bind the API, enrol the watchlist, and start every actor."""
        if self.until_eof and not self._finite_cameras():
            raise DeploymentError(
                "--until-eof stops when every file or synthetic source has ended, but no "
                "camera has one that ends (type file or synthetic with at_end: stop)"
            )
        self.check_data()  # reads only: a refused start changes nothing
        with _disk_full_is_one_line(self.paths.data_dir):
            self.paths.secure()
            await asyncio.to_thread(self._revoke_earlier_local_tokens)
            await self._bind_api()
        try:
            if self.address:
                check_reachable(self.address)  # before minutes of model loading, not after
            with _disk_full_is_one_line(self.paths.data_dir):
                await asyncio.to_thread(self._prepare_and_enrol)
            assert self.live.db is not None
            record = Deployments(self.live.db).get(self.namespace)
            if record.ends_at <= time.time():
                raise DeploymentError(
                    f"deployment {self.namespace!r}'s authorised window ended "
                    f"{_iso(record.ends_at)}; cameras run only inside it"
                )
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
            self.kernel.on_restart.append(self._rebuild_restarted_shard)
            await self.kernel.check_placement([spec for stage in stages.values() for spec in stage])
            await self.kernel.start(stages["index"])
            # The store is the source of truth: whatever a snapshot from an earlier run
            # holds is replaced by the entries active now.
            await self.kernel.handle(self.topology.index.id).destroy.remote()
            await self._sync_watchlist()
            await self.kernel.start(stages["alerts"])
            await self.kernel.start(stages["embedders"])
            await self.kernel.start(stages["cameras"])
        except BaseException:
            await self._shutdown_quietly()
            raise
        self._write_run_file()
        log.info(
            "deployment_started",
            deployment=self.namespace,
            api=self.live.api_url,
            cameras=len(self.topology.cameras),
            watchlist_entries=len(self.live.indexed),
        )

    def _write_run_file(self) -> None:
        """Issue this run's local admin token and write the run file (mode 0600) with it.

        The token is for the operator's ``lfr status`` on this host. It is revoked when the
        deployment stops, renewed while it runs (:meth:`_renew_local_token`), and expires by
        itself minutes after a crash. Issuing revokes any earlier one.
        """
        issued = issue_local_token(self.paths.alerts_db)
        self.live.local_token_id = issued.record.id
        run_info = {"pid": os.getpid(), "api": self.live.api_url, "token": issued.secret}
        atomic_write(self.paths.run_file, json.dumps(run_info).encode())

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
        self._cameras_wanted = True
        await self.start()
        live = self.live
        live.tasks.append(asyncio.create_task(self.kernel.supervise(live.stop)))
        live.tasks.append(asyncio.create_task(self._follow_alerts(live.stop)))
        live.tasks.append(asyncio.create_task(self._follow_store(live.stop)))
        live.tasks.append(asyncio.create_task(self._renew_local_token(live.stop)))
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
                # Whether to stop is decided BEFORE the read: the read that ends the loop
                # started after ``stop`` was set (after the drain's flush), so it sees every
                # event committed before the drain asked to stop.
                stopping = stop.is_set()
                events = await asyncio.to_thread(store.events_after, last, 500)
                for event in events:
                    last = event["event_id"]
                    if self.on_alert:
                        self.on_alert(event)
                if sink is not None:
                    await asyncio.to_thread(sink.drain)
                if stopping and not events:
                    break
                if not events:
                    await asyncio.sleep(0.2)
        finally:
            store.close()
            if sink is not None:
                sink.close()

    async def _renew_local_token(
        self, stop: asyncio.Event, interval_s: float = LOCAL_TOKEN_RENEW_S
    ) -> None:
        """Keep the run file's token alive while this driver runs (it expires otherwise).

        A renewal that fails (the store busy or its disk full) is logged and tried again at
        the next round; the token's TTL leaves several rounds of slack. A token that expired
        all the same (the store unwritable for minutes) is replaced by a new one in the run
        file; one that was revoked (by hand, or by another start on this data folder) stays
        revoked, and renewing stops.
        """
        if self.live.local_token_id is None:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if stop.is_set() or self.live.db is None:
                return
            token_id = self.live.local_token_id
            try:
                record = await asyncio.to_thread(renew_local_token, self.live.db, token_id)
                if record.revoked:
                    log.warning("local_token_revoked", token=token_id)
                    return
                if record.expired():
                    await asyncio.to_thread(self._write_run_file)
                    log.warning("local_token_replaced", expired=token_id)
            except Exception as exc:
                log.warning("local_token_renewal_failed", error=str(exc))

    async def _sync_watchlist(self) -> None:
        """Bring the index in line with the store's active entries (then snapshot it)."""
        assert self.live.db is not None
        loaded = await asyncio.to_thread(Deployments(self.live.db).load_templates, self.namespace)
        revision, templates = loaded.revision, loaded.templates
        if revision == self.live.revision:
            return
        for entry_id, reason in sorted(loaded.damaged.items()):
            if self.live.damaged.get(entry_id) != reason:  # once per entry and fault
                log.error(
                    "watchlist_entry_damaged",
                    deployment=self.namespace,
                    entry=entry_id,
                    reason=reason,
                    indexed=False,
                )
        self.live.damaged = dict(loaded.damaged)
        router = self.kernel.handle(self.topology.index.id)
        gone = self.live.indexed - templates.keys()
        new = templates.keys() - self.live.indexed
        for batch in _batches(sorted(gone)):
            await router.remove_many.remote([RemoveEntry(e).encode() for e in batch])
            self.live.indexed.difference_update(batch)
        for batch in _batches(sorted(new)):
            await router.enrol_many.remote([EnrolVectors(e, templates[e]).encode() for e in batch])
            self.live.indexed.update(batch)
        await router.snapshot.remote()
        self.live.revision = revision
        if gone or new:
            log.info(
                "watchlist_synced",
                deployment=self.namespace,
                added=len(new),
                removed=len(gone),
                entries=len(self.live.indexed),
            )

    async def _rebuild_restarted_shard(self, spec: ActorSpec) -> None:
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
        await self._sync_watchlist()

    async def _apply_threshold(self, threshold: float) -> None:
        """Give the alert actor and the embedders thresholds changed in the store.

        The deployment's threshold (changed through the API) and the entries' own (an
        entry enrolled with one, approved while running): both apply at once.
        """
        entry_thresholds = await asyncio.to_thread(self._entry_thresholds)
        if (threshold, entry_thresholds) == (self.live.threshold, self.live.entry_thresholds):
            return
        previous, self.live.threshold = self.live.threshold, threshold
        self.live.entry_thresholds = entry_thresholds
        stages = self.plan(cluster_gpus=float(ray.cluster_resources().get("GPU", 0.0)))
        for spec in [*stages["alerts"], *stages["embedders"]]:
            self.kernel.respec(spec)  # so that a restarted actor starts with it too
        await self.kernel.handle(self.topology.alerts.id).set_threshold.remote(
            threshold, entry_thresholds
        )
        search_limit = self._threshold()
        await asyncio.gather(
            *(h.set_threshold.remote(search_limit) for h in self.kernel.of_role("embedder"))
        )
        log.warning(
            "threshold_applied",
            deployment=self.namespace,
            previous=previous,
            threshold=threshold,
            search_limit=search_limit,
        )

    def _run_state(self) -> str:
        """running; closing (destroying the index, stopping cameras); closed."""
        if self.live.closed:
            return "closed"
        return "closing" if self.live.closing else "running"

    async def _on_closed(self) -> None:
        """The deployment was closed: destroy the index, then stop the cameras.

        The index goes first: it is the watchlist's biometric data, and a camera still
        running for the moment it takes to stop finds nothing in an empty index.
        ``closed`` (what the status shows) is set once both are done.
        """
        self.live.closing = True
        await self.kernel.handle(self.topology.index.id).destroy.remote()
        self.live.indexed.clear()
        await self.kernel.stop_role("camera", "stop")
        await self._count_frames()
        self.live.closed = True
        log.warning(
            "deployment_closed",
            deployment=self.namespace,
            cameras="stopped",
            watchlist="destroyed",
        )

    async def _count_frames(self) -> None:
        """Add the frames and faces counted since the last call to the deployment's record."""
        assert self.live.db is not None
        cameras = await self._camera_stats()
        now = (
            sum(int(c.get("frames_processed") or 0) for c in cameras.values()),
            sum(int(c.get("faces") or 0) for c in cameras.values()),
        )
        before = self.live.counted
        frames, faces = max(0, now[0] - before[0]), max(0, now[1] - before[1])
        if frames or faces:
            await asyncio.to_thread(
                Deployments(self.live.db).add_counters, self.namespace, frames=frames, faces=faces
            )
        # Only once recorded: when the store cannot be written the counts wait for the next try.
        self.live.counted = now

    async def _camera_stats(self) -> dict[str, dict[str, Any]]:
        """Every camera's ``stats()``, counters totalled over its runs."""
        return self.live.camera_totals.observe_all(await self.kernel.stats("camera"))

    async def _follow_store(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Apply watchlist changes and closure from the store; record the counters."""
        assert self.live.db is not None
        deployments = Deployments(self.live.db)
        rounds = 0
        store_error_logged_at: float | None = None
        while not stop.is_set():
            rounds += 1
            try:
                revision, closed_at = await asyncio.to_thread(deployments.revision, self.namespace)
                if closed_at is not None and not self.live.closing:
                    await self._on_closed()
                elif not self.live.closing and revision != self.live.revision:
                    await self._sync_watchlist()
                    record = await asyncio.to_thread(deployments.get, self.namespace)
                    await self._apply_threshold(record.threshold)
                # The camera totals need no read of their own here: the API's status task
                # gathers every actor once a second through status(), which observes them,
                # so a camera that dies loses at most about a second of its counts.
                if not self.live.closing and rounds % 5 == 0:
                    await self._count_frames()
            except sqlite3.Error as exc:
                # The store cannot be read or written (a full disk, say): one line a minute,
                # not a traceback a second; the next round tries again.
                now = time.monotonic()
                if store_error_logged_at is None or now - store_error_logged_at >= 60:
                    store_error_logged_at = now
                    log.error(
                        "store_follow_failed", deployment=self.namespace, reason=store_cause(exc)
                    )
            except Exception:
                log.exception("store_follow_failed", deployment=self.namespace)
            else:
                store_error_logged_at = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def status(self, *, store_counts: bool = True) -> dict[str, Any]:
        """Cameras, embedders, index, alerts and restarts: one gather from every actor.

        The API calls this once a second from its status cache (with ``store_counts``
        off: it reads the counts over its own connection), never per request; ``lfr
        status`` reads that cache through ``/v1/status``.
        """
        t = self.topology
        figures = await self.kernel.stats()
        by_role: dict[str, dict[str, Any]] = {}
        for name, stats in figures.items():
            shown = (
                self.live.camera_totals.observe(name, stats) if stats["role"] == "camera" else stats
            )
            by_role.setdefault(stats["role"], {})[name.split("/", 1)[1]] = shown
        cameras = by_role.get("camera", {})
        if self._cameras_wanted and not cameras and not self.live.closing:
            # Models loading, Ray starting: the topology's cameras are not running yet, and
            # the status (and so /readyz) says so rather than showing no camera at all.
            cameras = {c.id: {"state": "starting", "role": "camera"} for c in t.cameras}
        alerts: dict[str, Any] = dict(by_role.get("alerts", {}))
        if store_counts:
            alerts = {"store": await asyncio.to_thread(self._store_counts), **alerts}
        return {
            "deployment": {
                "id": t.deployment.id,
                "location": t.deployment.location,
                "start": t.deployment.start.isoformat(),
                "end": t.deployment.end.isoformat(),
                "threshold": self._deployment_threshold(),
                "state": self._run_state(),
                "watchlist_entries": len(self.live.indexed),
                "damaged_entries": len(self.live.damaged),
                "damaged": [
                    {"entry_id": entry_id, "reason": reason}
                    for entry_id, reason in sorted(self.live.damaged.items())
                ],
            },
            "api": self.live.api_url,
            "uptime_s": round(time.time() - self.live.started_at, 1),
            "cameras": cameras,
            "embedders": by_role.get("embedder", {}),
            "index": {**by_role.get("index_router", {}), **by_role.get("index_shard", {})},
            "alerts": alerts,
            "nodes": self.kernel.node_summary(),
        }

    def _store_counts(self) -> dict[str, Any]:
        with AlertStore.open_readonly(self.paths.alerts_db) as store:
            return store.counts()

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
                await self._count_frames()
        summary = await self.summary()
        with contextlib.suppress(Exception):
            await self.kernel.handle(self.topology.alerts.id).flush.remote()
        # The alert follower's last read starts after this: everything flushed is written.
        self.live.stop.set()
        for task in self.live.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await self._shutdown_quietly()
        log.info("deployment_stopped", deployment=self.namespace)
        return summary

    async def summary(self) -> dict[str, Any]:
        """Frames, faces, alerts, drops and capture-to-result latency percentiles."""
        cameras = await self._camera_stats()
        embedders = await self.kernel.stats("embedder")
        alerts = (await self.kernel.stats("alerts")).values()
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
            "frames_retried": total("frames_retried"),
            "faces": total("faces"),
            "sightings_lost": sum(
                int(e.get("sightings_lost") or 0) + int(e.get("sightings_unstored") or 0)
                for e in embedders.values()
            ),
            # The alert actor's figures (since it last started): possible matches it was
            # sent, and those dropped as already stored (true replays only).
            "sightings_received": sum(int(a.get("sightings_received") or 0) for a in alerts),
            "sightings_duplicate": sum(int(a.get("duplicates") or 0) for a in alerts),
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
            stop_ray()
            self._started_ray = False
        with contextlib.suppress(Exception):
            revoke_local_tokens(self.paths.alerts_db)
        self.paths.run_file.unlink(missing_ok=True)
        if self.live.db is not None:
            self.live.db.close()
            self.live.db = None
