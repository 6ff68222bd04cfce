"""Expected false alerts for a watchlist of any size, from a calibration run on labelled photos.

``lfr evaluate calibrate`` searches probe photos against a gallery exactly as ``lfr evaluate
identify`` does (:func:`lfr_actors.evaluate.identification_scores`: one sub-folder per
identity, ``unknown`` for people not on the watchlist; an identity's distance is that of its
closest template) and estimates, for each threshold t on a grid of steps of 0.01:

- p(t), the per-comparison false match rate: the share of non-mated (probe, gallery
  identity) comparisons with a distance at or below t. Non-mated comparisons are every
  non-mated probe against every identity, and every mated probe against the identities
  that are not its own (two different people either way);
- its one-sided 95 % upper confidence bound: Clopper-Pearson (exact) while at most
  :data:`EXACT_BOUND_MAX` comparisons match, the Wilson score bound above that, where the
  two agree. With no false match at all the bound is about 3/n (the "rule of three"), never
  zero;
- FPIR(N, t), the chance that one passer-by (one face track: the pipeline compares a track
  with the watchlist once, through one vector) who is not on the watchlist raises a false
  alert against a watchlist of N identities: ``1 - (1 - p(t)) ** N``, and the same with the
  upper bound of p;
- TPIR(t), the share of mated probes whose closest identity is their own and within t;
- at the gallery's own size G, FPIR measured directly (the share of non-mated probes with
  any identity within t) beside the model's ``1 - (1 - p(t)) ** G``: the check of the model.

Why this model, and what it assumes. The watchlist searched live is not the gallery: it has
N identities, usually far more than a labelled gallery. A passer-by falsely alerts when at
least one of the N identities is within t; if the N comparisons are independent and each
matches with the probability p(t) measured on the gallery, that chance is 1 - (1 - p)^N.
So the model assumes (1) the watchlist's identities and the passers-by are drawn like the
gallery's identities and the non-mated probes (same kind of photos, cameras, population);
(2) a passer-by's comparisons with different identities are independent, i.e. nobody is
much more alike to everyone than others are (lookalike-prone faces make the true FPIR
lower than modelled at a given p, since their false matches cluster in fewer passers-by);
(3) the comparisons of the calibration run are independent samples for the bound (those
sharing a probe are not quite, so the bound is somewhat optimistic with few probes). The
per-probe alternative (average over probes of 1 - (1 - p_i)^N, p_i from one probe's own
comparisons) keeps probe-to-probe variation but needs many gallery identities per probe:
with a gallery of a handful, one false match out of four comparisons gives p_i = 0.25 and
an FPIR of 1 at N = 100, so it is not used. The measured-against-modelled FPIR at the
gallery's size in every grid row shows how far assumption (2) holds on the run's photos.

A run needs at least :data:`MIN_NON_MATED_PROBES` non-mated probes and
:data:`MIN_NON_MATED_COMPARISONS` non-mated comparisons; fewer is an
:class:`~lfr_actors.evaluate.EvaluationInputError` and no file is written.

The calibration file (JSON, :data:`FORMAT` version :data:`VERSION`) holds the model, the
method, the assumptions, counts, and the grid: scores only, never an embedding, an image
or an image's path (the gallery and probe folders by their names only).
:func:`load_calibration` and :func:`parse_calibration` validate one;
:func:`expected_false_alerts_per_1000` reads the expected rate off it for a watchlist size
and a threshold.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lfr_actors.errors import LfrError
from lfr_actors.evaluate import EvaluationInputError, IdentificationScores
from lfr_actors.plaintext import PLAIN
from lfr_actors.topology.schema import RULES_ERROR, RuleViolation

FORMAT = "lfr-calibration"
"""The ``format`` every calibration file declares."""
VERSION = 1
"""The calibration file version this program writes and reads."""
MIN_NON_MATED_PROBES = 10
"""Fewest non-mated probes (passers-by not on the watchlist) a calibration accepts: fewer
cannot check the model against a measured FPIR at all."""
MIN_NON_MATED_COMPARISONS = 30
"""Fewest non-mated comparisons: with none matching, the upper bound of p is then about
3/30 = 0.1; fewer leaves a bound too loose to govern by."""
CONFIDENCE = 0.95
"""The one-sided confidence of every upper bound."""
EXACT_BOUND_MAX = 200
"""Up to this many false matches the bound is Clopper-Pearson's, summed exactly."""
GRID_STEP = 0.01
"""The step of the threshold grid."""
METHOD = "pooled-non-mated-comparisons/independent-identities"
"""The method's name in the file."""
MAX_GRID_POINTS = 1000

