"""The detector, cameras and GPU benchmarks' helpers (loadtest/): no Ray, no timing asserted.

The fixed-batch CenterFace graph really has its batch pinned; frames are the size asked
for; the cameras benchmark's topology is a valid one (the real loader) with the detector
section it says; a run is judged sustained only without drops and with a measured p99
under a second; the GPU suite's pieces keep a failure to its own section.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from lfr_actors.models.cache import ModelCache
from lfr_actors.models.convert.centerface import INPUT_NAME, OUTPUTS, fix_input_size
from lfr_actors.models.runtime import RuntimeConfig, build_session
from lfr_actors.topology.loader import load_topology
from tests.conftest import lfr_test_home

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"


def _module(name: str) -> ModuleType:
    """A loadtest script as a module (they import their neighbours from beside them)."""
    if str(LOADTEST) not in sys.path:
        sys.path.insert(0, str(LOADTEST))
    return importlib.import_module(name)


bd = _module("bench_detectors")
bc = _module("bench_cameras")
gs = _module("gpu_suite")


# --- bench_detectors ------------------------------------------------------------------------


def test_a_photo_is_fitted_into_the_frame_centred_on_grey() -> None:
    photo = np.full((100, 50, 3), 200, np.uint8)  # tall: grey bands left and right
    frame = bd.fit(photo, 320, 180)
    assert frame.shape == (180, 320, 3)
    assert (frame[:, :100] == 114).all() and (frame[:, -100:] == 114).all()
    assert (frame[:, 160] == 200).all()


def test_frames_cycle_the_photos_or_are_seeded_noise() -> None:
    photos = [np.full((10, 10, 3), v, np.uint8) for v in (10, 20)]
    frames = bd.make_frames(photos, 64, 36, 5)
    assert [int(f[18, 32, 0]) for f in frames] == [10, 20, 10, 20, 10]
    noise = bd.make_frames([], 64, 36, 2)
    assert noise[0].shape == (36, 64, 3) and not np.array_equal(noise[0], noise[1])
    assert np.array_equal(noise[0], bd.make_frames([], 64, 36, 1)[0])


def test_the_fixed_batch_graph_runs_at_its_batch_only(model_cache: ModelCache) -> None:
    graph = model_cache.load("centerface").file("centerface.onnx").read_bytes()
    pinned = bd.pin_batch(fix_input_size(graph, 64, 96), 2)
    session, _ = build_session(pinned, RuntimeConfig(), name="centerface-fixed")
    assert session.get_inputs()[0].shape == [2, 64, 96, 3]
    heat = session.run(list(OUTPUTS), {INPUT_NAME: np.zeros((2, 64, 96, 3), np.uint8)})[0]
    assert heat.shape == (2, 1, 16, 24)
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        session.run(list(OUTPUTS), {INPUT_NAME: np.zeros((3, 64, 96, 3), np.uint8)})


def test_ratios_are_against_mtcnn_at_640x360_and_40_px() -> None:
    report: dict[str, Any] = {
        "mtcnn": {"rows": {bd.BASELINE: {"ms_per_frame": 40.0}}},
        "centerface": {"rows": {"centerface_640x384_b1": {"ms_per_frame": 10.0}}},
    }
    bd.add_ratios(report)
    assert report["centerface"]["rows"]["centerface_640x384_b1"][f"ratio_vs_{bd.BASELINE}"] == 0.25
    assert report["mtcnn"]["rows"][bd.BASELINE][f"ratio_vs_{bd.BASELINE}"] == 1.0


# --- bench_cameras --------------------------------------------------------------------------


def test_the_detector_section_names_the_model() -> None:
    assert bc.detector_section("centerface") == {"model": "centerface", "input_size": [640, 384]}
    assert bc.detector_section("mtcnn") == {"model": "mtcnn", "min_face_px": 40}
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        bc.detector_section("yolo")


def test_the_cameras_topology_is_valid_with_paced_1280x720_cameras(tmp_path: Path) -> None:
    samples = {}
    for name in ("obama.jpg", "obama2.jpg", "group_t1.jpg"):
        samples[name] = tmp_path / name
        samples[name].write_bytes(b"not read by the loader")
    path = bc.write_topology(
        tmp_path / "run", samples, cameras=3, frames=50, detector=bc.detector_section("mtcnn"),
        device="cpu", max_batch=8, replicas=1,
    )  # fmt: skip
    topology = load_topology(path)
    assert len(topology.cameras) == 3
    camera = topology.cameras[0]
    assert camera.fps == 10 and camera.pace == "realtime"
    assert (camera.source.width, camera.source.height) == (1280, 720)
    assert topology.embedder.detector.min_face_px == 40


def _result(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cut_off": False,
        "frames_dropped": 0,
        "frames_failed": 0,
        "alert_stored_latency_ms": {"p50": 300.0, "p95": 500.0, "p99": 700.0},
    }
    return {**base, **changes}


def test_sustained_needs_no_drop_and_a_measured_p99_under_a_second() -> None:
    assert bc.sustained(_result())[0]
    assert not bc.sustained(_result(frames_dropped=1))[0]
    assert not bc.sustained(_result(frames_failed=2))[0]
    assert not bc.sustained(_result(cut_off=True))[0]
    late = _result(alert_stored_latency_ms={"p50": 1.0, "p95": 2.0, "p99": 1000.0})
    assert "p99 1000 ms" in bc.sustained(late)[1]
    unmeasured = _result(alert_stored_latency_ms={"p50": None, "p95": None, "p99": None})
    assert bc.sustained(unmeasured) == (
        False,
        "no alert stored in the window: capture -> stored p99 not measured",
    )


def test_time_per_frame_divides_the_batch_medians_and_leaves_an_untimed_align_null() -> None:
    cameras = [{"read_ms_median": 2.0}, {"read_ms_median": 4.0}, {"read_ms_median": None}]
    embedder = {
        "stage_ms_median": {"detect": 40.0, "embed": 8.0, "search": 1.0, "alerts": 2.0,
                            "batch": 60.0},
        "batch_size_mean": 4.0,
    }  # fmt: skip
    time_ = bc.where_the_time_goes(cameras, embedder, frames_per_s=20.0)
    per_frame = time_["ms_per_frame"]
    assert per_frame["decode"] == 3.0 and per_frame["detect"] == 10.0
    assert per_frame["store"] == 0.5 and per_frame["align"] is None
    assert time_["embedder_load"] == 0.3  # 15 ms a frame at 20 frames/s
    assert not time_["align_timed_apart"]
    embedder["stage_ms_median"]["align"] = 12.0
    assert bc.where_the_time_goes(cameras, embedder, 20.0)["ms_per_frame"]["align"] == 3.0


def test_alert_latencies_since_keep_only_sightings_captured_from_then(tmp_path: Path) -> None:
    db = tmp_path / "alerts.sqlite3"
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE alert_events (at REAL, alert TEXT)")
    for captured, stored in ((100.0, 100.5), (200.0, 200.25)):
        connection.execute(
            "INSERT INTO alert_events VALUES (?, ?)", (stored, json.dumps({"last_seen": captured}))
        )
    connection.commit()
    connection.close()
    assert bc.alert_latencies(db) == [0.5, 0.25]
    assert bc.alert_latencies(db, since=150.0) == [0.25]


# --- gpu_suite ------------------------------------------------------------------------------


def test_a_failing_section_leaves_its_error_not_an_exception() -> None:
    def broken() -> None:
        raise RuntimeError("no CUDA here")

    out = gs._section(broken)
    assert out["error"] == "RuntimeError: no CUDA here"
    assert any("no CUDA here" in line for line in out["traceback"])
    assert gs._section(lambda: {"value": 1})["value"] == 1


def test_models_home_is_the_lfr_home_or_its_models_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "mtcnn").mkdir(parents=True)
    (tmp_path / "models" / "mtcnn" / "manifest.json").write_text("{}")
    assert gs.models_home(tmp_path) == tmp_path.resolve()
    assert gs.models_home(tmp_path / "models") == tmp_path.resolve()
    with pytest.raises(SystemExit, match="no models/ folder"):
        gs.models_home(tmp_path / "models" / "mtcnn")


def test_the_gpu_tests_section_runs_them_and_says_when_none_ran_on_a_gpu() -> None:
    """Here (no CUDA) every gpu test skips: the section must not read that as a pass."""
    out = gs.gpu_tests(lfr_test_home(), timeout_s=120)
    assert out["returncode"] == 0 and out["failed"] == 0
    if out["passed"]:  # a machine with onnxruntime-gpu and a GPU
        assert out["ok"] is True
    else:
        assert out["ok"] is False and out["skipped"] >= 3
        assert "skipped in" in out["summary"]
