"""Which rule decides a face track best, on the labelled photos made into distant-face tracks.

The shared clip is too easy to choose a track rule on: every rule gives the same answer
there. This benchmark builds a harder, honest measurement from the labelled photos of
``shared/data/faces/people`` (one folder per identity):

- **Gallery**: every photo is enrolled as the store enrols it
  (:func:`~lfr_actors.enrolment.enrol_image`), one template each. An entry is an identity's
  templates. Leave-one-out: when a photo is the probe of a MATED search, its identity's
  entry holds only its other photos (an identity with one photo has no mated search);
  every other identity's entry holds all its photos. Every photo is also a NON-MATED probe,
  against a gallery without its identity, so every photo is a stranger once.
- **Tracks**: for each probe photo and face size ``s``, ``--frames`` frames of a distant
  face: the photo's face region (the largest face :meth:`FacePipeline.find` finds, a square
  around it with a margin) scaled so the face is about ``s`` px (measured as production
  measures a face: the shorter side of the detector's box), pasted into a 640x360
  grey frame, and degraded per frame by a seeded random mix of what live video does to a
  distant face (scale and position jitter of up to 10 %, Gaussian blur of sigma 0-2,
  brightness and contrast changes, a little sensor noise, JPEG re-encoding at quality
  30-90). Each frame goes through the production detector, alignment and quality
  (:meth:`FacePipeline.find`); the face overlapping the pasted one most is the track's face
  of that frame (a frame where none overlaps it by ``MIN_IOU`` counts as "no face"). All
  the track's chips are embedded in ONE call; each face is weighted with
  :func:`~lfr_actors.tracking.evidence.face_weight` and faces of weight 0 are dropped from
  the track's evidence, as production does.
- **Decisions**: each track is decided by every rule of
  :func:`lfr_actors.evaluate_video.track_rules` (the function ``lfr evaluate video``
  reports; the rules are not reimplemented here) against the mated and the non-mated
  gallery, at each threshold. Each face is also decided alone, as the frame-based pipeline
  decides (nearest entry within the threshold): the faces that pass the quality gate, and
  all faces. Frame decisions are counted per face, and per track as a frame-based pipeline
  alerts on a track: when ANY of its faces matches.

The report (JSON, then a text table) gives per face size, threshold and rule: mated tracks
identified correctly (true match rate), mated tracks matched to the WRONG entry, non-mated
tracks matched falsely (false match rate), with counts; and a threshold-free separation
(``auc``: the chance that a mated track's value for its own entry is better than a
non-mated track's best value, a mated track whose nearest entry is wrong counting as worst).

    python loadtest/bench_track_rules.py [--home DIR] [--data DIR] [--sizes 20 24 32 48]
        [--frames 10] [--seed 0 [1 ...]] [--thresholds 0.55 0.6 0.65] [--people NAME ...]

With several seeds, every probe makes one track per seed and size, and the counts are
those of all of them together. The pipeline is ``lfr evaluate``'s (the model layer's
defaults: the detector searches from 20 px, the quality gate asks 40 px), and the face
region is taken from the same working copy (at most 2 megapixels) enrolment finds faces on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import onnxruntime as ort
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.enrolment import enrol_image, working_copy
from lfr_actors.errors import EnrolmentRejectedError, ImageError
from lfr_actors.evaluate_video import ALTERNATIVES, Entry, track_rules
from lfr_actors.logs import configure as configure_logging
from lfr_actors.models.cache import ModelCache, default_fetcher, default_home, prepare
from lfr_actors.models.embedder import distances
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline, PipelineConfig
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.types import FloatArray, UInt8Array
from lfr_actors.tracking.config import TrackingConfig
from lfr_actors.tracking.evidence import face_weight
from lfr_actors.tracking.tracker import iou

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CANVAS = (360, 640)
"""Frame height and width: the shared clip's and a typical sub-stream's size."""
GREY = 128
MARGIN = 0.6
"""The square crop around a face reaches this many face sides beyond it on each side."""
MIN_IOU = 0.3
"""A detection is the pasted face when it overlaps the pasted box at least this much."""
FRAME_RULES = ("frame_gate", "frame_all")
"""Each face decided alone: only faces that pass the quality gate, or every face."""
MAX_SIZE_PX = 100.0
"""The largest face size asked for: its square crop, 10 % larger, still fits the frame."""
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class BenchError(Exception):
    """The data cannot be benchmarked; the message says why."""


# --- Degradation and track building (no models) -------------------------------------


@dataclass(frozen=True)
class Degradation:
    """What one frame does to the face: every figure drawn from the track's random stream.

    ``scale``: relative size change (-0.1 to 0.1); ``dx``, ``dy``: shift of the face's
    centre, as a fraction of the face's size (-0.1 to 0.1), from the track's own place;
    ``blur_sigma`` (0-2 px, at the face's final size); ``gain`` and ``offset``: contrast
    and brightness (``pixel * gain + offset``); ``noise_sigma``: sensor noise (grey
    levels), drawn from ``noise_seed`` (so a frame is a function of its degradation
    alone); ``jpeg_quality`` (30-90) of the frame's re-encoding.
    """

    scale: float
    dx: float
    dy: float
    blur_sigma: float
    gain: float
    offset: float
    noise_sigma: float
    noise_seed: int
    jpeg_quality: int


def draw_degradation(rng: np.random.Generator) -> Degradation:
    """One frame's degradation, drawn from ``rng`` (always the same number of draws)."""
    scale, dx, dy = rng.uniform(-0.1, 0.1, 3)
    return Degradation(
        scale=float(scale),
        dx=float(dx),
        dy=float(dy),
        blur_sigma=float(rng.uniform(0.0, 2.0)),
        gain=float(rng.uniform(0.75, 1.25)),
        offset=float(rng.uniform(-25.0, 25.0)),
        noise_sigma=float(rng.uniform(0.0, 6.0)),
        noise_seed=int(rng.integers(0, 2**31)),
        jpeg_quality=int(rng.integers(30, 91)),
    )


def face_region(
    image: UInt8Array, box: Sequence[float], margin: float = MARGIN
) -> tuple[UInt8Array, FloatArray]:
    """A square crop around ``box`` (``x1 y1 x2 y2``) reaching ``margin`` face sides beyond
    it, and the box in the crop's coordinates; parts beyond the image are edge pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise BenchError(f"a face box needs x2 > x1 and y2 > y1, got {list(box)}")
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    half = side / 2.0
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left, top = round(cx - half), round(cy - half)
    size = max(1, round(side))
    height, width = image.shape[:2]
    pad = max(0, -left, -top, left + size - width, top + size - height)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    crop = cast(
        UInt8Array,
        np.ascontiguousarray(padded[top + pad : top + pad + size, left + pad : left + pad + size]),
    )
    inside = np.array([x1 - left, y1 - top, x2 - left, y2 - top], np.float32)
    return crop, inside


def render_frame(
    crop: UInt8Array,
    box: FloatArray,
    size_px: float,
    degradation: Degradation,
    *,
    centre: tuple[float, float] | None = None,
    canvas: tuple[int, int] = CANVAS,
) -> tuple[UInt8Array, FloatArray]:
    """``crop`` scaled so the shorter side of its face ``box`` is about ``size_px`` (what
    :class:`~lfr_actors.models.quality.FaceQuality` calls a face's size), pasted into a grey
    frame at ``centre`` (the frame's middle when not given), degraded by ``degradation``;
    returns the RGB frame and the face's box in it."""
    d = degradation
    height, width = canvas
    face_side = float(min(box[2] - box[0], box[3] - box[1]))
    scale = size_px * (1.0 + d.scale) / face_side
    side = max(1, round(crop.shape[0] * scale))
    scale = side / crop.shape[0]  # the scale the rounded side really has
    small = cv2.resize(
        crop, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    cx, cy = centre if centre is not None else (width / 2.0, height / 2.0)
    face = np.asarray(box, np.float64) * scale
    fx, fy = (face[0] + face[2]) / 2.0, (face[1] + face[3]) / 2.0
    shown = min(face[2] - face[0], face[3] - face[1])
    left = round(cx + d.dx * shown - fx)
    top = round(cy + d.dy * shown - fy)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    if left < 0 or top < 0:
        raise BenchError(f"a face of {size_px:g} px does not fit a {width}x{height} frame")
    frame: np.ndarray = np.full((height, width, 3), GREY, np.float32)
    frame[top : top + side, left : left + side] = small
    if d.blur_sigma > 0.05:
        frame = cv2.GaussianBlur(frame, (0, 0), d.blur_sigma)
    frame = frame * d.gain + d.offset
    if d.noise_sigma > 0:
        noise = np.random.default_rng(d.noise_seed).normal(0.0, d.noise_sigma, frame.shape)
        frame = frame + noise
    frame8 = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    bgr = cv2.cvtColor(frame8, cv2.COLOR_RGB2BGR)  # JPEG's colour transform expects BGR
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, d.jpeg_quality])
    if not ok:
        raise BenchError("JPEG re-encoding failed")
    raw = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    if raw is None:
        raise BenchError("JPEG decoding failed")
    decoded = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    where = (face + np.array([left, top, left, top], np.float64)).astype(np.float32)
    return cast(UInt8Array, np.ascontiguousarray(decoded)), where


def track_rng(seed: int, photo: int, size_px: float) -> np.random.Generator:
    """The random stream of one track: the same seed, photo and size give the same frames
    whichever other sizes or photos a run has."""
    return np.random.default_rng([seed, photo, round(size_px * 100)])


def render_track(
    crop: UInt8Array,
    box: FloatArray,
    size_px: float,
    frames: int,
    rng: np.random.Generator,
    canvas: tuple[int, int] = CANVAS,
) -> list[tuple[UInt8Array, FloatArray, Degradation]]:
    """``frames`` degraded frames of one distant face: ``(frame, face box, degradation)``.

    The track keeps one place in the frame (drawn first, within the frame's middle half),
    around which each frame's face moves a little.
    """
    if frames < 1:
        raise BenchError(f"a track needs at least 1 frame, got {frames}")
    height, width = canvas
    centre = (
        float(rng.uniform(0.25, 0.75) * width),
        float(rng.uniform(0.25, 0.75) * height),
    )
    out = []
    for _ in range(frames):
        degradation = draw_degradation(rng)
        frame, where = render_frame(crop, box, size_px, degradation, centre=centre, canvas=canvas)
        out.append((frame, where, degradation))
    return out


def pick_face(boxes: FloatArray, pasted: FloatArray, min_iou: float = MIN_IOU) -> int | None:
    """The detection overlapping the pasted face most, if by at least ``min_iou``."""
    if len(boxes) == 0:
        return None
    overlaps = iou(boxes, pasted.reshape(1, 4))[:, 0]
    best = int(np.argmax(overlaps))
    return best if overlaps[best] >= min_iou else None


# --- Photos, gallery, probes ------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    """One labelled photo: its identity (folder name) and path."""

    identity: str
    path: Path


def list_photos(people: Path, only: Sequence[str] | None = None) -> list[Photo]:
    """The photos of ``people/<identity>/``, identities and files in name order."""
    if not people.is_dir():
        raise BenchError(f"{people}: no such folder (expected one folder per identity)")
    folders = sorted(p for p in people.iterdir() if p.is_dir())
    if only:
        names = {f.name for f in folders}
        unknown = sorted(set(only) - names)
        if unknown:
            raise BenchError(
                f"unknown identities {', '.join(unknown)} (in {people}: {', '.join(sorted(names))})"
            )
        folders = [f for f in folders if f.name in set(only)]
    photos = [
        Photo(folder.name, path)
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in PHOTO_SUFFIXES
    ]
    if len({p.identity for p in photos}) < 2:
        raise BenchError(f"{people}: at least two identities with photos are needed")
    return photos


def gallery(templates: dict[Photo, FloatArray], probe: Photo, *, mated: bool) -> list[Entry]:
    """The entries a probe is searched against: leave-one-out (mated) or without its
    identity (non-mated)."""
    by_identity: dict[str, list[FloatArray]] = {}
    for photo, template in templates.items():
        if photo == probe or (not mated and photo.identity == probe.identity):
            continue
        by_identity.setdefault(photo.identity, []).append(template)
    return [
        Entry(identity, np.concatenate(rows).astype(np.float32), None)
        for identity, rows in sorted(by_identity.items())
    ]


@dataclass
class Track:
    """One probe's synthetic track at one size: every face found, embedded in one call."""

    photo: Photo
    size_px: float
    frames: int
    seed: int = 0
    no_face: int = 0
    vectors: FloatArray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    weights: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float64))
    passed: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    sizes: list[float] = field(default_factory=list)


