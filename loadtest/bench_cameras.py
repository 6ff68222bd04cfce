"""Cameras per node: how many 1280x720 cameras at 10 fps one deployment keeps up with.

For each detector (``--detectors mtcnn centerface``), N synthetic cameras (1280x720,
10 fps, paced like real cameras: a frame the embedder is too slow for is dropped) run
through a real deployment (:class:`lfr_actors.control.Deployment`: Ray, the camera,
embedder, index and alert actors, the alert store), N = 1, 2, 3, ... up to
``--max-cameras`` (or the ``--cameras`` given), each N a fresh deployment measured for
``--seconds`` after ``--warmup`` seconds. The scene is bench_pipeline's (the watchlisted
person walks through, a group photo stands behind), drawn at 1280x720.

An N is **sustained** when, in the measured window, no frame was dropped or failed, and
the capture -> alert-stored p99 (from the alert store's event log, as bench_pipeline
measures it) is under 1 s. The report gives, per detector, the largest N sustained (N is
not raised past the first N that fails, unless ``--keep-going``), and for every N where
the time goes:

- ``decode``: the camera's median time of one source read (drawing the synthetic frame;
  the decode of a file or stream), ms per frame;
- ``detect``, ``align``, ``track``, ``embed``, ``search``, ``store``: the embedder's
  median stage times, ms per batch and per frame (per batch divided by the mean batch
  size). A stage the embedder does not time apart shows as null (an embedder without
  ``align`` counts it inside ``detect``). ``store`` is the sightings' hand-over to the
  alert actor;
- ``embedder_load``: the embedder's median batch time per frame times the frames per
  second it answered: near 1, it is busy all the time.

The embedder's medians are over its last 256 batches (warm-up batches included); a stage
that most batches skip (a decided track is not embedded again on every frame) has a
median near 0 although some batches spend time in it.

    python loadtest/bench_cameras.py [--detectors mtcnn centerface] [--max-cameras 4]
        [--cameras N ...] [--seconds 20] [--warmup 5] [--device cpu|gpu] [--json PATH]

``--device gpu`` sets ``embedder.device: gpu`` (the topology's; CenterFace then runs on
the GPU, MTCNN stays on the CPU as production places it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort
from bench_detectors import cell, parse_size  # loadtest/, beside this script
from bench_pipeline import (  # loadtest/bench_pipeline.py, beside this script
    _embedder_stats,
    alert_latencies,
    camera_source,
    deployment_section,
    percentiles,
    save_topology,
    write_watchlist,
)
from machine import machine

from lfr_actors.control import Deployment
from lfr_actors.logs import configure as configure_logging
from lfr_actors.models.cache import default_fetcher, default_home, ensure_samples
from lfr_actors.models.detectors import DETECTOR_NAMES
from lfr_actors.topology.loader import load_topology, load_watchlist

FPS = 10.0
WIDTH, HEIGHT = 1280, 720
P99_LIMIT_MS = 1000.0
DETECTORS = DETECTOR_NAMES
STAGES = ("detect", "align", "track", "embed", "search", "alerts", "batch")
STAGE_NAMES = {"alerts": "store"}  # the embedder's name for a stage -> the report's


def detector_section(
    name: str, *, centerface_input: tuple[int, int] = (640, 384), mtcnn_min_face: int = 40
) -> dict[str, Any]:
    """The topology's ``embedder.detector`` section for detector ``name``.

    The one place the benchmark says which detector runs.
    """
    if name == "centerface":
        section: dict[str, Any] = {"model": "centerface", "input_size": list(centerface_input)}
    elif name == "mtcnn":
        section = {"model": "mtcnn", "min_face_px": mtcnn_min_face}
    else:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return section


def write_topology(
    folder: Path,
    samples: dict[str, Path],
    *,
    cameras: int,
    frames: int,
    detector: dict[str, Any],
    device: str,
    max_batch: int,
    replicas: int,
) -> Path:
    """``folder/topology.yaml``: ``cameras`` synthetic 1280x720 cameras at 10 fps, paced."""
    write_watchlist(folder, samples)
    embedder: dict[str, Any] = {
        "device": device,
        "replicas": replicas,
        "max_batch": max_batch,
        "detector": detector,
    }
    topology = {
        "version": 1,
        "deployment": deployment_section("bench-cameras", hours=1),
        "cameras": [
            {
                "id": f"cam{i}",
                "fps": FPS,
                "pace": "realtime",
                "source": camera_source(samples, seed=i, frames=frames, width=WIDTH, height=HEIGHT),
            }
            for i in range(cameras)
        ],
        "embedder": embedder,
    }
    return save_topology(folder, topology)


async def _camera_stats(deployment: Deployment) -> list[dict[str, Any]]:
    handles = deployment.kernel.of_role("camera")
    return list(await asyncio.gather(*(h.stats.remote() for h in handles)))


async def _camera_latencies(deployment: Deployment) -> list[list[float]]:
    handles = deployment.kernel.of_role("camera")
    return list(await asyncio.gather(*(h.latencies.remote() for h in handles)))


def camera_run(
    home: Path,
    samples: dict[str, Path],
    *,
    cameras: int,
    detector: dict[str, Any],
    device: str = "cpu",
    seconds: float = 20.0,
    warmup: float = 5.0,
    max_batch: int = 8,
    replicas: int = 1,
) -> dict[str, Any]:
    """One deployment of ``cameras`` cameras, measured for ``seconds`` after ``warmup``."""
    folder = Path(tempfile.mkdtemp(prefix=f"lfr-bench-cameras-{cameras}-"))
    frames = round(FPS * (warmup + seconds))
    topology = load_topology(
        write_topology(
            folder, samples, cameras=cameras, frames=frames, detector=detector, device=device,
            max_batch=max_batch, replicas=replicas,
        )
    )  # fmt: skip
    watchlist = load_watchlist(Path(topology.watchlist.file))
    # The benchmark stops the deployment itself once it has read the cameras' figures
    # (with until_eof the deployment would race it to drain the ended cameras).
    deployment = Deployment(topology, watchlist, home=home)

    async def run() -> dict[str, Any]:
        runner = asyncio.create_task(deployment.run())
        while not deployment.kernel.of_role("camera") and not runner.done():
            await asyncio.sleep(0.05)
        if runner.done():
            await runner  # raises the start-up error
        await asyncio.sleep(warmup)
        window: dict[str, Any] = {"start": time.time()}
        window["before"] = await _camera_stats(deployment)
        # The cameras' scenes end after `seconds` more; one far behind is cut off later.
        deadline = time.monotonic() + seconds + max(30.0, seconds)
        while not runner.done():
            await asyncio.sleep(0.2)
            with contextlib.suppress(Exception):
                handles = deployment.kernel.of_role("camera")
                ended = await asyncio.gather(*(h.ended.remote() for h in handles))
                if handles and (all(ended) or time.monotonic() > deadline):
                    window["end"] = time.time()
                    window["cut_off"] = not all(ended)
                    window["after"] = await _camera_stats(deployment)
                    window["latencies"] = await _camera_latencies(deployment)
                    window["embedder"] = await _embedder_stats(deployment)
                    deployment.request_stop()
                    break
        window["summary"] = await runner
        return window

    window = asyncio.run(run())
    if "after" not in window:
        raise RuntimeError(f"the deployment stopped before its cameras ended: {window['summary']}")
    return _measure(window, folder, cameras=cameras)


def _measure(window: dict[str, Any], folder: Path, *, cameras: int) -> dict[str, Any]:
    """The measured window's figures from the cameras' stats before and after it."""
    before = {s["id"]: s for s in window["before"]}
    after = window["after"]

    def grew(key: str) -> int:
        return sum(int(s.get(key) or 0) - int(before.get(s["id"], {}).get(key) or 0) for s in after)

    processed = grew("frames_processed")
    span = window["end"] - window["start"]
    frame_latencies: list[float] = []
    for stats, latencies in zip(after, window["latencies"], strict=True):
        done = int(stats["frames_processed"]) - int(before.get(stats["id"], {}).get(
            "frames_processed", 0))  # fmt: skip
        frame_latencies += latencies[-done:] if done > 0 else []
    alerts = alert_latencies(folder / "data" / "alerts.sqlite3", since=window["start"])
    result: dict[str, Any] = {
        "cameras": cameras,
        "seconds": round(span, 1),
        "frames_processed": processed,
        "frames_per_s": round(processed / span, 2) if span > 0 else None,
        "frames_offered_per_s": cameras * FPS,
        "frames_dropped": grew("frames_dropped"),
        "frames_failed": grew("frames_failed"),
        "cut_off": window["cut_off"],
        "frames_dropped_in_warmup": sum(int(s.get("frames_dropped") or 0) for s in before.values()),
        "frame_latency_ms": percentiles(frame_latencies),
        "alert_stored_latency_ms": percentiles(alerts),
        "alert_events": len(alerts),
        "embedder_detector": window["embedder"].get("detector"),
        "embedder_providers": window["embedder"].get("providers"),
        "time": where_the_time_goes(after, window["embedder"], processed / span if span else 0),
        "per_camera": [
            {
                k: s.get(k)
                for k in (
                    "id",
                    "state",
                    "frames_processed",
                    "frames_dropped",
                    "fps",
                    "read_ms_median",
                    "latency_ms_p99",
                )
            }
            for s in after
        ],
    }
    result["sustained"], result["reason"] = sustained(result)
    return result


def where_the_time_goes(
    cameras: Sequence[dict[str, Any]], embedder: dict[str, Any], frames_per_s: float
) -> dict[str, Any]:
    """Decode per frame (the cameras'), and the embedder's stages per batch and per frame."""
    reads = [float(s["read_ms_median"]) for s in cameras if s.get("read_ms_median") is not None]
    medians = embedder.get("stage_ms_median") or {}
    batch = embedder.get("batch_size_mean") or None
    per_batch = {STAGE_NAMES.get(k, k): medians.get(k) for k in STAGES}
    per_frame = {
        k: (round(v / batch, 2) if v is not None and batch else None) for k, v in per_batch.items()
    }
    per_frame["decode"] = round(statistics.median(reads), 2) if reads else None
    load = None
    if per_frame.get("batch") is not None:
        load = round(per_frame["batch"] * frames_per_s / 1000, 3)
    return {
        "ms_per_frame": per_frame,
        "embedder_ms_per_batch": per_batch,
        "embedder_batch_size_mean": batch,
        "embedder_load": load,
        "align_timed_apart": "align" in medians,
    }


def sustained(result: dict[str, Any]) -> tuple[bool, str]:
    """Whether a run kept up, and why not when it did not."""
    if result["cut_off"]:
        return False, "the cameras had not ended their scenes long after they should have"
    if result["frames_dropped"] or result["frames_failed"]:
        return False, (
            f"{result['frames_dropped']} frames dropped, {result['frames_failed']} failed"
        )
    p99 = result["alert_stored_latency_ms"]["p99"]
    if p99 is None:
        return False, "no alert stored in the window: capture -> stored p99 not measured"
    if p99 >= P99_LIMIT_MS:
        return False, f"capture -> alert stored p99 {p99:.0f} ms >= {P99_LIMIT_MS:.0f} ms"
    return True, f"no frame dropped, capture -> alert stored p99 {p99:.0f} ms"


def bench_cameras(
    home: Path,
    *,
    detectors: Sequence[str] = DETECTORS,
    cameras: Sequence[int] = (1, 2, 3, 4),
    seconds: float = 20.0,
    warmup: float = 5.0,
    device: str = "cpu",
    max_batch: int = 8,
    replicas: int = 1,
    centerface_input: tuple[int, int] = (640, 384),
    samples: dict[str, Path] | None = None,
    keep_going: bool = False,
) -> dict[str, Any]:
    """Per detector: each N's run until the first N not sustained (every N with
    ``keep_going``), and the largest N sustained with every smaller N sustained too.

    ``samples``: the sample photos (default: extracted into ``home/samples``, hash-checked,
    from the source archives there).
    """
    samples = samples or ensure_samples(home, default_fetcher(home))
    sections = {name: detector_section(name, centerface_input=centerface_input)
                for name in detectors}  # fmt: skip
    report: dict[str, Any] = {}
    for name, section in sections.items():
        runs = []
        largest = 0
        for n in sorted(set(cameras)):
            started = time.perf_counter()
            result = camera_run(
                home, samples, cameras=n, detector=section, device=device, seconds=seconds,
                warmup=warmup, max_batch=max_batch, replicas=replicas,
            )  # fmt: skip
            result["wall_s"] = round(time.perf_counter() - started, 1)
            runs.append(result)
            print(f"  {name} x{n}: {result['reason']} ({result['wall_s']} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
            if result["sustained"] and all(r["sustained"] for r in runs):
                largest = n
            if not result["sustained"] and not keep_going:
                break
        report[name] = {
            "detector_section": section,
            "largest_sustained": largest,
            "runs": runs,
        }
    return report


def table(report: dict[str, Any]) -> str:
    """One line per detector and N: drops, latencies and where the time goes (ms/frame)."""
    head = (
        f"{'detector':<11} {'N':>3} {'fps':>6} {'drop':>5} {'frame p99':>9} {'alert p99':>9} "
        f"{'alerts':>6} {'decode':>6} {'detect':>6} {'align':>6} {'track':>6} {'embed':>6} "
        f"{'search':>6} "
        f"{'store':>6} {'batch':>5} {'load':>5}  ok"
    )
    lines = [head, "-" * len(head)]
    for name, section in report.items():
        for run in section["runs"]:
            t = run["time"]["ms_per_frame"]
            lines.append(
                f"{name:<11} {run['cameras']:>3} {cell(run['frames_per_s'], 6, 1)} "
                f"{run['frames_dropped']:>5} {cell(run['frame_latency_ms']['p99'], 9, 0)} "
                f"{cell(run['alert_stored_latency_ms']['p99'], 9, 0)} {run['alert_events']:>6} "
                + " ".join(cell(t.get(k), 6, 1) for k in
                           ("decode", "detect", "align", "track", "embed", "search",
                            "store"))
                + f" {cell(run['time']['embedder_batch_size_mean'], 5, 1)} "
                f"{cell(run['time']['embedder_load'], 5, 2)}  {'yes' if run['sustained'] else 'no'}"
            )  # fmt: skip
        lines.append(f"{name}: largest N sustained = {section['largest_sustained']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    parser.add_argument("--max-cameras", type=int, default=4)
    parser.add_argument("--cameras", type=int, nargs="+", help="the N to try (default 1..max)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per N")
    parser.add_argument("--warmup", type=float, default=5.0, help="not measured, per N")
    parser.add_argument(
        "--keep-going", action="store_true", help="run every N, also after one not sustained"
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--max-batch", type=int, default=8, help="embedder.max_batch")
    parser.add_argument("--replicas", type=int, default=1, help="embedder.replicas")
    parser.add_argument("--centerface-input", type=parse_size, default=(640, 384))
    parser.add_argument("--home", type=Path, default=None, help="the lfr home (models/ in it)")
    parser.add_argument("--json", type=Path, help="write the JSON report here too")
    args = parser.parse_args()
    cameras = args.cameras or list(range(1, args.max_cameras + 1))
    if min(cameras) < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("cameras must be 1 or more, --seconds above 0, --warmup 0 or more")
    for name in args.detectors:
        try:
            detector_section(name, centerface_input=args.centerface_input)
        except ValueError as exc:
            parser.error(str(exc))
    configure_logging(level="WARNING")
    home = (args.home or Path(os.environ.get("LFR_HOME") or default_home())).resolve()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(
            onnxruntime=ort.__version__, load_average_1m=round(os.getloadavg()[0], 2)
        ),
        "camera": f"synthetic {WIDTH}x{HEIGHT} at {FPS:g} fps, pace realtime",
        "device": args.device,
        "seconds_per_n": args.seconds,
        "warmup_s": args.warmup,
        "detectors": bench_cameras(
            home, detectors=args.detectors, cameras=cameras, seconds=args.seconds,
            warmup=args.warmup, device=args.device, max_batch=args.max_batch,
            replicas=args.replicas, centerface_input=args.centerface_input,
            keep_going=args.keep_going,
        ),
    }  # fmt: skip
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(table(report["detectors"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
