"""Detector cost by batch size and resolution: CenterFace and MTCNN, on the CPU or a GPU.

Every figure is a median over timed calls after a warm-up call, in milliseconds per frame
(a call's time divided by its batch size), measured in this run:

- **CenterFace** at inputs 640x384, 960x544 and 1280x736, batch sizes 1, 2, 4, 8, 16: the
  production call (``detect_batch``: letterbox, one inference, vectorised decode and
  overlap suppression). Each input is fed frames of its own width at 16:9 (640x360,
  960x540, 1280x720), so the letterbox pads and does not scale. The same batch is also
  run through the bare session of two graphs, to answer the issue's question of which
  ONNX Runtime runs faster: the cached graph with H and W fixed and the batch dynamic
  (what production builds), and a copy with the batch fixed too (``[N, H, W, 3]``, built
  here from the cached graph by pinning dimension 0). Both are reported with their ratio
  (timed in alternating blocks; two sessions share the cores, so these bare figures can
  sit above the production call's, which runs alone).
- **MTCNN** on 640x360 and 1280x720 frames at a minimum face of 20 and 40 px, one frame
  per call (its shapes change with every image, so it has no batch).

Ratios are against baselines of the same run: every row against MTCNN on 640x360 at
40 px (production's CPU detector at its live default), and CenterFace's batches against
batch 1 at the same input.

Frames are real photos letterboxed into the frame size (grey around): the scenes of
``../shared/data/faces/scenes`` where that folder exists, else the sample photos in the
model home (``samples/``), else synthetic noise frames; the report says which.

    python loadtest/bench_detectors.py [--device cpu|gpu] [--home DIR] [--repeats 3]
        [--batches 1 2 4 8 16] [--inputs 640x384 960x544 1280x736] [--json PATH]

CenterFace runs as production runs it (``default_detector_runtime``: on a GPU, cuDNN's
EXHAUSTIVE search); MTCNN runs on the device asked for (production keeps it on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.logs import configure as configure_logging
from lfr_actors.models.cache import ModelCache, default_fetcher, default_home, prepare
from lfr_actors.models.centerface import CenterFaceConfig, CenterFaceDetector
from lfr_actors.models.convert.centerface import INPUT_NAME, OUTPUTS, fix_input_size
from lfr_actors.models.detector import DetectorConfig
from lfr_actors.models.detectors import build_detector
from lfr_actors.models.pipeline import default_detector_runtime
from lfr_actors.models.runtime import RuntimeConfig, build_session

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "data" / "faces" / "scenes"

INPUTS = ((640, 384), (960, 544), (1280, 736))
BATCHES = (1, 2, 4, 8, 16)
MTCNN_FRAMES = ((640, 360), (1280, 720))
MTCNN_MIN_FACES = (20, 40)
BASELINE = "mtcnn_640x360_min40"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


# -- frames ------------------------------------------------------------------------------


def load_photos(home: Path, scenes: Path = SCENES) -> tuple[list[np.ndarray], str]:
    """Real RGB photos to make frames from, and where they came from (nothing downloaded)."""
    for folder, label in ((scenes, "shared/data/faces/scenes"), (home / "samples", "samples")):
        if not folder.is_dir():
            continue
        photos = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in PHOTO_SUFFIXES:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is not None:
                    photos.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if photos:
            return photos, f"{len(photos)} photos of {label} ({folder}), letterboxed"
    return [], "synthetic noise frames (no photos found)"


def fit(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """``photo`` scaled to fit ``width`` x ``height``, centred on grey."""
    h, w = photo.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    filter_ = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(photo, (new_w, new_h), interpolation=filter_)
    frame = np.full((height, width, 3), 114, np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    frame[y : y + new_h, x : x + new_w] = resized
    return frame


def make_frames(photos: Sequence[np.ndarray], width: int, height: int, count: int) -> list:
    """``count`` frames of ``width`` x ``height``: the photos in turn, or seeded noise."""
    if photos:
        fitted = [fit(p, width, height) for p in photos]
        return [fitted[k % len(fitted)] for k in range(count)]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


# -- timing ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# -- CenterFace --------------------------------------------------------------------------


def pin_batch(model: bytes, batch: int) -> bytes:
    """``model`` (a CenterFace graph with H and W fixed) with its batch fixed at ``batch``."""
    graph = onnx.load_model_from_string(model)
    for value in (*graph.graph.input, *graph.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


def _bare_run(session: ort.InferenceSession, batch: np.ndarray) -> None:
    session.run(list(OUTPUTS), {INPUT_NAME: batch})


def bench_centerface(
    cache: ModelCache,
    runtime: RuntimeConfig,
    photos: Sequence[np.ndarray],
    *,
    inputs: Sequence[tuple[int, int]] = INPUTS,
    batches: Sequence[int] = BATCHES,
    repeats: int = 3,
    compare_fixed_batch: bool = True,
) -> dict[str, Any]:
    """CenterFace ms per frame for each input size and batch size (see the module doc).

    ``runtime`` is the embedder's; the detector gets production's runtime for it.
    """
    graph = cache.load("centerface").file("centerface.onnx").read_bytes()
    rows: dict[str, Any] = {}
    providers: dict[str, list[str]] = {}
    for width, height in inputs:
        config = CenterFaceConfig(input_width=width, input_height=height, max_batch=max(batches))
        det_runtime = default_detector_runtime(config, runtime)
        detector = build_detector(config, det_runtime, cache)
        assert isinstance(detector, CenterFaceDetector)
        detector.warm_up()
        providers[f"centerface_{width}x{height}"] = list(detector.session.get_providers())
        frames = make_frames(photos, width, width * 9 // 16, max(batches))
        fixed_hw = fix_input_size(graph, height, width)
        for n in batches:
            chunk = frames[:n]
            detector.detect_batch(chunk)  # a warm-up call at this batch size
            calls = timed(partial(detector.detect_batch, chunk), repeats)
            faces = sum(len(d) for d in detector.detect_batch(chunk))
            row: dict[str, Any] = {
                "frame": f"{width}x{width * 9 // 16}",
                "batch": n,
                "ms_per_frame": ms(statistics.median(calls) / n),
                "ms_per_call": ms(statistics.median(calls)),
                "faces_per_frame": round(faces / n, 2),
                "repeats": repeats,
            }
            if compare_fixed_batch:
                prepared = detector.letterbox(chunk).batch
                fixed, _ = build_session(pin_batch(fixed_hw, n), det_runtime, name="centerface")
                # Two blocks each, alternating, so a change in the machine's load falls on
                # both alike; each block starts with an untimed call (the other session's
                # threads may still be spinning after its last run).
                dynamic: list[float] = []
                fixed_calls: list[float] = []
                for block in range(4):
                    session, out = (
                        (detector.session, dynamic) if block % 2 == 0 else (fixed, fixed_calls)
                    )
                    _bare_run(session, prepared)
                    out += timed(partial(_bare_run, session, prepared), max(1, repeats // 2))
                dynamic_s, fixed_s = statistics.median(dynamic), statistics.median(fixed_calls)
                row["infer_ms_per_frame_dynamic_batch"] = ms(dynamic_s / n)
                row["infer_ms_per_frame_fixed_batch"] = ms(fixed_s / n)
                row["fixed_over_dynamic"] = round(fixed_s / dynamic_s, 3)
                del fixed
            rows[f"centerface_{width}x{height}_b{n}"] = row
            print(f"  centerface {width}x{height} batch {n}: {row['ms_per_frame']} ms/frame",
                  file=sys.stderr, flush=True)  # fmt: skip
        for n in batches:
            base = rows[f"centerface_{width}x{height}_b{batches[0]}"]["ms_per_frame"]
            row = rows[f"centerface_{width}x{height}_b{n}"]
            row[f"speedup_vs_batch_{batches[0]}"] = round(base / row["ms_per_frame"], 2)
    used = default_detector_runtime(CenterFaceConfig(), runtime)
    return {"rows": rows, "providers": providers, "runtime": _runtime_text(used)}


# -- MTCNN -------------------------------------------------------------------------------


def bench_mtcnn(
    cache: ModelCache,
    runtime: RuntimeConfig,
    photos: Sequence[np.ndarray],
    *,
    frame_sizes: Sequence[tuple[int, int]] = MTCNN_FRAMES,
    min_faces: Sequence[int] = MTCNN_MIN_FACES,
    frames: int = 8,
    repeats: int = 2,
) -> dict[str, Any]:
    """MTCNN ms per frame, one frame per call, for each frame size and minimum face."""
    rows: dict[str, Any] = {}
    providers: dict[str, list[str]] = {}
    for width, height in frame_sizes:
        sized = make_frames(photos, width, height, frames)
        for min_face in min_faces:
            detector = build_detector(DetectorConfig(min_face_px=min_face), runtime, cache)
            detector.warm_up()
            detector.detect(sized[0])
            per_frame: list[float] = []
            faces = 0
            for _ in range(repeats):
                for frame in sized:
                    start = time.perf_counter()
                    found = detector.detect(frame)
                    per_frame.append(time.perf_counter() - start)
                    faces += len(found)
            key = f"mtcnn_{width}x{height}_min{min_face}"
            rows[key] = {
                "frame": f"{width}x{height}",
                "min_face_px": min_face,
                "batch": 1,
                "ms_per_frame": ms(statistics.median(per_frame)),
                "ms_per_frame_p95": ms(float(np.percentile(per_frame, 95))),
                "faces_per_frame": round(faces / len(per_frame), 2),
                "calls": len(per_frame),
            }
            sessions = getattr(detector, "_sessions", {})
            providers[key] = sorted({p for s in sessions.values() for p in s.get_providers()})
            print(f"  {key}: {rows[key]['ms_per_frame']} ms/frame", file=sys.stderr, flush=True)
    return {"rows": rows, "providers": providers, "runtime": _runtime_text(runtime)}


def _runtime_text(runtime: RuntimeConfig) -> str:
    if runtime.device == "cpu":
        threads = runtime.intra_op_threads or "ORT's choice of"
        return f"cpu, {threads} intra-op threads"
    search = runtime.cudnn_conv_algo_search
    return f"{runtime.device} {runtime.gpu_id}, cudnn_conv_algo_search {search}"


# -- the report --------------------------------------------------------------------------


def add_ratios(report: dict[str, Any]) -> None:
    """Each row's ``ratio_vs_<baseline>`` (its ms per frame over the baseline's), in place."""
    rows = {
        **report.get("mtcnn", {}).get("rows", {}),
        **report.get("centerface", {}).get("rows", {}),
    }
    base = rows.get(BASELINE)
    if base is None:
        return
    report["baseline"] = f"{BASELINE} ({base['ms_per_frame']} ms/frame)"
    for row in rows.values():
        row[f"ratio_vs_{BASELINE}"] = round(row["ms_per_frame"] / base["ms_per_frame"], 3)


def table(report: dict[str, Any]) -> str:
    """The report's rows as a fixed-width text table."""
    head = (
        f"{'detector':<30} {'frame':>9} {'batch':>5} {'ms/frame':>9} {'vs base':>8} "
        f"{'faces':>6} {'dyn ms':>8} {'fixed ms':>8} {'fix/dyn':>7}"
    )
    lines = [head, "-" * len(head)]
    for section in ("mtcnn", "centerface"):
        for key, row in report.get(section, {}).get("rows", {}).items():
            name = key.rsplit("_b", 1)[0] if section == "centerface" else key
            lines.append(
                f"{name:<30} {row['frame']:>9} {row['batch']:>5} {row['ms_per_frame']:>9.1f} "
                f"{cell(row.get(f'ratio_vs_{BASELINE}'), 8, 2)} "
                f"{row['faces_per_frame']:>6.2f} "
                f"{cell(row.get('infer_ms_per_frame_dynamic_batch'))} "
                f"{cell(row.get('infer_ms_per_frame_fixed_batch'))} "
                f"{cell(row.get('fixed_over_dynamic'), 7, 3)}"
            )
    return "\n".join(lines)


