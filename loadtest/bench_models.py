"""Model cost on this machine: detector ms per frame, embedder ms per face, conversion time.

Every figure is printed with its ratio against a baseline measured in the same run:
embedder batches against batch 1, the detector at each setting against 640x360 with a
40 px minimum face. The issue's reference figures for a 2-core x86 VM are printed beside
them for orientation (≈2.6 ms/face at batch 16; ≈30 ms per 640x360 frame at 40 px),
but machines differ, so only same-run ratios are comparable across runs.

Frames come from ``../shared/data/video/short_hamilton_clip.mp4`` when it exists (a
real stage clip, 640x360), else from the demo's sample group photo; 1920x1080 frames are
the same frames upscaled.

    python loadtest/bench_models.py [--frames 30] [--repeats 5] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.logs import configure as configure_logging
from lfr_actors.models.cache import (
    ModelCache,
    default_fetcher,
    default_home,
    ensure_samples,
    prepare,
)
from lfr_actors.models.convert.dlib_resnet import convert_dlib_resnet
from lfr_actors.models.convert.mtcnn import convert_mtcnn
from lfr_actors.models.convert.torch_legacy import load_legacy_state_dict
from lfr_actors.models.detector import DetectorConfig, MtcnnDetector
from lfr_actors.models.embedder import Embedder
from lfr_actors.models.images import load_image
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.sources import DLIB_RESNET_DAT, MTCNN_ONET, MTCNN_PNET, MTCNN_RNET

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"


def frames_360p(count: int, home: Path) -> tuple[list[np.ndarray], str]:
    if VIDEO.is_file():
        capture = cv2.VideoCapture(str(VIDEO))
        frames = []
        index = 0
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % 3 == 0:  # every third frame, as a 10 fps camera would sample it
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
        capture.release()
        if frames:
            return frames, f"{VIDEO.name} (every 3rd frame)"
    group = load_image(ensure_samples(home, default_fetcher(home))["group_t1.jpg"])
    frame = cv2.resize(group, (640, 360), interpolation=cv2.INTER_AREA)
    return [frame] * count, "insightface group photo t1.jpg resized to 640x360"


def timed(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_conversion(home: Path) -> dict[str, float]:
    fetcher = default_fetcher(home)
    dat = fetcher.read(DLIB_RESNET_DAT)
    pts = [fetcher.read(m) for m in (MTCNN_PNET, MTCNN_RNET, MTCNN_ONET)]
    dlib_s = min(timed(lambda: convert_dlib_resnet(dat).SerializeToString(), 3))
    mtcnn_s = min(
        timed(
            lambda: [
                g.SerializeToString()
                for g in convert_mtcnn(*(load_legacy_state_dict(p) for p in pts)).values()
            ],
            3,
        )
    )
    return {"dlib_resnet_s": round(dlib_s, 3), "mtcnn_s": round(mtcnn_s, 3)}


def bench_embedder(cache: ModelCache, runtime: RuntimeConfig, repeats: int) -> dict[str, dict]:
    embedder = Embedder.default(runtime, cache=cache)
    embedder.warm_up()
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    for batch in (1, 16, 64):
        chips = rng.integers(0, 256, (batch, 150, 150, 3), dtype=np.uint8)
        embedder.embed(chips)
        runs = max(repeats, 64 // batch * 2)
        times = timed(lambda chips=chips: embedder.embed(chips), runs)
        per_face = statistics.median(times) / batch * 1000
        results[f"batch_{batch}"] = {"ms_per_face": round(per_face, 3), "runs": runs}
    base = results["batch_1"]["ms_per_face"]
    for row in results.values():
        row["speedup_vs_batch_1"] = round(base / row["ms_per_face"], 2)
    return results


def bench_detector(
    cache: ModelCache, runtime: RuntimeConfig, frames: list[np.ndarray], repeats: int
) -> dict[str, dict]:
    mtcnn = cache.load("mtcnn")
    models = {s: mtcnn.file(f"{s}.onnx") for s in ("pnet", "rnet", "onet")}
    results: dict[str, dict] = {}
    for width, height in ((640, 360), (1920, 1080)):
        sized = [
            f if f.shape[1] == width else cv2.resize(f, (width, height), cv2.INTER_LINEAR)
            for f in frames
        ]
        for min_face in (20, 40):
            detector = MtcnnDetector.from_models(
                models, runtime, DetectorConfig(min_face_px=min_face)
            )
            detector.detect(sized[0])
            per_frame, faces = [], 0
            for _ in range(max(1, repeats // 2)):
                for frame in sized:
                    start = time.perf_counter()
                    found = detector.detect(frame)
                    per_frame.append(time.perf_counter() - start)
                    faces += len(found)
            results[f"{width}x{height}_min{min_face}"] = {
                "ms_per_frame_median": round(statistics.median(per_frame) * 1000, 1),
                "ms_per_frame_p95": round(float(np.percentile(per_frame, 95)) * 1000, 1),
                "faces_per_frame": round(faces / len(per_frame), 2),
            }
    base = results["640x360_min40"]["ms_per_frame_median"]
    for row in results.values():
        row["ratio_vs_640x360_min40"] = round(row["ms_per_frame_median"] / base, 2)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    configure_logging(level="WARNING")
    home = args.home or Path(os.environ.get("LFR_HOME") or default_home())
    cache = ModelCache(home / "models")
    prepare(cache, default_fetcher(home), progress=False)
    runtime = RuntimeConfig(device="cpu", intra_op_threads=args.threads)
    frames, frame_source = frames_360p(args.frames, home)
    report = {
        "machine": machine(
            onnxruntime=ort.__version__,
            opencv=cv2.__version__,
            load_average_1m=round(os.getloadavg()[0], 2),
        ),
        "frames": {"source": frame_source, "count": len(frames)},
        "conversion": bench_conversion(home),
        "embedder": bench_embedder(cache, runtime, args.repeats),
        "detector": bench_detector(cache, runtime, frames, args.repeats),
        "reference_2core_vm": {
            "embedder_ms_per_face_batch_16": 2.6,
            "detector_ms_per_frame_640x360_min40": 30,
        },
    }
    report["embedder_ratio_vs_reference_batch_16"] = round(
        report["embedder"]["batch_16"]["ms_per_face"] / 2.6, 2
    )
    report["detector_ratio_vs_reference_640x360_min40"] = round(
        report["detector"]["640x360_min40"]["ms_per_frame_median"] / 30, 2
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
