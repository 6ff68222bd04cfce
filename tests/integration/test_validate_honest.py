"""``lfr validate`` enrols every watchlist photo with the real models, as ``lfr up`` does.

A valid watchlist is reported as enrolled; a photo with no face and one with several are
both named (every problem, not the first), and nothing is written to a store.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lfr_actors.cli.main import main
from lfr_actors.models.cache import ModelCache
from tests.conftest import lfr_test_home
from tests.deployments import write_deployment
from tests.unit.test_validate import store_with_entry


def _photos(folder: Path, photos: dict[str, list[Path]]) -> None:
    watchlist = folder / "watchlist.yaml"
    data = yaml.safe_load(watchlist.read_text())
    for entry in data["entries"]:
        if entry["id"] in photos:
            entry["images"] = [str(p) for p in photos[entry["id"]]]
    watchlist.write_text(yaml.safe_dump(data, sort_keys=False))


def _validate(path: Path, capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", "--home", str(lfr_test_home()), "--no-progress", str(path)])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def test_a_valid_watchlist_is_enrolled(
    tmp_path: Path,
    shared_data: Path,
    model_cache: ModelCache,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama", "biden"])
    code, out, err = _validate(path, capfd)
    assert (code, err) == (0, "")
    assert "watchlist    enrolled: 2 entries, 2 photos, all usable" in out
    assert out.rstrip().endswith(f"{path}: valid")
    assert not (tmp_path / "data").exists()  # validate writes no store


def test_photos_with_no_face_or_several_are_all_named(
    tmp_path: Path,
    shared_data: Path,
    model_cache: ModelCache,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama", "biden"])
    blank = tmp_path / "blank.png"
    photo = cv2.imread(str(shared_data / "faces" / "people" / "obama" / "obama.jpg"))
    cv2.imwrite(str(blank), np.full_like(photo, 128))  # the photo's size, no face
    group = shared_data / "faces" / "scenes" / "obama_and_biden.jpg"
    _photos(tmp_path, {"obama": [blank], "biden": [group]})
    code, out, err = _validate(path, capfd)
    assert (code, out) == (2, "")
    assert f"{path}: watchlist enrolment failed; fix or remove these images" in err
    assert f"  obama: {blank}: " in err
    assert f"  biden: {group}: " in err
    assert err.splitlines()[-1] == f"{path}: 1 problem; nothing was started."


def test_a_stored_entry_is_not_enrolled_again_as_lfr_up_skips_it(
    tmp_path: Path,
    shared_data: Path,
    model_cache: ModelCache,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama", "biden"])
    store = store_with_entry(path, "obama")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 128, np.uint8))
    _photos(tmp_path, {"obama": [blank]})  # lfr up would not look at it again
    code, out, err = _validate(path, capfd)
    assert (code, err) == (0, "")
    assert "enrolled: 2 entries, 2 photos, all usable; 1 already stored" in out
    assert f"matches the stored record in {store}" in out