ASSUMPTIONS = (
    "p(t) is the share of non-mated (probe, gallery identity) comparisons within t; an "
    "identity's distance is that of its closest template.",
    "FPIR(N, t) = 1 - (1 - p(t))^N: the watchlist's N identities and the passers-by are drawn "
    "like the gallery's identities and the non-mated probes, and one passer-by's comparisons "
    "with different identities are independent.",
    "A passer-by is one face track, compared with the watchlist once.",
    "Upper bounds are one-sided 95 %: Clopper-Pearson up to 200 false matches, Wilson above; "
    "they treat the comparisons as independent samples.",
    "fpir_gallery_measured beside fpir_gallery_modelled, at the gallery's own size, checks the "
    "model on this run's photos.",
)


class CalibrationError(LfrError):
    """A calibration file is unreadable, corrupt, of another version or of another model."""


class ThresholdOutsideCalibrationError(CalibrationError):
    """The threshold asked about lies outside the calibration's grid."""


# -- the estimate ----------------------------------------------------------------------


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed term by term (k small)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_term = n * log_q  # P(X = 0)
    total = math.exp(log_term)
    for i in range(1, k + 1):
        log_term += math.log(n - i + 1) - math.log(i) + log_p - log_q
        total += math.exp(log_term)
    return min(total, 1.0)