def cell(value: float | None, width: int = 8, digits: int = 1) -> str:
    """A number right-aligned in ``width`` with ``digits`` decimals, or '-' for None."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def run(
    cache: ModelCache,
    runtime: RuntimeConfig,
    home: Path,
    *,
    inputs: Sequence[tuple[int, int]] = INPUTS,
    batches: Sequence[int] = BATCHES,
    repeats: int = 3,
    mtcnn_frames: int = 8,
    mtcnn_sizes: Sequence[tuple[int, int]] = MTCNN_FRAMES,
    detectors: Sequence[str] = ("mtcnn", "centerface"),
) -> dict[str, Any]:
    """The whole report: frames' source, each detector's rows, ratios (gpu_suite calls this)."""
    photos, source = load_photos(home)
    report: dict[str, Any] = {"frames": source, "device": runtime.device}
    if "mtcnn" in detectors:
        report["mtcnn"] = bench_mtcnn(
            cache, runtime, photos, frame_sizes=mtcnn_sizes, frames=mtcnn_frames,
            repeats=max(1, repeats - 1),
        )  # fmt: skip
    if "centerface" in detectors:
        report["centerface"] = bench_centerface(
            cache, runtime, photos, inputs=inputs, batches=batches, repeats=repeats
        )
    add_ratios(report)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--home", type=Path, default=None, help="the lfr home (models/ in it)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per CenterFace cell")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--inputs", type=parse_size, nargs="+", default=list(INPUTS))
    parser.add_argument("--mtcnn-frames", type=int, default=8, help="frames per MTCNN cell")
    parser.add_argument("--detectors", nargs="+", choices=("mtcnn", "centerface"),
                        default=["mtcnn", "centerface"])  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    parser.add_argument("--json", type=Path, help="write the JSON report here too")
    args = parser.parse_args()
    if args.repeats < 1 or args.mtcnn_frames < 1 or min(args.batches) < 1:
        parser.error("--repeats, --mtcnn-frames and --batches must be 1 or more")
    for width, height in args.inputs:
        try:
            CenterFaceConfig(input_width=width, input_height=height)
        except ValueError as exc:
            parser.error(f"--inputs {width}x{height}: {exc}")
    configure_logging(level="WARNING")
    home = (args.home or Path(os.environ.get("LFR_HOME") or default_home())).resolve()
    cache = ModelCache(home / "models")
    prepare(cache, default_fetcher(home), names=["mtcnn", "centerface"], progress=False)
    runtime = RuntimeConfig(device=args.device, intra_op_threads=args.threads)
    started = time.perf_counter()
    report = {
        "machine": machine(
            onnxruntime=ort.__version__,
            providers_available=ort.get_available_providers(),
            load_average_1m=round(os.getloadavg()[0], 2),
        ),
        **run(
            cache, runtime, home, inputs=args.inputs, batches=sorted(set(args.batches)),
            repeats=args.repeats, mtcnn_frames=args.mtcnn_frames, detectors=args.detectors,
        ),
    }  # fmt: skip
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(table(report))
    print(f"frames: {report['frames']}; baseline: {report.get('baseline')}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
