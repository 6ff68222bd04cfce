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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from lfr_actors.errors import LfrError
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
        options["runtime_env"] = {"env_vars": dict(env_vars)}
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(
                include_dashboard=False,
                _system_config={"automatic_object_spilling_enabled": False},
                **options,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise KernelError(f"cannot start or reach Ray at {where}: {exc}") from exc


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
    ) -> None:
        self.namespace = namespace
        self.registry = registry
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.unhealthy_after = unhealthy_after
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.actors: dict[str, _Supervised] = {}
        self.on_restart: list[Callable[[ActorSpec], Awaitable[None]]] = []

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
        """Create ``specs`` (in parallel) and wait until each answers its health check."""
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
            log.info("actor_started", actor=entry.spec.name, role=entry.spec.role)

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
        """Handles of every actor of a role (stopped ones too if asked: to read figures)."""
        return [
            e.handle
            for e in self.actors.values()
            if e.spec.role == role and (include_stopped or not e.stopped)
        ]

    async def check_once(self) -> None:
        """One supervision round: health of every actor, restarts where due."""
        now = time.monotonic()
        for entry in list(self.actors.values()):
            if entry.stopped:
                continue
            try:
                entry.last_health = await asyncio.wait_for(
                    entry.handle.health.remote(), self.health_timeout_s
                )
            except Exception as exc:
                entry.failures_in_a_row += 1
                entry.last_error = _reason(exc)
                if entry.failures_in_a_row >= self.unhealthy_after and now >= entry.next_restart_at:
                    await self._restart(entry)
                continue
            # An actor that answers is alive, even if it reports a problem (a camera whose
            # stream is down retries by itself); only one that cannot answer is restarted.
            entry.failures_in_a_row = 0
            entry.last_error = None
            if now - entry.healthy_since > 60:
                entry.backoff_s = 0.0

    async def _restart(self, entry: _Supervised) -> None:
        spec = entry.spec
        entry.backoff_s = min(self.max_backoff_s, max(self.initial_backoff_s, entry.backoff_s * 2))
        entry.next_restart_at = time.monotonic() + entry.backoff_s
        with contextlib.suppress(Exception):
            ray.kill(entry.handle, no_restart=True)
        try:
            entry.handle = self._create(spec)
            entry.last_health = await asyncio.wait_for(entry.handle.health.remote(), 300)
            if spec.start_method:
                await getattr(entry.handle, spec.start_method).remote()
        except Exception as exc:
            entry.last_error = f"restart failed: {_reason(exc)}"
            log.warning("actor_restart_failed", actor=spec.name, reason=entry.last_error)
            return
        entry.restarts += 1
        entry.failures_in_a_row = 0
        entry.healthy_since = time.monotonic()
        # The new actor answered its health check: what made the old one fail is history
        # (the restart count and the log keep it), not a current error.
        entry.last_error = None
        log.warning("actor_restarted", actor=spec.name, restarts=entry.restarts)
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
        ``unavailable`` with the reason. ``supervisor_error`` is the supervisor's last
        failed health check or restart, and is cleared once the actor answers again.
        """
        entries = [
            (name, entry)
            for name, entry in self.actors.items()
            if role is None or entry.spec.role == role
        ]

        async def ask(entry: _Supervised) -> dict[str, Any]:
            try:
                figures: dict[str, Any] = await asyncio.wait_for(
                    entry.handle.stats.remote(), timeout_s
                )
            except Exception as exc:
                return {"unavailable": _reason(exc)}
            return figures

        answers = await asyncio.gather(*(ask(entry) for _, entry in entries))
        return {
            name: {
                **figures,
                "role": entry.spec.role,
                "restarts": entry.restarts,
                "supervisor_error": entry.last_error,
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
        """Kill every actor (after draining)."""
        for entry in self.actors.values():
            entry.stopped = True
            with contextlib.suppress(Exception):
                ray.kill(entry.handle, no_restart=True)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__
