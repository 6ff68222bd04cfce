"""Does a flood of health requests slow recognition? Frames/s with and without one.

One real pipeline on Ray (a synthetic 640x360 camera paced at a fixed fps, the default
models, one watchlisted person in view), and in the same run, phase after phase of
``--seconds`` each:

- **quiet**: nobody calls the API;
- **readyz flood**: a separate process sends anonymous ``GET /readyz``, ``--rate`` a
  second (200 by default: issue 8's 2,000 in 10 s) over ``--concurrency`` connections;
- **status flood**: the same with authenticated ``GET /v1/status`` (the deployment's own
  token from its run file).

- **healthz flood**: the control, ``GET /healthz`` (liveness, which reads no status), at
  the same rate: what serving that many requests costs the machine by itself.

For each phase: frames the pipeline processed per second, frames dropped, and requests
answered. Printed: the mean of each kind, the ratio flood / quiet (1.0 = no effect) and
flood / healthz flood (1.0 = health costs nothing beyond serving HTTP).
The phases alternate (quiet, readyz, status, quiet, ...) so that drift in the machine's
load falls on every kind alike.

    python loadtest/bench_readyz.py [--fps 10] [--seconds 10] [--rounds 2] [--rate 200]
                                    [--home DIR]

It runs against whatever ``lfr_actors`` is importable, so the figures before a change can
be taken with ``PYTHONPATH=<old checkout> python loadtest/bench_readyz.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from bench_pipeline import deployment_section, write_watchlist  # beside this script
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.control import Deployment
from lfr_actors.logs import configure as configure_logging
from lfr_actors.models.cache import (
    ModelCache,
    default_fetcher,
    default_home,
    ensure_samples,
    prepare,
)
from lfr_actors.topology.loader import load_topology, load_watchlist

CAMERA = "cam0"
KINDS = ("quiet", "healthz", "readyz", "status")
"""The phases of a round; ``healthz`` (liveness: no status at all) is the control that
shows what serving that many HTTP requests costs by itself on this machine."""


def write_topology(folder: Path, samples: dict[str, Path], fps: float) -> Path:
    """One synthetic camera at ``fps`` (paced like a real one), running for hours."""
    write_watchlist(folder, samples)
    topology = {
        "version": 1,
        "deployment": deployment_section("bench-readyz", hours=4),
        "cameras": [
            {
                "id": CAMERA,
                "fps": fps,
                "pace": "realtime",
                "queue_size": 4,
                "max_in_flight": 2,
                "source": {
                    "type": "synthetic",
                    "width": 640,
                    "height": 360,
                    "frames": 1_000_000,
                    "seed": 1,
                    "sprites": [
                        {"image": str(samples["obama2.jpg"]), "label": "obama",
                         "start": [0.3, 0.1], "velocity": [0.0, 0.0], "height": 0.8},
                    ],
                },
            }
        ],
        "embedder": {
            "max_batch": 4,
            "max_wait_ms": 10,
            "detector": {"model": "mtcnn", "min_face_px": 40},
        },
        "index": {"shards": 1},
        "alerts": {"threshold": 0.6, "fusion_window_s": 5, "min_sightings": 1},
        "watchlist": {"file": "watchlist.yaml"},
        "api": {"host": "127.0.0.1", "port": 0},
        "storage": {"data_dir": "data"},
        "logging": {"level": "WARNING"},
    }  # fmt: skip
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    return path


# -- the flood, in its own process -------------------------------------------------------


async def _flood(
    url: str, seconds: float, concurrency: int, rate: float, token: str | None
) -> dict[str, Any]:
    """Requests to ``url`` for ``seconds``: ``rate`` a second (0: as fast as they go)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    codes: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + seconds
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                if rate > 0:
                    # Request n leaves at started + n / rate, whichever worker is free.
                    slot = started + sent / rate
                    sent += 1
                    wait = slot - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if time.monotonic() >= deadline:
                        return
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        codes[str(resp.status)] += 1
                except aiohttp.ClientError as exc:
                    codes[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"requests": sum(codes.values()), "answers": dict(codes)}


def flood_main(args: argparse.Namespace) -> int:
    token = os.environ.get("BENCH_TOKEN") or None  # not on the command line: ps shows it
    result = asyncio.run(_flood(args.flood, args.seconds, args.concurrency, args.rate, token))
    print(json.dumps(result), flush=True)
    return 0


