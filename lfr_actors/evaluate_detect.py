"""``lfr evaluate detect``: face detection recall by face size, and precision, on dlib XML.

The annotations are dlib ``imglab`` XML files (``<dataset><images><image file=...><box
top left width height [ignore='1']>``, as in ``data/detection/*.xml``): image paths are
relative to the XML file, an image with no box has no face, a box's ``<part>`` landmarks
are ignored, and a box marked ``ignore`` is a face that is neither required nor counted
against a detector (too blurred or cut off to be fair either way).

**Bands.** A face is banded by its annotated box height in pixels, half-open intervals:
``<20`` (under 20), ``20-40`` (20 up to 40), ``40-80`` (40 up to 80), ``>80`` (80 and
over).

**Matching.** A face is found when a detection overlaps it at IoU >= 0.4, one to one:
each detection matches at most one face and each face at most one detection. The pairs
are an *optimal* assignment (:func:`scipy.optimize.linear_sum_assignment`) that first
makes as many pairs as possible and, among those, has the largest total IoU. Greedy
matching by IoU can lose a face where two faces overlap one another and the better
detection of one takes the only detection the other had; the optimal one cannot, and
costs nothing measurable at tens of faces per image. Detections left unmatched that
overlap an ``ignore`` box at IoU >= 0.4 count as neither found nor false; every other
unmatched detection is a false detection. precision = matched / (matched + false).

**Annotation style.** Styles differ: dlib's boxes are square and cover the eyebrows to
the chin; MTCNN's and CenterFace's are narrower and taller, reaching up the forehead.
Measured on ``data/detection/training.xml`` (median ratio of a matched detection's side to
the annotated side): MTCNN width 0.85, height 1.17; CenterFace at 640x384 width 0.89,
height 1.19 (at 1024x768, 0.91 and 1.17); the detections' centres sit 4-5 % of the face
higher. A strict IoU on raw boxes can therefore penalise a detector for the annotator's
habit, not for missing a face (on the shared photos it changes no count: the matched pairs'
median raw IoU is 0.66 to 0.74, but a tighter style or a higher threshold would). The rule
here: a detector's boxes may be mapped to the
annotation's style by a :class:`BoxStyle` (a per-detector fixed width and height scale
about the box centre, and a fixed shift of the centre) measured on a *different*
annotation file (``--box-style-from TRAINING.xml``: the detector runs on that file, each
face is paired with the detection whose centre lies inside it, nearest its centre, one to
one, and the medians of those pairs make the style), then applied unchanged to the file
evaluated. Nothing is fitted to the file evaluated. Without ``--box-style-from`` boxes are
compared raw. Either way each detector's report also gives the faces found with raw
boxes (``found_raw_boxes``) and with a centre-in-box rule (``found_centre_rule``: one to
one, a detection's centre inside the annotated box), so the effect of the rule is visible.

**Scale.** ``--scale F`` resizes every photo, and its boxes, by F before detection. The
shared photos' faces are 37 to 109 px tall, so no face falls in the ``<20`` band; at 0.5
and 0.25 the small bands fill as a distant camera would fill them. A shrunk photo is
cleaner than a far face seen by a camera (no sensor noise or compression at that size), so
its recall is an upper bound for real small faces. The ``--box-style-from`` file is read
unscaled: a detector that misses its faces shrunk could not pair enough to measure a style.

**Time.** ``ms_per_image`` is the mean over the images of the wall time of one
``detect`` call, after the detector's warm-up and one untimed call on the first image;
decoding is not counted. Each image is detected ``repeat`` times (``--repeat``, default 3)
and its fastest call counts: on a machine shared with other work, the slower calls measure
the other work. The detections scored are those of the first call (they do not change).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import cv2
import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from lfr_actors.errors import ImageError, LfrError
from lfr_actors.models.images import load_image
from lfr_actors.models.types import Detections, UInt8Array
from lfr_actors.tracking.tracker import iou as iou_matrix  # the tracker's box overlap

__all__ = [
    "BANDS",
    "IOU_THRESHOLD",
    "MAX_SCALE",
    "MIN_SCALE",
    "RAW_STYLE",
    "AnnotatedBox",
    "AnnotatedImage",
    "BoxStyle",
    "DetectionEvaluationError",
    "DetectorRun",
    "ImageScore",
    "band_of",
    "centre_pairs",
    "evaluate_detector",
    "format_report",
    "iou_matrix",
    "load_scaled",
    "match_one_to_one",
    "measure_box_style",
    "read_annotations",
    "run_detector",
    "score_image",
    "style_from_run",
    "summarise",
    "summarise_annotations",
]

F64 = npt.NDArray[np.float64]

IOU_THRESHOLD = 0.4
"""The overlap at which a detection finds a face (and an ``ignore`` box excuses one)."""

BANDS: tuple[tuple[str, float, float], ...] = (
    ("<20", 0.0, 20.0),
    ("20-40", 20.0, 40.0),
    ("40-80", 40.0, 80.0),
    (">80", 80.0, math.inf),
)
"""Face-height bands ``(name, low, high)``: a face of height h is in the band low <= h < high."""

MIN_SCALE = 0.05
MAX_SCALE = 4.0
"""The factors photos may be resized by before detection (``--scale``)."""

MIN_STYLE_PAIRS = 5
"""The fewest face-detection pairs a box style is measured from."""

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


class DetectionEvaluationError(LfrError):
    """An annotation file, or an image it names, that cannot be evaluated; says where."""


# -- the annotations -----------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatedBox:
    """One annotated face: ``x1, y1, x2, y2`` in image pixels, its XML line, ignored or not."""

    x1: float
    y1: float
    x2: float
    y2: float
    line: int
    ignore: bool = False

    @property
    def height(self) -> float:
        """The box's height in pixels: what bands it."""
        return self.y2 - self.y1

    def as_array(self) -> F64:
        """``[x1, y1, x2, y2]``."""
        return np.array([self.x1, self.y1, self.x2, self.y2], np.float64)


