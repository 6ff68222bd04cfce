"""``lfr evaluate pairs`` and ``lfr evaluate identify``: accuracy on labelled photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfr_actors.cli.common import EXIT_OK, UsageError, add_common, add_group, home
from lfr_actors.cli.models import prepare_models

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


def _runtime(args: argparse.Namespace) -> Any:
    from lfr_actors.models.runtime import RuntimeConfig

    return RuntimeConfig(device=args.device, intra_op_threads=args.threads)


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


def _add_inference(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: auto)")
    parser.add_argument(
        "--embedder", metavar="FILE", help="YAML declaring an operator's own ONNX embedder"
    )
    parser.add_argument("--threshold", type=float, help="distance threshold (default: the model's)")


def add_evaluate(sub: Commands) -> None:
    """``lfr evaluate`` and its kinds."""
    ev_sub = add_group(sub, "evaluate", "measure accuracy on labelled photos", metavar="KIND")
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
