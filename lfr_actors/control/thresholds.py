"""The thresholds in force, and how a threshold changed in the store reaches the actors.

Before the deployment is registered the topology file's thresholds are in force (the
deployment's ``alerts.threshold`` and each watchlist entry's own); once it is, the
store's are: the deployment's threshold may have been changed through the API (audited),
and entries enrolled with their own threshold may have been approved since. The alert
actor fuses at those thresholds; the embedders search up to the loosest of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from lfr_actors.control.live import Live
from lfr_actors.control.plan import Thresholds
from lfr_actors.kernel.kernel import ActorSpec, Kernel
from lfr_actors.logs import get_logger
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import EntryState
from lfr_actors.topology.schema import Topology, Watchlist

log = get_logger("lfr.deployment")

Planner = Callable[[], dict[str, list[ActorSpec]]]
"""The deployment's plan with the thresholds in force now (:meth:`Deployment.plan`)."""


def entry_thresholds(
    topology: Topology, watchlist: Watchlist | None, db: Database | None
) -> dict[str, float]:
    """Entries' own (stricter) thresholds: the store's when running, else the file's."""
    if db is not None:
        entries = Deployments(db).entries(topology.deployment.id, state=EntryState.ACTIVE)
        return {e.id: e.threshold for e in entries if e.threshold is not None}
    if watchlist is None:
        return {}
    return {e.id: e.threshold for e in watchlist.entries if e.threshold is not None}


def in_force(topology: Topology, watchlist: Watchlist | None, live: Live) -> Thresholds:
    """The thresholds in force: the store's once registered, else the file's.

    The entries' are what the actors were given, read from the store at start and on
    every change (never per call: a watchlist may hold many entries).
    """
    deployment = topology.alerts.threshold if live.threshold is None else live.threshold
    if live.db is not None:
        return Thresholds(deployment, live.entry_thresholds)
    return Thresholds(deployment, entry_thresholds(topology, watchlist, None))


async def apply_threshold(
    threshold: float,
    *,
    topology: Topology,
    live: Live,
    kernel: Kernel,
    plan: Planner,
) -> None:
    """Give the alert actor and the embedders thresholds changed in the store.

    The deployment's threshold (changed through the API) and the entries' own (an
    entry enrolled with one, approved while running): both apply at once. Nothing is
    sent when neither changed.
    """
    entries = await asyncio.to_thread(entry_thresholds, topology, None, live.db)
    if (threshold, entries) == (live.threshold, live.entry_thresholds):
        return
    previous, live.threshold = live.threshold, threshold
    live.entry_thresholds = entries
    stages = plan()
    for spec in [*stages["alerts"], *stages["embedders"]]:
        kernel.respec(spec)  # so that a restarted actor starts with it too
    await kernel.handle(topology.alerts.id).set_threshold.remote(threshold, entries)
    search_limit = Thresholds(threshold, entries).search_limit
    await asyncio.gather(
        *(h.set_threshold.remote(threshold, entries) for h in kernel.of_role("embedder"))
    )
    log.warning(
        "threshold_applied",
        deployment=topology.deployment.id,
        previous=previous,
        threshold=threshold,
        search_limit=search_limit,
    )