@dataclass(frozen=True)
class AnnotatedImage:
    """One ``<image>`` of an annotation file: the photo and its boxes (none: no face).

    ``where`` is ``FILE.xml:LINE`` of the ``<image>`` element. ``scale``: the photo is
    resized by this factor when loaded (the boxes are already scaled; see :meth:`rescaled`).
    """

    path: Path
    where: str
    boxes: tuple[AnnotatedBox, ...]
    scale: float = 1.0

    @property
    def faces(self) -> list[AnnotatedBox]:
        """The boxes a detector must find (not marked ignore)."""
        return [b for b in self.boxes if not b.ignore]

    @property
    def ignored(self) -> list[AnnotatedBox]:
        """The boxes marked ignore."""
        return [b for b in self.boxes if b.ignore]

    def rescaled(self, factor: float) -> AnnotatedImage:
        """The image as seen resized by ``factor``: its boxes scaled about the origin."""
        boxes = tuple(
            dataclasses.replace(
                b, x1=b.x1 * factor, y1=b.y1 * factor, x2=b.x2 * factor, y2=b.y2 * factor
            )
            for b in self.boxes
        )
        return dataclasses.replace(self, boxes=boxes, scale=self.scale * factor)


class _Reader:
    """An expat reader of imglab XML that keeps the line of every image and box."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.images: list[AnnotatedImage] = []
        self.errors: list[str] = []
        self._stack: list[str] = []
        self._image: tuple[Path, str] | None = None
        self._boxes: list[AnnotatedBox] = []
        self.parser = expat.ParserCreate()
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        # Entities can expand without bound and reach for other files; imglab writes none.
        self.parser.EntityDeclHandler = self._entity
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def where(self) -> str:
        return f"{self.path}:{self.parser.CurrentLineNumber}"

    def _entity(self, name: str, *_: object) -> None:
        raise DetectionEvaluationError(
            f"{self.where()}: entity declarations are not accepted in annotations ({name!r})"
        )

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        parent = self._stack[-1] if self._stack else None
        self._stack.append(tag)
        if parent is None and tag != "dataset":
            raise DetectionEvaluationError(
                f"{self.where()}: not a dlib imglab file: the root element is <{tag}>, "
                "expected <dataset>"
            )
        if tag == "image" and parent == "images":
            self._start_image(attrs)
        elif tag == "box" and parent == "image" and self._image is not None:
            box = self._box(attrs)
            if box is not None:
                self._boxes.append(box)

    def _end(self, tag: str) -> None:
        self._stack.pop()
        if tag == "image" and self._image is not None and self._stack[-1:] == ["images"]:
            path, where = self._image
            self.images.append(AnnotatedImage(path, where, tuple(self._boxes)))
            self._image, self._boxes = None, []

    def _start_image(self, attrs: dict[str, str]) -> None:
        name = attrs.get("file", "").strip()
        if not name:
            self.errors.append(f"{self.where()}: <image> has no file attribute")
            return
        image = self.path.parent / name
        if not image.is_file():
            self.errors.append(f"{self.where()}: image {name!r} not found (looked at {image})")
        self._image = (image, self.where())

    def _box(self, attrs: dict[str, str]) -> AnnotatedBox | None:
        values = {}
        for key in ("top", "left", "width", "height"):
            text = attrs.get(key)
            try:
                values[key] = int(text) if text is not None else None
            except ValueError:
                values[key] = None
        missing = [k for k, v in values.items() if v is None]
        if missing:
            self.errors.append(
                f"{self.where()}: <box> needs whole-number top, left, width and height; "
                f"{', '.join(missing)} missing or not whole numbers"
            )
            return None
        top, left, width, height = (int(values[k] or 0) for k in ("top", "left", "width", "height"))
        if width <= 0 or height <= 0:
            self.errors.append(
                f"{self.where()}: <box> width and height must be positive, got {width}x{height}"
            )
            return None
        flag = attrs.get("ignore", "0").strip().lower()
        if flag not in _TRUE | _FALSE:
            self.errors.append(f"{self.where()}: <box> ignore must be 1 or 0, got {flag!r}")
            return None
        line = self.parser.CurrentLineNumber
        return AnnotatedBox(left, top, left + width, top + height, line, flag in _TRUE)


def read_annotations(path: Path) -> list[AnnotatedImage]:
    """The images and boxes of a dlib ``imglab`` XML file, every image checked to exist.

    Raises :class:`DetectionEvaluationError` naming the file and line: for a file that is
    missing or not well-formed XML, a root other than ``<dataset>``, an image without a
    ``file`` or whose file is missing, a box without whole-number ``top``, ``left``,
    ``width`` and ``height`` (or with a side <= 0), and a file with no ``<image>``. All the
    bad lines are reported at once, one a line.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DetectionEvaluationError(f"{path}: no such annotation file") from exc
    except IsADirectoryError as exc:
        raise DetectionEvaluationError(f"{path}: is a folder, not an annotation file") from exc
    except OSError as exc:
        raise DetectionEvaluationError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    reader = _Reader(path)
    try:
        reader.parser.Parse(data, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise DetectionEvaluationError(
            f"{path}:{exc.lineno}: not well-formed XML ({reason}, column {exc.offset + 1})"
        ) from exc
    if reader.errors:
        raise DetectionEvaluationError("\n".join(reader.errors))
    if not reader.images:
        raise DetectionEvaluationError(
            f"{path}: no <image> under <dataset><images>; nothing to evaluate"
        )
    return reader.images


# -- boxes, bands and matching --------------------------------------------------------------


def band_of(height: float) -> str:
    """The name of the band of a face ``height`` pixels tall (see :data:`BANDS`)."""
    for name, low, high in BANDS:
        if low <= height < high:
            return name
    raise ValueError(f"a face height must be >= 0, got {height}")


def match_one_to_one(eligible: npt.ArrayLike, weight: npt.ArrayLike) -> list[tuple[int, int]]:
    """The most pairs ``(row, column)`` with ``eligible`` true, one to one; ties: most weight.

    ``weight`` (same shape, values in [0, 1]) breaks ties between assignments with as many
    pairs: each eligible pair is worth ``K + weight`` with K larger than any possible
    total weight, so one more pair always outweighs a better total.
    """
    ok = np.asarray(eligible, bool)
    if ok.size == 0 or not ok.any():
        return []
    w = np.clip(np.asarray(weight, np.float64), 0.0, 1.0)
    bonus = min(ok.shape) + 1.0
    gain = np.where(ok, bonus + w, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c]]


