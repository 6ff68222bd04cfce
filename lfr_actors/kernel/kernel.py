"""Starting, placing, supervising and stopping actors on Ray.

The kernel is given a plan: for each actor, its topology ID, its role (a registered class),
its constructor arguments and its resources. It knows nothing about faces.

Recovery promises, in plain words:

- Every actor is asked for its health every ``health_interval_s``. An actor that is dead
  or does not answer ``unhealthy_after`` checks in a row is killed (if still there) and
  started again under the same name with the same arguments, after a backoff that doubles
  from ``initial_backoff_s`` up to ``max_backoff_s`` and resets once it has been healthy
  for a minute. Its restart count shows in the status.
- The supervisor loop never dies: a step that fails is logged and retried next round.
- Actors find each other by name, so a restarted actor is found again by its callers.
- Ray's own restarts are off (``max_restarts=0``): one owner decides, and counts.
- Placement follows each actor's resources (CPUs, GPUs, custom resources such as
  ``camera_node``). A plan that no node of the cluster can place is refused before anything
  starts, naming the actor and the resource. Each actor's node is recorded once it is ready.
- A lost node is reported, not hidden: an actor whose node Ray has declared dead shows
  ``node lost: ...``, and its replacement, which waits for a node with the resources it
  needs, shows ``pending: no node has resource ...`` until one joins. A pending replacement
  does not hold up the supervision of the others, and is not killed and re-created while it
  waits; it starts (and its ``start_method`` runs) when a node with the resource returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from lfr_actors import logs
from lfr_actors.errors import LfrError
from lfr_actors.kernel import reaper
from lfr_actors.kernel.registry import Registry
from lfr_actors.logs import get_logger

log = get_logger("lfr.kernel")


class KernelError(LfrError):
    """An actor could not be started, or Ray could not be reached."""


@dataclass(frozen=True)
class ActorSpec:
    """One actor of the plan."""

    actor_id: str
    role: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_cpus: float = 0.0
    num_gpus: float = 0.0
    start_method: str | None = None
    """A method called (and awaited) after construction, e.g. a camera's ``start``."""
    on_driver_node: bool = False
    """Place the actor on the node running the driver: for actors that write files the
    driver reads (the alert store, index snapshots), which must not land on another node."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources the actor needs (e.g. ``{"camera_ingest": 0.1}``)."""

    @property
    def name(self) -> str:
        """The Ray actor name: role and topology ID, unique in the deployment namespace."""
        return f"{self.role}/{self.actor_id}"


@dataclass
class _Supervised:
    spec: ActorSpec
    handle: Any
    restarts: int = 0
    failures_in_a_row: int = 0
    backoff_s: float = 0.0
    next_restart_at: float = 0.0
    healthy_since: float = field(default_factory=time.monotonic)
    last_health: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None
    stopped: bool = False
    node_id: str | None = None
    """The Ray node the actor runs on, once it has answered its first health check."""
    pending: asyncio.Future[Any] | None = None
    """The first health check of a restarted actor that has not answered yet."""
    pending_since: float = 0.0
    pid: int | None = None
    """The actor's process on its node: for an operator's tools, like its node."""
    lost_node: str | None = None
    """The node of the actor being replaced, until its replacement is up: to say why."""


