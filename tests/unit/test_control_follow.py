"""The reconcile loop: each step runs on its own, and one failing never stops the others.

The loop's mechanism on hand-made steps, then the controller's real steps over a real
store, with an index router (a test double) that fails every call: the thresholds still
reach the alert actor, the frame counts are still recorded, and the window sweep still
closes an ended deployment.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from lfr_actors.control import follow as follow_module
from lfr_actors.control.follow import Reconciler, Step, StepDone, reconcile
from lfr_actors.control.live import Live
from lfr_actors.control.paths import DeploymentPaths
from lfr_actors.control.registration import register_deployment
from lfr_actors.logs import get_logger
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.testing.doubles import LocalHandle
from lfr_actors.topology.loader import load_topology
from tests.deployments import write_deployment


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Any:
    # A fresh logger: capture_logs sees only loggers bound while it is active.
    monkeypatch.setattr(follow_module, "log", get_logger("lfr.deployment"))
    with capture_logs() as captured:
        yield captured


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_failing_step_is_logged_on_its_own_and_the_others_run(logs: Any) -> None:
    runs = {"fine": 0, "broken": 0, "store": 0, "once": 0}

    def step(name: str, fault: BaseException | None) -> Step:
        async def run() -> None:
            runs[name] += 1
            if fault is not None:
                raise fault

        return Step(name, run, 0.01)

    steps = [
        step("broken", RuntimeError("the router is gone")),
        step("store", sqlite3.OperationalError("database or disk is full")),
        step("once", StepDone()),
        step("fine", None),
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(reconcile(steps, stop, tick_s=0.01))
    await _until(lambda: runs["fine"] >= 10, "ten rounds")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert runs["broken"] >= 9 and runs["store"] >= 9  # tried again every round
    assert runs["once"] == 1  # StepDone retires a step
    failures = [e for e in logs if e["event"] == "store_follow_failed"]
    broken = [e for e in failures if e["step"] == "broken"]
    assert len(broken) >= 9 and all(e["exc_info"] for e in broken)  # with its traceback
    # A store fault (a full disk) is one line a minute, not one a round.
    assert [(e["step"], e["reason"]) for e in failures if e["step"] == "store"] == [
        ("store", "disk full")
    ]
    assert {e["step"] for e in failures} == {"broken", "store"}


async def test_a_loop_whose_steps_all_retired_ends_by_itself() -> None:
    async def done() -> None:
        raise StepDone

    await asyncio.wait_for(reconcile([Step("done", done, 0.01)], asyncio.Event()), 5)


class BrokenRouter:
    """An index router whose every call fails."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any) -> None:
            raise RuntimeError(f"router {name} failed")

        return fail


class AlertActorDouble:
    def __init__(self) -> None:
        self.thresholds: list[tuple[float, dict[str, float]]] = []

    def set_threshold(self, threshold: float, entries: dict[str, float]) -> None:
        self.thresholds.append((threshold, entries))


class KernelDouble:
    """The kernel as the reconcile loop uses it: a broken router, one counting camera."""

    def __init__(self, index_id: str) -> None:
        self.index_id = index_id
        self.alerts = AlertActorDouble()

    def handle(self, name: str) -> LocalHandle:
        return LocalHandle(BrokenRouter() if name == self.index_id else self.alerts)

    def respec(self, spec: Any) -> None:
        pass

    def of_role(self, role: str) -> list[Any]:
        return []

    async def stats(self, role: str | None = None) -> dict[str, Any]:
        camera = {"role": "camera", "epoch": "r1", "frames_processed": 7, "faces": 2, "tracks": 1}
        return {"camera/cam_stage": camera}


async def test_the_watchlist_failing_stops_neither_thresholds_nor_counts_nor_the_sweep(
    tmp_path: Path, shared_data: Path, logs: Any
) -> None:
    topology = load_topology(write_deployment(tmp_path, shared_data, ["obama"]))
    paths = DeploymentPaths(Path(topology.storage.data_dir))
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(paths.alerts_db)
    deployments = Deployments(db)
    record = register_deployment(deployments, topology)
    now = time.time()
    ended = make_deployment("ended", now - 60, now - 1, 0.5)
    deployments.create(ended, actor=Actor("test"))
    live = Live(db=db, actors_started=True, threshold=record.threshold)
    kernel = KernelDouble(topology.index.id)
    reconciler = Reconciler(
        topology,
        live,
        kernel,  # type: ignore[arg-type]
        paths,
        lambda: {"alerts": [], "embedders": []},
        interval_s=0.02,
        sweep_interval_s=0.05,
    )
    deployments.change_threshold(
        topology.deployment.id, 0.5, actor=Actor("Supt Cole"), reason="fewer false alerts"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    try:
        await _until(lambda: bool(kernel.alerts.thresholds), "the threshold to apply")
        await _until(lambda: deployments.get("ended").closed_at is not None, "the sweep")
        await _until(lambda: deployments.get(record.id).frames == 7, "the frame counts")
        counted = deployments.get(record.id)
        assert (counted.faces_seen, counted.tracks_seen) == (2, 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        db.close()
    assert kernel.alerts.thresholds[-1] == (0.5, {})
    assert live.revision == -1  # the watchlist never synced: the router failed every time
    failures = [e for e in logs if e["event"] == "store_follow_failed"]
    assert failures and {e["step"] for e in failures} == {"watchlist"}
    closed = [e for e in logs if e["event"] == "deployment_closed"]
    assert [(e["deployment"], e["reason"]) for e in closed] == [("ended", "window ended")]