def _centres(boxes: F64) -> F64:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def centre_pairs(detections: npt.ArrayLike, faces: npt.ArrayLike) -> list[tuple[int, int]]:
    """Detection-face pairs, one to one, with the detection's centre inside the face's box.

    Among as many pairs as possible, the detection centres nearest the face centres (the
    distance relative to the face's size) are preferred.
    """
    det = np.asarray(detections, np.float64).reshape(-1, 4)
    gt = np.asarray(faces, np.float64).reshape(-1, 4)
    c = _centres(det)
    inside = (
        (c[:, None, 0] > gt[None, :, 0])
        & (c[:, None, 0] < gt[None, :, 2])
        & (c[:, None, 1] > gt[None, :, 1])
        & (c[:, None, 1] < gt[None, :, 3])
    )
    side = np.maximum(np.sqrt((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])), 1e-9)
    distance = np.linalg.norm(c[:, None, :] - _centres(gt)[None, :, :], axis=2) / side[None, :]
    return match_one_to_one(inside, 1.0 - np.clip(distance, 0.0, 1.0))


@dataclass(frozen=True)
class BoxStyle:
    """How a detector's boxes differ from an annotation style, and the map between them.

    Measured on pairs of (detection, annotated face): ``width_ratio`` and
    ``height_ratio`` are the median detection side over annotated side; ``shift_x`` and
    ``shift_y`` the median offset of the detection's centre from the face's, as fractions
    of the face's width and height. :meth:`apply` maps detections to the annotation's
    style: the centre moved back by the shift and the sides divided by the ratios.
    ``source`` names the file the style was measured on (None: raw boxes).
    """

    width_ratio: float = 1.0
    height_ratio: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    pairs: int = 0
    source: str | None = None

    def apply(self, boxes: npt.ArrayLike) -> F64:
        """``boxes`` [N, 4] of the detector mapped to the annotation's style."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        if self.source is None:
            return b
        width = (b[:, 2] - b[:, 0]) / self.width_ratio
        height = (b[:, 3] - b[:, 1]) / self.height_ratio
        cx = (b[:, 0] + b[:, 2]) / 2 - self.shift_x * width
        cy = (b[:, 1] + b[:, 3]) / 2 - self.shift_y * height
        return np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], 1)

    def as_dict(self) -> dict[str, Any]:
        """The style as the JSON report gives it."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


