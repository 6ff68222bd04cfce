"""The ``lfr`` parser and entry point: every command, in the order ``lfr --help`` lists them.

:func:`main` maps errors to exit codes: a :class:`~lfr_actors.cli.common.UsageError` is 2,
any other :class:`~lfr_actors.errors.LfrError` (and a store that cannot be read, an OS
error on a path given, a file that is not UTF-8) is 1, each with a one-line reason on
stderr (``--log-level DEBUG`` adds the traceback of the last two); Ctrl-C is 130.
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from lfr_actors import __version__
from lfr_actors.cli import (
    evaluate,
    governance,
    models,
    monitoring,
    policy,
    run,
    status,
    store,
    test_subjects,
    tokens,
)
from lfr_actors.cli.common import EXIT_FAILURE, EXIT_USAGE, UsageError, store_file
from lfr_actors.errors import LfrError
from lfr_actors.logs import configure as configure_logging


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``lfr`` command."""
    parser = argparse.ArgumentParser(
        prog="lfr",
        description="Live facial recognition for authorised deployments: "
        "check a topology (validate), run it (up, or demo), and govern it.",
    )
    parser.add_argument("--version", action="version", version=f"lfr {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models.add_models(sub)
    run.add_demo(sub)
    run.add_validate(sub)
    run.add_up(sub)
    run.add_serve(sub)
    status.add_status(sub)
    tokens.add_tokens(sub)
    policy.add_policy(sub)
    governance.add_deployments(sub)
    governance.add_audit(sub)
    governance.add_retention(sub)
    monitoring.add_monitoring(sub)
    test_subjects.add_test_subjects(sub)
    store.add_store_commands(sub)
    run.add_down(sub)
    evaluate.add_evaluate(sub)
    return parser


def _named_store(args: argparse.Namespace) -> str | None:
    """The store file the command was pointed at (``--db``, ``--topology``), if it names one."""
    if getattr(args, "db", None) is None and getattr(args, "topology", None) is None:
        return None
    try:
        return str(store_file(args))
    except Exception:  # a topology that cannot be read: the error above stands alone
        return None


def _trace_if_debugging(args: argparse.Namespace) -> None:
    if str(args.log_level or "").upper() == "DEBUG":
        traceback.print_exc()


def os_error_line(exc: OSError) -> str:
    """An OS error as one line: the path(s) it names and the system's reason."""
    reason = exc.strerror or type(exc).__name__
    if isinstance(exc, FileExistsError) and exc.filename and Path(exc.filename).is_file():
        reason = "a file is there, where a folder is needed"
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else f"{reason} ({exc})"


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
        where = _named_store(args)
        print(
            f"lfr: error: the store {where or ''}{' ' if where else ''}cannot be read ({exc}); "
            f"see `lfr store check {where or 'FILE'}`",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("lfr: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # A path a command was given that the OS refuses (a file where a folder must be,
        # no permission, a full disk) where the command did not word it itself: one line.
        _trace_if_debugging(args)
        print(f"lfr: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except UnicodeDecodeError as exc:
        _trace_if_debugging(args)
        print(
            f"lfr: error: a file given is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}); save it as UTF-8",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return code