def upper_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound of a rate with ``k`` hits in ``n`` trials.

    Clopper-Pearson (the p at which ``k`` or fewer hits has probability 1 - confidence,
    found by bisection) while ``k <= EXACT_BOUND_MAX``; the Wilson score bound above.
    With ``k == 0`` this is 1 - (1 - confidence)^(1/n), about 3/n at 95 %.
    """
    if n <= 0:
        raise ValueError("a rate needs at least one trial")
    if not 0 <= k <= n:
        raise ValueError("hits must be between 0 and the trials")
    if k == n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    if k <= EXACT_BOUND_MAX:
        low, high = k / n, 1.0
        for _ in range(80):
            mid = (low + high) / 2
            if _binomial_cdf(k, n, mid) > alpha:
                low = mid
            else:
                high = mid
        return high
    z = _normal_quantile(confidence)
    phat = k / n
    centre = phat + z * z / (2 * n)
    spread = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def _normal_quantile(confidence: float) -> float:
    """The standard normal quantile at ``confidence``, by bisection of erf."""
    low, high = 0.0, 10.0
    for _ in range(80):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < confidence:
            low = mid
        else:
            high = mid
    return high


def fpir(p: float, watchlist_size: int) -> float:
    """1 - (1 - p)^N, computed without losing small values."""
    if watchlist_size <= 0 or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return -math.expm1(watchlist_size * math.log1p(-p))


def calibration_grid(metric: str, configured: float) -> list[float]:
    """Thresholds in steps of :data:`GRID_STEP` over the usual range, and ``configured``."""
    low, high = (0.30, 0.90) if metric == "euclidean" else (0.20, 0.80)
    low, high = min(low, configured), max(high, configured)
    count = round((high - low) / GRID_STEP) + 1
    grid = {round(low + i * GRID_STEP, 4) for i in range(count)}
    return sorted(grid | {round(configured, 4)})


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def estimate(
    distances: np.ndarray, own_column: np.ndarray, thresholds: list[float]
) -> dict[str, Any]:
    """The grid of figures from a probes x identities distance matrix.

    ``own_column`` gives each probe row its own identity's column, or -1 for a non-mated
    probe. Raises :class:`EvaluationInputError` when there are fewer than
    :data:`MIN_NON_MATED_PROBES` non-mated probes or :data:`MIN_NON_MATED_COMPARISONS`
    non-mated comparisons. Returns the counts and the grid rows of the file.
    """
    distances = np.asarray(distances, dtype=np.float64)
    own_column = np.asarray(own_column, dtype=np.int64)
    if distances.ndim != 2 or distances.shape[0] != own_column.shape[0]:
        raise ValueError("one own column per probe row is needed")
    identities = distances.shape[1]
    non_mated = own_column < 0
    mated = ~non_mated
    columns = np.arange(identities)
    other = columns[None, :] != own_column[:, None]  # every cell of a non-mated probe too
    from_non_mated = int(non_mated.sum()) * identities
    from_mated = int(other[mated].sum())
    comparisons = from_non_mated + from_mated
    if not non_mated.any():
        raise EvaluationInputError(
            "the probes have no non-mated faces: put photos of people not in the gallery in "
            "a probe folder named 'unknown' (at least "
            f"{MIN_NON_MATED_PROBES} faces); nothing was written"
        )
    if int(non_mated.sum()) < MIN_NON_MATED_PROBES or comparisons < MIN_NON_MATED_COMPARISONS:
        raise EvaluationInputError(
            f"too few non-mated faces to estimate a false match rate: {int(non_mated.sum())} "
            f"non-mated probe(s) and {comparisons} non-mated comparison(s); a calibration "
            f"needs at least {MIN_NON_MATED_PROBES} probes and {MIN_NON_MATED_COMPARISONS} "
            "comparisons; nothing was written"
        )
    impostor = np.sort(distances[other])
    nonmated_best = distances[non_mated].min(axis=1)
    mated_rows = distances[mated]
    mated_best = mated_rows.min(axis=1) if mated_rows.size else np.zeros(0)
    mated_right = (
        mated_rows.argmin(axis=1) == own_column[mated] if mated_rows.size else np.zeros(0, bool)
    )
    rows = []
    for t in thresholds:
        hits = int(np.searchsorted(impostor, t, side="right"))
        p = hits / comparisons
        measured = float((nonmated_best <= t).mean())
        tpir = _rate(int(((mated_best <= t) & mated_right).sum()), int(mated_best.size))
        rows.append(
            {
                "threshold": round(float(t), 4),
                "false_matches": hits,
                "p": p,
                "p_upper": upper_bound(hits, comparisons),
                "tpir": tpir,
                "fpir_gallery_measured": measured,
                "fpir_gallery_modelled": fpir(p, identities),
            }
        )
    return {
        "counts": {
            "identities": identities,
            "mated_probes": int(mated.sum()),
            "non_mated_probes": int(non_mated.sum()),
            "non_mated_comparisons": comparisons,
            "from_non_mated_probes": from_non_mated,
            "from_mated_probes": from_mated,
        },
        "grid": rows,
    }


def calibrate(
    scores: IdentificationScores,
    *,
    gallery: Path,
    probes: Path,
    model_version: str,
    dimension: int,
    configured: float,
    thresholds: list[float] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The calibration file's document for ``scores`` (validated; see :func:`estimate`)."""
    grid = thresholds or calibration_grid(scores.metric, configured)
    estimated = estimate(scores.distances, scores.probe_columns, sorted(set(grid)))
    counts = estimated["counts"]
    document = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "model": {
            "name": scores.model,
            "version": model_version,
            "metric": scores.metric,
            "dimension": dimension,
        },
        "method": METHOD,
        "assumptions": list(ASSUMPTIONS),
        "confidence": CONFIDENCE,
        "configured_threshold": round(configured, 4),
        "gallery": {
            "folder": gallery.name,
            "identities": counts["identities"],
            "templates": scores.templates,
            "rejected": len(scores.rejected),
        },
        "probes": {
            "folder": probes.name,
            "mated": counts["mated_probes"],
            "non_mated": counts["non_mated_probes"],
            "skipped": len(scores.skipped),
        },
        "comparisons": {
            "non_mated": counts["non_mated_comparisons"],
            "from_non_mated_probes": counts["from_non_mated_probes"],
            "from_mated_probes": counts["from_mated_probes"],
        },
        "grid": estimated["grid"],
    }
    return CalibrationFile.model_validate(document).model_dump(mode="json")


# -- the file --------------------------------------------------------------------------


