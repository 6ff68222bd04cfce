"""``lfr deployments``, ``lfr audit verify`` and ``lfr retention purge``: the store's records.

The work functions take the store file and the stream to write to and return the exit
code; they work whether or not the deployment is running (SQLite's locking lets them write
beside the API and the alert actor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lfr_actors.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    add_group,
    add_store,
    existing_store,
    store_file,
)
from lfr_actors.errors import LfrError
from lfr_actors.timefmt import iso_utc, parse_time

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


def list_deployments(path: Path, out: TextIO, *, as_json: bool = False) -> int:
    """``lfr deployments list``: every deployment in the store, the newest window first."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.deployments import Deployments

    with Database(existing_store(path), readonly=True) as db:
        records = Deployments(db).list()
    now = time.time()
    if as_json:
        print(json.dumps([r.as_dict(now) for r in records], indent=2), file=out)
        return EXIT_OK
    if not records:
        print("no deployments; `lfr up` or POST /v1/deployments records one", file=out)
        return EXIT_OK
    for r in records:
        window = f"{iso_utc(r.starts_at, 'minutes')} .. {iso_utc(r.ends_at, 'minutes')}"
        print(f"{r.id:<24}{r.state(now)!s:<11}{window}  {r.location}", file=out)
    return EXIT_OK


def deployment_section(path: Path, deployment_id: str, out: TextIO) -> int:
    """``lfr deployments topology ID``: the topology sections that match a stored record.

    A deployment created through the API runs when a topology names it with exactly the
    recorded authority; this prints that ``deployment`` section (and the threshold) to
    paste into the file, so nothing is retyped.
    """
    import yaml

    from lfr_actors.store.db import Database
    from lfr_actors.store.deployments import Deployments

    with Database(existing_store(path), readonly=True) as db:
        record = Deployments(db).find(deployment_id)
    if record is None:
        raise LfrError(f"{path}: no deployment with id {deployment_id!r}")
    declared = record.declared()
    section = declared.model_dump(exclude={"threshold"}, exclude_none=True)
    section.update(start=iso_utc(declared.starts_at), end=iso_utc(declared.ends_at))
    text = yaml.safe_dump(
        {"deployment": section, "alerts": {"threshold": declared.threshold}},
        sort_keys=False,
        allow_unicode=True,
    )
    print(f"# from the store's record of deployment {record.id}\n{text}", end="", file=out)
    return EXIT_OK


def verify_audit(path: Path, out: TextIO) -> int:
    """``lfr audit verify``: 0 and ``N entries, chain intact``, or 1 and where it breaks.

    Opens the store read-only: verifying changes nothing, not even the log.
    """
    from lfr_actors.store.audit import AuditLog
    from lfr_actors.store.db import Database

    with Database(existing_store(path), readonly=True) as db:
        check = AuditLog(db).verify()
    print(check.summary(), file=out)
    return EXIT_OK if check.intact else EXIT_FAILURE


def purge_retention(path: Path, out: TextIO, *, days: int, now: float | None = None) -> int:
    """``lfr retention purge``: empty the crops past retention and not on hold; print the count.

    Audited as one ``retention.purge`` entry by ``system``; running it again purges nothing.
    """
    from lfr_actors.store.retention import purge_crops

    result = purge_crops(existing_store(path), retention_days=days, now=now)
    print(
        f"purged {result.count} alert crop(s) last seen before {iso_utc(result.cutoff)} "
        f"(retention {days} days)",
        file=out,
    )
    return EXIT_OK


def cmd_deployments_list(args: argparse.Namespace) -> int:
    """``lfr deployments list``: the deployments recorded in a store."""
    return list_deployments(store_file(args), sys.stdout, as_json=args.json)


def cmd_deployments_topology(args: argparse.Namespace) -> int:
    """``lfr deployments topology ID``: the topology sections matching a stored record."""
    return deployment_section(store_file(args), args.id, sys.stdout)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """``lfr audit verify``: recompute the audit log's hash chain."""
    return verify_audit(store_file(args), sys.stdout)


def cmd_retention_purge(args: argparse.Namespace) -> int:
    """``lfr retention purge``: empty alert crops past retention unless on hold."""
    try:
        now = None if args.now is None else parse_time(args.now)
    except ValueError as exc:
        raise UsageError(f"--now: {exc}") from exc
    return purge_retention(store_file(args), sys.stdout, days=args.days, now=now)


def _non_negative_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = -1
    if days < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days >= 0")
    return days


def add_deployments(sub: Commands) -> None:
    """``lfr deployments`` and its actions."""
    dep_sub = add_group(sub, "deployments", "the deployments recorded in a store")
    dep_list = dep_sub.add_parser("list", help="every deployment, the newest window first")
    add_store(dep_list)
    dep_list.add_argument("--json", action="store_true", help="machine-readable output")
    dep_list.set_defaults(func=cmd_deployments_list)
    dep_topology = dep_sub.add_parser(
        "topology",
        help="print the topology's deployment section for a recorded deployment (one "
        "created through the API), to paste into the file",
    )
    dep_topology.add_argument("id", help="the deployment's id")
    add_store(dep_topology)
    dep_topology.set_defaults(func=cmd_deployments_topology)


def add_audit(sub: Commands) -> None:
    """``lfr audit verify``."""
    audit_sub = add_group(sub, "audit", "check the audit log")
    verify = audit_sub.add_parser(
        "verify", help="recompute the hash chain; exit 1 naming the first bad entry"
    )
    add_store(verify)
    verify.set_defaults(func=cmd_audit_verify)


def add_retention(sub: Commands) -> None:
    """``lfr retention purge``."""
    retention_sub = add_group(sub, "retention", "purge alert crops past their retention")
    purge = retention_sub.add_parser(
        "purge", help="empty the crops of alerts last seen over --days ago, unless on hold"
    )
    add_store(purge)
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
