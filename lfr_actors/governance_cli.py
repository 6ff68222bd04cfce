"""The work of ``lfr tokens``, ``lfr audit``, ``lfr retention`` and ``lfr deployments``.

Each function takes the deployment's store file (:func:`store_path` finds it from a
topology file) and the streams to write to, and returns the command's exit code, so
``lfr_actors.cli`` stays a list of commands. They work whether or not the deployment is
running: SQLite's locking lets them write beside the API and the alert actor.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import yaml

from lfr_actors.alerts import iso_utc
from lfr_actors.errors import LfrError
from lfr_actors.store.audit import Actor, AuditLog
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.retention import purge_crops
from lfr_actors.store.schema import Database
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.topology.loader import load_topology

ALERTS_DB_FILE = "alerts.sqlite3"
"""The store's file name in a deployment's data folder (as ``DeploymentPaths`` has it)."""

EXIT_OK = 0
EXIT_FAILURE = 1


def store_path(*, db: str | None = None, topology: str | None = None) -> Path:
    """The store file: ``db`` as given, or the one in ``topology``'s data folder.

    Raises :class:`lfr_actors.topology.loader.TopologyError` for a bad topology file.
    """
    if db is not None:
        return Path(db).expanduser()
    if topology is None:
        raise ValueError("give the store file or the topology file")
    return Path(load_topology(Path(topology)).storage.data_dir) / ALERTS_DB_FILE


def cli_actor() -> Actor:
    """Who runs the command, as the audit log records them: ``cli:<OS user>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        user = f"uid {os.getuid()}"
    return Actor(f"cli:{user}")


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise LfrError(
            f"no alert store at {path}; check --db or --topology (the store is created when "
            "the deployment first starts, or by `lfr tokens create`)"
        )
    return path


def create_token(path: Path, name: str, role: Role | str, out: TextIO, err: TextIO) -> int:
    """``lfr tokens create``: print the new secret alone on ``out``, the rest on ``err``."""
    new_store = not path.is_file()
    with Database(path) as db:
        issued = TokenStore(db).create(name, role, by=cli_actor())
    record = issued.record
    if new_store:
        print(f"created a new store at {path}", file=err)
    print(
        f"token {record.id} for {record.name!r} with role {record.role}; the secret below is "
        "shown only now (the store keeps its SHA-256): keep it safe",
        file=err,
    )
    print(issued.secret, file=out)
    return EXIT_OK


def list_tokens(path: Path, out: TextIO, *, as_json: bool = False) -> int:
    """``lfr tokens list``: every token (never a secret), active and revoked."""
    with Database(_existing(path), readonly=True) as db:
        records = TokenStore(db).records()
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2), file=out)
        return EXIT_OK
    if not records:
        print("no tokens; `lfr tokens create --name NAME --role ROLE` makes one", file=out)
        return EXIT_OK
    print(f"{'id':<17}{'role':<18}{'state':<9}{'created':<22}{'created by':<20}name", file=out)
    for r in records:
        state = "revoked" if r.revoked else "expired" if r.expired() else "active"
        kind = " (internal)" if r.internal else ""
        created = iso_utc(r.created_at)[:19] + "Z"
        print(
            f"{r.id:<17}{r.role!s:<18}{state:<9}{created:<22}{r.created_by:<20}{r.name}{kind}",
            file=out,
        )
    return EXIT_OK


def revoke_token(path: Path, token_id: str, out: TextIO) -> int:
    """``lfr tokens revoke``: the token is refused from the API's next request on."""
    with Database(_existing(path)) as db:
        tokens = TokenStore(db)
        before = tokens.get(token_id)
        record = tokens.revoke(token_id, by=cli_actor())
    if before is not None and before.revoked:
        print(f"token {record.id} ({record.name}, {record.role}) was already revoked", file=out)
    else:
        print(f"revoked token {record.id} ({record.name}, {record.role})", file=out)
    return EXIT_OK


def list_deployments(path: Path, out: TextIO, *, as_json: bool = False) -> int:
    """``lfr deployments list``: every deployment in the store, the newest window first."""
    with Database(_existing(path), readonly=True) as db:
        records = Deployments(db).list()
    now = time.time()
    if as_json:
        print(json.dumps([r.as_dict(now) for r in records], indent=2), file=out)
        return EXIT_OK
    if not records:
        print("no deployments; `lfr up` or POST /v1/deployments records one", file=out)
        return EXIT_OK
    for r in records:
        window = f"{iso_utc(r.starts_at)[:16]}Z .. {iso_utc(r.ends_at)[:16]}Z"
        print(f"{r.id:<24}{r.state(now)!s:<11}{window}  {r.location}", file=out)
    return EXIT_OK


def deployment_section(path: Path, deployment_id: str, out: TextIO) -> int:
    """``lfr deployments topology ID``: the topology sections that match a stored record.

    A deployment created through the API runs when a topology names it with exactly the
    recorded authority; this prints that ``deployment`` section (and the threshold) to
    paste into the file, so nothing is retyped.
    """
    with Database(_existing(path), readonly=True) as db:
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
    with Database(_existing(path), readonly=True) as db:
        check = AuditLog(db).verify()
    print(check.summary(), file=out)
    return EXIT_OK if check.intact else EXIT_FAILURE


def parse_now(value: str) -> float:
    """``--now``: an ISO 8601 time (UTC when it has no offset) or Unix seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an ISO 8601 time (e.g. 2025-01-31T12:00:00Z) or Unix seconds"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def purge_retention(path: Path, out: TextIO, *, days: int, now: float | None = None) -> int:
    """``lfr retention purge``: empty the crops past retention and not on hold; print the count.

    Audited as one ``retention.purge`` entry by ``system``; running it again purges nothing.
    """
    result = purge_crops(_existing(path), retention_days=days, now=now)
    print(
        f"purged {result.count} alert crop(s) last seen before {iso_utc(result.cutoff)} "
        f"(retention {days} days)",
        file=out,
    )
    return EXIT_OK
