"""``lfr evaluate video`` on the real stage clip, through the production decision code.

The watchlist and truth file are tests/data/hamilton/ (photos from ../shared/data). Per
face track, Miranda and Lacamoire (25 px, blurred, at the piano) are alerted and nobody
falsely; per frame, behind the quality gate, Lacamoire is never alerted. Needs
../shared/data and the default models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lfr_actors.evaluate_video import evaluate_clip, load_entries, read_truth
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from tests.conftest import REPO, lfr_test_home

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

HAMILTON = REPO / "tests" / "data" / "hamilton"


def test_tracks_find_both_people_and_no_one_else(
    model_cache: ModelCache, shared_data: Path
) -> None:
    pipeline = FacePipeline.build(RuntimeConfig(), cache=model_cache)
    entries = load_entries(pipeline, HAMILTON / "watchlist.yaml")
    truth = read_truth(HAMILTON / "truth.csv", [e.entry_id for e in entries])
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    report = evaluate_clip(pipeline, clip, entries, threshold=0.6, every=3, truth=truth)
    assert report.frames == 275 and report.sampled == 92
    assert report.scores is not None
    tracks, frames = report.scores["tracks"], report.scores["frames"]
    assert tracks["false_alerts"] == frames["false_alerts"] == 0
    assert tracks["entries"]["lin-manuel-miranda"]["alerted"] == 2  # far, then close
    assert tracks["entries"]["alex-lacamoire"]["alerted"] >= 1
    assert frames["entries"]["alex-lacamoire"]["alerted"] == 0  # the gate drops his faces
    assert tracks["smallest_face_alerted_px"] < 30 <= frames["smallest_face_alerted_px"]
    assert [a.entry_id for a in report.track_alerts].count("lin-manuel-miranda") == 1
    decided = [t for t in report.tracks if t.decision]
    assert all(t.faces >= 5 and t.decision_distance <= 0.6 for t in decided)
    assert {t.track_id.split(":")[0] for t in report.tracks} == {"clip"}
    for rule in ("weighted_mean", "mean", "median", "votes"):
        assert report.alternative_scores is not None
        assert report.alternative_scores[rule]["false_alerts"] == 0
    # The frame-by-frame decisions cover every face of every sampled frame.
    assert {d.frame for d in report.frame_decisions} <= set(range(0, 275, 3))
    assert any(d.track_id for d in report.frame_decisions)


def test_the_command_prints_tracks_and_refuses_a_bad_truth_file(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    clip = str(shared_data / "video" / "short_hamilton_clip.mp4")
    base = [sys.executable, "-m", "lfr_actors.cli", "evaluate", "video", clip,
            "--watchlist", str(HAMILTON / "watchlist.yaml"), "--home", str(lfr_test_home()),
            "--offline", "--no-progress", "--every", "6"]  # fmt: skip
    bad = tmp_path / "truth.csv"
    bad.write_text("entry,first_frame\nlin-manuel-miranda,0\n")
    refused = subprocess.run(
        [*base, "--truth", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 2
    assert f"{bad}:1: missing column(s) last_frame" in refused.stderr
    done = subprocess.run(
        [*base, "--truth", str(HAMILTON / "truth.csv"), "--json", "--frames"],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["sampled"] == 46 and report["frame_decisions"]
    assert {"tracks", "frames"} <= set(report["scores"])
    text = subprocess.run(
        [*base, "--truth", str(HAMILTON / "truth.csv")],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    assert text.returncode == 0 and "alerts, track-based decisions" in text.stdout
