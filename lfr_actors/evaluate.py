"""Accuracy of the face pipeline on labelled photos: the figures that govern a threshold.

``pairs``: a CSV of ``a,b,same`` rows; reports accuracy at the configured threshold, the
best threshold, ROC AUC and distance statistics. ``identify``: a gallery folder and a probe
folder, one sub-folder per identity (``unknown`` for people not on the watchlist); reports
the true-positive and false-positive identification rates per threshold, as the UK's
National Physical Laboratory reports them for police live facial recognition.
:func:`identification_scores` is where identify and ``calibrate``
(:mod:`lfr_actors.calibration`) get their distances from.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lfr_actors.errors import EnrolmentRejectedError, ImageError, LfrError
from lfr_actors.models.embedder import distances
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.types import FloatArray

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
UNKNOWN = "unknown"
_TRUE = {"1", "yes", "true", "y", "same"}
_FALSE = {"0", "no", "false", "n", "different"}


class EvaluationInputError(LfrError):
    """A pairs file or a gallery/probe folder is malformed; the message names where."""


@dataclass(frozen=True)
class Pair:
    """One labelled pair from a pairs file."""

    line: int
    a: str
    b: str
    same: bool


def read_table(
    path: Path, columns: tuple[str, ...], error: type[LfrError] = EvaluationInputError
) -> tuple[list[tuple[int, tuple[str, ...]]], list[str]]:
    """A CSV file's rows as ``(line, the named columns' cells, stripped)``, and its errors.

    The header must name ``columns`` (in any order, among others); blank rows are skipped;
    a row with too few cells is an error naming its line (returned, so a caller can add
    its own and report them all at once). An unreadable file, an empty one or a header
    without the columns raises ``error`` at once.
    """
    try:
        text = path.read_text("utf-8-sig")
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
            "save it as UTF-8 CSV"
        ) from None
    rows = list(csv.reader(text.splitlines()))
    wanted = ",".join(columns)
    if not rows:
        raise error(f"{path}:1: the file is empty; expected a header {wanted}")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise error(
            f"{path}:1: missing column(s) {', '.join(missing)}; the header must name {wanted} "
            f"(found {', '.join(header) or 'nothing'})"
        )
    index = [header.index(name) for name in columns]
    found, errors = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            errors.append(f"{path}:{line}: expected {len(header)} columns, found {len(row)}")
            continue
        found.append((line, tuple(row[i].strip() for i in index)))
    return found, errors


def read_pairs(path: Path, root: Path) -> list[Pair]:
    """Parse a pairs CSV (header ``a,b,same``); every problem is reported with its line."""
    rows, errors = read_table(path, ("a", "b", "same"))
    pairs = []
    for line, (a, b, same) in rows:
        label = same.lower()
        if label not in _TRUE | _FALSE:
            errors.append(f"{path}:{line}: 'same' is {same!r}; use 1/0, yes/no or true/false")
            continue
        for name in (a, b):
            if not name:
                errors.append(f"{path}:{line}: an image path is empty")
            elif not (root / name).is_file():
                errors.append(f"{path}:{line}: image {name!r} not found under {root}")
        pairs.append(Pair(line, a, b, label in _TRUE))
    if errors:
        raise EvaluationInputError("\n".join(errors))
    if not pairs:
        raise EvaluationInputError(f"{path}: no pairs after the header")
    return pairs


class _EmbeddingCache:
    """Embeds the largest face of each image once, remembering images with no face."""

    def __init__(self, pipeline: FacePipeline) -> None:
        self.pipeline = pipeline
        self.embeddings: dict[Path, FloatArray] = {}
        self.no_face: set[Path] = set()

    def get(self, path: Path) -> FloatArray | None:
        if path in self.embeddings:
            return self.embeddings[path]
        if path in self.no_face:
            return None
        # The production path (FacePipeline.analyse_batch), embedding each photo's largest face.
        analysed = self.pipeline.analyse(load_image(path), embed="largest")
        if len(analysed.detections) == 0:
            self.no_face.add(path)
            return None
        embedding = analysed.embeddings[0]
        self.embeddings[path] = embedding
        return embedding


def _stats(values: np.ndarray) -> dict[str, float | int | None]:
    if values.size == 0:
        return {"count": 0, "min": None, "max": None, "mean": None, "median": None}
    return {
        "count": int(values.size),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
        "mean": round(float(values.mean()), 4),
        "median": round(float(np.median(values)), 4),
        "p05": round(float(np.percentile(values, 5)), 4),
        "p95": round(float(np.percentile(values, 95)), 4),
    }


def _rate(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


def roc_auc(same: np.ndarray, different: np.ndarray) -> float | None:
    """P(a different-person distance exceeds a same-person one); ties count a half."""
    if same.size == 0 or different.size == 0:
        return None
    values = np.concatenate([same, different])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    rank_sum_different = ranks[same.size :].sum()
    n_d = different.size
    u = rank_sum_different - n_d * (n_d + 1) / 2.0
    return float(u / (same.size * n_d))


def best_threshold(same: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """The distance threshold with the highest accuracy, and that accuracy."""
    values = np.unique(np.concatenate([same, different]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1]]])
    total = same.size + different.size
    correct = (same[None, :] <= candidates[:, None]).sum(1) + (
        different[None, :] > candidates[:, None]
    ).sum(1)
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / total)


def evaluate_pairs(
    pipeline: FacePipeline, pairs: list[Pair], root: Path, threshold: float
) -> dict[str, Any]:
    """Verification figures for ``pairs`` at ``threshold`` (distance, lower is alike)."""
    cache = _EmbeddingCache(pipeline)
    metric = pipeline.embedder.spec.metric
    same_d: list[float] = []
    diff_d: list[float] = []
    skipped: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for pair in pairs:
        try:
            ea = cache.get(root / pair.a)
            eb = cache.get(root / pair.b)
        except ImageError as exc:
            bad.append({"line": pair.line, "reason": str(exc)})
            continue
        if ea is None or eb is None:
            missing = [n for n, e in ((pair.a, ea), (pair.b, eb)) if e is None]
            skipped.append({"line": pair.line, "a": pair.a, "b": pair.b, "no_face_in": missing})
            continue
        d = float(distances(ea[None], eb[None], metric)[0, 0])
        (same_d if pair.same else diff_d).append(d)
    same = np.array(same_d)
    diff = np.array(diff_d)
    evaluated = same.size + diff.size
    result: dict[str, Any] = {
        "model": pipeline.embedder.spec.name,
        "metric": metric,
        "threshold": threshold,
        "pairs_total": len(pairs),
        "pairs_evaluated": int(evaluated),
        "pairs_skipped_no_face": skipped,
        "pairs_unreadable": bad,
        "accuracy": None,
        "true_accept_rate": None,
        "false_accept_rate": None,
        "best_threshold": None,
        "best_accuracy": None,
        "roc_auc": roc_auc(same, diff),
        "same_distance": _stats(same),
        "different_distance": _stats(diff),
    }
    if evaluated:
        correct = int((same <= threshold).sum() + (diff > threshold).sum())
        result["accuracy"] = round(correct / evaluated, 4)
        result["true_accept_rate"] = (
            round(float((same <= threshold).mean()), 4) if same.size else None
        )
        result["false_accept_rate"] = (
            round(float((diff <= threshold).mean()), 4) if diff.size else None
        )
        bt, ba = best_threshold(same, diff)
        result["best_threshold"] = round(bt, 4)
        result["best_accuracy"] = round(ba, 4)
    return result


def _identity_folders(root: Path, what: str) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise EvaluationInputError(f"{what} folder {root} does not exist or is not a folder")
    folders = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            folders[sub.name] = images
    if not folders:
        raise EvaluationInputError(
            f"{what} folder {root} has no identity sub-folders with images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return folders


def default_thresholds(metric: str, configured: float) -> list[float]:
    """A sweep of thresholds around the configured one."""
    grid = np.arange(0.30, 0.901, 0.05) if metric == "euclidean" else np.arange(0.2, 0.801, 0.05)
    return sorted({round(float(t), 4) for t in grid} | {round(configured, 4)})


@dataclass(frozen=True)
class IdentificationScores:
    """Every probe's distance to every gallery identity, from photos in identity folders.

    ``distances`` has one row per probe embedded and one column per gallery identity
    (``identities``, sorted): an identity's distance is that of its closest template.
    ``probe_identities`` is each row's folder name; a row is mated when that names an
    enrolled identity (``mated``), non-mated otherwise (``unknown``, or a person not in the
    gallery). ``rejected`` and ``skipped`` list the gallery photos enrolment refused and the
    probes with no face or an unreadable image.
    """

    model: str
    metric: str
    identities: list[str]
    templates: int
    distances: np.ndarray
    probe_identities: list[str]
    rejected: list[dict[str, Any]]
    skipped: list[dict[str, Any]]

    @property
    def mated(self) -> np.ndarray:
        """One flag per probe row: its identity is in the gallery."""
        enrolled = set(self.identities)
        return np.array([p in enrolled for p in self.probe_identities], dtype=bool)

    @property
    def probe_columns(self) -> np.ndarray:
        """Each probe row's own identity column, or -1 for a non-mated probe."""
        index = {name: i for i, name in enumerate(self.identities)}
        return np.array([index.get(p, -1) for p in self.probe_identities], dtype=np.int64)


