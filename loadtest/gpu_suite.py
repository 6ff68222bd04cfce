# ruff: noqa: PLC0415 - ONNX Runtime and the project load only after --site is on sys.path
"""Every GPU measurement in one run, into one JSON file: one short session on a GPU host.

Sections, in this order, each in its own try/except (a failed section leaves its error
text in the JSON and the others still run), the JSON rewritten after each one:

1. ``environment``: the GPU (``nvidia-smi``), Python, PyTorch, ONNX Runtime's version,
   file and ``get_available_providers()``, the library paths set for Ray's workers;
2. ``gpu_check``: a CenterFace session built for the device, and the providers it REALLY
   runs on (``session.get_providers()``); on ``--device gpu`` the GPU sections run only
   when ``CUDAExecutionProvider`` comes first;
   ``gpu_tests``: the tests marked ``gpu`` (``tests/gpu``), by pytest in a child process
   with this run's paths and the prepared home as its test home;
3. ``embedder``: faces/s at batch 64 and 256, uint8 chips, through ``Embedder.embed``
   (I/O binding, chips copied from host memory each call) and with the chips already
   on the device (input and output bound there: the model's own ceiling);
4. ``detectors``: bench_detectors' tables: CenterFace by input size and batch (with the
   dynamic- against fixed-batch graph), MTCNN on the device and on the CPU (where
   production runs it), every row's ratio against MTCNN on the CPU at 640x360, 40 px;
5. ``cudnn_search``: CenterFace at 640x384 with cuDNN's HEURISTIC and EXHAUSTIVE
   algorithm search: session build + warm-up time and ms per frame by batch;
6. ``cameras``: bench_cameras' cameras per node on the device, a short schedule, per
   detector; no new N is started once the run's time budget (``--budget-s``) would be
   passed.

``sessions`` at the end lists every session's real providers. Nothing is downloaded:
the models (and the sample photos the camera scene uses) come from ``--models-home``.

On a GPU host (python3 there has PyTorch with CUDA 13 and the CPU ``onnxruntime``;
``onnxruntime-gpu`` and the project's missing dependencies are installed beside it).
``loadtest/gpu_kit.sh`` does all of this: ``build`` here makes the kit in parts under a
call's 64 MiB, ``calls`` prints the run calls, one part each, the last running the suite.
By hand:

    # here: a prepared lfr home (models/ and samples/, ~33 MB) and the wheels, carried
    echo /.gpu/ >> .git/info/exclude
    mkdir -p .gpu && cp -r ~/.local/share/lfr/models ~/.local/share/lfr/samples .gpu/
    # .gpu/wheels/: onnxruntime-gpu (split in parts under 64 MiB a call if needed, then
    # `cat` together there), structlog, pydantic, pydantic-core, annotated-types,
    # typing-inspection, usearch, numkong, msgspec, ruamel.yaml, tenacity (cp312
    # manylinux x86-64; the GPU image lacks these), and for the cameras section ray
    # (large: in parts too) with jsonschema, jsonschema-specifications, referencing, rpds-py
    # there (one run call, carry [".gpu"]):
    python3 -m pip install -q --no-index --no-deps --target /tmp/ortgpu .gpu/wheels/*.whl
    PYTHONUNBUFFERED=1 python3 loadtest/gpu_suite.py --site /tmp/ortgpu \
        --models-home .gpu --out $OUT/gpu_suite.json 2>&1 | tee $OUT/gpu_suite.log

Smoke test here (CPU): ``python loadtest/gpu_suite.py --device cpu --quick --out X.json``.

``--site DIR`` goes first on ``sys.path`` (so its ``onnxruntime`` is the GPU build) and
into ``PYTHONPATH`` for Ray's workers, with the repository root. PyTorch, when present, is
imported before ONNX Runtime: it loads the CUDA and cuDNN libraries its wheels carry,
which ONNX Runtime's CUDA provider then finds; for Ray's workers (which do not import
torch) those libraries' folders are put on ``LD_LIBRARY_PATH`` before Ray starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# -- set-up before ONNX Runtime is imported ------------------------------------------------


def library_dirs() -> list[str]:
    """Folders of the CUDA/cuDNN libraries that PyTorch's wheels carry (torch/lib, nvidia/*)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return []
    site = Path(spec.origin).parent.parent
    found = [Path(spec.origin).parent / "lib"]
    nvidia = site / "nvidia"
    if nvidia.is_dir():
        for path in sorted(nvidia.rglob("*.so*")):
            if path.parent not in found:
                found.append(path.parent)
    return [str(p) for p in found if p.is_dir()]


