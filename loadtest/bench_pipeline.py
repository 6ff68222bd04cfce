"""The full actor pipeline against a bare single-process loop on the same frames.

For 1, 2 and 4 synthetic cameras (640x360; real photos from registry packages moving
across a scene: a watchlisted person and six passers-by), in one run:

- **throughput**: the bare loop (detect, align, quality, embed, search, in one process,
  frame after frame) against the actor pipeline with every camera read as fast as the
  embedder takes frames (``pace: asap``): frames/s, faces/s, and their ratio;
- **latency** at 10 fps per camera, paced like real cameras: capture -> frame answered
  (the camera's view) and capture -> alert stored (from the alert store's event log),
  p50/p95/p99, with frames dropped;
- **work per face track**: the same asap run with every face of a decided track embedded
  again (``tracking.reembed_every: 1``) against the default (a decided track is embedded
  again only when its face is better, or every 10th frame): embeddings per frame, frames/s
  and their ratio.

    python loadtest/bench_pipeline.py [--cameras 1 2 4] [--frames 80] [--home DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.actors.settings import pipeline_config
from lfr_actors.control import Deployment
from lfr_actors.index.shard import ShardIndex
from lfr_actors.logs import configure as configure_logging
from lfr_actors.models.cache import (
    ModelCache,
    default_fetcher,
    default_home,
    ensure_samples,
    prepare,
)
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.topology.loader import load_topology, load_watchlist
from lfr_actors.video import build_source

FPS = 10.0


def camera_source(
    samples: dict[str, Path], seed: int, frames: int, *, width: int = 640, height: int = 360
) -> dict[str, Any]:
    """A scene (640x360 unless asked): the watchlisted person walks through, the group
    stands behind. Sizes and positions are fractions of the frame, so any size shows the
    same scene."""
    return {
        "type": "synthetic",
        "width": width,
        "height": height,
        "frames": frames,
        "seed": seed,
        "sprites": [
            {"image": str(samples["group_t1.jpg"]), "label": None, "start": [0.35, 0.05],
             "velocity": [0.0, 0.0], "height": 0.9},
            {"image": str(samples["obama2.jpg"]), "label": "obama", "start": [0.0, 0.1],
             "velocity": [0.04, 0.0], "height": 0.8},
        ],
    }  # fmt: skip


def write_watchlist(folder: Path, samples: dict[str, Path]) -> None:
    """``folder/watchlist.yaml``: one entry, Obama, from the registry's sample photo."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "id": "obama",
        "display_name": "Obama",
        "images": [str(samples["obama.jpg"])],
        "category": "benchmark",
        "legal_basis": "benchmark",
        "source": "registry",
        "image_date": "2020-01-01",
    }
    (folder / "watchlist.yaml").write_text(yaml.safe_dump({"version": 1, "entries": [entry]}))


def deployment_section(deployment_id: str, *, hours: float) -> dict[str, str]:
    """A topology's ``deployment`` section whose window opened a minute ago."""
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "id": deployment_id,
        "authorised_by": "benchmark",
        "purpose": "benchmark",
        "location": "this machine",
        "start": (now - timedelta(minutes=1)).isoformat(),
        "end": (now + timedelta(hours=hours)).isoformat(),
    }


def write_topology(
    folder: Path,
    samples: dict[str, Path],
    cameras: int,
    frames: int,
    pace: str,
    tracking: dict[str, Any] | None = None,
) -> Path:
    write_watchlist(folder, samples)
    topology = {
        "version": 1,
        "deployment": deployment_section("bench", hours=1),
        "cameras": [
            {
                "id": f"cam{i}",
                "fps": FPS,
                "pace": pace,
                "queue_size": 4,
                # Throughput runs keep the embedder fed while it answers earlier frames.
                "max_in_flight": 4 if pace == "asap" else 2,
                "source": camera_source(samples, seed=i, frames=frames),
            }
            for i in range(cameras)
        ],
        "embedder": {
            "max_batch": 8,
            "max_wait_ms": 10,
            "detector": {"model": "mtcnn", "min_face_px": 40},  # as its README figures
            "tracking": tracking or {},
        },
    }
    return save_topology(folder, topology)


