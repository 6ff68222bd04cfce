"""``lfr evaluate calibrate`` on the real photos of ``../shared/data`` with the real models.

The gallery is the first photo of four people; the probes are their other photos (mated)
and, as passers-by not on the watchlist, the two other people's photos and the dlib
detection photos (other people; the dogs photo has no face and is left out). Skips with
its reason where the photos or the models are missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lfr_actors.calibration import MIN_NON_MATED_PROBES, load_calibration
from lfr_actors.models.cache import ModelCache
from tests.integration.test_models_real import _lfr

pytestmark = [pytest.mark.models, pytest.mark.data]

ENROLLED = ("obama", "biden", "alex_lacamoire", "kit_harington")


def folders(shared_data: Path, root: Path, *, unknown: bool = True) -> tuple[Path, Path]:
    people = shared_data / "faces" / "people"
    gallery, probes = root / "gallery", root / "probes"
    for name in ENROLLED:
        photos = sorted((people / name).iterdir())
        (gallery / name).mkdir(parents=True)
        shutil.copy(photos[0], gallery / name)
        (probes / name).mkdir(parents=True)
        for photo in photos[1:]:
            shutil.copy(photo, probes / name)
    if unknown:
        (probes / "unknown").mkdir()
        others = [*(people / "rose_leslie").iterdir(), *(people / "lin_manuel_miranda").iterdir()]
        others += [p for p in (shared_data / "detection").glob("*.jpg") if p.stem != "dogs"]
        for photo in others:
            shutil.copy(photo, probes / "unknown")
    return gallery, probes


def test_calibrate_writes_the_file_and_prints_the_table(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    gallery, probes = folders(shared_data, tmp_path)
    out = tmp_path / "calibration.json"
    args = ["evaluate", "calibrate", "--gallery", str(gallery), "--probes", str(probes)]
    result = _lfr(*args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "N=10,000" in result.stdout and f"wrote {out}" in result.stdout
    calibration = load_calibration(out)
    assert calibration.model.name == "dlib_resnet_v1" and calibration.gallery.identities == 4
    assert calibration.probes.mated == 8
    assert calibration.probes.non_mated >= MIN_NON_MATED_PROBES
    text = out.read_text()
    assert str(tmp_path) not in text and ".jpg" not in text  # folder names only, no paths
    at = next(p for p in calibration.grid if p.threshold == 0.6)
    assert at.tpir == 1.0 and at.fpir_gallery_measured == 0.0
    assert at.p_upper > 0  # no false match seen is not no false match possible
    loose = next(p for p in calibration.grid if p.threshold == 0.9)
    assert loose.p > 0 and loose.fpir_gallery_measured > 0
    # An existing file is kept unless --force.
    again = _lfr(*args, "--out", str(out))
    assert again.returncode == 2 and "exists; choose another --out or pass --force" in again.stderr
    forced = _lfr(*args, "--out", str(out), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["format"] == "lfr-calibration"


def test_calibrate_without_non_mated_probes_says_so_and_writes_nothing(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path
) -> None:
    gallery, probes = folders(shared_data, tmp_path, unknown=False)
    out = tmp_path / "calibration.json"
    result = _lfr(
        "evaluate", "calibrate", "--gallery", str(gallery), "--probes", str(probes),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 2
    assert "the probes have no non-mated faces" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