def _iso_instant(value: str) -> str:
    """``value`` unchanged when it is an ISO 8601 date and time with a UTC offset."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise PydanticCustomError(
            "datetime_format", "must be an ISO 8601 date and time with a UTC offset"
        )
    return value


def _one_not_true(value: object) -> object:
    """``version: 1``, not ``true`` (which Python counts equal to 1)."""
    if isinstance(value, bool):
        raise PydanticCustomError("literal_error", "must be 1 (a number, not true or false)")
    return value


Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(min_length=1, max_length=200), PLAIN]
Count = Annotated[int, Field(ge=0)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CalibrationModel(_Part):
    """The embedding model the calibration measured."""

    name: Name = Field(description="The model's name, as `lfr models list` gives it.")
    version: Name = Field(description="The model's version.")
    metric: Literal["euclidean", "cosine"] = Field(description="Its distance.")
    dimension: int = Field(ge=2, le=4096, description="Length of one embedding.")


class CalibrationGallery(_Part):
    """The gallery folder (its name only) and what enrolled of it."""

    folder: Name
    identities: int = Field(ge=1)
    templates: int = Field(ge=1)
    rejected: Count


class CalibrationProbes(_Part):
    """The probe folder (its name only) and its faces."""

    folder: Name
    mated: Count
    non_mated: int = Field(ge=MIN_NON_MATED_PROBES)
    skipped: Count


class CalibrationComparisons(_Part):
    """Non-mated comparisons: from non-mated probes and mated probes' other identities."""

    non_mated: int = Field(ge=MIN_NON_MATED_COMPARISONS)
    from_non_mated_probes: Count
    from_mated_probes: Count


class CalibrationPoint(_Part):
    """The figures at one threshold."""

    threshold: float = Field(gt=0.0, lt=2.0)
    false_matches: Count = Field(description="Non-mated comparisons within the threshold.")
    p: Rate = Field(description="false_matches / comparisons.non_mated.")
    p_upper: Rate = Field(description="Its one-sided upper confidence bound.")
    tpir: Rate | None = Field(description="Mated probes found, rank 1 and within; null: none.")
    fpir_gallery_measured: Rate = Field(description="Non-mated probes with any identity within.")
    fpir_gallery_modelled: Rate = Field(description="1 - (1 - p)^identities.")


class CalibrationFile(_Part):
    """A calibration file: expected false alerts of one model, by threshold."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="Calibration")

    format: Literal["lfr-calibration"]
    version: Annotated[Literal[1], BeforeValidator(_one_not_true)]
    created_at: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_iso_instant)]
    model: CalibrationModel
    method: Literal["pooled-non-mated-comparisons/independent-identities"]
    assumptions: list[Annotated[str, Field(max_length=500), PLAIN]] = Field(max_length=20)
    confidence: float = Field(gt=0.5, lt=1.0)
    configured_threshold: float = Field(gt=0.0, lt=2.0)
    gallery: CalibrationGallery
    probes: CalibrationProbes
    comparisons: CalibrationComparisons
    grid: list[CalibrationPoint] = Field(min_length=2, max_length=MAX_GRID_POINTS)

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationFile:
        found = self._violations()
        if found:
            raise PydanticCustomError(
                RULES_ERROR,
                "{summary}",
                {"summary": "; ".join(v.message for v in found), "violations": tuple(found)},
            )
        return self

    def _violations(self) -> list[RuleViolation]:
        found: list[RuleViolation] = []

        def broken(path: tuple[str | int, ...], message: str) -> None:
            found.append(RuleViolation(path, message, "Run `lfr evaluate calibrate` again."))

        n = self.comparisons.non_mated
        if self.comparisons.from_non_mated_probes + self.comparisons.from_mated_probes != n:
            broken(("comparisons", "non_mated"), "the two sources do not add up to non_mated")
        previous: CalibrationPoint | None = None
        for i, point in enumerate(self.grid):
            if previous is not None and point.threshold <= previous.threshold:
                broken(("grid", i, "threshold"), "thresholds must rise strictly")
            if point.false_matches > n or (
                previous is not None and point.false_matches < previous.false_matches
            ):
                broken(
                    ("grid", i, "false_matches"),
                    f"must grow with the threshold and stay within comparisons.non_mated ({n})",
                )
            if not math.isclose(point.p, point.false_matches / n, rel_tol=1e-6, abs_tol=1e-12):
                broken(("grid", i, "p"), "p is not false_matches / comparisons.non_mated")
            if point.p_upper < point.p or point.p_upper == 0:
                broken(("grid", i, "p_upper"), "p_upper must be above p (and above 0)")
            previous = point
        return found


def parse_calibration(document: Any, *, source: str = "the calibration") -> CalibrationFile:
    """Validate a calibration document (a parsed JSON value); one-line errors.

    Another format or version is named as such before the fields are checked.
    """
    if not isinstance(document, dict):
        raise CalibrationError(f"{source}: not a calibration file (a JSON object is expected)")
    if document.get("format") != FORMAT:
        raise CalibrationError(
            f"{source}: not a calibration file (format is {document.get('format')!r}, "
            f"expected {FORMAT!r}; make one with `lfr evaluate calibrate`)"
        )
    if document.get("version") != VERSION:
        raise CalibrationError(
            f"{source}: calibration file version {document.get('version')!r}; this program "
            f"reads version {VERSION} (run `lfr evaluate calibrate` again)"
        )
    try:
        return CalibrationFile.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc, message = tuple(error["loc"]), error["msg"]
        if error["type"] == RULES_ERROR:
            rule = error["ctx"]["violations"][0]
            loc, message = (*loc, *rule.path), rule.message
        where = _where(loc)
        raise CalibrationError(f"{source}: {where}: {message}") from None


def _where(loc: tuple[Any, ...]) -> str:
    """A field's path as the file writes it: grid[3].p."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "the file"