def build_track(
    pipeline: FacePipeline,
    photo: Photo,
    region: tuple[UInt8Array, FloatArray],
    size_px: float,
    frames: int,
    stream: tuple[int, int],
    config: TrackingConfig,
) -> Track:
    """Render, detect, pick and embed one track (see the module docstring); ``stream`` is
    the seed and the photo's number, which choose the track's degradations."""
    crop, box = region
    seed, number = stream
    track = Track(photo, size_px, frames, seed)
    chips, weights, passed = [], [], []
    rng = track_rng(seed, number, size_px)
    for frame, where, _ in render_track(crop, box, size_px, frames, rng):
        found = pipeline.find(frame)
        face = pick_face(found.detections.boxes, where)
        if face is None:
            track.no_face += 1
            continue
        chips.append(found.chips[face])
        quality = found.quality[face]
        weights.append(face_weight(quality, config))
        passed.append(bool(found.passed[face]))
        track.sizes.append(round(float(quality.size_px), 1))
    side = pipeline.embedder.spec.chip_size
    stacked = np.stack(chips) if chips else np.zeros((0, side, side, 3), np.uint8)
    track.vectors = pipeline.embed_chips(stacked)
    track.weights = np.asarray(weights, np.float64)
    track.passed = np.asarray(passed, bool)
    return track