def start_ray(
    address: str | None, namespace: str, *, env_vars: dict[str, str] | None = None
) -> None:
    """Connect to a Ray cluster at ``address``, or start Ray on this machine.

    Locally, object spilling is switched off: frames are face data, and Ray would otherwise
    write objects to disk under memory pressure. (On a cluster the operator configures
    spilling; see deploy/.)
    """
    if ray.is_initialized():
        return
    options: dict[str, Any] = {
        "namespace": namespace,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if env_vars:
        env = dict(env_vars)
        if "LFR_LOG_FORMAT" in env:
            # A worker's stderr is a pipe: auto is decided here, by the driver's terminal.
            env["LFR_LOG_FORMAT"] = logs.decided_format(env["LFR_LOG_FORMAT"])
        options["runtime_env"] = {"env_vars": env}
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            # "local": a Ray of its own, even when another cluster on this machine left its
            # address in /tmp/ray (ray.init() with no address would join that one).
            before = reaper.children_of(os.getpid())
            _quiet_token_auth_notice()
            ray.init(
                address="local",
                include_dashboard=False,
                _system_config={"automatic_object_spilling_enabled": False},
                **options,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise KernelError(f"cannot start or reach Ray at {where}: {exc}") from exc
    if not address:
        # Ray's processes started by this driver: stopped by a watcher if the driver dies
        # without ray.shutdown() (see reaper.py for what Ray would leave running, and why).
        global _reaper  # noqa: PLW0603 - one local Ray per process, as ray.init allows
        _reaper = reaper.start(reaper.children_of(os.getpid()) - before)


_reaper: reaper.Reaper | None = None

_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _DropTokenAuthEnabled(logging.Filter):
    """Drops Ray's notice that token authentication is on (its default for a local Ray).

    It is printed at every start and asks nothing of the operator; Ray's warning that
    authentication is *off* still shows. (Setting ``RAY_AUTH_MODE=token`` in the
    environment would silence it too, but only before ``ray`` is imported.)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def _quiet_token_auth_notice() -> None:
    target = logging.getLogger(_RAY_AUTH_LOGGER)
    if not any(isinstance(f, _DropTokenAuthEnabled) for f in target.filters):
        target.addFilter(_DropTokenAuthEnabled())


def stop_ray() -> None:
    """Shut down Ray (a local one stops); its watcher stops whatever Ray left running."""
    global _reaper  # noqa: PLW0603
    if ray.is_initialized():
        ray.shutdown()
    if _reaper is not None:
        _reaper.stop()
        _reaper = None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when a cluster address does not accept connections.

    ``ray.init`` would otherwise retry for minutes before giving up.
    """
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit():
        raise KernelError(f"Ray address {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise KernelError(
            f"cannot reach Ray at {address}: {exc.strerror or exc}; is the cluster's head "
            "running (`ray start --head`), and is the address right?"
        ) from exc


class Kernel:
    """Owns the desired set of actors and keeps it running."""

    def __init__(
        self,
        namespace: str,
        registry: Registry[type],
        *,
        health_interval_s: float = 2.0,
        health_timeout_s: float = 10.0,
        unhealthy_after: int = 2,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.namespace = namespace
        self.registry = registry
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.unhealthy_after = unhealthy_after
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.start_timeout_s = start_timeout_s
        self.actors: dict[str, _Supervised] = {}
        self.on_restart: list[Callable[[ActorSpec], Awaitable[None]]] = []
        self.nodes: list[dict[str, Any]] = []
        """The cluster's nodes as Ray listed them at the last supervision round."""

    def _create(self, spec: ActorSpec) -> Any:
        cls = self.registry.get(spec.role)
        options: dict[str, Any] = {
            "name": spec.name,
            "namespace": self.namespace,
            "max_restarts": 0,
            "num_cpus": spec.num_cpus,
            "max_concurrency": 1000,
        }
        if spec.num_gpus:
            options["num_gpus"] = spec.num_gpus
        if spec.resources:
            options["resources"] = dict(spec.resources)
        if spec.on_driver_node:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=False
            )
        return ray.remote(cls).options(**options).remote(*spec.args, **spec.kwargs)

    async def start(self, specs: Sequence[ActorSpec], *, ready_timeout_s: float = 300.0) -> None:
        """Create ``specs`` (in parallel) and wait until each answers its health check.

        Refused at once, before any is created, when an actor needs resources that no node
        of the cluster has (Ray would otherwise leave it pending for ever).
        """
        await self.check_placement(specs)
        created = []
        for spec in specs:
            if spec.name in self.actors:
                raise KernelError(f"actor {spec.name} is already running")
            handle = self._create(spec)
            self.actors[spec.name] = _Supervised(spec, handle)
            created.append(self.actors[spec.name])
        for entry in created:
            try:
                entry.last_health = await asyncio.wait_for(
                    entry.handle.health.remote(), ready_timeout_s
                )
                if entry.spec.start_method:
                    await getattr(entry.handle, entry.spec.start_method).remote()
            except Exception as exc:
                raise KernelError(
                    f"actor {entry.spec.name} failed to start: {_reason(exc)}"
                ) from exc
            entry.node_id, entry.pid = await _placement(entry.handle)
            log.info(
                "actor_started", actor=entry.spec.name, role=entry.spec.role, node=entry.node_id
            )

    async def check_placement(self, specs: Sequence[ActorSpec]) -> None:
        """Refuse, naming the actor and the resource, a plan no node of the cluster can hold."""
        nodes = await asyncio.to_thread(ray.nodes)
        driver_node = ray.get_runtime_context().get_node_id()
        for spec in specs:
            problem = placement_problem(spec, nodes, driver_node)
            if problem is None:
                continue
            if spec.on_driver_node:
                fix = "run `lfr up` on the node meant to hold the store, or change"
            elif spec.resources:
                fix = (
                    "start a node that has it (`ray start --address HEAD:PORT --resources "
                    f"'{json.dumps(spec.resources)}'`), or change"
                )
            else:
                fix = "add a node with enough, or lower"
            raise KernelError(
                f"actor {spec.name} cannot be placed: {problem}; {fix} the resources the "
                "topology gives it"
            )

    def respec(self, spec: ActorSpec) -> None:
        """Replace a running actor's spec: a restart from now on uses the new arguments."""
        for entry in self.actors.values():
            if entry.spec.actor_id == spec.actor_id and entry.spec.role == spec.role:
                entry.spec = spec
                return
        raise KeyError(f"no {spec.role} actor {spec.actor_id!r} is supervised")

    def handle(self, actor_id_or_name: str) -> Any:
        """The current handle of an actor (by Ray name or topology ID)."""
        if actor_id_or_name in self.actors:
            return self.actors[actor_id_or_name].handle
        for entry in self.actors.values():
            if entry.spec.actor_id == actor_id_or_name:
                return entry.handle
        raise KernelError(f"no actor {actor_id_or_name!r}")

    def of_role(self, role: str, *, include_stopped: bool = False) -> list[Any]:
        """Handles of every actor of a role that is up (stopped ones too if asked).

        Stopped ones are for reading figures. A replacement still pending is left out: a
        call to it would wait until a node can hold it, and it starts with its spec's
        arguments anyway.
        """
        return [
            e.handle
            for e in self.actors.values()
            if e.spec.role == role and e.pending is None and (include_stopped or not e.stopped)
        ]

    async def check_once(self) -> None:
        """One supervision round: health of every actor (in parallel), restarts where due.

        An actor whose node Ray has declared dead is restarted at once (its replacement
        waits, pending, for a node with the resources it needs); any other actor after
        ``unhealthy_after`` failed checks in a row.
        """
        now = time.monotonic()
        try:
            nodes: list[dict[str, Any]] | None = await asyncio.to_thread(ray.nodes)
        except Exception as exc:  # the GCS unreachable: health checks still tell
            log.warning("cluster_nodes_unavailable", reason=_reason(exc))
            nodes = None
        if nodes is not None:
            self.nodes = nodes
        entries = [e for e in self.actors.values() if not e.stopped]
        for entry in entries:
            if entry.pending is not None:
                await self._follow_pending(entry, nodes, now)
        checked = [e for e in entries if e.pending is None]
        answers = await asyncio.gather(
            *(asyncio.wait_for(e.handle.health.remote(), self.health_timeout_s) for e in checked),
            return_exceptions=True,
        )
        for entry, answer in zip(checked, answers, strict=True):
            if isinstance(answer, BaseException):
                entry.failures_in_a_row += 1
                lost = node_lost(entry.node_id or entry.lost_node, nodes)
                entry.last_error = lost or _reason(answer)
                if lost is not None:
                    entry.failures_in_a_row = max(entry.failures_in_a_row, self.unhealthy_after)
                if entry.failures_in_a_row >= self.unhealthy_after and now >= entry.next_restart_at:
                    if lost is not None and entry.failures_in_a_row == self.unhealthy_after:
                        log.warning("actor_node_lost", actor=entry.spec.name, reason=lost)
                    await self._restart(entry, lost)
                continue
            # An actor that answers is alive, even if it reports a problem (a camera whose
            # stream is down retries by itself); only one that cannot answer is restarted.
            entry.last_health = answer
            entry.failures_in_a_row = 0
            entry.last_error = None
            if now - entry.healthy_since > 60:
                entry.backoff_s = 0.0

    async def _follow_pending(
        self, entry: _Supervised, nodes: list[dict[str, Any]] | None, now: float
    ) -> None:
        """Say why a restarted actor is not up yet; start it afresh if it seems stuck."""
        problem = None if nodes is None else placement_problem(entry.spec, nodes, self._driver())
        waited = now - entry.pending_since
        lost = node_lost(entry.lost_node, nodes)
        if lost and "node lost" not in (entry.last_error or ""):
            log.warning("actor_node_lost", actor=entry.spec.name, reason=lost)
        cause = f"{lost}; its replacement is " if lost else ""
        if problem is not None:
            entry.last_error = f"{cause}pending: {problem}"
            return
        entry.last_error = f"{cause}starting for {waited:.0f} s: placed or being placed by Ray"
        if waited > self.start_timeout_s and entry.pending is not None:
            entry.pending.cancel()
            entry.pending = None
            entry.last_error = f"restart failed: not ready after {waited:.0f} s"
            log.warning("actor_restart_failed", actor=entry.spec.name, reason=entry.last_error)
            await self._restart(entry)

    def node_summary(self) -> dict[str, dict[str, Any]]:
        """Each node Ray knows of: alive or not, its address, its resources, its actors."""
        placed: dict[str, list[str]] = {}
        for name, entry in self.actors.items():
            if entry.node_id is not None and not entry.stopped:
                placed.setdefault(entry.node_id, []).append(name)
        driver = self._driver()
        return {
            str(node.get("NodeID")): {
                "alive": bool(node.get("Alive")),
                "address": node.get("NodeManagerAddress"),
                "driver": node.get("NodeID") == driver,
                "resources": {
                    name: amount
                    for name, amount in (node.get("Resources") or {}).items()
                    if not name.startswith(("node:", "memory", "object_store_memory"))
                },
                "actors": sorted(placed.get(str(node.get("NodeID")), [])),
            }
            for node in self.nodes
        }

    def _driver(self) -> str | None:
        if not ray.is_initialized():  # before start or after shutdown: no node to name
            return None
        with contextlib.suppress(Exception):
            return str(ray.get_runtime_context().get_node_id())
        return None

    async def _restart(self, entry: _Supervised, cause: str | None = None) -> None:
        """Kill the actor and create its replacement; it comes up in the background."""
        spec = entry.spec
        entry.backoff_s = min(self.max_backoff_s, max(self.initial_backoff_s, entry.backoff_s * 2))
        entry.next_restart_at = time.monotonic() + entry.backoff_s
        with contextlib.suppress(Exception):
            ray.kill(entry.handle, no_restart=True)
        try:
            entry.handle = self._create(spec)
        except Exception as exc:
            # Typically the name of an actor on a lost node, not yet released by Ray.
            entry.last_error = f"{cause + '; ' if cause else ''}restart failed: {_reason(exc)}"
            log.warning("actor_restart_failed", actor=spec.name, reason=entry.last_error)
            return
        entry.lost_node = entry.node_id or entry.lost_node
        entry.node_id = entry.pid = None
        entry.pending_since = time.monotonic()
        entry.pending = asyncio.ensure_future(self._bring_up(entry, entry.handle))

    async def _bring_up(self, entry: _Supervised, handle: Any) -> None:
        """Wait (as long as it takes) for a restarted actor to answer, then start it."""
        spec = entry.spec
        try:
            health = await handle.health.remote()
            if entry.stopped:  # drained or stopped while it was pending: not started
                return
            if spec.start_method:
                await getattr(handle, spec.start_method).remote()
            node, pid = await _placement(handle)
        except Exception as exc:
            lost = node_lost(entry.lost_node, self.nodes or None)
            entry.last_error = f"{lost + '; ' if lost else ''}restart failed: {_reason(exc)}"
            entry.failures_in_a_row = max(entry.failures_in_a_row, self.unhealthy_after)
            log.warning("actor_restart_failed", actor=spec.name, reason=entry.last_error)
            return
        finally:
            if entry.handle is handle:
                entry.pending = None
        if entry.handle is not handle or entry.stopped:
            return
        entry.last_health = health
        entry.node_id, entry.pid = node, pid
        entry.lost_node = None
        entry.restarts += 1
        entry.failures_in_a_row = 0
        entry.last_error = None
        entry.healthy_since = time.monotonic()
        log.warning(
            "actor_restarted",
            actor=spec.name,
            restarts=entry.restarts,
            node=node,
            after_s=round(entry.healthy_since - entry.pending_since, 1),
        )
        for hook in self.on_restart:
            try:
                await hook(spec)
            except Exception:
                log.exception("restart_hook_failed", actor=spec.name)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Check and restart until ``stop`` is set. Never raises."""
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:
                log.exception("supervision_round_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.health_interval_s)

    async def stats(self, role: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
        """``stats()`` of every actor (or one role), with restarts and last error.

        The actors are asked in parallel, so one that hangs costs the whole call
        ``timeout_s`` at most, not ``timeout_s`` per actor. One that does not answer shows
        ``unavailable`` with the reason; a replacement not up yet is not asked (asking it
        would wait) and shows why it is pending. ``supervisor_error`` is the supervisor's
        last failed health check or restart, and is cleared once the actor answers again.
        """
        entries = [
            (name, entry)
            for name, entry in self.actors.items()
            if role is None or entry.spec.role == role
        ]

        async def ask(entry: _Supervised) -> dict[str, Any]:
            if entry.pending is not None:
                return {"unavailable": entry.last_error or "starting"}
            try:
                figures: dict[str, Any] = await asyncio.wait_for(
                    entry.handle.stats.remote(), timeout_s
                )
            except Exception as exc:
                return {"unavailable": entry.last_error or _reason(exc)}
            return figures

        answers = await asyncio.gather(*(ask(entry) for _, entry in entries))
        return {
            name: {
                **figures,
                "role": entry.spec.role,
                "restarts": entry.restarts,
                "supervisor_error": entry.last_error,
                "node_id": entry.node_id,
                "pid": entry.pid,
            }
            for (name, entry), figures in zip(entries, answers, strict=True)
        }

    async def stop_role(self, role: str, method: str = "stop", timeout_s: float = 30.0) -> None:
        """Ask every actor of ``role`` to stop (draining), then stop supervising it."""
        entries = [e for e in self.actors.values() if e.spec.role == role and not e.stopped]
        for entry in entries:
            entry.stopped = True
        calls = [getattr(e.handle, method).remote() for e in entries]
        if calls:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout_s)

    def kill_all(self) -> None:
        """Kill every actor (after draining), pending replacements included."""
        for entry in self.actors.values():
            entry.stopped = True
            if entry.pending is not None:
                entry.pending.cancel()
                entry.pending = None
            with contextlib.suppress(Exception):
                ray.kill(entry.handle, no_restart=True)


def _needs(spec: ActorSpec) -> dict[str, float]:
    needs = {"CPU": spec.num_cpus, "GPU": spec.num_gpus, **spec.resources}
    return {name: amount for name, amount in needs.items() if amount > 0}


def placement_problem(
    spec: ActorSpec, nodes: Sequence[dict[str, Any]], driver_node: str | None
) -> str | None:
    """Why no live node of the cluster (``ray.nodes()``) could ever hold ``spec``, or None.

    Only the totals count: a node that has the resources but has them in use now will
    place the actor once they are free.
    """
    alive = [n for n in nodes if n.get("Alive")]
    where = "no node"
    if spec.on_driver_node:
        alive = [n for n in alive if n.get("NodeID") == driver_node]
        where = "the driver's node"
    needs = _needs(spec)

    def fits(node: dict[str, Any], name: str) -> bool:
        return float(node.get("Resources", {}).get(name, 0.0)) >= needs[name]

    if any(all(fits(n, name) for name in needs) for n in alive):
        return None
    if not alive:
        return f"{where} is alive" if where == "no node" else "the driver's node is not alive"
    missing = [name for name in needs if not any(fits(n, name) for n in alive)]
    lacks = "no node has" if where == "no node" else "the driver's node lacks"
    if missing:
        listed = ", ".join(f"{name} (needs {needs[name]:g})" for name in missing)
        return f"{lacks} resource {listed}"
    listed = ", ".join(f"{name} {amount:g}" for name, amount in needs.items())
    return f"{lacks} all of {listed} together"


def node_lost(node_id: str | None, nodes: Sequence[dict[str, Any]] | None) -> str | None:
    """``node lost: ...`` when Ray lists ``node_id`` as dead (or no longer lists it)."""
    if node_id is None or nodes is None:
        return None
    for node in nodes:
        if node.get("NodeID") == node_id:
            if node.get("Alive"):
                return None
            address = node.get("NodeManagerAddress") or "?"
            return f"node lost: node {node_id[:12]} ({address}) is dead"
    return f"node lost: node {node_id[:12]} has left the cluster"


def _actor_placement(_actor: Any) -> tuple[str, int]:
    return str(ray.get_runtime_context().get_node_id()), os.getpid()


async def _placement(handle: Any) -> tuple[str | None, int | None]:
    """The node and process an actor runs in (asked of the actor itself), or Nones."""
    try:
        node, pid = await asyncio.wait_for(handle.__ray_call__.remote(_actor_placement), 10)
    except Exception:
        return None, None
    return str(node), int(pid)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__