def identification_scores(
    pipeline: FacePipeline, gallery: Path, probes: Path
) -> IdentificationScores:
    """Enrol the gallery, embed the probes and measure every probe against every identity.

    Gallery photos go through the enrolment rules (rejected ones are listed); a probe's
    largest face is embedded as live faces are; the distance to an identity is that of its
    closest template. The one place ``evaluate identify`` and ``evaluate calibrate`` get
    their scores from.
    """
    metric = pipeline.embedder.spec.metric
    gallery_folders = _identity_folders(gallery, "gallery")
    probe_folders = _identity_folders(probes, "probes")
    templates, labels, rejected = [], [], []
    for identity, images in gallery_folders.items():
        if identity == UNKNOWN:
            raise EvaluationInputError(f"{gallery / UNKNOWN}: the gallery cannot hold 'unknown'")
        for path in images:
            try:
                face = pipeline.enrol(load_image(path))
            except (EnrolmentRejectedError, ImageError) as exc:
                rejected.append({"image": str(path), "reason": str(exc)})
                continue
            templates.append(face.embedding)
            labels.append(identity)
    if not templates:
        raise EvaluationInputError(f"no gallery image in {gallery} could be enrolled: {rejected}")
    gallery_matrix = np.stack(templates)
    identities = sorted(set(labels))
    label_index = np.array([identities.index(lab) for lab in labels])
    cache = _EmbeddingCache(pipeline)
    rows: list[np.ndarray] = []
    probe_identities: list[str] = []
    skipped: list[dict[str, Any]] = []
    for identity, images in probe_folders.items():
        for path in images:
            try:
                embedding = cache.get(path)
            except ImageError as exc:
                skipped.append({"image": str(path), "reason": str(exc)})
                continue
            if embedding is None:
                skipped.append({"image": str(path), "reason": "no face found"})
                continue
            d = distances(embedding[None], gallery_matrix, metric)[0]
            per_identity = np.full(len(identities), np.inf)
            np.minimum.at(per_identity, label_index, d)
            rows.append(per_identity)
            probe_identities.append(identity)
    matrix = np.stack(rows) if rows else np.zeros((0, len(identities)))
    return IdentificationScores(
        model=pipeline.embedder.spec.name,
        metric=metric,
        identities=identities,
        templates=len(templates),
        distances=matrix,
        probe_identities=probe_identities,
        rejected=rejected,
        skipped=skipped,
    )


