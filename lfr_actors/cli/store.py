"""``lfr store check``, ``backup`` and ``restore``: a deployment's store file as a whole."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from lfr_actors.cli.common import EXIT_FAILURE, EXIT_OK, add_group

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


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


def add_store_commands(sub: Commands) -> None:
    """``lfr store`` and its actions."""
    store_sub = add_group(sub, "store", "check, back up and restore a deployment's store file")
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
