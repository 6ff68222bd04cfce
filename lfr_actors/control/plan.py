"""The plan: a topology's actors, by start-up stage, as the kernel starts them.

Pure: the plan reads the topology, the thresholds in force, the data folder's paths and
how many GPUs the cluster has, and answers :class:`lfr_actors.kernel.kernel.ActorSpec`
values. It starts nothing, reads no store and no file; the lifecycle
(:mod:`lfr_actors.control.deployment`) starts what it answers, and the thresholds
(:mod:`lfr_actors.control.thresholds`) plan again when a threshold changes, so that a
restarted actor starts with the one in force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lfr_actors.actors.settings import (
    alert_settings,
    camera_settings,
    embedder_settings,
    router_settings,
    shard_settings,
)
from lfr_actors.control.paths import DeploymentPaths
from lfr_actors.kernel.kernel import ActorSpec
from lfr_actors.models.spec import EmbedderSpec
from lfr_actors.topology.schema import Topology

STAGES = ("index", "alerts", "embedders", "cameras")
"""The start-up stages, in the order they start."""


@dataclass(frozen=True)
class Thresholds:
    """The thresholds the actors are given: the deployment's and the entries' own."""

    deployment: float
    entries: dict[str, float] = field(default_factory=dict)

    @property
    def search_limit(self) -> float:
        """The embedder's search limit: the loosest threshold of any entry."""
        return max([self.deployment, *self.entries.values()])


def shard_ids(topology: Topology) -> list[str]:
    """The index shards' actor ids."""
    return [f"{topology.index.id}-{i}" for i in range(topology.index.shards)]


def embedder_ids(topology: Topology) -> list[str]:
    """The embedder replicas' actor ids (the bare id when there is one replica)."""
    e = topology.embedder
    return [e.id if e.replicas == 1 else f"{e.id}-{i}" for i in range(e.replicas)]


def finite_cameras(topology: Topology) -> list[str]:
    """Cameras whose source ends: files and synthetic scenes that stop at their end."""
    return [
        c.id
        for c in topology.cameras
        if c.source.type in ("file", "synthetic") and c.at_end == "stop"
    ]


def gpu_shortfall(topology: Topology, available: float) -> str | None:
    """Why a cluster with ``available`` GPUs cannot run the topology's embedders, or None.

    Only ``device: gpu`` demands GPUs; ``auto`` runs on the CPU without them.
    """
    e = topology.embedder
    wanted = e.gpus_per_replica * e.replicas
    if e.device != "gpu" or available >= wanted:
        return None
    return (
        f"embedder.device is gpu and needs {wanted:g} GPU(s) "
        f"({e.replicas} replica(s) x {e.gpus_per_replica:g}), but the Ray cluster has "
        f"{available:g}; add GPU nodes, lower embedder.replicas or gpus_per_replica, or "
        "set embedder.device to cpu or auto"
    )


def plan_actors(
    topology: Topology,
    spec: EmbedderSpec,
    thresholds: Thresholds,
    *,
    paths: DeploymentPaths,
    home: Path,
    cluster_gpus: float = 0.0,
) -> dict[str, list[ActorSpec]]:
    """The actors of ``topology``, by start-up stage (:data:`STAGES`).

    An embedder with ``device: auto`` is given GPUs when the cluster has enough for
    every replica (``cluster_gpus``), and runs on the CPU otherwise.
    """
    t = topology
    ns = t.deployment.id
    shards = [
        ActorSpec(
            sid,
            "index_shard",
            (shard_settings(t, spec, sid, str(paths.index_dir / sid)),),
            on_driver_node=True,
            resources=dict(t.index.resources),
        )
        for sid in shard_ids(t)
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
        (alert_settings(t, str(paths.alerts_db), thresholds.deployment, thresholds.entries),),
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
                    spec,
                    eid,
                    namespace=ns,
                    router=router.name,
                    alerts=alerts.name,
                    threshold=thresholds.deployment,
                    entry_thresholds=thresholds.entries,
                    models_home=str(home),
                ),
            ),
            num_cpus=t.embedder.cpus_per_replica,
            num_gpus=t.embedder.gpus_per_replica if gpu else 0.0,
            resources=dict(t.embedder.resources),
        )
        for eid in embedder_ids(t)
    ]
    return {
        "index": [*shards, router],
        "alerts": [alerts],
        "embedders": embedders,
        "cameras": _cameras(t, [e.name for e in embedders]),
    }


def _cameras(t: Topology, embedder_names: list[str]) -> list[ActorSpec]:
    cameras = []
    for i, cam in enumerate(t.cameras):
        # Each camera prefers one replica (so its frames batch together) and fails over.
        order = (
            embedder_names[i % len(embedder_names) :] + embedder_names[: i % len(embedder_names)]
        )
        cameras.append(
            ActorSpec(
                cam.id,
                "camera",
                (camera_settings(t, cam, order, t.deployment.id),),
                start_method="start",
                resources=dict(cam.resources),
            )
        )
    return cameras
