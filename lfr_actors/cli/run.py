"""Running a deployment: ``lfr validate``, ``up``, ``serve``, ``down`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfr_actors.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    HOME_HELP,
    UsageError,
    add_common,
    home,
    require_one_runtime,
)
from lfr_actors.errors import LfrError

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


def cmd_demo(args: argparse.Namespace) -> int:
    """``lfr demo``."""
    require_one_runtime()
    from lfr_actors.demo import run_demo

    example = None
    if args.topology is not None:
        from lfr_actors.control.plan import finite_cameras

        example = load_deployment_files(Path(args.topology))
        if not finite_cameras(example[0]):
            raise UsageError(
                f"{args.topology}: lfr demo runs a topology until its sources end, and no "
                "camera has one that ends (type file or synthetic with at_end: stop); "
                "use lfr up"
            )
    summary = run_demo(
        home(args), progress=not args.no_progress, api_port=args.port, example=example
    )
    if example is not None:
        return EXIT_OK
    truth = summary["ground_truth"]
    return EXIT_OK if truth["true_alerts"] > 0 and truth["false_alerts"] == 0 else EXIT_FAILURE


def cmd_validate(args: argparse.Namespace) -> int:
    """``lfr validate FILE``."""
    import functools

    from lfr_actors.control.preflight import Preflight, preflight
    from lfr_actors.topology.validate import validate_command

    if not args.offline_only:
        require_one_runtime()
    options = Preflight(home(args), enrol=not args.offline_only, progress=not args.no_progress)
    checks = functools.partial(preflight, options=options)
    return validate_command(Path(args.file), sys.stdout, sys.stderr, checks=checks)


def load_deployment_files(path: Path) -> tuple[Any, Any]:
    """The topology at ``path`` and its watchlist, checked; any problem is a usage error."""
    from lfr_actors.topology.checks import check_files
    from lfr_actors.topology.loader import TopologyError, load_topology, load_watchlist

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
    require_one_runtime()
    import asyncio

    from lfr_actors.control import Deployment
    from lfr_actors.control.announce import Announcer
    from lfr_actors.control.terminal import AlertPrinter

    topology, watchlist = load_deployment_files(Path(args.file))

    # On a terminal one readable line per alert raised or adjudicated and updates at most
    # every few seconds per alert; off one a JSON line per event (control/terminal.py).
    on_terminal = sys.stdout.isatty()
    printer = AlertPrinter(lambda line: print(line, flush=True), readable=on_terminal)

    def on_alert(event: dict[str, Any]) -> None:
        announce()  # the serving line leads the alert lines
        printer(event)

    deployment = Deployment(
        topology,
        watchlist,
        home=home(args),
        address=args.address,
        alerts_jsonl=Path(args.alerts_jsonl) if args.alerts_jsonl else None,
        until_eof=args.until_eof,
        on_alert=on_alert,
        handle_signals=True,
    )
    # Off a terminal stdout is JSON lines (the alert events), and the serving line is one.
    announce = Announcer(deployment, lambda line: print(line, flush=True), as_json=not on_terminal)
    try:
        summary = asyncio.run(announce.run())
    finally:
        printer.close()  # the last state of each alert whose update was held back
    print(json.dumps(summary, indent=2), flush=True)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``lfr serve FILE``: the API alone over the deployment's store, to prepare its watchlist."""
    require_one_runtime()
    import asyncio

    from lfr_actors.control import Deployment

    topology, watchlist = load_deployment_files(Path(args.file))
    deployment = Deployment(topology, watchlist, home=home(args), handle_signals=True)

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


