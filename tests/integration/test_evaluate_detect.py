"""``lfr evaluate detect`` on the shared annotated photos, both real detectors.

Asserts the report's shape, that its counts add up to the annotations, and bounds any
working detector meets on these photos (faces 37 to 109 px tall, clearly visible), not
exact figures. Needs ../shared/data/detection and the default models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lfr_actors.evaluate_detect import BANDS, read_annotations
from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO, lfr_test_home

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module")
def detection_data(shared_data: Path) -> Path:
    folder = shared_data / "detection"
    if not (folder / "testing.xml").is_file() or not (folder / "training.xml").is_file():
        pytest.skip(f"annotated detection photos not found in {folder}")
    return folder


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lfr_actors.cli", "evaluate", "detect", *args,
               "--home", str(lfr_test_home()), "--offline", "--no-progress"]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=600, check=False
    )


def test_both_detectors_on_the_testing_photos(
    model_cache: ModelCache, detection_data: Path
) -> None:
    testing = detection_data / "testing.xml"
    done = _run(str(testing), "--box-style-from", str(detection_data / "training.xml"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    images = read_annotations(testing)
    faces = sum(len(i.faces) for i in images)
    assert (report["images"], report["faces"], report["ignored"]) == (len(images), faces, 0)
    assert set(report["detectors"]) == {"mtcnn", "centerface"}
    for name, det in report["detectors"].items():
        bands = det["bands"]
        assert list(bands) == [band for band, _, _ in BANDS]
        assert sum(b["faces"] for b in bands.values()) == faces == det["faces"]
        assert sum(b["found"] for b in bands.values()) == det["found"]
        assert all(0 <= b["found"] <= b["faces"] for b in bands.values())
        assert bands[">80"]["faces"] > 0 and bands[">80"]["recall"] > 0.5, name
        assert det["recall"] > 0.5 and det["precision"] > 0.5, name
        assert det["detections"] == det["found"] + det["false_detections"]
        assert det["ms_per_image"] > 0
        style = det["box_style"]
        assert style["source"] == str(detection_data / "training.xml") and style["pairs"] >= 5
        # The detectors' boxes are taller than dlib's: the reason a style is measured.
        assert style["height_ratio"] > 1.0, name
    assert report["detectors"]["centerface"]["config"]["input_width"] == 640


def test_one_detector_at_a_larger_input_on_shrunk_photos(
    model_cache: ModelCache, detection_data: Path
) -> None:
    # At half size the testing faces are 18 to 55 px: the small bands fill.
    done = _run(str(detection_data / "testing.xml"), "--detector", "centerface",
                "--centerface-input", "1024x768", "--scale", "0.5", "--table")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{detection_data / 'testing.xml'} resized x0.5: 5 images")
    assert lines[2].split()[0] == "centerface" and len(lines) == 4
    assert "raw boxes" in lines[3]
