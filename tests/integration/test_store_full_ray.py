"""The alert store's disk fills up under a running deployment, then space comes back.

Real Ray, real models, the Hamilton clip looped in real time, and the data folder on a
real 64 MiB tmpfs (mounted by the test; it skips, saying why, where mounting is not
allowed). While the disk is full the alert actor refuses with the cause, the embedder
holds the sightings, the camera says "alert store unavailable: disk full", and the log has
one error line, not a traceback per batch. When space returns everything resumes by
itself: the held sightings are stored, none lost, and the alert is the same one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from lfr_actors.control import Deployment
from lfr_actors.models.cache import ModelCache
from lfr_actors.topology.loader import load_topology, load_watchlist
from tests.conftest import lfr_test_home
from tests.deployments import write_deployment
from tests.disks import fill, small_tmpfs
from tests.integration.test_restarts_ray import PERSON, all_alerts_by_entry, seen

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

FULL = "alert store unavailable: disk full"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted afterwards."""
    with small_tmpfs(tmp_path / "disk", "64m") as mount:
        yield mount


def test_a_full_disk_holds_sightings_and_everything_resumes_when_space_returns(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path, small_disk: Path
) -> None:
    topology_path = write_deployment(
        tmp_path, shared_data, [PERSON, "obama"], at_end="loop", pace="realtime"
    )
    spec = yaml.safe_load(topology_path.read_text())
    spec["storage"]["data_dir"] = str(small_disk / "data")
    topology_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    topology = load_topology(topology_path)
    watchlist = load_watchlist(Path(topology.watchlist.file))
    deployment = Deployment(topology, watchlist, home=lfr_test_home(), health_interval_s=0.5)
    data = small_disk / "data"
    filler = small_disk / "filler"

    async def until(check: Any, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status = await deployment.status()
            if check(status):
                return status
            assert time.monotonic() < deadline, f"no {what} within {timeout_s} s: {status}"
            await asyncio.sleep(0.5)

    def parts(status: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return (
            status["cameras"]["cam_stage"],
            status["embedders"]["embedder"],
            status["alerts"]["alerts"],
        )

    async def scenario() -> dict[str, Any]:
        runner = asyncio.create_task(deployment.run())
        deadline = time.monotonic() + 240
        while seen(data).sightings < 3:
            await asyncio.sleep(0.5)
            assert not runner.done(), runner.result()
            assert time.monotonic() < deadline, "no alert within 240 s"
        before = seen(data)
        await asyncio.to_thread(fill, filler)
        filled_at = time.monotonic()

        def outage(status: dict[str, Any]) -> bool:
            camera, embedder, alerts = parts(status)
            return (
                camera["last_error"] == FULL
                and embedder["sightings_unstored"] >= 3
                and alerts["store_error"] == "disk full"
            )

        during = await until(outage, 120, "store outage seen")
        detected_s = time.monotonic() - filled_at
        await asyncio.sleep(3)  # more sightings wait in the embedder
        held = parts(await deployment.status())[1]["sightings_unstored"]
        stored_during = seen(data).sightings
        filler.unlink()
        freed_at = time.monotonic()

        def resumed(status: dict[str, Any]) -> bool:
            camera, embedder, alerts = parts(status)
            return (
                embedder["sightings_unstored"] == 0
                and alerts["store_error"] is None
                and embedder["store_error"] is None
                and camera["last_error"] is None
            )

        after = await until(resumed, 120, "recovery")
        recovery_s = time.monotonic() - freed_at
        deployment.request_stop()
        summary = await runner
        return {
            "before": before,
            "during": during,
            "held": held,
            "stored_during": stored_during,
            "after": after,
            "summary": summary,
            "detected_s": detected_s,
            "recovery_s": recovery_s,
        }

    with capture_logs() as driver_logs:
        result = asyncio.run(scenario())
    _, embedder, alerts = parts(result["after"])
    final = seen(data)
    print(
        f"\n[disk full] detected in {result['detected_s']:.1f} s; sightings held in the "
        f"embedder {result['held']}, resent {embedder['sightings_resent']}, lost "
        f"{result['summary']['sightings_lost']}; store refusals {alerts['store_failures']}; "
        f"recovery (space back to all stored) {result['recovery_s']:.1f} s; stored "
        f"{result['before'].sightings} before, {final.sightings} after; alerts "
        f"{all_alerts_by_entry(data)}"
    )
    camera, _, during_alerts = parts(result["during"])
    assert camera["last_error"] == FULL  # the real cause, not "embedder unavailable"
    assert during_alerts["store_failures"] >= 1
    assert embedder["sightings_resent"] >= result["held"] >= 3
    assert result["summary"]["sightings_lost"] == 0
    assert final.sightings >= result["stored_during"] + result["held"]
    assert final.alert_ids == result["before"].alert_ids and len(final.alert_ids) == 1
    assert all(n == 1 for n in all_alerts_by_entry(data).values())
    assert result["recovery_s"] < 30
    # The actors' logs reach the driver as text on stderr; the driver's own are captured:
    # no traceback from the outage there.
    with_traceback = [e["event"] for e in driver_logs if "exc_info" in e or "exception" in e]
    assert not with_traceback