def save_topology(folder: Path, sections: dict[str, Any]) -> Path:
    """``folder/topology.yaml``: ``sections`` (version, deployment, cameras, embedder) and
    the benchmarks' shared rest: one index shard, alerts on every sighting, the watchlist
    beside it, an API on a free port, data in ``data``, warnings only."""
    topology = {
        **sections,
        "index": {"shards": 1},
        "alerts": {"threshold": 0.6, "fusion_window_s": 1, "min_sightings": 1},
        "watchlist": {"file": "watchlist.yaml"},
        "api": {"port": 0},
        "storage": {"data_dir": "data"},
        "logging": {"level": "WARNING"},
    }
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    return path


def bare_loop(home: Path, samples: dict[str, Path], cameras: int, frames: int) -> dict[str, Any]:
    """The same models on the same frames, one process, one frame after another."""
    cache = ModelCache(home / "models")
    folder = Path(tempfile.mkdtemp())
    topology = load_topology(write_topology(folder, samples, cameras, frames, "asap"))
    config = pipeline_config(topology.embedder, DEFAULT_EMBEDDER_SPEC)
    pipeline = FacePipeline.build(RuntimeConfig(), config, cache=cache)
    pipeline.warm_up()
    index = ShardIndex(dimension=128, metric="euclidean", mode="exact")
    index.add("obama", pipeline.enrol(load_image(samples["obama.jpg"])).embedding[None])
    sources = [build_source(camera.source, fps=FPS, name=f"c{i}",
                            stall_timeout_s=camera.stall_timeout_s)
               for i, camera in enumerate(topology.cameras)]  # fmt: skip
    for source in sources:
        source.open()
    faces = matches = count = 0
    start = time.perf_counter()
    # Frames are made inside the timed loop, as the camera actors make them in the pipeline.
    live = list(sources)
    while live:
        for source in list(live):
            frame = source.read()
            if frame is None:
                live.remove(source)
                continue
            count += 1
            analysed = pipeline.analyse(frame.image, embed="passed")
            faces += len(analysed.detections)
            if analysed.embeddings.shape[0]:
                hits = index.search(analysed.embeddings, k=1, max_distance=0.6)
                matches += sum(1 for h in hits if h)
    elapsed = time.perf_counter() - start
    return {
        "frames": count,
        "faces": faces,
        "matches": matches,
        "seconds": round(elapsed, 2),
        "frames_per_s": round(count / elapsed, 2),
        "faces_per_s": round(faces / elapsed, 2),
    }


def alert_latencies(db: Path, since: float | None = None) -> list[float]:
    """Capture -> stored, per stored alert event (the event's sighting capture time).

    ``since`` (Unix seconds): only the events of sightings captured from then on.
    """
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT at, alert FROM alert_events").fetchall()
    finally:
        connection.close()
    out = []
    for at, alert in rows:
        payload = json.loads(alert)
        stored = float(at) if not isinstance(at, str) else datetime.fromisoformat(at).timestamp()
        if since is None or float(payload["last_seen"]) >= since:
            out.append(stored - float(payload["last_seen"]))
    return out


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ms = np.array(values) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


async def _embedder_stats(deployment: Deployment) -> dict[str, Any]:
    """The embedder replicas' own stats, asked directly (tried again on a slow answer)."""
    for _ in range(5):
        with contextlib.suppress(Exception):
            replies = await asyncio.wait_for(
                asyncio.gather(*(h.stats.remote() for h in deployment.kernel.of_role("embedder"))),
                10,
            )
            if len(replies) == 1:
                return dict(replies[0])
            summed: dict[str, Any] = {}
            for reply in replies:
                for key, value in reply.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        summed[key] = summed.get(key, 0) + value
            return summed
        await asyncio.sleep(0.5)
    return {}