RAW_STYLE = BoxStyle()
"""Detections compared as the detector gives them."""


def measure_box_style(
    pairs: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]], source: str
) -> BoxStyle:
    """The :class:`BoxStyle` of ``(detection box, face box)`` pairs, medians of each measure.

    Raises :class:`DetectionEvaluationError` with fewer than :data:`MIN_STYLE_PAIRS` pairs.
    """
    if len(pairs) < MIN_STYLE_PAIRS:
        raise DetectionEvaluationError(
            f"{source}: only {len(pairs)} face(s) paired with a detection; a box style needs "
            f"at least {MIN_STYLE_PAIRS}"
        )
    det = np.array([np.asarray(d, np.float64) for d, _ in pairs]).reshape(-1, 4)
    gt = np.array([np.asarray(g, np.float64) for _, g in pairs]).reshape(-1, 4)
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    dc, gc = _centres(det), _centres(gt)
    return BoxStyle(
        width_ratio=float(np.median((det[:, 2] - det[:, 0]) / gw)),
        height_ratio=float(np.median((det[:, 3] - det[:, 1]) / gh)),
        shift_x=float(np.median((dc[:, 0] - gc[:, 0]) / gw)),
        shift_y=float(np.median((dc[:, 1] - gc[:, 1]) / gh)),
        pairs=len(pairs),
        source=source,
    )


# -- scoring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageScore:
    """One image scored: each face's band and whether it was found; the detections' fate.

    ``found``, ``found_raw`` and ``found_centre`` are per face (the image's non-ignored
    boxes, in order): with the box style, with raw boxes, with the centre rule.
    ``excused``: unmatched detections that overlap an ignore box (neither found nor false).
    """

    bands: tuple[str, ...]
    found: tuple[bool, ...]
    found_raw: tuple[bool, ...]
    found_centre: tuple[bool, ...]
    detections: int
    false_detections: int
    excused: int
    side_ratios: tuple[tuple[float, float], ...] = ()


def _found(pairs: list[tuple[int, int]], faces: int) -> tuple[bool, ...]:
    hit = [False] * faces
    for _, face in pairs:
        hit[face] = True
    return tuple(hit)


