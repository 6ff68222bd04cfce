"""The whole actor pipeline on real Ray with the real models, on the real stage clip.

``short_hamilton_clip.mp4`` shows Lin-Manuel Miranda (far on stage, then close) and Alex
Lacamoire (at the piano, about 25 px and blurred, then close in profile); Obama is in the
audience at the end, in profile only (tests/data/hamilton/truth.csv). Decided per face
track, Miranda raises exactly one alert, Lacamoire's distant track raises one, and
nobody else does. Needs ../shared/data and the default models.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import ray

from lfr_actors.actors.settings import pipeline_config
from lfr_actors.control import Deployment
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.store.alerts import AlertStore
from lfr_actors.topology.loader import load_topology, load_watchlist
from lfr_actors.topology.schema import EmbedderConfig
from lfr_actors.tracking.config import TrackingConfig
from lfr_actors.tracking.stage import FrameInfo, Tracking
from tests.conftest import REPO, lfr_test_home
from tests.deployments import EVERY_PHOTO, stored_alerts, write_deployment

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]


def test_lfr_up_until_eof_one_alert_per_person(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    topology = write_deployment(
        tmp_path,
        shared_data,
        ["lin_manuel_miranda", "alex_lacamoire", "obama", "biden"],
        min_sightings=1,  # a track is decided on min_track_frames faces already
        photos=EVERY_PHOTO,
    )
    jsonl = tmp_path / "alerts.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "up", str(topology), "--until-eof",
         "--home", str(lfr_test_home()), "--alerts-jsonl", str(jsonl)],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{\n") :])
    # asap pacing: every sampled frame is processed, none dropped, whatever the load
    assert summary["frames"] == summary["frames_sampled"] >= 90
    assert summary["frames_dropped"] == 0 and summary["faces"] >= 60
    assert summary["latency_ms"]["p50"] is not None
    alerts = stored_alerts(tmp_path / "data")
    per_entry = [a["entry_id"] for a in alerts]
    assert per_entry.count("lin_manuel_miranda") == 1  # his two tracks fuse into one alert
    assert per_entry.count("alex_lacamoire") >= 1  # his 25 px, blurred faces, as a track
    assert "obama" not in per_entry and "biden" not in per_entry
    assert summary["alerts"] == len(alerts)
    assert summary["tracks"] >= 3 and summary["tracks"] < summary["faces"]
    for alert in alerts:  # every alert belongs to the tracks that made it
        assert alert["track_id"].startswith("cam_stage:") and alert["track_id"] in alert["tracks"]
        assert alert["media_index"] is not None and alert["media_time_s"] is not None
    tracks = [t for a in alerts for t in a["tracks"]]
    assert len(tracks) == len(set(tracks))  # no track in two alerts
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    raised = [x for x in lines if x["event"] == "raised"]
    assert {x["id"] for x in raised} == {a["id"] for a in alerts}
    assert all(x["deployment"] == "itest" and x["camera"] == "cam_stage" for x in raised)
    assert {x["track_id"] for x in raised} == {a["track_id"] for a in alerts}
    miranda = next(x for x in lines[::-1] if x["entry_id"] == "lin_manuel_miranda")
    assert miranda["sightings"] >= 2 and miranda["best_distance"] < 0.6


def test_killing_the_embedder_loses_and_duplicates_no_alert(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    topology_path = write_deployment(
        tmp_path, shared_data, ["lin_manuel_miranda", "alex_lacamoire"], at_end="loop",
        pace="realtime",
    )  # fmt: skip
    topology = load_topology(topology_path)
    watchlist = load_watchlist(Path(topology.watchlist.file))
    deployment = Deployment(topology, watchlist, home=lfr_test_home(), health_interval_s=0.5)

    async def scenario() -> tuple[set[str], dict[str, Any], dict[str, Any]]:
        runner = asyncio.create_task(deployment.run())
        data = tmp_path / "data"
        deadline = time.monotonic() + 120
        while True:  # wait for the first stored alert
            await asyncio.sleep(0.5)
            assert not runner.done(), runner.result()
            assert time.monotonic() < deadline, "no alert within 120 s"
            if (data / "alerts.sqlite3").exists() and stored_alerts(data):
                break
        before = {a["id"] for a in stored_alerts(data)}
        ray.kill(deployment.kernel.handle("embedder"), no_restart=True)
        entry = deployment.kernel.actors["embedder/embedder"]
        while entry.restarts == 0:
            await asyncio.sleep(0.5)
            assert time.monotonic() < deadline + 60, "embedder not restarted"
        processed_at_restart = (await deployment.status())["cameras"]["cam_stage"][
            "frames_processed"
        ]
        while True:  # let the restarted embedder work through the clip again
            await asyncio.sleep(0.5)
            status = await deployment.status()
            if status["cameras"]["cam_stage"]["frames_processed"] > processed_at_restart + 40:
                break
            assert time.monotonic() < deadline + 180, status["cameras"]
        deployment.request_stop()
        summary = await runner
        return before, summary, status

    before, summary, status = asyncio.run(scenario())
    alerts = stored_alerts(tmp_path / "data")
    ids = [a["id"] for a in alerts]
    assert before <= set(ids)  # nothing stored was lost
    assert len(ids) == len(set(ids))
    per_entry: dict[str, int] = {}
    for a in alerts:
        per_entry[a["entry_id"]] = per_entry.get(a["entry_id"], 0) + 1
    assert per_entry.get("lin_manuel_miranda") == 1  # fused, not raised again
    assert all(n == 1 for n in per_entry.values()), per_entry
    assert summary["restarts"].get("embedder", 0) >= 1
    # The frames in flight when the embedder died were sent once more, to the restarted one.
    camera = status["cameras"]["cam_stage"]
    assert camera["frames_retried"] >= 1 and camera["frames_failed"] <= camera["frames_retried"]


def _clip_face_data(
    model_cache: ModelCache, clip: Path, frames: int, embedder: EmbedderConfig
) -> list[bytes]:
    """The first bytes of every embedding and every track vector the embedder makes of the clip.

    The same code as the embedder actor (the face pipeline and the tracking stage, with the
    deployment's settings) on the frames a 10 fps camera samples from this 29.97 fps clip.
    """
    config = pipeline_config(embedder, DEFAULT_EMBEDDER_SPEC)
    pipeline = FacePipeline.build(RuntimeConfig(), config, cache=model_cache)
    spec = pipeline.embedder.spec
    tracking = Tracking(
        TrackingConfig(**embedder.tracking.model_dump()),
        metric=spec.metric,
        normalise=spec.l2_normalise,
        threshold=0.6,
    )
    capture = cv2.VideoCapture(str(clip))
    out = []
    for index in range(frames):
        ok, frame = capture.read()
        if not ok:
            break
        if index % 3:
            continue
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        info = FrameInfo("cam_stage", "e", index + 1, float(index), index, index / 29.97)
        found = [pipeline.find(image)]
        plan = tracking.observe([info], found)
        embeddings = pipeline.embed_chips(plan.chips)
        queries = tracking.absorb(plan, embeddings, [info], [image], found).queries
        out += [e.astype(np.float32).tobytes()[:32] for e in embeddings]
        out += [q.vector.astype(np.float32).tobytes()[:32] for q in queries]
    capture.release()
    return out


def _files_under(*roots: Path) -> list[Path]:
    files = []
    for root in roots:
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return files


def test_non_matches_leave_no_face_data_anywhere(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    topology_path = write_deployment(
        tmp_path, shared_data, ["kit_harington", "rose_leslie"], min_sightings=1
    )
    topology = load_topology(topology_path)
    watchlist = load_watchlist(Path(topology.watchlist.file))
    deployment = Deployment(topology, watchlist, home=lfr_test_home(), until_eof=True)

    session_dirs: list[Path] = []

    async def scenario() -> dict[str, Any]:
        runner = asyncio.create_task(deployment.run())
        while not ray.is_initialized():
            await asyncio.sleep(0.2)
        session_dirs.append(Path(ray._private.worker._global_node.get_session_dir_path()))
        return await runner

    summary = asyncio.run(scenario())
    assert summary["faces"] >= 60 and summary["alerts"] == 0 and summary["alert_sightings"] == 0

    # Face data the pipeline really computed for this clip: if any of it had been written
    # anywhere, these exact bytes would be found.
    fingerprints = _clip_face_data(model_cache, clip, 300, topology.embedder)
    assert len(fingerprints) >= 10
    data_dir = tmp_path / "data"
    session = session_dirs[0]
    spill_candidates = [session / "ray_spilled_objects", Path("/tmp/ray_spilled_objects")]
    assert not any(_files_under(*spill_candidates)), "Ray spilled objects to disk"
    scanned = _files_under(data_dir, session)
    assert scanned, "nothing to scan"
    store_files = {data_dir / f"alerts.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")}
    for path in scanned:
        content = path.read_bytes()
        # The store keeps the watchlist's own (authorised) photos; its blobs are checked
        # column by column below. Nothing else may hold a JPEG.
        if path not in store_files:
            assert b"\xff\xd8\xff" not in content, f"JPEG data in {path}"
        for fp in fingerprints:
            assert fp not in content, f"an embedding of a passer-by is in {path}"
    with sqlite3.connect(f"file:{data_dir / 'alerts.sqlite3'}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        images = []
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                images += [
                    (table, column)
                    for (value,) in conn.execute(f"SELECT {column} FROM {table}")
                    if isinstance(value, bytes) and value.startswith(b"\xff\xd8\xff")
                ]
    entries = len(topology_watchlist_ids(watchlist))
    assert images == [("watchlist_entries", "image")] * entries
    store = AlertStore.open_readonly(data_dir / "alerts.sqlite3")
    try:
        counts = store.counts()
    finally:
        store.close()
    assert counts["alerts"] == 0 and counts["sightings"] == 0


def topology_watchlist_ids(watchlist: Any) -> list[str]:
    """The ids of a watchlist file's entries."""
    return [entry.id for entry in watchlist.entries]
