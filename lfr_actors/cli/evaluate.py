"""``lfr evaluate pairs``, ``identify``, ``calibrate``, ``video`` and ``detect``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfr_actors.cli.common import EXIT_OK, UsageError, add_common, add_group, home
from lfr_actors.cli.models import prepare_models

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


def _runtime(args: argparse.Namespace) -> Any:
    from lfr_actors.models.runtime import RuntimeConfig

    return RuntimeConfig(device=args.device, intra_op_threads=args.threads)


def _live_detector(args: argparse.Namespace) -> dict[str, Any]:
    """The detector and quality settings a clip is watched with, as a topology's default.

    ``--detector`` names it (CenterFace, the topology default, when left out), with
    ``--centerface-input``; the quality gate's score minimum follows the detector's scale
    as in a topology (``DETECTOR_SCORES``).
    """
    from lfr_actors.models.centerface import CenterFaceConfig
    from lfr_actors.models.detector import DetectorConfig
    from lfr_actors.models.detectors import DETECTOR_SCORES
    from lfr_actors.models.quality import QualityConfig

    width, height = _input_size(args.centerface_input)
    try:
        detector = (
            DetectorConfig(min_face_px=args.min_face_px or 40)
            if args.detector == "mtcnn"
            else CenterFaceConfig(
                input_width=width,
                input_height=height,
                **({"min_face_px": args.min_face_px} if args.min_face_px else {}),
            )
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return {
        "detector": detector,
        "quality": QualityConfig(min_score=DETECTOR_SCORES[args.detector][0]),
    }


def _input_size(text: str) -> tuple[int, int]:
    """``--centerface-input`` as (width, height)."""
    size = _INPUT_SIZE.fullmatch(text)
    if size is None:
        raise UsageError(f"--centerface-input must be WIDTHxHEIGHT (e.g. 1024x768), got {text!r}")
    return int(size[1]), int(size[2])


def _load_embedder_spec(path: Path) -> Any:
    from lfr_actors.topology.loader import TopologyError, load_embedder_spec

    try:
        return load_embedder_spec(path)
    except TopologyError as exc:
        raise UsageError(str(exc)) from exc


def _pipeline(args: argparse.Namespace) -> Any:
    from lfr_actors.models.cache import ModelCache
    from lfr_actors.models.pipeline import FacePipeline, PipelineConfig

    config = PipelineConfig()
    if args.embedder:  # a bad declaration is reported before minutes of model preparation
        config = PipelineConfig(embedder=_load_embedder_spec(Path(args.embedder)))
    if getattr(args, "detector", None) is not None:
        config = dataclasses.replace(config, **_live_detector(args))
    prepare_models(args, quiet=args.no_progress)
    return FacePipeline.build(_runtime(args), config, cache=ModelCache(home(args) / "models"))


def cmd_evaluate_pairs(args: argparse.Namespace) -> int:
    """``lfr evaluate pairs``."""
    from lfr_actors.evaluate import EvaluationInputError, evaluate_pairs, read_pairs

    root = Path(args.root)
    try:
        pairs = read_pairs(Path(args.pairs), root)
    except EvaluationInputError as exc:
        raise UsageError(str(exc)) from exc
    pipeline = _pipeline(args)
    threshold = args.threshold or pipeline.embedder.spec.default_threshold
    print(json.dumps(evaluate_pairs(pipeline, pairs, root, threshold), indent=2))
    return EXIT_OK


def cmd_evaluate_identify(args: argparse.Namespace) -> int:
    """``lfr evaluate identify``."""
    from lfr_actors.evaluate import EvaluationInputError, default_thresholds, evaluate_identify

    pipeline = _pipeline(args)
    configured = args.threshold or pipeline.embedder.spec.default_threshold
    thresholds = args.thresholds or default_thresholds(pipeline.embedder.spec.metric, configured)
    try:
        result = evaluate_identify(
            pipeline, Path(args.gallery), Path(args.probes), [*thresholds, configured], configured
        )
    except EvaluationInputError as exc:
        raise UsageError(str(exc)) from exc
    print(json.dumps(result, indent=2))
    return EXIT_OK


def cmd_evaluate_calibrate(args: argparse.Namespace) -> int:
    """``lfr evaluate calibrate``: expected false alerts by watchlist size, to a file."""
    from lfr_actors.calibration import calibrate, format_table
    from lfr_actors.evaluate import EvaluationInputError, identification_scores
    from lfr_actors.fsutil import atomic_write

    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; choose another --out or pass --force to replace it")
    if out.is_dir():
        raise UsageError(f"{out} is a folder; --out names the calibration file to write")
    pipeline = _pipeline(args)
    spec = pipeline.embedder.spec
    configured = args.threshold or spec.default_threshold
    gallery, probes = Path(args.gallery), Path(args.probes)
    try:
        scores = identification_scores(pipeline, gallery, probes)
        document = calibrate(
            scores,
            gallery=gallery.resolve(),
            probes=probes.resolve(),
            model_version=spec.version,
            dimension=spec.dimension,
            configured=configured,
        )
    except EvaluationInputError as exc:
        raise UsageError(str(exc)) from exc
    atomic_write(out, (json.dumps(document, indent=2) + "\n").encode(), mode=0o644)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        from lfr_actors.calibration import CalibrationFile

        print(format_table(CalibrationFile.model_validate(document)))
        print(f"wrote {out}")
    return EXIT_OK


def cmd_evaluate_video(args: argparse.Namespace) -> int:
    """``lfr evaluate video``."""
    from lfr_actors.evaluate_video import (
        VideoEvaluationError,
        evaluate_clip,
        format_report,
        load_entries,
        read_truth,
    )
    from lfr_actors.models.detectors import DETECTOR_SCORES
    from lfr_actors.tracking.config import TrackingConfig

    clip = Path(args.clip)
    if not clip.is_file():
        raise UsageError(f"{clip}: no such video file")
    if args.every < 1:
        raise UsageError(f"--every must be 1 or more, got {args.every}")
    try:
        config = TrackingConfig(
            min_track_frames=args.min_track_frames,
            high_score=DETECTOR_SCORES[args.detector][1],
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    pipeline = _pipeline(args)
    threshold = args.threshold or pipeline.embedder.spec.default_threshold
    try:
        entries = load_entries(pipeline, Path(args.watchlist))
        truth = None
        if args.truth:
            truth = read_truth(Path(args.truth), [e.entry_id for e in entries])
        report = evaluate_clip(
            pipeline,
            clip,
            entries,
            threshold=threshold,
            config=config,
            every=args.every,
            truth=truth,
        )
    except VideoEvaluationError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(json.dumps(report.as_dict(frames=args.frames), indent=2))
    else:
        print(format_report(report, frames=args.frames))
    return EXIT_OK


_INPUT_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


def _detector_configs(args: argparse.Namespace) -> list[Any]:
    """The settings of each detector ``--detector`` names, from the command's options."""
    from lfr_actors.models.centerface import CenterFaceConfig
    from lfr_actors.models.detector import DetectorConfig
    from lfr_actors.models.detectors import DETECTOR_NAMES, detector_name

    known = (*DETECTOR_NAMES, "all")
    wanted = args.detector.strip().lower()
    if wanted not in known:
        raise UsageError(f"unknown detector {args.detector!r}; known: {', '.join(known)}")
    width, height = _input_size(args.centerface_input)
    smallest = {} if args.min_face_px is None else {"min_face_px": args.min_face_px}
    try:
        configs: list[Any] = [
            DetectorConfig(**smallest),
            CenterFaceConfig(input_width=width, input_height=height, **smallest),
        ]
    except ValueError as exc:
        raise UsageError(f"--centerface-input or --min-face-px: {exc}") from exc
    return [c for c in configs if wanted in ("all", detector_name(c))]