def score_image(
    boxes: npt.ArrayLike, image: AnnotatedImage, style: BoxStyle = RAW_STYLE
) -> ImageScore:
    """Score one image's detections ``boxes`` [N, 4] against its annotations (see module)."""
    raw = np.asarray(boxes, np.float64).reshape(-1, 4)
    styled = style.apply(raw)
    faces = image.faces
    gt = np.array([f.as_array() for f in faces], np.float64).reshape(-1, 4)
    iou = iou_matrix(styled, gt)
    pairs = match_one_to_one(iou >= IOU_THRESHOLD, iou)
    raw_iou = iou_matrix(raw, gt)
    raw_pairs = match_one_to_one(raw_iou >= IOU_THRESHOLD, raw_iou)
    matched = {d for d, _ in pairs}
    unmatched = [d for d in range(len(raw)) if d not in matched]
    excused = 0
    if unmatched and image.ignored:
        ignored = np.array([b.as_array() for b in image.ignored], np.float64)
        overlap = iou_matrix(styled[unmatched], ignored)
        excused = int((overlap >= IOU_THRESHOLD).any(axis=1).sum())
    ratios = tuple(
        (
            float((raw[d, 2] - raw[d, 0]) / (gt[f, 2] - gt[f, 0])),
            float((raw[d, 3] - raw[d, 1]) / (gt[f, 3] - gt[f, 1])),
        )
        for d, f in pairs
    )
    return ImageScore(
        bands=tuple(band_of(f.height) for f in faces),
        found=_found(pairs, len(faces)),
        found_raw=_found(raw_pairs, len(faces)),
        found_centre=_found(centre_pairs(raw, gt), len(faces)),
        detections=len(raw),
        false_detections=len(unmatched) - excused,
        excused=excused,
        side_ratios=ratios,
    )


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarise(scores: Sequence[ImageScore]) -> dict[str, Any]:
    """Counts per band, recall, false detections and precision of a set of scored images."""
    bands: dict[str, dict[str, Any]] = {}
    for name, _, _ in BANDS:
        faces = sum(s.bands.count(name) for s in scores)
        found = sum(
            hit for s in scores for b, hit in zip(s.bands, s.found, strict=True) if b == name
        )
        bands[name] = {"faces": faces, "found": found, "recall": _ratio(found, faces)}
    faces = sum(len(s.bands) for s in scores)
    found = sum(sum(s.found) for s in scores)
    false = sum(s.false_detections for s in scores)
    ratios = np.array([r for s in scores for r in s.side_ratios], np.float64).reshape(-1, 2)
    return {
        "bands": bands,
        "faces": faces,
        "found": found,
        "recall": _ratio(found, faces),
        "false_detections": false,
        "precision": _ratio(found, found + false),
        "detections": sum(s.detections for s in scores),
        "excused_by_ignore": sum(s.excused for s in scores),
        "found_raw_boxes": sum(sum(s.found_raw) for s in scores),
        "found_centre_rule": sum(sum(s.found_centre) for s in scores),
        "median_side_ratio": {
            "width": round(float(np.median(ratios[:, 0])), 4) if len(ratios) else None,
            "height": round(float(np.median(ratios[:, 1])), 4) if len(ratios) else None,
        },
    }


# -- running a detector ---------------------------------------------------------------------

Detect = Callable[[UInt8Array], Detections]


@dataclass
class DetectorRun:
    """A detector's boxes for each image of an annotation file, and its time per image."""

    boxes: list[F64] = field(default_factory=list)
    ms_per_image: float | None = None


def load_scaled(image: AnnotatedImage) -> UInt8Array:
    """The image's pixels, RGB, resized by its ``scale`` (OpenCV's area filter to shrink).

    The new size is rounded to whole pixels, so the photo's true factor differs from the
    boxes' by under one pixel across the photo.
    """
    try:
        pixels = load_image(image.path)
    except ImageError as exc:
        raise DetectionEvaluationError(f"{image.where}: {exc}") from exc
    if image.scale == 1.0:
        return pixels
    h, w = pixels.shape[:2]
    size = (max(1, round(w * image.scale)), max(1, round(h * image.scale)))
    filter_ = cv2.INTER_AREA if image.scale < 1 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(pixels, size, interpolation=filter_), np.uint8)


