"""``lfr evaluate video``: a clip through the production decision code, offline, in one process.

The clip's frames go through the same code as the embedder actor's batches: the face
pipeline (:meth:`~lfr_actors.models.pipeline.FacePipeline.find` and ONE embedding call),
the tracking stage (:class:`~lfr_actors.tracking.stage.Tracking`: observe, absorb, decide)
and the same index code (:class:`~lfr_actors.index.shard.ShardIndex`, exact), with the
watchlist enrolled as the store enrols it (:func:`~lfr_actors.enrolment.enrol_image`).
Only the transport differs: here a function call, there actor calls.

Beside the track decisions it also takes the frame-by-frame decisions of the quality gate
(each face that passes it, compared alone), so both can be compared on the same clip; and
for each track, the alternatives to its quality-weighted mean (the plain mean, the median
of its faces' distances, the share of its faces within the threshold).

With a truth file (CSV ``entry,first_frame,last_frame``: who appears when, frames counted
from 0) it scores both: per person, whether each appearance was alerted (recall); and the
false alerts (alerts of an entry when that entry was not in view).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from lfr_actors.enrolment import enrol_image
from lfr_actors.errors import EnrolmentRejectedError, ImageError, LfrError
from lfr_actors.evaluate import read_table
from lfr_actors.index.shard import ShardIndex
from lfr_actors.models.embedder import distances
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import AnalysedImage, FacePipeline
from lfr_actors.models.types import FloatArray, UInt8Array
from lfr_actors.topology.loader import TopologyError, load_watchlist
from lfr_actors.tracking.config import TrackingConfig
from lfr_actors.tracking.evidence import TrackEvidence, decision_threshold, face_weight
from lfr_actors.tracking.stage import FrameInfo, Tracking

CLIP_CAMERA = "clip"
"""The camera id the clip's tracks are named with."""
_EPOCH = "eval"
_TRUTH_COLUMNS = ("entry", "first_frame", "last_frame")


class VideoEvaluationError(LfrError):
    """A clip, watchlist or truth file that cannot be evaluated; the message says where."""


@dataclass(frozen=True)
class Appearance:
    """One row of a truth file: an entry in view from one frame to another (inclusive)."""

    line: int
    entry_id: str
    first_frame: int
    last_frame: int


@dataclass(frozen=True)
class Entry:
    """A watchlist entry as evaluation holds it: its templates and its own threshold."""

    entry_id: str
    templates: FloatArray
    threshold: float | None