def cmd_evaluate_detect(args: argparse.Namespace) -> int:
    """``lfr evaluate detect``."""
    import dataclasses

    from lfr_actors.evaluate_detect import (
        MAX_SCALE,
        MIN_SCALE,
        RAW_STYLE,
        DetectionEvaluationError,
        evaluate_detector,
        format_report,
        read_annotations,
        run_detector,
        style_from_run,
        summarise_annotations,
    )
    from lfr_actors.models.cache import ModelCache
    from lfr_actors.models.detectors import build_detector, detector_name
    from lfr_actors.models.pipeline import default_detector_runtime

    configs = _detector_configs(args)
    if args.repeat < 1:
        raise UsageError(f"--repeat must be 1 or more, got {args.repeat}")
    if not MIN_SCALE <= args.scale <= MAX_SCALE:
        raise UsageError(f"--scale must be from {MIN_SCALE} to {MAX_SCALE}, got {args.scale}")
    annotations = Path(args.annotations)
    style_file = Path(args.box_style_from) if args.box_style_from else None
    try:
        images = [i.rescaled(args.scale) for i in read_annotations(annotations)]
        # The style file is read as annotated, at any --scale: a detector that cannot see
        # its faces shrunk could not pair enough of them to measure its style.
        style_images = read_annotations(style_file) if style_file else None
    except DetectionEvaluationError as exc:
        raise UsageError(str(exc)) from exc
    prepare_models(args, quiet=args.no_progress)
    cache = ModelCache(home(args) / "models")
    runtime = _runtime(args)
    report = summarise_annotations(annotations, images, args.scale)
    report["detectors"] = {}
    for config in configs:
        detector = build_detector(config, default_detector_runtime(config, runtime), cache)
        detector.warm_up()
        try:
            style = RAW_STYLE
            if style_file and style_images:
                measured = run_detector(detector.detect, style_images)
                style = style_from_run(measured, style_images, str(style_file))
            found = evaluate_detector(detector.detect, images, style, args.repeat)
        except DetectionEvaluationError as exc:
            raise UsageError(str(exc)) from exc
        found["config"] = dataclasses.asdict(config)
        report["detectors"][detector_name(config)] = found
    print(format_report(report) if args.table else json.dumps(report, indent=2))
    return EXIT_OK