def pipeline_run(
    home: Path,
    samples: dict[str, Path],
    cameras: int,
    frames: int,
    pace: str,
    tracking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"lfr-bench-{pace}-{cameras}-"))
    topology = load_topology(write_topology(folder, samples, cameras, frames, pace, tracking))
    watchlist = load_watchlist(Path(topology.watchlist.file))
    deployment = Deployment(topology, watchlist, home=home, until_eof=True)

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        runner = asyncio.create_task(deployment.run())
        while not deployment.kernel.of_role("camera") and not runner.done():
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        status: dict[str, Any] = {}
        ended_at = None
        # Throughput counts from the cameras' start to the last frame answered; the drain
        # and Ray's shutdown afterwards are not frame processing.
        while not runner.done() and ended_at is None:
            await asyncio.sleep(0.1)
            with contextlib.suppress(Exception):
                handles = deployment.kernel.of_role("camera")
                ended = await asyncio.gather(*(h.ended.remote() for h in handles))
                if handles and all(ended):
                    ended_at = time.perf_counter()
                    status = await deployment.status()
                    status["embedder_stats"] = await _embedder_stats(deployment)
        summary = await runner
        summary["processing_seconds"] = (ended_at or time.perf_counter()) - started
        return summary, status

    summary, status = asyncio.run(run())
    seconds = summary["processing_seconds"]
    embedder = status.get("embedder_stats") or {}
    return {
        "frames": summary["frames"],
        "faces": summary["faces"],
        "frames_dropped": summary["frames_dropped"],
        "seconds": round(seconds, 2),
        "frames_per_s": round(summary["frames"] / seconds, 2),
        "faces_per_s": round(summary["faces"] / seconds, 2),
        "frame_latency_ms": summary["latency_ms"],
        "alert_stored_latency_ms": percentiles(alert_latencies(folder / "data" / "alerts.sqlite3")),
        "alerts_events": len(alert_latencies(folder / "data" / "alerts.sqlite3")),
        "embeddings_per_frame": round(
            embedder.get("faces_embedded", 0) / max(summary["frames"], 1), 3
        ),
        "tracks_started": embedder.get("tracks_started"),
        "faces_skipped_decided": embedder.get("faces_skipped_decided"),
        "embedder_batch_size_mean": embedder.get("batch_size_mean"),
        "embedder_stage_ms_median": embedder.get("stage_ms_median"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=80, help="frames per camera")
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    configure_logging(level="WARNING")
    home = (args.home or Path(os.environ.get("LFR_HOME") or default_home())).resolve()
    fetcher = default_fetcher(home)
    prepare(ModelCache(home / "models"), fetcher, progress=False)
    samples = ensure_samples(home, fetcher)
    report: dict[str, Any] = {
        "machine": machine(
            onnxruntime=ort.__version__, load_average_1m=round(os.getloadavg()[0], 2)
        ),
        "frames_per_camera": args.frames,
        "runs": {},
    }
    for cameras in args.cameras:
        bare = bare_loop(home, samples, cameras, args.frames)
        asap = pipeline_run(home, samples, cameras, args.frames, "asap")
        paced = pipeline_run(home, samples, cameras, args.frames, "realtime")
        every = pipeline_run(
            home, samples, cameras, args.frames, "asap", tracking={"reembed_every": 1}
        )
        report["runs"][f"{cameras}_cameras"] = {
            "bare_loop": bare,
            "pipeline_asap": asap,
            "pipeline_10fps": paced,
            "pipeline_asap_embed_every_face": every,
            "throughput_ratio_frames": round(asap["frames_per_s"] / bare["frames_per_s"], 3),
            "throughput_ratio_faces": round(asap["faces_per_s"] / bare["faces_per_s"], 3),
            "tracks_skip_ratio_embeddings": round(
                asap["embeddings_per_frame"] / max(every["embeddings_per_frame"], 1e-9), 3
            ),
            "tracks_skip_ratio_frames_per_s": round(
                asap["frames_per_s"] / every["frames_per_s"], 3
            ),
        }
        print(json.dumps({f"{cameras}_cameras": report["runs"][f"{cameras}_cameras"]}), flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
