"""People counted beside faces: the camera's tracks totalled over runs, stored, reported
and shown by ``lfr status`` and the summary ``lfr up`` prints."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pytest_aiohttp import AiohttpClient

from lfr_actors.api.app import create_app
from lfr_actors.api.deployments import render_report_page
from lfr_actors.api.schemas import Report
from lfr_actors.cli.status import status_lines
from lfr_actors.control.live import Live
from lfr_actors.control.status import summary
from lfr_actors.control.totals import CameraTotals
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import Role
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.testing.doubles import LocalHandle
from tests.api_helpers import bearer, store_with_one_alert
from tests.unit.test_metrics_api import realistic_status


def test_tracks_are_totalled_over_a_cameras_runs_like_faces() -> None:
    totals = CameraTotals()
    totals.observe("camera/cam", {"epoch": "r1", "faces": 30, "tracks": 4})
    # The camera restarted: its new run counts from zero, the totals carry on.
    after = totals.observe("camera/cam", {"epoch": "r2", "faces": 5, "tracks": 1})
    assert (after["faces"], after["tracks"], after["runs"]) == (35, 5, 2)
    down = totals.observe("camera/cam", {"unavailable": "RayActorError", "role": "camera"})
    assert down["tracks"] == 5


def _status(embedder: dict[str, Any]) -> dict[str, Any]:
    status = realistic_status()
    camera = {"state": "running", "fps": 5.0, "frames_processed": 120, "frames_dropped": 0}
    status["cameras"] = {"cam_north": {**camera, "faces": 41, "tracks": 6, "restarts": 0}}
    status["embedders"] = {"embedder": embedder}
    return status


def test_lfr_status_shows_each_cameras_tracks_beside_its_faces() -> None:
    embedder = {"frames": 120, "batches": 30, "restarts": 0, "tracks_live": 2, "tracks_ended": 4}
    lines = status_lines(_status(embedder))
    header = next(line for line in lines if line.lstrip().startswith("camera"))
    north = next(line for line in lines if "cam_north" in line)
    assert header.split()[:8] == [
        "camera",
        "state",
        "fps",
        "frames",
        "drops",
        "faces",
        "tracks",
        "restarts",
    ]
    assert north.split()[:8] == ["cam_north", "running", "5.0", "120", "0", "41", "6", "0"]
    emb = next(line for line in lines if line.lstrip().startswith("embedder embedder"))
    assert "tracks live 2 ended 4" in emb


def test_lfr_status_shows_no_tracks_for_an_embedder_that_reports_none() -> None:
    lines = status_lines(_status({"frames": 1, "batches": 1, "restarts": 0}))
    emb = next(line for line in lines if line.lstrip().startswith("embedder embedder"))
    assert "tracks live 0 ended 0" in emb


async def test_the_api_status_and_metrics_carry_the_tracks(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    db = store_with_one_alert(tmp_path / "alerts.db")
    embedder = {"frames": 120, "tracks_started": 6, "tracks_ended": 4, "tracks_live": 2}

    async def source() -> dict[str, Any]:
        return _status(embedder)

    client = await aiohttp_client(create_app(db, status=source), headers=bearer(db, Role.VIEWER))
    status = await (await client.get("/v1/status")).json()
    assert (status["cameras"]["cam_north"]["faces"], status["cameras"]["cam_north"]["tracks"]) == (
        41,
        6,
    )
    assert status["embedders"]["embedder"]["tracks_live"] == 2
    scrape = (await (await client.get("/metrics")).text()).splitlines()
    assert 'lfr_camera_tracks_total{camera="cam_north"} 6.0' in scrape
    assert 'lfr_embedder_tracks_live{embedder="embedder"} 2.0' in scrape


class _Kernel:
    """The kernel as :func:`summary` reads it: two cameras, one embedder, one alert actor."""

    def __init__(self) -> None:
        self.actors = {"camera/a": SimpleNamespace(restarts=0)}

    async def stats(self, role: str | None = None) -> dict[str, Any]:
        figures = {
            "camera": {
                "camera/a": {"epoch": "a1", "frames_processed": 40, "faces": 12, "tracks": 3},
                "camera/b": {"epoch": "b1", "frames_processed": 10, "faces": 2, "tracks": 1},
            },
            "embedder": {"embedder/e": {"tracks_live": 1}},
            "alerts": {"alerts/alerts": {"sightings_received": 0}},
        }
        return figures[str(role)]

    def of_role(self, role: str, include_stopped: bool = False) -> list[LocalHandle]:
        return [LocalHandle(SimpleNamespace(latencies=lambda: [0.05, 0.07]))]


async def test_the_summary_counts_people_beside_faces(tmp_path: Path) -> None:
    db = tmp_path / "alerts.sqlite3"
    AlertStore(db).close()
    figures = await summary(_Kernel(), Live(), namespace="dep1", alerts_db=db)  # type: ignore[arg-type]
    assert (figures["frames"], figures["faces"], figures["tracks"]) == (50, 14, 4)


def test_the_report_and_its_page_give_the_people_seen(tmp_path: Path) -> None:
    with Database(tmp_path / "alerts.sqlite3") as db:
        deployments = Deployments(db)
        deployments.create(make_deployment("dep1", 1e9, 1e9 + 3600), actor=Actor("Insp Adams"))
        deployments.add_counters("dep1", frames=900, faces=1234, tracks=57)
        report = deployments.report("dep1")
        listed = deployments.get("dep1")
    assert (report["faces_seen"], report["tracks_seen"]) == (1234, 57)
    assert listed.tracks_seen == 57
    page = render_report_page(Report.model_validate(report).model_dump(mode="json"))
    assert "<th>Faces seen</th><td>1,234</td>" in page
    assert "<th>People seen (face tracks)</th><td>57</td>" in page
