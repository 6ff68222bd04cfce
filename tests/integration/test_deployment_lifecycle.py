"""A running deployment follows its store: entries enrolled and approved through the API are
searched, deletions stop being searched, and closing stops the cameras and destroys the index.

Real parts throughout: Ray, the ONNX models, usearch shards, the SQLite store and HTTP on
loopback. The camera loops the Hamilton clip, in which Lin-Manuel Miranda appears.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from lfr_actors.control import Deployment, DeploymentError
from lfr_actors.control.registration import register_deployment
from lfr_actors.store.audit import SYSTEM
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.topology.loader import load_topology
from tests.conftest import lfr_test_home

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

MIRANDA = "lin_manuel_miranda/lin_manuel_miranda1.png"
LACAMOIRE = "alex_lacamoire/alex_lacamoire1.jpg"


def write_topology(folder: Path, shared_data: Path, *, start: float, end: float) -> Path:
    """A deployment with no watchlist file: its entries come through the API."""
    folder.mkdir(parents=True, exist_ok=True)
    topology = {
        "version": 1,
        "deployment": {
            "id": "lifecycle",
            "authorised_by": "Supt Test",
            "purpose": "integration test",
            "location": "ci",
            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
            "impact_assessment_ref": "DPIA-TEST",
        },
        "cameras": [
            {
                "id": "cam_loop",
                "fps": 5,
                "at_end": "loop",
                "pace": "realtime",
                "source": {
                    "type": "file",
                    "path": str(shared_data / "video" / "short_hamilton_clip.mp4"),
                },
            }
        ],
        "embedder": {"max_batch": 4, "detector": {"min_face_px": 20}},
        "index": {"shards": 2},
        "alerts": {"threshold": 0.6, "fusion_window_s": 60, "min_sightings": 1},
        "api": {"host": "127.0.0.1", "port": 0},
        "storage": {"data_dir": "data"},
        "logging": {"level": "WARNING", "format": "json"},
    }
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    return path


def tokens(db: Path) -> dict[str, str]:
    with Database(db) as store:
        tokens = TokenStore(store)
        return {
            name: tokens.create(name, role, by=SYSTEM).secret
            for name, role in [
                ("PC Enrol", Role.WATCHLIST_MANAGER),
                ("Insp Approve", Role.AUTHORISER),
                ("Viewer", Role.VIEWER),
            ]
        }


def entry_form(
    fields: dict[str, str], image: bytes, *, filename: str, content_type: str
) -> aiohttp.FormData:
    """An enrolment upload: ``fields`` (source and image date from the shared test data
    unless given) and one photo."""
    form = aiohttp.FormData()
    for name, value in {
        **fields,
        "source": fields.get("source", "shared test data"),
        "image_date": fields.get("image_date", "2020-01-01"),
    }.items():
        form.add_field(name, value)
    form.add_field("image", image, filename=filename, content_type=content_type)
    return form


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 90.0
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last answer: {last!r}")


def test_the_running_deployment_follows_enrolment_approval_deletion_and_closing(
    shared_data: Path, tmp_path: Path
) -> None:
    now = time.time()
    topology = load_topology(write_topology(tmp_path, shared_data, start=now - 60, end=now + 3600))
    deployment = Deployment(topology, None, home=lfr_test_home(), health_interval_s=0.5)
    photo = (shared_data / "faces" / "people" / MIRANDA).read_bytes()

    async def scenario() -> dict[str, Any]:
        runner = asyncio.create_task(deployment.run())

        async def started() -> bool:
            if runner.done():
                runner.result()  # raises what stopped it
            return bool(deployment.live.tasks)

        await eventually(started, "the deployment to start", timeout_s=180)
        secrets = tokens(deployment.paths.alerts_db)
        base = f"{deployment.live.api_url}/v1/deployments/lifecycle"

        def auth(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {secrets[name]}"}

        async with aiohttp.ClientSession() as http:

            async def get(url: str, who: str = "Viewer") -> Any:
                async with http.get(url, headers=auth(who)) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            async def indexed() -> int:
                status = await get(f"{deployment.live.api_url}/v1/status")
                return int(status["deployment"]["watchlist_entries"])

            record = await get(base)
            assert record["state"] == "active" and record["origin"] == "file"

            form = entry_form(
                {
                    "id": "W-1",
                    "display_name": "Lin-Manuel Miranda",
                    "category": "wanted",
                    "legal_basis": "test warrant",
                },
                photo,
                filename="miranda.png",
                content_type="image/png",
            )
            async with http.post(f"{base}/entries", data=form, headers=auth("PC Enrol")) as resp:
                assert resp.status == 201, await resp.text()
                assert (await resp.json())["state"] == "pending_approval"

            # Pending: not searched, so no alert, however long Miranda is on stage.
            await asyncio.sleep(3)
            assert await indexed() == 0
            alerts_url = f"{deployment.live.api_url}/v1/alerts?deployment=lifecycle"
            assert (await get(alerts_url))["alerts"] == []

            async with http.post(f"{base}/entries/W-1/approval", headers=auth("Insp Approve")) as r:
                assert r.status == 201, await r.text()

            await eventually(indexed, "the approved entry to be indexed")
            alerts = await eventually(
                lambda: _alerts(get, alerts_url), "an alert for the approved entry"
            )
            assert {a["entry_id"] for a in alerts} == {"W-1"}

            # The authoriser tightens the threshold: the running deployment applies it.
            async with http.post(
                f"{base}/threshold",
                json={"threshold": 0.45, "reason": "too many near misses"},
                headers=auth("Insp Approve"),
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["changed"] is True

            async def tightened() -> bool:
                status = await get(f"{deployment.live.api_url}/v1/status")
                return bool(status["deployment"]["threshold"] == 0.45)

            await eventually(tightened, "the new threshold to be applied")
            fusion = await deployment.kernel.handle("alerts").stats.remote()
            embedder = await deployment.kernel.handle("embedder").stats.remote()
            assert (fusion["threshold"], embedder["search_limit"]) == (0.45, 0.45)
            assert fusion["entries_with_own_threshold"] == 0

            # An entry enrolled with its own, stricter threshold gets it once approved.
            form = entry_form(
                {
                    "id": "W-2",
                    "display_name": "Alex Lacamoire",
                    "category": "missing person",
                    "legal_basis": "test",
                    "threshold": "0.4",
                },
                (shared_data / "faces" / "people" / LACAMOIRE).read_bytes(),
                filename="alex.jpg",
                content_type="image/jpeg",
            )
            async with http.post(f"{base}/entries", data=form, headers=auth("PC Enrol")) as resp:
                assert resp.status == 201, await resp.text()
            async with http.post(f"{base}/entries/W-2/approval", headers=auth("Insp Approve")) as r:
                assert r.status == 201, await r.text()

            async def own_threshold_applied() -> bool:
                stats = await deployment.kernel.handle("alerts").stats.remote()
                return bool(stats["entries_with_own_threshold"] == 1)

            await eventually(own_threshold_applied, "the entry's own threshold to apply")

            async def both_indexed() -> bool:
                # The status is gathered once a second: it may lag the actors by that much.
                return await indexed() == 2

            await eventually(both_indexed, "both entries to show as indexed in the status")

            async with http.post(
                f"{base}/close", json={"reason": "operation over"}, headers=auth("Insp Approve")
            ) as resp:
                assert resp.status == 200, await resp.text()
                closed = await resp.json()
            assert closed["state"] == "closed"
            assert closed["entries_destroyed"] == {"active": 2}

            async def stopped() -> bool:
                status = await get(f"{deployment.live.api_url}/v1/status")
                camera = status["cameras"]["cam_loop"]
                return status["deployment"]["state"] == "closed" and camera["state"] == "stopped"

            await eventually(stopped, "the cameras to stop after closing")
            assert await indexed() == 0
            status = await get(f"{deployment.live.api_url}/v1/status")
            shards = [v for k, v in status["index"].items() if k.startswith("index-")]
            assert shards and all(s.get("entries", 0) == 0 for s in shards), status["index"]
            async with http.get(f"{base}/entries/W-1/image", headers=auth("Viewer")) as resp:
                assert resp.status == 410
            # The alerts stay (under their retention) and the officer can still see them.
            assert len((await get(alerts_url))["alerts"]) == len(alerts)
            report = await get(f"{base}/report")
            assert report["state"] == "closed" and report["watchlist"]["size"] == 2
            assert report["alerts"]["total"] >= 1 and report["faces_seen"] > 0
        deployment.request_stop()
        return await runner

    summary = asyncio.run(scenario())
    assert summary["alerts"] >= 1
    # The index snapshots were destroyed with the watchlist.
    snapshots = list((tmp_path / "data" / "index").rglob("*"))
    assert not [p for p in snapshots if p.is_file()], snapshots


async def _alerts(get: Callable[[str], Awaitable[Any]], url: str) -> list[dict[str, Any]]:
    return list((await get(url))["alerts"])


def test_a_closed_deployment_cannot_run_again(shared_data: Path, tmp_path: Path) -> None:
    now = time.time()
    topology = load_topology(write_topology(tmp_path, shared_data, start=now - 60, end=now + 600))
    deployment = Deployment(topology, None, home=lfr_test_home())
    with Database(deployment.paths.alerts_db) as db:
        register_deployment(Deployments(db), topology)
        Deployments(db).close("lifecycle", actor=SYSTEM, reason="test")
    with pytest.raises(DeploymentError, match=r"was closed .* cannot run again"):
        asyncio.run(deployment.run())
