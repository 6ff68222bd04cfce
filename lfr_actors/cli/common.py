"""What the ``lfr`` commands share: exit codes, the usage error, the data folder, the store.

Every import of the project's heavier modules happens inside a function, so importing
this module (as ``lfr --help`` does) loads nothing but the standard library.
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lfr_actors.errors import LfrError
from lfr_actors.fsutil import expand_user

if TYPE_CHECKING:
    from typing import TypeAlias

    from lfr_actors.store.audit import Actor

    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What ``add_subparsers`` returns: each command group adds its commands to it."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

ALERTS_DB_FILE = "alerts.sqlite3"
"""The store's file name in a deployment's data folder (as ``DeploymentPaths`` has it)."""

HOME_HELP = "data folder (default: $LFR_HOME or ~/.local/share/lfr)"


class UsageError(LfrError):
    """Bad arguments or input files: exit code 2."""


def home(args: argparse.Namespace) -> Path:
    """The data folder: ``--home``, else ``$LFR_HOME``, else the user's default."""
    from lfr_actors.models.cache import default_home

    return (expand_user(args.home) if args.home else default_home()).resolve()


def require_one_runtime() -> None:
    """Refuse to go on unless exactly one ONNX Runtime package is installed.

    The commands that run models call it first, so a mixed environment (``onnxruntime``
    and ``onnxruntime-gpu`` both installed) stops with one line and exit 1, before Ray
    or a model starts. It reads package metadata only; it imports no runtime.
    """
    from lfr_actors.models.runtime_packages import check_runtime_packages

    check_runtime_packages()


def add_group(sub: Commands, name: str, help_text: str, metavar: str = "ACTION") -> Commands:
    """``lfr NAME`` as a group of actions (``lfr NAME ACTION``); add the actions to the result."""
    group = sub.add_parser(name, help=help_text)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar=metavar)


def add_common(parser: argparse.ArgumentParser) -> None:
    """The options of every command that may prepare the models."""
    parser.add_argument("--home", help=HOME_HELP)
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


def add_store(parser: argparse.ArgumentParser) -> None:
    """``--topology FILE`` or ``--db PATH``: which store a governance command works on."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--topology", metavar="FILE", help="the deployment's topology YAML")
    where.add_argument("--db", metavar="PATH", help="the store file (<data_dir>/alerts.sqlite3)")


def store_path(*, db: str | None = None, topology: str | None = None) -> Path:
    """The store file: ``db`` as given, or the one in ``topology``'s data folder.

    Raises :class:`lfr_actors.topology.loader.TopologyError` for a bad topology file.
    """
    from lfr_actors.topology.loader import load_topology

    if db is not None:
        return expand_user(db)
    if topology is None:
        raise ValueError("give the store file or the topology file")
    return Path(load_topology(Path(topology)).storage.data_dir) / ALERTS_DB_FILE


def store_file(args: argparse.Namespace) -> Path:
    """The store named by ``--db`` or ``--topology``; a bad topology file is a usage error."""
    from lfr_actors.topology.loader import TopologyError

    try:
        return store_path(db=args.db, topology=args.topology)
    except TopologyError as exc:
        raise UsageError(str(exc)) from exc


def existing_store(path: Path) -> Path:
    """``path`` if a store file is there, else an error saying how one comes to be."""
    if not path.is_file():
        raise LfrError(
            f"no alert store at {path}; check --db or --topology (the store is created when "
            "the deployment first starts, or by `lfr tokens create`)"
        )
    return path


def cli_actor() -> Actor:
    """Who runs the command, as the audit log records them: ``cli:<OS user>``."""
    from lfr_actors.store.audit import Actor

    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        user = f"uid {os.getuid()}"
    return Actor(f"cli:{user}")