@dataclass
class TrackReport:
    """One track of the clip: where, how much evidence, how near each entry, the decision."""

    track_id: str
    first_frame: int
    last_frame: int
    frames: int
    faces: int
    smallest_face_px: float | None
    distances: dict[str, float]
    decision: str | None
    decided_at_frame: int | None
    decision_distance: float | None
    alternatives: dict[str, dict[str, float | str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameDecision:
    """One face of one frame: its track, quality gate, nearest entry and frame decision."""

    frame: int
    face: int
    size_px: float
    track_id: str | None
    passed_gate: bool
    weight: float
    nearest: str | None
    distance: float | None
    frame_match: str | None


@dataclass(frozen=True)
class Alert:
    """An alert either way of deciding would have raised (fused per entry, as the store)."""

    entry_id: str
    first_frame: int
    last_frame: int
    smallest_face_px: float
    true: bool | None


@dataclass
class ClipReport:
    """Everything an evaluation of one clip found."""

    clip: str
    frames: int
    sampled: int
    threshold: float
    tracks: list[TrackReport]
    frame_decisions: list[FrameDecision]
    track_alerts: list[Alert]
    frame_alerts: list[Alert]
    scores: dict[str, Any] | None = None
    alternatives: dict[str, list[Alert]] = field(default_factory=dict)
    alternative_scores: dict[str, dict[str, Any]] | None = None

    def as_dict(self, *, frames: bool = False) -> dict[str, Any]:
        """The report as plain data (frame-by-frame decisions only when asked)."""
        data = asdict(self)
        if not frames:
            data.pop("frame_decisions")
        return data


def load_entries(pipeline: FacePipeline, watchlist: Path) -> list[Entry]:
    """The watchlist file's entries, each photo enrolled as the store enrols it."""
    try:
        declared = load_watchlist(watchlist)
    except TopologyError as exc:
        raise VideoEvaluationError(str(exc)) from exc
    entries = []
    enrolling = pipeline.for_enrolment()  # MTCNN, whatever detector watches the clip
    for entry in declared.entries:
        templates = []
        for image in entry.images:
            try:
                templates.append(enrol_image(enrolling, load_image(Path(image))).embeddings)
            except (EnrolmentRejectedError, ImageError) as exc:
                raise VideoEvaluationError(
                    f"{watchlist}: entry {entry.id}: {image}: {exc}"
                ) from exc
        entries.append(Entry(entry.id, np.concatenate(templates), entry.threshold))
    return entries


def read_truth(path: Path, entry_ids: Sequence[str]) -> list[Appearance]:
    """Parse a truth CSV (header ``entry,first_frame,last_frame``); problems name the line."""
    rows, errors = read_table(path, _TRUTH_COLUMNS, VideoEvaluationError)
    known = set(entry_ids)
    found = []
    for line, (entry, first, last) in rows:
        if entry not in known:
            errors.append(
                f"{path}:{line}: entry {entry!r} is not on the watchlist "
                f"(its entries: {', '.join(sorted(known))})"
            )
            continue
        try:
            first_frame, last_frame = int(first), int(last)
        except ValueError:
            errors.append(f"{path}:{line}: first_frame and last_frame must be whole numbers")
            continue
        if first_frame < 0 or last_frame < first_frame:
            errors.append(
                f"{path}:{line}: frames {first_frame} to {last_frame}: first_frame must be "
                "0 or more and last_frame at least first_frame"
            )
            continue
        found.append(Appearance(line, entry, first_frame, last_frame))
    if errors:
        raise VideoEvaluationError("\n".join(errors))
    return found


def _frames(clip: Path, every: int, count: list[int]) -> Iterator[tuple[int, float, UInt8Array]]:
    """``(index, media seconds, RGB image)`` of every ``every``-th frame of the clip.

    ``count[0]`` is set to the frames decoded in all.
    """
    if not clip.is_file():
        raise VideoEvaluationError(f"{clip}: no such video file")
    capture = cv2.VideoCapture(str(clip))
    if not capture.isOpened():
        raise VideoEvaluationError(f"{clip}: cannot be opened as a video")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 25.0
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                return
            count[0] = index + 1
            if index % every == 0:
                rgb = cast(UInt8Array, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yield index, index / fps, rgb
            index += 1
    finally:
        capture.release()


@dataclass
class _Seen:
    """What evaluation records of a track beside the stage (to report, never to decide)."""

    first_frame: int
    last_frame: int
    embeddings: list[FloatArray] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    sizes: list[float] = field(default_factory=list)
    decision: str | None = None
    decided_at: int | None = None
    distance: float | None = None


def evaluate_clip(
    pipeline: FacePipeline,
    clip: Path,
    entries: Sequence[Entry],
    *,
    threshold: float,
    config: TrackingConfig | None = None,
    every: int = 1,
    batch: int = 8,
    top_k: int = 1,
    fusion_window_s: float = 30.0,
    truth: Sequence[Appearance] | None = None,
) -> ClipReport:
    """Run a clip through detection, tracking and the track decisions; score with ``truth``."""
    if every < 1:
        raise VideoEvaluationError(f"every must be 1 or more, got {every}")
    if not entries:
        raise VideoEvaluationError("the watchlist has no entries")
    spec = pipeline.embedder.spec
    own = {e.entry_id: e.threshold for e in entries if e.threshold is not None}
    tracking = Tracking(
        config or TrackingConfig(),
        metric=spec.metric,
        normalise=spec.l2_normalise,
        threshold=threshold,
        entry_thresholds=own,
    )
    index = ShardIndex(int(entries[0].templates.shape[1]), spec.metric, mode="exact")
    for entry in entries:
        index.add(entry.entry_id, np.asarray(entry.templates, np.float32))
    seen: dict[str, _Seen] = {}
    decisions: list[FrameDecision] = []
    media_times: dict[int, float] = {}
    sampled = 0
    pending: list[tuple[int, float, UInt8Array]] = []

    def run(group: list[tuple[int, float, UInt8Array]]) -> None:
        infos = [
            FrameInfo(CLIP_CAMERA, _EPOCH, i + 1, t, media_index=i, media_time_s=t)
            for i, t, _ in group
        ]
        images = [image for *_, image in group]
        analysed = pipeline.find_batch(images)
        plan = tracking.observe(infos, analysed)
        # One embedding call for every face (the plan's and the gate's), so the frame
        # decisions can be compared; the plan's faces get exactly their own rows.
        rows = [(f, j) for f, image in enumerate(analysed) for j in range(len(image.detections))]
        chips = (
            np.stack([analysed[f].chips[j] for f, j in rows])
            if rows
            else np.zeros((0, spec.chip_size, spec.chip_size, 3), np.uint8)
        )
        embedded = pipeline.embed_chips(chips)
        row_of = {key: r for r, key in enumerate(rows)}
        mine = (
            np.stack([embedded[row_of[(p.frame, p.face)]] for p in plan.faces])
            if plan.faces
            else embedded[:0]
        )
        absorbed = tracking.absorb(plan, mine, infos, images, analysed)
        queries = absorbed.queries
        tracks_of = {(p.frame, p.face): t for p, t in zip(plan.faces, absorbed.tracks, strict=True)}
        for p, track in zip(plan.faces, absorbed.tracks, strict=True):
            entry = _record(seen, track, group[p.frame][0])
            entry.embeddings.append(embedded[row_of[(p.frame, p.face)]])
            entry.weights.append(p.weight)
            entry.sizes.append(analysed[p.frame].quality[p.face].size_px)
        hits = (
            index.search(np.stack([q.vector for q in queries]), top_k, tracking.search_limit)
            if queries
            else []
        )
        for decision in tracking.decide(queries, hits):
            record = _record(seen, decision.track, group[decision.frame][0])
            if record.decision is None:
                record.decision = decision.entry_id
                record.decided_at = group[decision.frame][0]
            record.distance = min(record.distance or decision.distance, decision.distance)
        _frame_decisions(
            decisions,
            group=group,
            analysed=analysed,
            embedded=embedded,
            rows=rows,
            tracks_of=tracks_of,
            tracking=tracking,
            index=index,
            top_k=top_k,
        )
        for i, t, _ in group:
            media_times[i] = t

    decoded = [0]
    for frame_index, media_time, image in _frames(clip, every, decoded):
        sampled += 1
        pending.append((frame_index, media_time, image))
        if len(pending) >= batch:
            run(pending)
            pending = []
    if pending:
        run(pending)
    if sampled == 0:
        raise VideoEvaluationError(f"{clip}: no frame could be decoded")
    tracking.end_all()
    tracks = [_track_report(tid, s, entries, spec.metric, tracking) for tid, s in seen.items()]
    tracks.sort(key=lambda t: (t.first_frame, t.track_id))
    track_alerts = _fused(
        [
            (
                t.decision,
                t.decided_at_frame or t.first_frame,
                t.last_frame,
                t.smallest_face_px or 0.0,
            )
            for t in tracks
            if t.decision
        ],
        media_times,
        fusion_window_s,
        truth,
    )
    frame_alerts = _fused(
        [(d.frame_match, d.frame, d.frame, d.size_px) for d in decisions if d.frame_match],
        media_times,
        fusion_window_s,
        truth,
    )
    report = ClipReport(
        clip=str(clip),
        frames=decoded[0],
        sampled=sampled,
        threshold=threshold,
        tracks=tracks,
        frame_decisions=decisions,
        track_alerts=track_alerts,
        frame_alerts=frame_alerts,
    )
    for rule in ALTERNATIVES:
        report.alternatives[rule] = _fused(
            [
                (str(t.alternatives[rule]["decision"]), t.first_frame, t.last_frame, size)
                for t in tracks
                if t.alternatives and t.alternatives[rule]["decision"]
                for size in [t.smallest_face_px or 0.0]
            ],
            media_times,
            fusion_window_s,
            truth,
        )
    if truth is not None:
        ids = [e.entry_id for e in entries]
        report.scores = {
            "tracks": _scores(track_alerts, truth, ids),
            "frames": _scores(frame_alerts, truth, ids),
        }
        report.alternative_scores = {
            rule: _scores(alerts, truth, ids) for rule, alerts in report.alternatives.items()
        }
    return report


ALTERNATIVES = ("weighted_mean", "mean", "median", "votes")
"""The per-track rules compared (on each track's whole evidence, at its end): the
quality-weighted mean embedding (the one production uses, there decided as the track goes),
the plain mean, the median of the faces' own distances, and a majority of faces within the
threshold."""


def _record(seen: dict[str, _Seen], track: TrackEvidence, frame: int) -> _Seen:
    record = seen.get(track.track_id)
    if record is None:
        record = seen[track.track_id] = _Seen(frame, frame)
    record.first_frame = min(record.first_frame, frame)
    record.last_frame = max(record.last_frame, frame)
    return record


def _frame_decisions(
    out: list[FrameDecision],
    *,
    group: list[tuple[int, float, UInt8Array]],
    analysed: list[AnalysedImage],
    embedded: FloatArray,
    rows: list[tuple[int, int]],
    tracks_of: dict[tuple[int, int], TrackEvidence],
    tracking: Tracking,
    index: ShardIndex,
    top_k: int,
) -> None:
    """Each face's frame decision: passed the quality gate and nearest entry within threshold."""
    found = index.search(embedded, max(top_k, 1), None) if rows else []
    for r, (f, j) in enumerate(rows):
        image = analysed[f]
        hits = found[r]
        nearest, distance = (str(hits[0][0]), float(hits[0][1])) if hits else (None, None)
        passed = bool(image.passed[j])
        match = (
            nearest
            if passed
            and nearest is not None
            and distance is not None
            and distance <= tracking.threshold_for(nearest)
            else None
        )
        track = tracks_of.get((f, j))
        out.append(
            FrameDecision(
                frame=group[f][0],
                face=j,
                size_px=round(float(image.quality[j].size_px), 1),
                track_id=None if track is None else track.track_id,
                passed_gate=passed,
                weight=round(face_weight(image.quality[j], tracking.config), 3),
                nearest=nearest,
                distance=None if distance is None else round(distance, 4),
                frame_match=match,
            )
        )


def _track_report(
    track_id: str, seen: _Seen, entries: Sequence[Entry], metric: str, tracking: Tracking
) -> TrackReport:
    report = TrackReport(
        track_id=track_id,
        first_frame=seen.first_frame,
        last_frame=seen.last_frame,
        frames=seen.last_frame - seen.first_frame + 1,
        faces=len(seen.embeddings),
        smallest_face_px=round(min(seen.sizes), 1) if seen.sizes else None,
        distances={},
        decision=seen.decision,
        decided_at_frame=seen.decided_at,
        decision_distance=None if seen.distance is None else round(seen.distance, 4),
    )
    if not seen.embeddings:
        return report
    rules = track_rules(
        np.stack(seen.embeddings),
        np.asarray(seen.weights, np.float64),
        entries,
        metric=metric,
        normalise=tracking.normalise,
        threshold_for=tracking.threshold_for,
        min_faces=tracking.config.min_track_frames,
        largest_px=max(seen.sizes),
        config=tracking.config,
    )
    report.distances = dict(rules.pop("distances"))
    report.alternatives = rules
    return report


def track_rules(
    vectors: FloatArray,
    weights: np.ndarray,
    entries: Sequence[Entry],
    *,
    metric: str,
    normalise: bool,
    threshold_for: Callable[[str], float],
    min_faces: int,
    largest_px: float | None = None,
    config: TrackingConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """Each rule of :data:`ALTERNATIVES` on one track's faces: nearest entry, value, decision.

    ``vectors`` are the track's face embeddings ``[N, D]``, ``weights`` their
    :func:`~lfr_actors.tracking.evidence.face_weight`. A rule decides an entry only with
    at least ``min_faces`` faces: the mean rules and the median when the value is within
    the entry's threshold, the vote when at least half the faces are. Given the track's
    ``largest_px`` face and the tracking ``config``, every rule uses the threshold
    production decides with (:func:`~lfr_actors.tracking.evidence.decision_threshold`).
    Also returns ``"distances"``: the weighted mean's distance to every entry.
    """
    if largest_px is not None and config is not None:
        given = threshold_for

        def threshold_for(entry_id: str) -> float:
            return decision_threshold(given(entry_id), largest_px, config)

    vectors = np.asarray(vectors, np.float64)
    if normalise:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    weighted = (weights[:, None] * vectors).sum(0) / max(float(weights.sum()), 1e-12)
    plain = vectors.mean(0)
    if normalise:
        weighted = weighted / max(float(np.linalg.norm(weighted)), 1e-12)
        plain = plain / max(float(np.linalg.norm(plain)), 1e-12)
    enough = vectors.shape[0] >= min_faces
    values: dict[str, dict[str, float]] = {rule: {} for rule in ALTERNATIVES}
    for entry in entries:
        per_face = distances(vectors, entry.templates, metric).min(axis=1)
        values["weighted_mean"][entry.entry_id] = float(
            distances(weighted[None], entry.templates, metric).min()
        )
        values["mean"][entry.entry_id] = float(
            distances(plain[None], entry.templates, metric).min()
        )
        values["median"][entry.entry_id] = float(np.median(per_face))
        values["votes"][entry.entry_id] = float(np.mean(per_face <= threshold_for(entry.entry_id)))
    out: dict[str, dict[str, Any]] = {}
    for rule, by_entry in values.items():
        votes = rule == "votes"
        entry_id = (max if votes else min)(by_entry, key=by_entry.__getitem__)
        value = by_entry[entry_id]
        decided = enough and (value >= 0.5 if votes else value <= threshold_for(entry_id))
        out[rule] = {
            "entry": entry_id,
            "value": round(value, 4),
            "decision": entry_id if decided else None,
        }
    out["distances"] = {k: round(v, 4) for k, v in values["weighted_mean"].items()}
    return out


def _fused(
    matches: list[tuple[str | None, int, int, float]],
    times: dict[int, float],
    window_s: float,
    truth: Sequence[Appearance] | None,
) -> list[Alert]:
    """Matches of one entry within ``window_s`` of each other become one alert (as fusion)."""
    alerts: list[Alert] = []
    open_: dict[str, list[Any]] = {}
    for entry, first, last, size in sorted(matches, key=lambda m: (m[1], m[2])):
        assert entry is not None
        current = open_.get(entry)
        if current is not None and times.get(first, 0.0) - times.get(current[1], 0.0) <= window_s:
            current[1] = max(current[1], last)
            current[2] = min(current[2], size)
            continue
        if current is not None:
            alerts.append(_alert(entry, current, truth))
        open_[entry] = [first, last, size]
    alerts.extend(_alert(entry, current, truth) for entry, current in open_.items())
    alerts.sort(key=lambda a: (a.first_frame, a.entry_id))
    return alerts


def _alert(entry: str, span: list[Any], truth: Sequence[Appearance] | None) -> Alert:
    first, last, size = span
    true = None
    if truth is not None:
        true = any(
            a.entry_id == entry and a.first_frame <= last and first <= a.last_frame for a in truth
        )
    return Alert(entry, int(first), int(last), round(float(size), 1), true)


def _scores(
    alerts: Sequence[Alert], truth: Sequence[Appearance], entry_ids: Sequence[str]
) -> dict[str, Any]:
    """Per entry: appearances alerted (recall); and the false alerts."""
    per_entry: dict[str, dict[str, Any]] = {}
    for entry in entry_ids:
        appearances = [a for a in truth if a.entry_id == entry]
        alerted = [
            a
            for a in appearances
            if any(
                x.entry_id == entry
                and x.first_frame <= a.last_frame
                and a.first_frame <= x.last_frame
                for x in alerts
            )
        ]
        per_entry[entry] = {
            "appearances": len(appearances),
            "alerted": len(alerted),
            "recall": round(len(alerted) / len(appearances), 3) if appearances else None,
            "false_alerts": sum(1 for x in alerts if x.entry_id == entry and x.true is False),
        }
    true_alerts = [x for x in alerts if x.true]
    return {
        "true_alerts": len(true_alerts),
        "false_alerts": sum(1 for x in alerts if x.true is False),
        "smallest_face_alerted_px": min((x.smallest_face_px for x in true_alerts), default=None),
        "entries": per_entry,
    }


def format_report(report: ClipReport, *, frames: bool = False) -> str:
    """The report as text for a terminal: tracks, alerts both ways, scores, alternatives."""
    out = [
        f"clip {report.clip}: {report.frames} frames, {report.sampled} sampled, "
        f"threshold {report.threshold:g}",
        "",
        f"{'track':<28} {'frames':>9} {'faces':>5} {'min px':>6}  {'decision':<20} "
        f"{'distance':>8}  nearest entries",
    ]
    for track in report.tracks:
        nearest = sorted(track.distances.items(), key=lambda kv: kv[1])[:3]
        shown = ", ".join(f"{entry} {distance:.3f}" for entry, distance in nearest)
        distance = "" if track.decision_distance is None else f"{track.decision_distance:.3f}"
        size = "" if track.smallest_face_px is None else f"{track.smallest_face_px:.1f}"
        out.append(
            f"{track.track_id:<28} {track.first_frame:>4}-{track.last_frame:<4} "
            f"{track.faces:>5} {size:>6}  {track.decision or 'no match':<20} {distance:>8}  {shown}"
        )
    for name, alerts in (("track", report.track_alerts), ("frame", report.frame_alerts)):
        out += ["", f"alerts, {name}-based decisions: {len(alerts)}"]
        for alert in alerts:
            verdict = "" if alert.true is None else ("  true" if alert.true else "  FALSE")
            out.append(
                f"  {alert.entry_id:<24} frames {alert.first_frame}-{alert.last_frame}, "
                f"smallest face {alert.smallest_face_px:g} px{verdict}"
            )
    if report.scores is not None:
        out += ["", f"{'scores':<24} {'track-based':>22} {'frame-based':>22}"]
        tracks, framewise = report.scores["tracks"], report.scores["frames"]
        for key in ("true_alerts", "false_alerts", "smallest_face_alerted_px"):
            out.append(f"  {key:<22} {tracks[key]!s:>22} {framewise[key]!s:>22}")
        for entry, row in tracks["entries"].items():
            other = framewise["entries"][entry]
            out.append(f"  {entry:<22} {_recall(row):>22} {_recall(other):>22}")
    if report.alternative_scores is not None:
        out += ["", f"{'track rule':<24} {'true alerts':>12} {'false alerts':>13}"]
        for rule, scores in report.alternative_scores.items():
            out.append(f"  {rule:<22} {scores['true_alerts']:>12} {scores['false_alerts']:>13}")
    if frames:
        out += [
            "",
            f"{'frame':>5} {'face':>4} {'px':>6} {'track':<28} {'gate':<4} {'weight':>6} "
            f"{'nearest':<20} {'distance':>8}  frame decision",
        ]
        for d in report.frame_decisions:
            distance = "" if d.distance is None else f"{d.distance:.3f}"
            out.append(
                f"{d.frame:>5} {d.face:>4} {d.size_px:>6.1f} {d.track_id or '-':<28} "
                f"{'pass' if d.passed_gate else 'fail':<4} {d.weight:>6.3f} "
                f"{d.nearest or '-':<20} {distance:>8}  {d.frame_match or '-'}"
            )
    return "\n".join(out)


def _recall(row: dict[str, Any]) -> str:
    if not row["appearances"]:
        return f"{row['false_alerts']} false"
    return f"{row['alerted']}/{row['appearances']} seen, {row['false_alerts']} false"
