"""The ``lfr`` parser and entry point: every command, in the order ``lfr --help`` lists them.

:func:`main` maps errors to exit codes: a :class:`~lfr_actors.cli.common.UsageError` is 2,
any other :class:`~lfr_actors.errors.LfrError` (and a store that cannot be read) is 1, each
with a one-line reason on stderr; Ctrl-C is 130.
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sqlite3
import sys
from collections.abc import Sequence

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
from lfr_actors.cli.common import EXIT_FAILURE, EXIT_USAGE, UsageError
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
