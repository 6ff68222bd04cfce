"""Upload amplification: what hostile enrolment uploads cost the API process.

Runs the real API (``create_app`` behind ``web.AppRunner`` + ``TCPSite`` on 127.0.0.1,
port 0) with the real enrolment pipeline (the default models from the model cache) over a
fresh store with one open deployment, and measures, each scenario in a fresh process so
that one's memory does not colour the next:

- **bomb**: one upload of a PNG that is small on the wire (~143 KB) but declares
  7000 x 7000 pixels (49 MP): the answer, the process's peak RSS during the request
  (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) and its RSS 2 s after
  the answer (retained), both against the RSS before the request.
- **bomb x4**: four such uploads at once.
- **large photo x4**: four uploads at once of a real face photo upscaled to just under
  24 MP (a JPEG of a few MB): what the largest photo the budget admits costs.
- **parts**: one body of 150,000 tiny multipart parts (unknown fields): the answer's
  status and size in bytes, and the longest stall of the server's event loop while it was
  handled (a 10-ms ticker task on the loop records its largest lateness). Baseline in the
  same run: the stall during an idle second.

Run it on this tree, and on another one to compare (``PYTHONPATH=/path/to/other/tree``):
the script uses only what both builds have. Figures are for this machine; compare within
a run or between runs on one machine. About a minute on 2 cores.

    python loadtest/bench_upload.py [--parts 150000] [--scenario NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import requests
from aiohttp import FormData, web

import lfr_actors
from lfr_actors.api.app import create_app
from lfr_actors.enrolment import pipeline_enroller
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.testing.declarations import make_deployment

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("LFR_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
"""The real photos (tests' ``shared_data``); the large photo is one of them, upscaled."""
PHOTO = SHARED / "faces" / "people" / "obama" / "obama.jpg"
SCENARIOS = ("bomb", "bomb_x4", "large_x4", "parts")


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def bomb_png() -> bytes:
    ok, data = cv2.imencode(".png", np.zeros((7000, 7000, 3), np.uint8))
    assert ok
    return bytes(data.tobytes())


def large_jpeg() -> bytes:
    photo = cv2.imread(str(PHOTO))
    side = int((23_500_000) ** 0.5)
    big = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
    ok, data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return bytes(data.tobytes())


def form(entry_id: str, image: bytes, name: str) -> Any:
    data = FormData(default_to_multipart=True)
    for key, value in {
        "id": entry_id,
        "display_name": "Bench Example",
        "category": "wanted",
        "legal_basis": "PACE 1984 s.24",
        "source": "benchmark",
        "image_date": "2025-11-02",
    }.items():
        data.add_field(key, value)
    data.add_field("image", image, filename=name, content_type="image/png")
    return data


def parts_body(n: int) -> tuple[bytes, str]:
    boundary = "benchboundary"
    one = (f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\nv\r\n').encode()
    return one * n + f"--{boundary}--\r\n".encode(), boundary


async def serve(tmp: Path) -> tuple[Any, str]:
    home = Path(os.environ.get("LFR_TEST_HOME", Path.home() / ".lfr"))
    pipeline = FacePipeline.build(RuntimeConfig(device="cpu"), cache=ModelCache(home / "models"))
    pipeline.warm_up()
    db = tmp / "alerts.sqlite3"
    with Database(db) as store:
        now = time.time()
        Deployments(store).create(
            make_deployment("bench", now - 60, now + 3600, 0.55, purpose="benchmark"),
            actor=Actor("bench"),
        )
    app = create_app(db, auth=False, enroller=pipeline_enroller(pipeline))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/v1/deployments/bench/entries"


async def uploads(url: str, image: bytes, n: int) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> tuple[int, str]:
            async with session.post(url, data=form(f"B{i}", image, f"b{i}.png")) as resp:
                body = await resp.json()
                return resp.status, str(body.get("reason") or body.get("detail", ""))[:120]

        return list(await asyncio.gather(*(one(i) for i in range(n))))


class Ticker:
    """Records the event loop's largest lateness against a 10-ms sleep."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - start - 0.01) * 1000)


async def scenario(name: str, parts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lfr-bench-upload-") as tmp:
        runner, url = await serve(Path(tmp))
        try:
            if name == "parts":
                return await parts_scenario(url, parts)
            image = large_jpeg() if name == "large_x4" else bomb_png()
            n = 1 if name == "bomb" else 4
            gc.collect()
            before, _ = rss_kib()
            reset_peak()
            started = time.perf_counter()
            answers = await uploads(url, image, n)
            seconds = time.perf_counter() - started
            _, peak = rss_kib()
            gc.collect()
            await asyncio.sleep(2.0)
            retained, _ = rss_kib()
            return {
                "scenario": name,
                "uploads": n,
                "image_bytes": len(image),
                "answers": answers,
                "seconds": round(seconds, 2),
                "rss_before_mib": round(before / 1024),
                "peak_over_before_mib": round((peak - before) / 1024),
                "retained_over_before_mib": round((retained - before) / 1024),
            }
        finally:
            await runner.cleanup()


async def parts_scenario(url: str, parts: int) -> dict[str, Any]:
    body, boundary = parts_body(parts)
    idle = Ticker()
    task = asyncio.create_task(idle.run())
    await asyncio.sleep(1.0)
    idle.stop = True
    await task
    ticker = Ticker()
    task = asyncio.create_task(ticker.run())
    result: dict[str, Any] = {}

    def post() -> None:
        resp = requests.post(
            url,
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=120,
        )
        result["status"] = resp.status_code
        result["response_bytes"] = len(resp.content)

    thread = threading.Thread(target=post)
    started = time.perf_counter()
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    ticker.stop = True
    await task
    return {
        "scenario": "parts",
        "parts": parts,
        "body_bytes": len(body),
        **result,
        "seconds": round(seconds, 2),
        "loop_stall_ms": round(ticker.worst_ms, 1),
        "idle_loop_stall_ms": round(idle.worst_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=150_000)
    parser.add_argument("--scenario", choices=SCENARIOS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(asyncio.run(scenario(args.scenario, args.parts))))
        return
    print(f"lfr_actors from {Path(lfr_actors.__file__).parent}")
    for name in SCENARIOS:
        out = subprocess.run(
            [sys.executable, __file__, "--scenario", name, "--parts", str(args.parts)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{name}: failed (exit {out.returncode}): {out.stderr[-2000:]}")
            continue
        print(json.dumps(json.loads(lines[-1])))


if __name__ == "__main__":
    main()