def run_info(path: Path) -> dict[str, Any]:
    """The run file of the deployment ``lfr up`` runs here from the topology at ``path``."""
    from lfr_actors.control import DeploymentPaths

    topology, _ = load_deployment_files(path)
    paths = DeploymentPaths(Path(topology.storage.data_dir))
    run_file = paths.run_file
    name = topology.deployment.id
    try:
        info: dict[str, Any] = json.loads(run_file.read_text("utf-8"))
        pid = int(info["pid"])
    except FileNotFoundError as exc:
        raise LfrError(f"deployment {name!r} is not running here (no {run_file})") from exc
    except (OSError, ValueError, TypeError, KeyError) as exc:
        if not paths.run_lock_held():
            raise StaleRunFileError(name, run_file) from exc
        raise LfrError(
            f"the run file {run_file} of the running deployment {name!r} cannot be read "
            f"({type(exc).__name__}: {exc}); stop the process that runs it by hand"
        ) from exc
    if not paths.run_lock_held():
        # The run that wrote it ended without stopping (killed, a power cut): its process id
        # may belong to another process by now, which must not be signalled.
        raise StaleRunFileError(name, run_file, pid=pid)
    info["run_file"] = str(run_file)
    return info


class StaleRunFileError(LfrError):
    """The run file is left by a run that ended without stopping; nothing runs here."""

    def __init__(self, name: str, run_file: Path, *, pid: int | None = None) -> None:
        was = f" (process {pid})" if pid is not None else ""
        super().__init__(
            f"deployment {name!r} is not running here: {run_file} was left by a run{was} that "
            "ended without stopping (killed, or the machine went down)"
        )
        self.run_file = run_file


def cmd_down(args: argparse.Namespace) -> int:
    """``lfr down FILE``: ask the running ``lfr up`` to drain and stop."""
    import os
    import signal
    import time

    try:
        info = run_info(Path(args.file))
    except StaleRunFileError as exc:
        exc.run_file.unlink(missing_ok=True)  # nothing to stop; the next start needs none
        raise LfrError(f"{exc}; removed it, nothing was signalled") from None
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


def add_demo(sub: Commands) -> None:
    """``lfr demo``."""
    demo = sub.add_parser("demo", help="run a whole deployment on sample photos, end to end")
    add_common(demo)
    demo.add_argument("--port", type=int, default=0, help="API port (default: any free one)")
    demo.add_argument(
        "--topology",
        metavar="FILE",
        help="run this example topology instead (e.g. topology/demo.yaml), with its window "
        "set from now and a fresh data folder, until its file sources end",
    )
    demo.set_defaults(func=cmd_demo)


def add_validate(sub: Commands) -> None:
    """``lfr validate FILE``."""
    validate = sub.add_parser(
        "validate",
        help="check that lfr up would start: the files, the watchlist's photos enrolled, the "
        "window, the stored record and the API port",
    )
    validate.add_argument("file", help="the topology YAML")
    validate.add_argument("--home", help=HOME_HELP)
    validate.add_argument(
        "--offline-only",
        action="store_true",
        help="skip the model work: the photos are not enrolled (the other checks still run)",
    )
    validate.add_argument("--no-progress", action="store_true", help="no progress bars")
    validate.set_defaults(func=cmd_validate)


def add_up(sub: Commands) -> None:
    """``lfr up FILE``."""
    up = sub.add_parser("up", help="run a deployment on Ray until stopped")
    up.add_argument("file", help="the topology YAML")
    up.add_argument("--home", help=HOME_HELP)
    up.add_argument("--address", help="an existing Ray cluster (default: start Ray locally)")
    up.add_argument("--alerts-jsonl", metavar="PATH", help="also append every alert event here")
    up.add_argument(
        "--until-eof", action="store_true", help="stop when every file source has ended"
    )
    up.set_defaults(func=cmd_up)


def add_serve(sub: Commands) -> None:
    """``lfr serve FILE``."""
    serve = sub.add_parser(
        "serve",
        help="serve a deployment's API without cameras, to enrol and approve its watchlist "
        "before the window opens",
    )
    serve.add_argument("file", help="the topology YAML")
    serve.add_argument("--home", help=HOME_HELP)
    serve.set_defaults(func=cmd_serve)


def add_down(sub: Commands) -> None:
    """``lfr down FILE``."""
    down = sub.add_parser("down", help="drain and stop a running deployment")
    down.add_argument("file", help="the topology YAML of the running deployment")
    down.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    down.set_defaults(func=cmd_down)