def prepare_imports(site: Path | None) -> dict[str, Any]:
    """``site`` first on sys.path, torch before onnxruntime, the same for Ray's workers."""
    done: dict[str, Any] = {}
    paths = [str(REPO), str(HERE)]
    if site is not None:
        paths.insert(0, str(site.resolve()))
    for path in reversed(paths):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([old] if old else [])])
    done["pythonpath"] = os.environ["PYTHONPATH"]
    try:
        import torch

        done["torch"] = torch.__version__
        done["torch_cuda"] = torch.version.cuda
        done["torch_sees_gpu"] = bool(torch.cuda.is_available())
    except ImportError:
        done["torch"] = None
    dirs = library_dirs()
    if dirs:
        old_ld = os.environ.get("LD_LIBRARY_PATH")
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*dirs, *([old_ld] if old_ld else [])])
        done["ld_library_path_for_workers"] = dirs
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if done["torch"] is None and callable(preload):
        with contextlib.suppress(Exception):
            preload()
            done["ort_preload_dlls"] = True
    return done


def models_home(path: Path) -> Path:
    """The lfr home holding ``models/``: ``path`` itself, or its parent if it is models/."""
    path = path.resolve()
    if (path / "models").is_dir():
        return path
    if (path / "mtcnn" / "manifest.json").is_file():
        return path.parent
    raise SystemExit(f"--models-home {path}: no models/ folder (a prepared lfr home) there")


# -- the sections --------------------------------------------------------------------------


