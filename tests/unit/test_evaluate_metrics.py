"""The evaluation's arithmetic and its input checks (no models needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lfr_actors.evaluate import (
    EvaluationInputError,
    best_threshold,
    default_thresholds,
    read_pairs,
    roc_auc,
)


def test_roc_auc_perfect_random_and_ties() -> None:
    assert roc_auc(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0
    assert roc_auc(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == 0.0
    assert roc_auc(np.array([0.5]), np.array([0.5])) == 0.5
    assert roc_auc(np.array([0.1, 0.6]), np.array([0.5, 0.9])) == 0.75
    assert roc_auc(np.array([]), np.array([0.5])) is None


def test_best_threshold_separates_when_possible() -> None:
    t, acc = best_threshold(np.array([0.2, 0.3, 0.45]), np.array([0.7, 0.8]))
    assert 0.45 <= t < 0.7 and acc == 1.0
    t, acc = best_threshold(np.array([0.2, 0.9]), np.array([0.5, 0.8]))
    assert acc == 0.75


def test_default_thresholds_include_the_configured_one() -> None:
    ts = default_thresholds("euclidean", 0.62)
    assert 0.62 in ts and ts == sorted(ts) and min(ts) >= 0.3


def _files(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"\xff\xd8\xff")


def test_read_pairs_accepts_label_spellings(tmp_path: Path) -> None:
    _files(tmp_path, "a.jpg", "b/c.jpg")
    csv = tmp_path / "pairs.csv"
    csv.write_text("a,b,same\na.jpg,b/c.jpg,1\na.jpg,b/c.jpg,no\n\na.jpg,a.jpg,True\n")
    pairs = read_pairs(csv, tmp_path)
    assert [(p.line, p.same) for p in pairs] == [(2, True), (3, False), (5, True)]


def test_read_pairs_names_every_bad_line(tmp_path: Path) -> None:
    _files(tmp_path, "a.jpg")
    csv = tmp_path / "pairs.csv"
    csv.write_text("a,b,same\na.jpg,missing.jpg,1\na.jpg,a.jpg,maybe\na.jpg\n")
    with pytest.raises(EvaluationInputError) as info:
        read_pairs(csv, tmp_path)
    text = str(info.value)
    assert f"{csv}:2: image 'missing.jpg' not found" in text
    assert f"{csv}:3: 'same' is 'maybe'" in text
    assert f"{csv}:4: expected 3 columns" in text


def test_read_pairs_missing_columns(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("left,right,same\nx,y,1\n")
    with pytest.raises(EvaluationInputError, match=r"pairs.csv:1: missing column\(s\) a, b"):
        read_pairs(csv, tmp_path)
    csv.write_text("")
    with pytest.raises(EvaluationInputError, match="empty"):
        read_pairs(csv, tmp_path)
    with pytest.raises(EvaluationInputError, match="cannot be read"):
        read_pairs(tmp_path / "absent.csv", tmp_path)