def _add_inference(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: auto)")
    parser.add_argument(
        "--embedder", metavar="FILE", help="YAML declaring an operator's own ONNX embedder"
    )
    parser.add_argument("--threshold", type=float, help="distance threshold (default: the model's)")


def add_evaluate(sub: Commands) -> None:
    """``lfr evaluate`` and its kinds."""
    ev_sub = add_group(
        sub, "evaluate", "measure accuracy on labelled photos and clips", metavar="KIND"
    )
    pairs = ev_sub.add_parser("pairs", help="verification accuracy on a CSV of a,b,same pairs")
    pairs.add_argument("pairs", help="CSV file with columns a,b,same")
    pairs.add_argument("--root", required=True, help="folder the image paths are relative to")
    add_common(pairs)
    _add_inference(pairs)
    pairs.set_defaults(func=cmd_evaluate_pairs)
    ident = ev_sub.add_parser("identify", help="open-set identification rates per threshold")
    ident.add_argument("--gallery", required=True, help="one sub-folder of photos per identity")
    ident.add_argument(
        "--probes", required=True, help="one sub-folder per identity; 'unknown' for non-mated"
    )
    ident.add_argument(
        "--thresholds", type=float, nargs="+", help="thresholds to report (default: a sweep)"
    )
    add_common(ident)
    _add_inference(ident)
    ident.set_defaults(func=cmd_evaluate_identify)
    calib = ev_sub.add_parser(
        "calibrate",
        help="expected false alerts per passer-by for any watchlist size: a calibration file",
    )
    calib.add_argument("--gallery", required=True, help="one sub-folder of photos per identity")
    calib.add_argument(
        "--probes", required=True, help="one sub-folder per identity; 'unknown' for non-mated"
    )
    calib.add_argument(
        "--out",
        default="calibration.json",
        metavar="FILE",
        help="the calibration file to write (default calibration.json); an existing file is "
        "kept unless --force",
    )
    calib.add_argument("--force", action="store_true", help="replace an existing --out file")
    calib.add_argument(
        "--json", action="store_true", help="print the calibration document instead of a table"
    )
    add_common(calib)
    _add_inference(calib)
    calib.set_defaults(func=cmd_evaluate_calibrate)
    video = ev_sub.add_parser(
        "video", help="a clip through the tracker and the track decisions, offline"
    )
    video.add_argument("clip", help="a video file")
    video.add_argument("--watchlist", required=True, help="a watchlist YAML file")
    video.add_argument(
        "--truth", metavar="CSV", help="who is in view when: columns entry,first_frame,last_frame"
    )
    video.add_argument(
        "--every", type=int, default=1, help="take every N-th frame (a camera's sampling)"
    )
    video.add_argument(
        "--min-track-frames",
        type=int,
        default=5,
        help="faces of evidence a track needs before it is decided",
    )
    video.add_argument(
        "--frames", action="store_true", help="also print the frame-by-frame decisions"
    )
    video.add_argument("--json", action="store_true", help="print the report as JSON")
    video.add_argument(
        "--detector",
        choices=["centerface", "mtcnn"],
        default="centerface",
        help="the face detector that watches the clip (default: centerface, a topology's "
        "default); watchlist photos are always enrolled with MTCNN, as lfr up does",
    )
    video.add_argument(
        "--centerface-input",
        default="640x384",
        metavar="WxH",
        help="CenterFace's input size (default 640x384)",
    )
    video.add_argument(
        "--min-face-px",
        type=int,
        help="the detector's smallest face (default: 40 for mtcnn, 10 for centerface)",
    )
    add_common(video)
    _add_inference(video)
    video.set_defaults(func=cmd_evaluate_video)
    detect = ev_sub.add_parser(
        "detect", help="face detection recall by face size, and precision, on dlib imglab XML"
    )
    detect.add_argument("annotations", help="a dlib imglab XML file (image paths relative to it)")
    detect.add_argument(
        "--detector", default="all", metavar="NAME", help="mtcnn, centerface or all (default)"
    )
    detect.add_argument(
        "--box-style-from",
        metavar="XML",
        help="another annotation file (read unscaled) to measure each detector's box style "
        "on; detections are mapped to the annotations' style before matching (default: raw "
        "boxes)",
    )
    detect.add_argument(
        "--centerface-input",
        default="640x384",
        metavar="WxH",
        help="CenterFace's fixed input size (default 640x384, as live cameras use)",
    )
    detect.add_argument(
        "--min-face-px",
        type=int,
        metavar="N",
        help="smallest face searched for, for both detectors (default: each detector's own)",
    )
    detect.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="F",
        help="resize every photo and its boxes by F first (0.25: faces a quarter the size, "
        "as a distant camera sees them); default 1",
    )
    detect.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="N",
        help="time each image N times and count its fastest (default 3)",
    )
    detect.add_argument(
        "--table", action="store_true", help="print a table to read instead of the JSON document"
    )
    add_common(detect)
    detect.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    detect.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: auto)")
    detect.set_defaults(func=cmd_evaluate_detect)