def run_detector(detect: Detect, images: Sequence[AnnotatedImage], repeat: int = 1) -> DetectorRun:
    """``detect`` on every image (decoded first, untimed), ``repeat`` timed calls each.

    The first image is detected once untimed before the timed calls, so a lazily planned
    shape is not charged to it; call the detector's own ``warm_up`` before this. An
    image's time is its fastest call; the boxes kept are the first call's.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    run = DetectorRun()
    if not images:
        return run
    spent = 0.0
    for k, image in enumerate(images):
        pixels = load_scaled(image)
        if k == 0:
            detect(pixels)
        fastest = math.inf
        for attempt in range(repeat):
            start = time.perf_counter()
            found = detect(pixels)
            fastest = min(fastest, time.perf_counter() - start)
            if attempt == 0:
                run.boxes.append(np.asarray(found.boxes, np.float64).reshape(-1, 4))
        spent += fastest
    run.ms_per_image = round(spent * 1000 / len(images), 2)
    return run


def style_from_run(run: DetectorRun, images: Sequence[AnnotatedImage], source: str) -> BoxStyle:
    """The box style of a detector's run over an annotation file (centre-rule pairs)."""
    pairs: list[tuple[F64, F64]] = []
    for boxes, image in zip(run.boxes, images, strict=True):
        gt = np.array([f.as_array() for f in image.faces], np.float64).reshape(-1, 4)
        pairs.extend((boxes[d], gt[f]) for d, f in centre_pairs(boxes, gt))
    return measure_box_style(pairs, source)


def evaluate_detector(
    detect: Detect,
    images: Sequence[AnnotatedImage],
    style: BoxStyle = RAW_STYLE,
    repeat: int = 1,
) -> dict[str, Any]:
    """One detector's report on an annotation file: bands, precision, time, style used."""
    run = run_detector(detect, images, repeat)
    report = summarise(
        [score_image(b, image, style) for b, image in zip(run.boxes, images, strict=True)]
    )
    report["ms_per_image"] = run.ms_per_image
    report["box_style"] = style.as_dict() if style.source is not None else None
    return report


def summarise_annotations(
    path: Path, images: Sequence[AnnotatedImage], scale: float = 1.0
) -> dict[str, Any]:
    """The head of a report: the file, the photos' scale, faces and ignored boxes, the IoU."""
    return {
        "annotations": str(path),
        "scale": scale,
        "images": len(images),
        "faces": sum(len(i.faces) for i in images),
        "ignored": sum(len(i.ignored) for i in images),
        "iou_threshold": IOU_THRESHOLD,
    }


# -- the text report --------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    """The JSON report as a table: per detector, found/faces and recall per band."""
    scaled = f" resized x{report['scale']:g}" if report["scale"] != 1 else ""
    head = (
        f"{report['annotations']}{scaled}: {report['images']} images, {report['faces']} faces "
        f"({report['ignored']} ignored); a face is found at IoU >= {IOU_THRESHOLD}"
    )
    lines = [head]
    names = [name for name, _, _ in BANDS]
    header = f"{'detector':<22}" + "".join(f"{n:>14}" for n in names)
    header += f"{'precision':>11}{'false':>7}{'ms/image':>10}"
    lines.append(header)
    for name, det in report["detectors"].items():
        row = f"{name:<22}"
        for band in names:
            b = det["bands"][band]
            cell = f"{b['found']}/{b['faces']}" + (
                f" {b['recall']:.2f}" if b["recall"] is not None else "  -  "
            )
            row += f"{cell:>14}"
        precision = f"{det['precision']:.2f}" if det["precision"] is not None else "-"
        ms = f"{det['ms_per_image']:.1f}" if det["ms_per_image"] is not None else "-"
        row += f"{precision:>11}{det['false_detections']:>7}{ms:>10}"
        lines.append(row)
    for name, det in report["detectors"].items():
        style = det["box_style"]
        how = (
            f"box style from {style['source']} (width x{style['width_ratio']:.2f}, height "
            f"x{style['height_ratio']:.2f}, shift {style['shift_x']:+.2f}, "
            f"{style['shift_y']:+.2f})"
            if style
            else "raw boxes"
        )
        lines.append(
            f"{name}: {how}; found {det['found']}, with raw boxes {det['found_raw_boxes']}, "
            f"by the centre rule {det['found_centre_rule']}"
        )
    return "\n".join(lines)
