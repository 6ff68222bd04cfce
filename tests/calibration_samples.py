"""Calibration documents from synthetic scores with a known false match rate (no models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lfr_actors.calibration import calibrate
from lfr_actors.evaluate import IdentificationScores

GRID = [0.3, 0.4, 0.5, 0.6, 0.7]


def scores(distances: np.ndarray, probe_identities: list[str], identities: list[str]) -> Any:
    """Identification scores as :func:`lfr_actors.evaluate.identification_scores` makes."""
    return IdentificationScores(
        model="dlib_resnet_v1",
        metric="euclidean",
        identities=identities,
        templates=len(identities),
        distances=distances,
        probe_identities=probe_identities,
        rejected=[],
        skipped=[],
    )


def known_p(p_at_06: float, probes: int = 100, identities: int = 10) -> IdentificationScores:
    """Non-mated probes only; exactly a share ``p_at_06`` of the comparisons are 0.55."""
    d = np.full((probes, identities), 0.95)
    hits = round(p_at_06 * probes * identities)
    d.reshape(-1)[np.linspace(0, d.size - 1, hits).astype(int) if hits else []] = 0.55
    return scores(d, ["unknown"] * probes, [f"id{i}" for i in range(identities)])


def document(scored: IdentificationScores, grid: list[float] = GRID) -> dict[str, Any]:
    """The calibration file's document for ``scored`` (default model dlib_resnet_v1 1.0)."""
    return calibrate(
        scored,
        gallery=Path("/data/gallery"),
        probes=Path("/data/probes"),
        model_version="1.0",
        dimension=128,
        configured=0.6,
        thresholds=grid,
    )


def sample_calibration(p_at_06: float = 0.001) -> dict[str, Any]:
    """A valid calibration document: p = ``p_at_06`` from 0.55 on, over 1,000 comparisons."""
    return document(known_p(p_at_06))
