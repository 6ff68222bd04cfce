"""The calibration's estimator on synthetic scores, its file and the loader's refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_actors.calibration import (
    MIN_NON_MATED_COMPARISONS,
    MIN_NON_MATED_PROBES,
    CalibrationError,
    CalibrationFile,
    ThresholdOutsideCalibrationError,
    check_model,
    estimate,
    expected_false_alerts,
    expected_false_alerts_per_1000,
    false_alert_figures,
    format_table,
    fpir,
    load_calibration,
    parse_calibration,
    upper_bound,
)
from lfr_actors.evaluate import EvaluationInputError
from tests.calibration_samples import GRID, document, known_p
from tests.calibration_samples import scores as _scores


def test_known_p_gives_known_fpir_for_any_watchlist_size() -> None:
    cal = CalibrationFile.model_validate(document(known_p(0.01)))
    at = next(p for p in cal.grid if p.threshold == 0.6)
    assert at.false_matches == 10 and at.p == pytest.approx(0.01)
    for n in (1, 100, 1000, 10000):
        expected = 1000 * (1 - (1 - 0.01) ** n)
        assert expected_false_alerts_per_1000(cal, n, 0.6) == pytest.approx(expected)
    # Below every false match: nothing expected, but the bound is not zero.
    low = expected_false_alerts(cal, 1000, 0.5)
    assert low.per_1000 == 0.0 and low.upper_per_1000 > 0
    assert expected_false_alerts_per_1000(cal, 0, 0.6) == 0.0


def test_zero_false_matches_gives_a_rule_of_three_bound_not_zero() -> None:
    cal = CalibrationFile.model_validate(document(known_p(0.0)))
    n = cal.comparisons.non_mated
    for point in cal.grid:
        assert point.p == 0.0 and point.p_upper > 0
        assert point.p_upper == pytest.approx(1 - 0.05 ** (1 / n))
        assert point.p_upper == pytest.approx(3 / n, rel=0.01)
    exp = expected_false_alerts(cal, 100, 0.6)
    assert exp.per_1000 == 0.0 and exp.upper_per_1000 == pytest.approx(
        1000 * fpir(3 / n, 100), rel=0.02
    )


def test_upper_bound_is_clopper_pearson_then_wilson() -> None:
    assert upper_bound(0, 300) == pytest.approx(0.009936, abs=1e-6)
    assert upper_bound(5, 100) == pytest.approx(0.1023, abs=2e-4)  # exact binomial
    assert upper_bound(10, 10) == 1.0
    # Where the two meet they agree to a few per cent.
    assert upper_bound(300, 1000) == pytest.approx(0.3243, abs=2e-3)
    with pytest.raises(ValueError):
        upper_bound(1, 0)


def test_the_model_is_checked_against_fpir_measured_at_the_gallery_size() -> None:
    # Independent scores: the measured FPIR at the gallery size is close to the model's.
    rng = np.random.default_rng(7)
    d = rng.uniform(0.4, 1.0, (4000, 5))
    cal = CalibrationFile.model_validate(document(_scores(d, ["unknown"] * 4000, list("abcde"))))
    at = next(p for p in cal.grid if p.threshold == 0.6)
    assert at.p == pytest.approx(1 / 3, abs=0.01)
    assert at.fpir_gallery_modelled == pytest.approx(1 - (2 / 3) ** 5, abs=0.01)
    assert at.fpir_gallery_measured == pytest.approx(at.fpir_gallery_modelled, abs=0.02)


def test_tpir_counts_mated_probes_found_rank_one_and_within() -> None:
    d = np.full((14, 3), 0.9)
    probe_ids = ["unknown"] * 10 + ["a", "b", "c", "c"]
    d[10, 0] = 0.35  # a, right, within 0.4
    d[11, 1] = 0.55  # b, right, within 0.6 only
    d[12, 0] = 0.3  # c's closest is a: wrong at every threshold
    d[12, 2] = 0.5
    d[13, 2] = 0.65  # c, right, beyond 0.6
    cal = CalibrationFile.model_validate(document(_scores(d, probe_ids, ["a", "b", "c"])))
    tpir = {p.threshold: p.tpir for p in cal.grid}
    assert tpir == {0.3: 0.0, 0.4: 0.25, 0.5: 0.25, 0.6: 0.5, 0.7: 0.75}
    # Mated probes add their other identities to the non-mated comparisons.
    assert cal.comparisons.from_non_mated_probes == 30 and cal.comparisons.from_mated_probes == 8
    # c-probe's 0.3 against a is a false match from 0.3 on.
    assert cal.grid[0].false_matches == 1


def test_no_non_mated_probes_is_refused() -> None:
    d = np.full((12, 2), 0.9)
    with pytest.raises(EvaluationInputError, match=r"no non-mated faces.*nothing was written"):
        estimate(d, np.array([0, 1] * 6), GRID)


@pytest.mark.parametrize(
    ("probes", "identities"), [(MIN_NON_MATED_PROBES - 1, 10), (MIN_NON_MATED_PROBES, 2)]
)
def test_too_few_non_mated_is_refused(probes: int, identities: int) -> None:
    assert probes * identities < MIN_NON_MATED_COMPARISONS or probes < MIN_NON_MATED_PROBES
    d = np.full((probes, identities), 0.9)
    with pytest.raises(EvaluationInputError, match="too few non-mated faces"):
        estimate(d, np.full(probes, -1), GRID)


def test_the_file_has_no_paths_or_embeddings_and_round_trips(tmp_path: Path) -> None:
    doc = document(known_p(0.01))
    text = json.dumps(doc)
    assert "/data" not in text and doc["gallery"]["folder"] == "gallery"
    path = tmp_path / "cal.json"
    path.write_text(text)
    loaded = load_calibration(path)
    assert loaded.model.name == "dlib_resnet_v1" and loaded.version == 1
    assert loaded.model_dump(mode="json") == doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="something-else"), "not a calibration file"),
        (lambda d: d.update(version=2), "version 2; this program reads version 1"),
        (lambda d: d["grid"][1].update(p=0.5), r"grid\[1\]\.p: p is not false_matches"),
        (
            lambda d: d["grid"][1].update(threshold=0.2),
            r"grid\[1\]\.threshold: thresholds must rise strictly",
        ),
        (lambda d: d["grid"][0].update(p_upper=0.0), r"p_upper must be above p"),
        (lambda d: d["model"].pop("metric"), "model.metric: Field required"),
        (lambda d: d.update(embeddings=[1, 2]), "embeddings: Extra inputs"),
        (lambda d: d["probes"].update(non_mated=3), "probes.non_mated"),
    ],
)
def test_loader_refuses_other_and_corrupt_files(change: Any, message: str, tmp_path: Path) -> None:
    doc = document(known_p(0.01))
    change(doc)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError, match=message) as info:
        load_calibration(path)
    assert "\n" not in str(info.value)


def test_loader_refuses_unreadable_and_broken_json(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot be read"):
        load_calibration(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text('{"format": ')
    with pytest.raises(CalibrationError, match=r"bad.json:1: not valid JSON.*corrupt"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(CalibrationError, match="a JSON object is expected"):
        parse_calibration([1, 2])


def test_other_model_is_refused() -> None:
    cal = CalibrationFile.model_validate(document(known_p(0.01)))
    check_model(cal, name="dlib_resnet_v1", version="1.0", metric="euclidean", source="f")
    with pytest.raises(CalibrationError, match=r"calibrates model dlib_resnet_v1 1\.0"):
        check_model(cal, name="arcface", version="2", metric="cosine", source="f")


def test_interpolation_and_the_calibrated_range() -> None:
    cal = CalibrationFile.model_validate(document(known_p(0.02), grid=[0.5, 0.6]))
    # p rises linearly from 0 at 0.5 to 0.02 at 0.6: 0.01 halfway.
    assert expected_false_alerts_per_1000(cal, 1, 0.55) == pytest.approx(10.0)
    with pytest.raises(ThresholdOutsideCalibrationError, match="outside the calibrated range"):
        expected_false_alerts_per_1000(cal, 100, 0.65)


def test_figures_beside_the_observed_rate_and_their_reasons() -> None:
    cal = CalibrationFile.model_validate(document(known_p(0.001)))
    shown = false_alert_figures(
        cal, watchlist_size=100, threshold=0.6, false_alerts=2, tracks_seen=4000,
        faces_seen=20000, closed=False,
    )  # fmt: skip
    assert shown["expected_per_1000"] == pytest.approx(1000 * fpir(0.001, 100), rel=1e-3)
    assert shown["observed_per_1000"] == 0.5 and shown["observed_per_1000_faces"] == 0.1
    assert shown["expected_reason"] is None and shown["calibration"]["gallery_identities"] == 10
    none = false_alert_figures(
        None, watchlist_size=3, threshold=0.6, false_alerts=0, tracks_seen=0, faces_seen=0,
        closed=False,
    )  # fmt: skip
    assert none["expected_per_1000"] is None and "no calibration" in none["expected_reason"]
    assert none["observed_per_1000"] is None and none["observed_reason"]
    outside = false_alert_figures(
        cal, watchlist_size=3, threshold=0.9, false_alerts=0, tracks_seen=1, faces_seen=1,
        closed=False,
    )  # fmt: skip
    assert "outside the calibrated range" in outside["expected_reason"]
    closed = false_alert_figures(
        cal, watchlist_size=0, threshold=0.6, false_alerts=0, tracks_seen=1, faces_seen=1,
        closed=True,
    )  # fmt: skip
    assert closed["expected_per_1000"] is None and "closed" in closed["expected_reason"]


def test_the_table_shows_the_watchlist_sizes() -> None:
    cal = CalibrationFile.model_validate(document(known_p(0.01)))
    table = format_table(cal, every=0.1)
    assert "N=100" in table and "N=10,000" in table
    row = next(line for line in table.splitlines() if line.strip().startswith("0.60"))
    assert row.endswith("*") and f"{1000 * fpir(0.01, 100):.0f}" in row
    assert not math.isnan(cal.grid[0].p)