def start_flood(
    url: str, seconds: float, concurrency: int, rate: float, token: str | None
) -> subprocess.Popen[str]:
    env = {**os.environ, "BENCH_TOKEN": token or ""}
    return subprocess.Popen(
        [sys.executable, __file__, "--flood", url, "--seconds", str(seconds),
         "--concurrency", str(concurrency), "--rate", str(rate)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


# -- the pipeline and its phases ---------------------------------------------------------


async def camera_counts(deployment: Deployment) -> tuple[int, int]:
    """(frames processed, frames dropped) straight from the camera actor."""
    stats = await deployment.kernel.handle(CAMERA).stats.remote()
    return int(stats.get("frames_processed") or 0), int(stats.get("frames_dropped") or 0)


async def phase(
    deployment: Deployment,
    kind: str,
    args: argparse.Namespace,
    token: str | None,
) -> dict[str, Any]:
    api = deployment.live.api_url
    seconds = args.seconds
    flood = None
    if kind == "healthz":
        flood = start_flood(f"{api}/healthz", seconds, args.concurrency, args.rate, None)
    elif kind == "readyz":
        flood = start_flood(f"{api}/readyz", seconds, args.concurrency, args.rate, None)
    elif kind == "status":
        flood = start_flood(f"{api}/v1/status", seconds, args.concurrency, args.rate, token)
    if flood is not None:
        await asyncio.sleep(0.5)  # the client process starting is not part of the phase
    frames0, dropped0 = await camera_counts(deployment)
    started = time.perf_counter()
    await asyncio.sleep(seconds if flood is None else max(0.5, seconds - 0.5))
    frames1, dropped1 = await camera_counts(deployment)
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {
        "kind": kind,
        "seconds": round(elapsed, 2),
        "frames_per_s": round((frames1 - frames0) / elapsed, 2),
        "frames_dropped": dropped1 - dropped0,
    }
    if flood is not None:
        stdout, _ = await asyncio.to_thread(flood.communicate)
        out["flood"] = json.loads(stdout.strip().splitlines()[-1])
    return out


def run(args: argparse.Namespace, home: Path, samples: dict[str, Path]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="lfr-bench-readyz-"))
    topology = load_topology(write_topology(folder, samples, args.fps))
    assert topology.watchlist is not None
    watchlist = load_watchlist(Path(topology.watchlist.file))
    deployment = Deployment(topology, watchlist, home=home)

    async def go() -> list[dict[str, Any]]:
        runner = asyncio.create_task(deployment.run())
        run_file = deployment.paths.run_file
        while not run_file.exists() and not runner.done():
            await asyncio.sleep(0.1)
        if runner.done():
            await runner  # raises why it did not start
        token = json.loads(run_file.read_text())["token"]
        # Warm up: until frames flow at a steady rate.
        while (await camera_counts(deployment))[0] < args.fps * 3:
            await asyncio.sleep(0.5)
        await asyncio.sleep(args.seconds / 2)
        phases = []
        for _ in range(args.rounds):
            for kind in KINDS:
                result = await phase(deployment, kind, args, token)
                print(json.dumps(result), flush=True)
                phases.append(result)
        deployment.request_stop()
        try:
            await asyncio.wait_for(asyncio.shield(runner), 300)
        except TimeoutError:
            print("the deployment did not drain within 300 s; its tasks:", file=sys.stderr)
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
        return phases

    phases = asyncio.run(go())

    def mean(kind: str, key: str) -> float:
        return round(statistics.fmean(p[key] for p in phases if p["kind"] == kind), 2)

    quiet = mean("quiet", "frames_per_s")
    summary: dict[str, Any] = {}
    for kind in KINDS:
        chosen = [p for p in phases if p["kind"] == kind]
        summary[kind] = {
            "frames_per_s": mean(kind, "frames_per_s"),
            "frames_dropped": sum(p["frames_dropped"] for p in chosen),
            "requests": sum(p.get("flood", {}).get("requests", 0) for p in chosen),
        }

    def ratio(kind: str, baseline: float) -> float | None:
        return round(summary[kind]["frames_per_s"] / baseline, 3) if baseline else None

    control = summary["healthz"]["frames_per_s"]
    return {
        "phases": phases,
        "summary": summary,
        "ratio_readyz_flood": ratio("readyz", quiet),
        "ratio_status_flood": ratio("status", quiet),
        "ratio_healthz_flood": ratio("healthz", quiet),
        "ratio_readyz_vs_healthz_flood": ratio("readyz", control),
        "ratio_status_vs_healthz_flood": ratio("status", control),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=10.0, help="the camera's paced rate")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="quiet/readyz/status rounds")
    parser.add_argument("--concurrency", type=int, default=32, help="flood connections")
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="flood requests a second (default 200: the 2,000 in 10 s of issue 8; 0: as "
        "fast as the connections go, which measures CPU contention on a small machine)",
    )
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--flood", help=argparse.SUPPRESS)  # the flood process's own mode
    args = parser.parse_args()
    if args.flood:
        return flood_main(args)
    configure_logging(level="WARNING")
    home = (args.home or Path(os.environ.get("LFR_HOME") or default_home())).resolve()
    fetcher = default_fetcher(home)
    prepare(ModelCache(home / "models"), fetcher, progress=False)
    samples = ensure_samples(home, fetcher)
    report = run(args, home, samples)
    report["machine"] = machine(load_average_1m=round(os.getloadavg()[0], 2))
    report["settings"] = {
        "fps": args.fps,
        "seconds_per_phase": args.seconds,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "flood_rate_per_s": args.rate,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