# --- Decisions and scores -----------------------------------------------------------


def face_matches(
    vectors: FloatArray, entries: Sequence[Entry], metric: str
) -> tuple[list[str | None], np.ndarray]:
    """Each face's nearest entry and its distance (the frame-based search, exact)."""
    if vectors.shape[0] == 0:
        return [], np.zeros((0,), np.float64)
    table = np.stack([distances(vectors, e.templates, metric).min(axis=1) for e in entries], 1)
    nearest = table.argmin(axis=1)
    return [entries[int(i)].entry_id for i in nearest], table.min(axis=1).astype(np.float64)


def decide(
    track: Track,
    entries: Sequence[Entry],
    *,
    threshold: float,
    metric: str,
    normalise: bool,
    min_faces: int,
    config: TrackingConfig | None = None,
) -> dict[str, Any]:
    """Every rule's decision on one track against one gallery at one threshold.

    With ``config``, the track rules decide with production's threshold for the track's
    largest face (its ``small_face_margin``); without, with ``threshold`` itself.

    Track rules: ``{"entry", "value", "decision"}`` from :func:`track_rules` (no decision
    when no face has weight). Frame rules: the faces' own decisions (``faces``) and the
    nearest entries and values (``nearest``, ``values``) the separation is measured on.
    """
    keep = track.weights > 0
    sizes = np.asarray(track.sizes, np.float64)
    largest = float(sizes[keep].max()) if sizes.shape == keep.shape and keep.any() else None
    out: dict[str, Any] = {}
    if keep.any():
        rules = track_rules(
            track.vectors[keep],
            track.weights[keep],
            entries,
            metric=metric,
            normalise=normalise,
            threshold_for=lambda _entry: threshold,
            min_faces=min_faces,
            largest_px=largest,
            config=config,
        )
        rules.pop("distances")
        out.update(rules)
    else:
        out.update(
            {rule: {"entry": None, "value": None, "decision": None} for rule in ALTERNATIVES}
        )
    nearest, values = face_matches(track.vectors, entries, metric)
    for rule in FRAME_RULES:
        chosen = track.passed if rule == "frame_gate" else np.ones(len(nearest), bool)
        out[rule] = {
            "faces": [
                n if (c and v <= threshold) else None
                for n, v, c in zip(nearest, values, chosen, strict=True)
            ],
            "nearest": [n for n, c in zip(nearest, chosen, strict=True) if c],
            "values": [round(float(v), 4) for v, c in zip(values, chosen, strict=True) if c],
        }
    return out


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def separation(mated: Sequence[float], strangers: Sequence[float]) -> float | None:
    """The chance that a mated value is below a non-mated one (ties count half)."""
    if not mated or not strangers:
        return None
    a = np.asarray(mated, np.float64)[:, None]
    b = np.asarray(strangers, np.float64)[None, :]
    return round(float(((a < b) + 0.5 * (a == b)).mean()), 3)