def load_calibration(path: Path) -> CalibrationFile:
    """Read and validate a calibration file; :class:`CalibrationError` names what is wrong."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CalibrationError(f"{path}: cannot be read ({reason})") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); the file is corrupt"
        ) from None
    return parse_calibration(document, source=str(path))


def check_model(
    calibration: CalibrationFile, *, name: str, version: str, metric: str, source: str
) -> None:
    """:class:`CalibrationError` when the calibration measured another model than this one."""
    model = calibration.model
    if (model.name, model.version, model.metric) != (name, version, metric):
        raise CalibrationError(
            f"{source} calibrates model {model.name} {model.version} ({model.metric}), but the "
            f"deployment's embedder is {name} {version} ({metric}); calibrate that model "
            "with `lfr evaluate calibrate`"
        )


def document_text(calibration: CalibrationFile) -> str:
    """The file's canonical JSON text (sorted keys, as stored)."""
    return json.dumps(calibration.model_dump(mode="json"), sort_keys=True)


# -- reading it ------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """Expected false alerts per 1,000 passers-by not on the watchlist, and the bound."""

    per_1000: float
    upper_per_1000: float


def expected_false_alerts(
    calibration: CalibrationFile, watchlist_size: int, threshold: float
) -> Expected:
    """Expected false alerts per 1,000 passers-by for ``watchlist_size`` identities.

    p and its bound are interpolated linearly between the two grid points around
    ``threshold``; :class:`ThresholdOutsideCalibrationError` when it is outside the grid.
    """
    if watchlist_size < 0:
        raise ValueError("a watchlist size is 0 or more")
    grid = calibration.grid
    low, high = grid[0].threshold, grid[-1].threshold
    if not low - 1e-9 <= threshold <= high + 1e-9:
        raise ThresholdOutsideCalibrationError(
            f"threshold {threshold:g} is outside the calibrated range {low:g} to {high:g}"
        )
    xs = [point.threshold for point in grid]
    p = float(np.interp(threshold, xs, [point.p for point in grid]))
    bound = float(np.interp(threshold, xs, [point.p_upper for point in grid]))
    return Expected(
        per_1000=1000.0 * fpir(p, watchlist_size),
        upper_per_1000=1000.0 * fpir(bound, watchlist_size),
    )


def expected_false_alerts_per_1000(
    calibration: CalibrationFile, watchlist_size: int, threshold: float
) -> float:
    """The expected false alerts per 1,000 passers-by (see :func:`expected_false_alerts`)."""
    return expected_false_alerts(calibration, watchlist_size, threshold).per_1000


def _figure(value: float) -> float:
    return float(f"{value:.4g}")


