"""``lfr tokens create``, ``list`` and ``revoke``: the API's bearer tokens in the store.

As in :mod:`.governance`, each command is a work function (store file and streams in,
exit code out) behind a thin ``cmd_*``, safe to run beside a live deployment. Only a
token's SHA-256 is stored: ``create`` prints the secret once, on stdout alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lfr_actors.cli.common import (
    EXIT_OK,
    add_group,
    add_store,
    cli_actor,
    existing_store,
    store_file,
)
from lfr_actors.timefmt import iso_utc

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands
    from lfr_actors.store.tokens import Role


def create_token(
    path: Path,
    name: str,
    role: Role | str,
    out: TextIO,
    err: TextIO,
    *,
    deployments: Sequence[str] | None = None,
) -> int:
    """``lfr tokens create``: print the new secret alone on ``out``, the rest on ``err``.

    With ``deployments`` the token sees only those deployments; they must be in the store
    already, so a scoped token cannot be made in a new store.
    """
    from lfr_actors.store.db import Database
    from lfr_actors.store.tokens import TokenStore, check_scope

    if deployments is not None:
        check_scope(deployments)  # before a new store file is made for nothing
        path = existing_store(path)
    new_store = not path.is_file()
    with Database(path) as db:
        issued = TokenStore(db).create(name, role, by=cli_actor(), deployments=deployments)
    record = issued.record
    if new_store:
        print(f"created a new store at {path}", file=err)
    print(
        f"token {record.id} for {record.name!r} with role {record.role} "
        f"{_scope_text(record.deployments, long=True)}; the secret below is "
        "shown only now (the store keeps its SHA-256): keep it safe",
        file=err,
    )
    print(issued.secret, file=out)
    return EXIT_OK


def list_tokens(path: Path, out: TextIO, *, as_json: bool = False) -> int:
    """``lfr tokens list``: every token (never a secret), active and revoked."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.tokens import TokenStore

    with Database(existing_store(path), readonly=True) as db:
        records = TokenStore(db).records()
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2), file=out)
        return EXIT_OK
    if not records:
        print("no tokens; `lfr tokens create --name NAME --role ROLE` makes one", file=out)
        return EXIT_OK
    scopes = [_scope_text(r.deployments) for r in records]
    width = max(len("deployments"), *map(len, scopes)) + 2
    print(
        f"{'id':<17}{'role':<18}{'state':<9}{'created':<22}{'created by':<20}"
        f"{'deployments':<{width}}name",
        file=out,
    )
    for r, scope in zip(records, scopes, strict=True):
        state = "revoked" if r.revoked else "expired" if r.expired() else "active"
        kind = " (internal)" if r.internal else ""
        created = iso_utc(r.created_at, "seconds")
        print(
            f"{r.id:<17}{r.role!s:<18}{state:<9}{created:<22}{r.created_by:<20}"
            f"{scope:<{width}}{r.name}{kind}",
            file=out,
        )
    return EXIT_OK


def _scope_text(deployments: Sequence[str] | None, *, long: bool = False) -> str:
    """A token's scope in words: ``all`` or the ids, comma-separated."""
    if deployments is None:
        return "for every deployment" if long else "all"
    ids = ",".join(deployments)
    return f"for deployment{'s' if len(deployments) > 1 else ''} {ids}" if long else ids


def revoke_token(path: Path, token_id: str, out: TextIO) -> int:
    """``lfr tokens revoke``: the token is refused from the API's next request on."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.tokens import TokenStore

    with Database(existing_store(path)) as db:
        tokens = TokenStore(db)
        before = tokens.get(token_id)
        record = tokens.revoke(token_id, by=cli_actor())
    if before is not None and before.revoked:
        print(f"token {record.id} ({record.name}, {record.role}) was already revoked", file=out)
    else:
        print(f"revoked token {record.id} ({record.name}, {record.role})", file=out)
    return EXIT_OK


def cmd_tokens_create(args: argparse.Namespace) -> int:
    """``lfr tokens create``: a new API token, its secret printed once."""
    return create_token(
        store_file(args),
        args.name,
        args.role,
        sys.stdout,
        sys.stderr,
        deployments=args.deployments,
    )


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """``lfr tokens list``: every API token, without secrets."""
    return list_tokens(store_file(args), sys.stdout, as_json=args.json)


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    """``lfr tokens revoke ID``: refuse a token from now on."""
    return revoke_token(store_file(args), args.id, sys.stdout)


def _token_name(value: str) -> str:
    from lfr_actors.store.tokens import check_token_name

    try:
        return check_token_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_tokens(sub: Commands) -> None:
    """``lfr tokens`` and its actions."""
    from lfr_actors.store.tokens import Role

    tokens_sub = add_group(sub, "tokens", "create, list and revoke the API's bearer tokens")
    tok_create = tokens_sub.add_parser(
        "create", help="make a token; its secret is printed once, only its hash is kept"
    )
    tok_create.add_argument("--name", required=True, type=_token_name, help="who holds it")
    tok_create.add_argument(
        "--role", required=True, choices=[str(r) for r in Role], help="what it may do"
    )
    tok_create.add_argument(
        "--deployment",
        dest="deployments",
        action="append",
        metavar="ID",
        help="limit the token to this deployment (repeat for more; default: every deployment)",
    )
    add_store(tok_create)
    tok_create.set_defaults(func=cmd_tokens_create)
    tok_list = tokens_sub.add_parser("list", help="every token, active and revoked")
    tok_list.add_argument("--json", action="store_true", help="machine-readable output")
    add_store(tok_list)
    tok_list.set_defaults(func=cmd_tokens_list)
    tok_revoke = tokens_sub.add_parser("revoke", help="refuse a token from now on")
    tok_revoke.add_argument("id", help="the token's id (from `lfr tokens list`)")
    add_store(tok_revoke)
    tok_revoke.set_defaults(func=cmd_tokens_revoke)