def evaluate_identify(
    pipeline: FacePipeline,
    gallery: Path,
    probes: Path,
    thresholds: Iterable[float],
    configured: float,
) -> dict[str, Any]:
    """Open-set identification: TPIR and FPIR per threshold.

    Scores from :func:`identification_scores`. A mated probe (its identity is enrolled)
    is a true positive at threshold t when its rank-1 identity is right and within t. A
    non-mated probe (``unknown``, or an identity not enrolled) is a false positive when
    anything in the gallery is within t.
    """
    scores = identification_scores(pipeline, gallery, probes)
    mated = scores.mated
    best = scores.distances.min(axis=1) if scores.distances.size else np.zeros(0)
    top = scores.distances.argmin(axis=1) if scores.distances.size else np.zeros(0, int)
    mb = best[mated]
    mc = top[mated] == scores.probe_columns[mated]
    nb = best[~mated]
    rows = []
    for t in sorted(set(thresholds)):
        rows.append(
            {
                "threshold": round(float(t), 4),
                "tpir": round(float(((mb <= t) & mc).mean()), 4) if mb.size else None,
                "fnir": round(float(1 - ((mb <= t) & mc).mean()), 4) if mb.size else None,
                "mated_misidentified": int(((mb <= t) & ~mc).sum()),
                "fpir": round(float((nb <= t).mean()), 4) if nb.size else None,
                "false_positives": int((nb <= t).sum()),
            }
        )
    at_configured = next((r for r in rows if r["threshold"] == round(configured, 4)), None)
    return {
        "model": scores.model,
        "metric": scores.metric,
        "configured_threshold": configured,
        "gallery_identities": len(scores.identities),
        "gallery_templates": scores.templates,
        "gallery_rejected": scores.rejected,
        "mated_probes": int(mb.size),
        "non_mated_probes": int(nb.size),
        "rank1_accuracy": round(float(mc.mean()), 4) if mc.size else None,
        "probes_skipped": scores.skipped,
        "at_configured_threshold": at_configured,
        "per_threshold": rows,
    }