def false_alert_figures(
    calibration: CalibrationFile | None,
    *,
    watchlist_size: int,
    threshold: float,
    false_alerts: int,
    tracks_seen: int,
    faces_seen: int,
    closed: bool,
    unreadable: str | None = None,
) -> dict[str, Any]:
    """Expected beside observed false alerts per 1,000, each null with its reason.

    Expected: for ``watchlist_size`` searched entries at ``threshold``, from the
    calibration (null without one, when the threshold is outside its grid, or when the
    deployment is closed and searches nothing; ``unreadable`` says why a stored one cannot
    be read). Observed: false alerts per 1,000 face
    tracks (people) seen, the expected rate's unit, and per 1,000 faces seen.
    """
    expected = upper = None
    expected_reason = None
    if unreadable is not None:
        expected_reason = unreadable  # the stored calibration was damaged: say so
    elif calibration is None:
        expected_reason = "the deployment has no calibration (lfr evaluate calibrate)"
    elif closed:
        expected_reason = "the deployment is closed: its watchlist was destroyed"
    else:
        try:
            found = expected_false_alerts(calibration, watchlist_size, threshold)
        except ThresholdOutsideCalibrationError as exc:
            expected_reason = str(exc)
        else:
            expected, upper = _figure(found.per_1000), _figure(found.upper_per_1000)
    return {
        "watchlist_size": watchlist_size,
        "threshold": threshold,
        "expected_per_1000": expected,
        "expected_upper_per_1000": upper,
        "expected_reason": expected_reason,
        "false_alerts": false_alerts,
        "observed_per_1000": _figure(1000 * false_alerts / tracks_seen) if tracks_seen else None,
        "observed_per_1000_faces": (
            _figure(1000 * false_alerts / faces_seen) if faces_seen else None
        ),
        "observed_reason": None if tracks_seen else "no face track seen yet",
        "calibration": None if calibration is None else calibration_summary(calibration),
    }


def calibration_summary(calibration: CalibrationFile) -> dict[str, Any]:
    """What a deployment shows of its calibration: the model, the run's size, the range."""
    return {
        "model": calibration.model.name,
        "model_version": calibration.model.version,
        "metric": calibration.model.metric,
        "method": calibration.method,
        "created_at": calibration.created_at,
        "gallery_identities": calibration.gallery.identities,
        "non_mated_probes": calibration.probes.non_mated,
        "non_mated_comparisons": calibration.comparisons.non_mated,
        "thresholds": [calibration.grid[0].threshold, calibration.grid[-1].threshold],
    }


WATCHLIST_SIZES = (100, 1000, 10000)
"""The watchlist sizes ``lfr evaluate calibrate`` prints."""


def format_table(calibration: CalibrationFile, *, every: float = 0.05) -> str:
    """A table to read: threshold, TPIR, p, and expected false alerts per 1,000 passers-by.

    Rows every ``every`` and at the configured threshold (the file has the whole grid).
    """
    sizes = "".join(f"  N={n:<14,}" for n in WATCHLIST_SIZES)
    g = calibration.gallery.identities
    lines = [
        f"model {calibration.model.name} {calibration.model.version} "
        f"({calibration.model.metric}); gallery {g} identities, "
        f"{calibration.probes.mated} mated and {calibration.probes.non_mated} non-mated "
        f"probes, {calibration.comparisons.non_mated} non-mated comparisons",
        "false alerts per 1,000 passers-by not on the watchlist: expected (95 % upper bound)",
        f"{'threshold':>9}  {'TPIR':>6}  {'p':>8}{sizes}  "
        f"at G={g} (per 1,000): measured / modelled",
    ]
    configured = calibration.configured_threshold
    for point in calibration.grid:
        on_step = abs(point.threshold / every - round(point.threshold / every)) < 1e-6
        if not (on_step or math.isclose(point.threshold, configured)):
            continue
        cells = ""
        for n in WATCHLIST_SIZES:
            exp = expected_false_alerts(calibration, n, point.threshold)
            cells += f"  {_short(exp.per_1000):>6} ({_short(exp.upper_per_1000):>6})"
        tpir = "-" if point.tpir is None else f"{point.tpir:.3f}"
        mark = " *" if math.isclose(point.threshold, configured) else ""
        lines.append(
            f"{point.threshold:>9.2f}  {tpir:>6}  {point.p:>8.4f}{cells}  "
            f"{1000 * point.fpir_gallery_measured:.0f} / {1000 * point.fpir_gallery_modelled:.0f}"
            f"{mark}"
        )
    lines.append(f"* the configured threshold ({configured:g})")
    return "\n".join(lines)


def _short(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3f}"
