"""The deployment's status and summary, read from the actors and the store.

:func:`status` is one gather from every actor (the API's status cache calls it once a
second; ``lfr status``, ``/readyz`` and ``/metrics`` read that cache); :func:`summary`
is what ``lfr up`` prints when it stops. A camera actor that is restarted counts from
zero again; :class:`lfr_actors.control.totals.CameraTotals` keeps each camera's totals
over its runs, so neither ever loses the counts of an earlier run (except those of its last
second before it died).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfr_actors.kernel.kernel import Kernel
from lfr_actors.percentiles import percentile
from lfr_actors.store.alerts import AlertStore
from lfr_actors.timefmt import iso_utc
from lfr_actors.topology.schema import Topology

if TYPE_CHECKING:
    from lfr_actors.control.live import Live


def run_state(live: Live) -> str:
    """running; closing (destroying the index, stopping cameras); closed."""
    if live.closed:
        return "closed"
    return "closing" if live.closing else "running"


def store_counts(alerts_db: Path) -> dict[str, Any]:
    """The alert store's counts, read over a connection of their own."""
    with AlertStore.open_readonly(alerts_db) as store:
        return store.counts()


async def camera_stats(kernel: Kernel, live: Live) -> dict[str, dict[str, Any]]:
    """Every camera's ``stats()``, counters totalled over its runs."""
    return live.camera_totals.observe_all(await kernel.stats("camera"))


def stale_section(topology: Topology, live: Live) -> dict[str, Any]:
    """The freshness limit and the entries left out of the index as stale (ISO 8601 UTC)."""
    return {
        "watchlist_max_age_h": topology.deployment.watchlist_max_age_h,
        "stale_entries": len(live.stale),
        "stale": [
            {
                "entry_id": s.entry_id,
                "approved_at": iso_utc(s.approved_at),
                "stale_since": iso_utc(s.stale_since),
            }
            for s in live.stale
        ],
    }


async def status(
    topology: Topology,
    kernel: Kernel,
    live: Live,
    *,
    threshold: float,
    alerts_db: Path,
    store_counts_too: bool = True,
) -> dict[str, Any]:
    """Cameras, embedders, index, alerts and restarts: one gather from every actor.

    ``threshold`` is the deployment's threshold in force. With ``store_counts_too`` the
    alert store's counts are read as well (the API reads them over its own connection).
    """
    t = topology
    figures = await kernel.stats()
    by_role: dict[str, dict[str, Any]] = {}
    for name, stats in figures.items():
        shown = live.camera_totals.observe(name, stats) if stats["role"] == "camera" else stats
        by_role.setdefault(stats["role"], {})[name.split("/", 1)[1]] = shown
    cameras = by_role.get("camera", {})
    if live.cameras_wanted and not cameras and not live.closing:
        # Models loading, Ray starting: the topology's cameras are not running yet, and
        # the status (and so /readyz) says so rather than showing no camera at all.
        cameras = {c.id: {"state": "starting", "role": "camera"} for c in t.cameras}
    alerts: dict[str, Any] = dict(by_role.get("alerts", {}))
    if store_counts_too:
        alerts = {"store": await asyncio.to_thread(store_counts, alerts_db), **alerts}
    return {
        "deployment": {
            "id": t.deployment.id,
            "location": t.deployment.location,
            "start": t.deployment.start.isoformat(),
            "end": t.deployment.end.isoformat(),
            "threshold": threshold,
            "state": run_state(live),
            "watchlist_entries": len(live.indexed),
            "damaged_entries": len(live.damaged),
            "damaged": [
                {"entry_id": entry_id, "reason": reason}
                for entry_id, reason in sorted(live.damaged.items())
            ],
            **stale_section(topology, live),
        },
        "api": live.api_url,
        "uptime_s": round(time.time() - live.started_at, 1),
        "cameras": cameras,
        "embedders": by_role.get("embedder", {}),
        "index": {**by_role.get("index_router", {}), **by_role.get("index_shard", {})},
        "alerts": alerts,
        "webhooks": live.webhooks() if live.webhooks is not None else [],
        "alert_outputs": live.alert_outputs() if live.alert_outputs is not None else [],
        "nodes": kernel.node_summary(),
    }


async def summary(kernel: Kernel, live: Live, *, namespace: str, alerts_db: Path) -> dict[str, Any]:
    """Frames, faces, tracks (people), alerts, drops and capture-to-result latency percentiles."""
    cameras = await camera_stats(kernel, live)
    embedders = await kernel.stats("embedder")
    alerts = (await kernel.stats("alerts")).values()
    latencies: list[float] = []
    for handle in kernel.of_role("camera", include_stopped=True):
        with contextlib.suppress(Exception):
            latencies += await handle.latencies.remote()
    counts = store_counts(alerts_db)

    def total(key: str) -> int:
        return int(sum(int(c.get(key) or 0) for c in cameras.values()))

    ms = sorted(x * 1000 for x in latencies)

    def pct(q: float) -> float | None:
        value = percentile(ms, q)
        return None if value is None else round(value, 1)

    restarts = {n.split("/", 1)[1]: e.restarts for n, e in kernel.actors.items() if e.restarts}
    return {
        "deployment": namespace,
        "cameras": len(cameras),
        "frames": total("frames_processed"),
        "frames_sampled": total("frames_sampled"),
        "frames_dropped": total("frames_dropped"),
        "frames_failed": total("frames_failed"),
        "corrupt_frames": total("corrupt_frames"),
        "frames_retried": total("frames_retried"),
        "faces": total("faces"),
        "tracks": total("tracks"),
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
        "duration_s": round(time.time() - live.started_at, 1),
    }