def score(
    outcomes: Sequence[tuple[Photo, bool, dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """Counts and rates per rule over ``(probe, mated?, decide(...))`` of one size and
    threshold (see the module docstring)."""
    rows: dict[str, dict[str, Any]] = {}
    for rule in ALTERNATIVES:
        row = {"mated": 0, "correct": 0, "wrong": 0, "non_mated": 0, "false": 0}
        genuine: list[float] = []
        impostor: list[float] = []
        for photo, mated, decided in outcomes:
            result = decided[rule]
            value = result["value"]
            # The vote is a share within the threshold: higher is nearer.
            ordered = math.inf if value is None else (-value if rule == "votes" else value)
            if mated:
                row["mated"] += 1
                row["correct"] += result["decision"] == photo.identity
                row["wrong"] += result["decision"] not in (None, photo.identity)
                genuine.append(ordered if result["entry"] == photo.identity else math.inf)
            else:
                row["non_mated"] += 1
                row["false"] += result["decision"] is not None
                impostor.append(ordered)
        rows[rule] = _finish(row, genuine, impostor)
    for rule in FRAME_RULES:
        face = {"mated": 0, "correct": 0, "wrong": 0, "non_mated": 0, "false": 0}
        any_ = dict(face)
        genuine, impostor = [], []
        for photo, mated, decided in outcomes:
            faces = decided[rule]["faces"]
            pairs = zip(decided[rule]["nearest"], decided[rule]["values"], strict=True)
            if mated:
                right = sum(f == photo.identity for f in faces)
                wrong = sum(f not in (None, photo.identity) for f in faces)
                face["mated"] += len(faces)
                face["correct"] += right
                face["wrong"] += wrong
                any_["mated"] += 1
                any_["correct"] += right > 0
                any_["wrong"] += wrong > 0
                genuine += [v if n == photo.identity else math.inf for n, v in pairs]
            else:
                false = sum(f is not None for f in faces)
                face["non_mated"] += len(faces)
                face["false"] += false
                any_["non_mated"] += 1
                any_["false"] += false > 0
                impostor += [v for _, v in pairs]
        rows[f"{rule}_face"] = _finish(face, genuine, impostor)
        rows[f"{rule}_any"] = _finish(any_, [], [])
    return rows


def _finish(row: dict[str, Any], genuine: list[float], impostor: list[float]) -> dict[str, Any]:
    row["tmr"] = _rate(row["correct"], row["mated"])
    row["wrong_rate"] = _rate(row["wrong"], row["mated"])
    row["fmr"] = _rate(row["false"], row["non_mated"])
    row["auc"] = separation(genuine, impostor)
    return row


# --- The run ------------------------------------------------------------------------


def enrol_all(
    pipeline: FacePipeline, photos: Sequence[Photo]
) -> tuple[
    dict[Photo, FloatArray], dict[Photo, tuple[UInt8Array, FloatArray]], list[dict[str, str]]
]:
    """Each photo's template (as the store enrols it) and its face region; the photos
    that could not be used, with the reason."""
    templates: dict[Photo, FloatArray] = {}
    regions: dict[Photo, tuple[UInt8Array, FloatArray]] = {}
    refused = []
    for photo in photos:
        try:
            image = load_image(photo.path)
            templates[photo] = enrol_image(pipeline, image).embeddings.astype(np.float32)
        except (EnrolmentRejectedError, ImageError) as exc:
            refused.append({"photo": str(photo.path), "reason": str(exc)})
            continue
        # The face region comes from the working copy enrolment also finds faces on, so a
        # 3-megapixel photo costs the detector what a 2-megapixel one does.
        copy = working_copy(image)
        found = pipeline.find(copy)
        boxes = found.detections.boxes
        if len(boxes) == 0:
            refused.append({"photo": str(photo.path), "reason": "no face found"})
            templates.pop(photo)
            continue
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        regions[photo] = face_region(copy, boxes[int(np.argmax(sides))])
    return templates, regions, refused


def run(
    pipeline: FacePipeline,
    people: Path,
    *,
    sizes: Sequence[float],
    frames: int,
    seeds: Sequence[int],
    thresholds: Sequence[float],
    only: Sequence[str] | None = None,
    config: TrackingConfig | None = None,
    min_faces: int | None = None,
) -> dict[str, Any]:
    """The whole benchmark; returns the report (see the module docstring)."""
    config = config or TrackingConfig()
    min_faces = config.min_track_frames if min_faces is None else min_faces
    spec = pipeline.embedder.spec
    photos = list_photos(people, only)
    started = time.perf_counter()
    templates, regions, refused = enrol_all(pipeline, photos)
    enrol_s = time.perf_counter() - started
    counts: dict[str, int] = {}
    for photo in templates:
        counts[photo.identity] = counts.get(photo.identity, 0) + 1
    probes = [p for p in photos if p in templates]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    per_size: list[dict[str, Any]] = []
    tracks_out: list[dict[str, Any]] = []
    for size in sizes:
        tracks = [
            build_track(pipeline, photo, regions[photo], size, frames, (seed, i), config)
            for seed in seeds
            for i, photo in enumerate(probes)
        ]
        faces = sum(len(t.weights) for t in tracks)
        per_size.append(
            {
                "size_px": size,
                "tracks": len(tracks),
                "mated_tracks": sum(counts[t.photo.identity] > 1 for t in tracks),
                "non_mated_tracks": len(tracks),
                "frames": len(tracks) * frames,
                "frames_no_face": sum(t.no_face for t in tracks),
                "faces": faces,
                "faces_weight_0": sum(int((t.weights <= 0).sum()) for t in tracks),
                "faces_passed_gate": sum(int(t.passed.sum()) for t in tracks),
                "tracks_without_weight": sum(not (t.weights > 0).any() for t in tracks),
                "median_face_px": round(float(np.median([s for t in tracks for s in t.sizes])), 1)
                if faces
                else None,
            }
        )
        for threshold in thresholds:
            outcomes = []
            for track in tracks:
                for mated in (True, False):
                    if mated and counts[track.photo.identity] < 2:
                        continue
                    decided = decide(
                        track,
                        gallery(templates, track.photo, mated=mated),
                        threshold=threshold,
                        metric=spec.metric,
                        normalise=spec.l2_normalise,
                        min_faces=min_faces,
                        config=config,
                    )
                    outcomes.append((track.photo, mated, decided))
                    tracks_out.append(_track_row(track, mated, threshold, decided))
            for rule, row in score(outcomes).items():
                results.append({"size_px": size, "threshold": threshold, "rule": rule, **row})
    return {
        "benchmark": "track_rules",
        "settings": {
            "sizes_px": list(sizes),
            "frames_per_track": frames,
            "seeds": list(seeds),
            "thresholds": list(thresholds),
            "default_threshold": spec.default_threshold,
            "model": f"{spec.name} {spec.version}",
            "metric": spec.metric,
            "min_faces": min_faces,
            "detector_min_face_px": pipeline.detector.config.min_face_px,
            "tracking": {
                "min_face_px": config.min_face_px,
                "full_face_px": config.full_face_px,
                "small_face_margin": config.small_face_margin,
            },
            "canvas": f"{CANVAS[1]}x{CANVAS[0]}",
        },
        "photos": dict(sorted(counts.items())),
        "refused": refused,
        "sizes": per_size,
        "results": results,
        "tracks": tracks_out,
        "seconds": {
            "enrol": round(enrol_s, 1),
            "tracks": round(time.perf_counter() - started, 1),
        },
    }


def _track_row(
    track: Track, mated: bool, threshold: float, decided: dict[str, Any]
) -> dict[str, Any]:
    """One track's decisions, for the JSON report (frame rules as counts of faces)."""
    row: dict[str, Any] = {
        "photo": f"{track.photo.identity}/{track.photo.path.name}",
        "size_px": track.size_px,
        "seed": track.seed,
        "mated": mated,
        "threshold": threshold,
        "faces": len(track.weights),
        "faces_weighted": int((track.weights > 0).sum()),
        "no_face": track.no_face,
    }
    for rule in ALTERNATIVES:
        row[rule] = decided[rule]
    for rule in FRAME_RULES:
        faces = decided[rule]["faces"]
        row[rule] = {
            "matched": {e: faces.count(e) for e in sorted({f for f in faces if f})},
            "best": min(decided[rule]["values"], default=None),
        }
    return row


def format_table(report: dict[str, Any]) -> str:
    """The results as a terminal table: per size and threshold, each rule's rates."""
    settings = report["settings"]
    out = [
        f"{settings['model']} ({settings['metric']}), default threshold "
        f"{settings['default_threshold']:g}, {settings['frames_per_track']} frames per track, "
        f"min_faces {settings['min_faces']}, seeds {' '.join(map(str, settings['seeds']))}",
        "photos: " + ", ".join(f"{k} {v}" for k, v in report["photos"].items()),
    ]
    for size in report["sizes"]:
        out.append(
            f"size {size['size_px']:g} px: {size['tracks']} tracks ({size['mated_tracks']} "
            f"mated, {size['non_mated_tracks']} non-mated), {size['frames']} frames, "
            f"{size['frames_no_face']} with no face found, {size['faces_weight_0']} faces of "
            f"weight 0, {size['faces_passed_gate']} of {size['faces']} faces pass the gate, "
            f"median face {size['median_face_px']} px"
        )
    out += [
        "",
        f"{'size':>4} {'thr':>5} {'rule':<16} {'TMR':>14} {'wrong':>10} {'FMR':>14} {'auc':>6}",
    ]
    for row in report["results"]:
        unit = "f" if row["rule"].endswith("_face") else "t"
        out.append(
            f"{row['size_px']:>4g} {row['threshold']:>5g} {row['rule']:<16} "
            f"{_cell(row['correct'], row['mated'], row['tmr'], unit):>14} "
            f"{row['wrong']:>10} "
            f"{_cell(row['false'], row['non_mated'], row['fmr'], unit):>14} "
            f"{'' if row['auc'] is None else format(row['auc'], '.3f'):>6}"
        )
    out.append("(t: tracks, f: faces; *_any: a frame-based track alerts when any face matches)")
    return "\n".join(out)


def _cell(part: int, whole: int, rate: float | None, unit: str) -> str:
    return f"{part}/{whole}{unit} {'-' if rate is None else format(rate, '.2f')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=default_home())
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--sizes", type=float, nargs="+", default=[20, 24, 32, 48])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one track per seed")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        help="distance thresholds (default: the model's, and 0.05 either side)",
    )
    parser.add_argument("--people", nargs="+", help="only these identities (folder names)")
    parser.add_argument(
        "--min-faces", type=int, help="faces a track rule needs (default: min_track_frames)"
    )
    parser.add_argument(
        "--small-face-margin",
        type=float,
        default=TrackingConfig().small_face_margin,
        help="production's stricter threshold for small-face tracks (0: the plain threshold)",
    )
    parser.add_argument(
        "--json", type=Path, help="write the whole JSON report (with every track) here"
    )
    args = parser.parse_args()
    if args.frames < 1 or any(not 8 <= s <= MAX_SIZE_PX for s in args.sizes):
        parser.error(f"--frames must be 1 or more and each --sizes value from 8 to {MAX_SIZE_PX:g}")
    configure_logging(level="WARNING")
    cache = ModelCache(args.home / "models")
    prepare(cache, default_fetcher(args.home), progress=False)
    pipeline = FacePipeline.build(RuntimeConfig(), PipelineConfig(), cache=cache)
    pipeline.warm_up()
    default = pipeline.embedder.spec.default_threshold
    thresholds = sorted(
        set(args.thresholds or [round(default - 0.05, 4), default, round(default + 0.05, 4)])
    )
    try:
        report = run(
            pipeline,
            args.data / "faces" / "people",
            sizes=args.sizes,
            frames=args.frames,
            seeds=args.seed,
            thresholds=thresholds,
            only=args.people,
            config=TrackingConfig(small_face_margin=args.small_face_margin),
            min_faces=args.min_faces,
        )
    except (BenchError, ValueError) as exc:
        sys.exit(f"bench_track_rules: {exc}")
    report["machine"] = machine(
        onnxruntime=ort.__version__,
        opencv=cv2.__version__,
        numpy=np.__version__,
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    # Standard output: the report without the per-track rows (those go to --json).
    print(json.dumps({k: v for k, v in report.items() if k != "tracks"}, indent=2))
    print()
    print(format_table(report))


if __name__ == "__main__":
    main()