def environment(prepared: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort
    from machine import machine

    gpu = None
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total"
        with contextlib.suppress(Exception):
            gpu = subprocess.run(
                ["nvidia-smi", query, "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout.strip()  # fmt: skip
    return {
        **machine(platform=platform.platform()),
        "gpu": gpu,
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "providers_available": ort.get_available_providers(),
        **prepared,
    }


def gpu_check(cache: Any, runtime: Any) -> dict[str, Any]:
    from lfr_actors.models.centerface import CenterFaceConfig
    from lfr_actors.models.convert.centerface import fix_input_size
    from lfr_actors.models.pipeline import default_detector_runtime
    from lfr_actors.models.runtime import build_session

    config = CenterFaceConfig()
    det_runtime = default_detector_runtime(config, runtime)
    graph = cache.load("centerface").file("centerface.onnx").read_bytes()
    fixed = fix_input_size(graph, config.input_height, config.input_width)
    started = time.perf_counter()
    try:
        session, report = build_session(fixed, det_runtime, name="centerface-check")
    except Exception as exc:  # ProviderUnavailableError names what really runs
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    active = list(session.get_providers())
    wanted_gpu = runtime.device == "gpu"
    return {
        "ok": (active[:1] == ["CUDAExecutionProvider"]) if wanted_gpu else True,
        "providers": active,
        "cuda_first": active[:1] == ["CUDAExecutionProvider"],
        "requested": list(report.requested),
        "build_s": round(time.perf_counter() - started, 2),
    }


def embedder_rates(
    cache: Any, runtime: Any, batches: list[int], seconds: float, sessions: dict[str, Any]
) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from lfr_actors.models.embedder import Embedder
    from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC

    spec = DEFAULT_EMBEDDER_SPEC.model_copy(update={"max_batch": max(batches)})
    embedder = Embedder.from_spec(spec, runtime, cache=cache)
    embedder.warm_up()
    sessions["embedder"] = list(embedder.session.get_providers())
    out: dict[str, Any] = {"io_binding": embedder.use_io_binding, "input": spec.input_dtype}
    rng = np.random.default_rng(0)
    for batch in batches:
        chips = rng.integers(0, 256, (batch, spec.chip_size, spec.chip_size, 3), dtype=np.uint8)
        embedder.embed(chips)
        calls = _timed_for(partial(embedder.embed, chips), seconds)
        row = {
            "faces_per_s": round(batch / statistics.median(calls)),
            "ms_per_batch": round(statistics.median(calls) * 1000, 3),
            "calls": len(calls),
        }
        if embedder.report.on_gpu:
            session = embedder.session
            binding = session.io_binding()
            resident = ort.OrtValue.ortvalue_from_numpy(chips, "cuda", runtime.gpu_id)
            binding.bind_ortvalue_input(spec.input_name, resident)
            binding.bind_output(spec.output_name, "cuda", runtime.gpu_id)
            session.run_with_iobinding(binding)
            resident_calls = _timed_for(partial(session.run_with_iobinding, binding), seconds)
            row["device_resident_faces_per_s"] = round(batch / statistics.median(resident_calls))
        out[f"batch_{batch}"] = row
        print(f"  embedder batch {batch}: {row}", file=sys.stderr, flush=True)
    return out


def _timed_for(fn: Callable[[], Any], seconds: float, at_least: int = 3) -> list[float]:
    """Call ``fn`` until ``seconds`` have passed and at least ``at_least`` times."""
    out: list[float] = []
    end = time.perf_counter() + seconds
    while len(out) < at_least or time.perf_counter() < end:
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def detectors(
    cache: Any, runtime: Any, home: Path, quick: bool, sessions: dict[str, Any]
) -> dict[str, Any]:
    import bench_detectors as bd

    from lfr_actors.models.runtime import RuntimeConfig

    photos, source = bd.load_photos(home)
    inputs = [(640, 384)] if quick else list(bd.INPUTS)
    batches = [1, 4] if quick else list(bd.BATCHES)
    mtcnn_sizes = [(640, 360)] if quick else list(bd.MTCNN_FRAMES)
    mtcnn_min = [40] if quick else list(bd.MTCNN_MIN_FACES)
    out: dict[str, Any] = {"frames": source}
    cpu = RuntimeConfig(device="cpu")
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("mtcnn_cpu", lambda: bd.bench_mtcnn(cache, cpu, photos, frame_sizes=mtcnn_sizes,
                                             min_faces=mtcnn_min, frames=4 if quick else 8,
                                             repeats=1)),
        ("centerface", lambda: bd.bench_centerface(cache, runtime, photos, inputs=inputs,
                                                   batches=batches,
                                                   repeats=2 if quick else 5)),
    ]  # fmt: skip
    if runtime.device != "cpu":
        parts.append(
            ("mtcnn_device", lambda: bd.bench_mtcnn(cache, runtime, photos,
                                                    frame_sizes=mtcnn_sizes, min_faces=mtcnn_min,
                                                    frames=4 if quick else 8, repeats=1))
        )  # fmt: skip
    for name, fn in parts:
        out[name] = _section(fn)
        sessions.update({f"{name}/{k}": v for k, v in out[name].get("providers", {}).items()})
    # Ratios against production's CPU detector at its live default, as bench_detectors does.
    with contextlib.suppress(KeyError, TypeError):
        base = out["mtcnn_cpu"]["rows"][bd.BASELINE]["ms_per_frame"]
        out["baseline"] = f"{bd.BASELINE} on the cpu ({base} ms/frame)"
        for part in ("mtcnn_cpu", "centerface", "mtcnn_device"):
            for row in out.get(part, {}).get("rows", {}).values():
                row[f"ratio_vs_cpu_{bd.BASELINE}"] = round(row["ms_per_frame"] / base, 4)
    return out


def cudnn_search(cache: Any, runtime: Any, home: Path, quick: bool) -> dict[str, Any]:
    import bench_detectors as bd

    from lfr_actors.models.centerface import CenterFaceConfig, CenterFaceDetector

    photos, _ = bd.load_photos(home)
    batches = [1, 8] if quick else [1, 4, 8, 16]
    frames = bd.make_frames(photos, 640, 360, max(batches))
    path = cache.load("centerface").file("centerface.onnx")
    out: dict[str, Any] = {}
    for search in ("HEURISTIC", "EXHAUSTIVE"):
        started = time.perf_counter()
        config = CenterFaceConfig(max_batch=max(batches))
        detector = CenterFaceDetector.from_model(
            path, dataclasses.replace(runtime, cudnn_conv_algo_search=search), config
        )
        detector.warm_up()
        row: dict[str, Any] = {"build_and_warm_up_s": round(time.perf_counter() - started, 2)}
        for n in batches:
            chunk = frames[:n]
            detector.detect_batch(chunk)
            calls = bd.timed(partial(detector.detect_batch, chunk), 5)
            row[f"b{n}_ms_per_frame"] = round(statistics.median(calls) / n * 1000, 3)
        out[search] = row
        print(f"  cudnn {search}: {row}", file=sys.stderr, flush=True)
    return out


def cameras(
    home: Path, device: str, quick: bool, deadline: float, sessions: dict[str, Any]
) -> dict[str, Any]:
    import bench_cameras as bc

    from lfr_actors.models.cache import default_fetcher, ensure_samples

    samples = ensure_samples(home, default_fetcher(home, offline=True))
    if quick:
        schedule = {"mtcnn": [1], "centerface": [1, 2]}
        seconds, warmup = 4.0, 2.0
    else:
        schedule = {"centerface": [2, 4, 8, 16, 24, 32], "mtcnn": [1, 2, 4, 8]}
        seconds, warmup = 8.0, 3.0
    out: dict[str, Any] = {"seconds_per_n": seconds, "warmup_s": warmup, "schedule": schedule}
    for name, ns in schedule.items():
        runs: list[dict[str, Any]] = []
        out[name] = {"runs": runs, "largest_sustained": 0}
        try:
            section = bc.detector_section(name)
        except ValueError as exc:
            out[name]["error"] = str(exc)
            continue
        out[name]["detector_section"] = section
        for n in ns:
            last = runs[-1]["wall_s"] if runs else 40.0
            if time.monotonic() + last * 1.5 > deadline:
                out[name]["stopped"] = f"the time budget would be passed before N={n} ended"
                break
            started = time.perf_counter()
            try:
                result = bc.camera_run(
                    home, samples, cameras=n, detector=section, device=device,
                    seconds=seconds, warmup=warmup, max_batch=16,
                )  # fmt: skip
            except Exception as exc:
                out[name]["error"] = f"N={n}: {type(exc).__name__}: {exc}"
                break
            result["wall_s"] = round(time.perf_counter() - started, 1)
            runs.append(result)
            sessions[f"cameras/{name}/{n}/embedder"] = result.get("embedder_providers")
            print(f"  cameras {name} x{n}: {result['reason']}", file=sys.stderr, flush=True)
            if not result["sustained"]:
                break
            out[name]["largest_sustained"] = n
        if runs:
            out[name]["table"] = bc.table({name: out[name]}).splitlines()
    return out


def gpu_tests(home: Path, timeout_s: float = 300.0) -> dict[str, Any]:
    """The tests marked ``gpu`` (tests/gpu), run by pytest in a child process.

    The child gets this run's paths: ``PYTHONPATH`` (``--site`` first) and the CUDA and
    cuDNN folders on ``LD_LIBRARY_PATH`` (:func:`prepare_imports`), so its
    ``import onnxruntime`` finds the CUDA provider without importing torch first; the
    prepared home is its test home, so nothing is downloaded. ``ok`` is true when pytest
    passed and ran at least one test rather than skipping them all.
    """
    command = [
        sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rA",
        "-p", "no:cacheprovider", "-o", "addopts=",
    ]  # fmt: skip
    env = {**os.environ, "LFR_TEST_HOME": str(home)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    lines = (done.stdout + done.stderr).splitlines()
    words = ("passed", "skipped", "failed", "error", "no tests ran")
    summary = next((x for x in reversed(lines) if " in " in x and any(w in x for w in words)), "")
    passed = sum(1 for x in lines if x.startswith("PASSED "))
    return {
        "ok": done.returncode == 0 and passed > 0,
        "returncode": done.returncode,
        "passed": passed,
        "skipped": sum(1 for x in lines if x.startswith("SKIPPED ")),
        "failed": sum(1 for x in lines if x.startswith(("FAILED ", "ERROR "))),
        "summary": summary.strip("= "),
        "tail": lines[-40:],
    }


def _section(fn: Callable[[], Any]) -> Any:
    """``fn()``, or its error (type, text, the end of the traceback) when it raises."""
    started = time.perf_counter()
    try:
        result = fn()
    except BaseException as exc:  # a section's failure must not end the suite
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc().splitlines()[-12:],
            "seconds": round(time.perf_counter() - started, 1),
        }
    if isinstance(result, dict):
        result.setdefault("seconds", round(time.perf_counter() - started, 1))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--quick", action="store_true", help="a short schedule (smoke test)")
    parser.add_argument("--site", type=Path, help="a folder to import packages from first")
    parser.add_argument("--models-home", type=Path, help="a prepared lfr home (models/ in it)")
    parser.add_argument(
        "--budget-s", type=float, default=360.0, help="no camera run starts past this budget"
    )
    parser.add_argument("--skip", nargs="*", default=[], help="sections to leave out")
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.budget_s
    prepared = prepare_imports(args.site)

    from lfr_actors.logs import configure as configure_logging
    from lfr_actors.models.cache import ModelCache, default_home
    from lfr_actors.models.runtime import RuntimeConfig

    configure_logging(level="WARNING")
    home = models_home(args.models_home) if args.models_home else default_home()
    cache = ModelCache(home / "models")
    runtime = RuntimeConfig(device=args.device)
    sessions: dict[str, Any] = {}
    report: dict[str, Any] = {
        "suite": "loadtest/gpu_suite.py",
        "device": args.device,
        "quick": args.quick,
        "models_home": str(home),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def write() -> None:
        report["sessions"] = sessions
        report["wall_s"] = round(time.monotonic() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        os.replace(tmp, args.out)

    def step(name: str, fn: Callable[[], Any]) -> None:
        if name in args.skip:
            report[name] = {"skipped": "--skip"}
        else:
            print(f"[{time.monotonic() - started:6.1f} s] {name}", file=sys.stderr, flush=True)
            report[name] = _section(fn)
        write()

    step("environment", lambda: environment(prepared))
    step("models", lambda: {n: cache.load(n).version
                            for n in ("centerface", "mtcnn", "dlib_resnet_v1")})  # fmt: skip
    step("gpu_check", lambda: gpu_check(cache, runtime))
    check = report["gpu_check"]
    if check.get("providers"):
        sessions["centerface-check"] = check["providers"]
    if not check.get("ok"):
        reason = f"skipped: no {args.device} session runs ({check.get('error') or check})"
        for name in ("embedder", "detectors", "cudnn_search", "cameras"):
            report[name] = {"skipped": reason}
        write()
        print(json.dumps(report["gpu_check"]), file=sys.stderr)
        return 1
    step("gpu_tests", lambda: gpu_tests(home))
    batches = [64] if args.quick else [64, 256]
    step("embedder", lambda: embedder_rates(
        cache, runtime, batches, 0.5 if args.quick else 2.0, sessions))  # fmt: skip
    step("detectors", lambda: detectors(cache, runtime, home, args.quick, sessions))
    if args.device == "gpu":
        step("cudnn_search", lambda: cudnn_search(cache, runtime, home, args.quick))
    else:
        report["cudnn_search"] = {"skipped": "cuDNN's search exists only on a GPU"}
    step("cameras", lambda: cameras(home, args.device, args.quick, deadline, sessions))
    failed = [
        f"{name}.{part}" if part else name
        for name, value in report.items()
        if isinstance(value, dict)
        for part, inner in [("", value), *value.items()]
        if isinstance(inner, dict) and "error" in inner
    ]
    report["sections_failed"] = failed
    write()
    print(f"wrote {args.out} in {report['wall_s']} s; sections failed: {failed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
