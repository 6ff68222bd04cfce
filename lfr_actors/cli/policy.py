"""``lfr policy show`` and ``lfr policy set``: the store's threshold policy.

The policy is the loosest threshold any deployment, and any watchlist entry, may use
(:mod:`lfr_actors.store.policy`). Whoever can write the store file acts as its admin, as
with ``lfr tokens``; ``set`` is audited as ``policy.threshold`` under ``cli:<OS user>``.
Each refusal is one line on stderr and exit 1 (2 for bad arguments); nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lfr_actors.cli.common import (
    EXIT_OK,
    UsageError,
    add_group,
    add_store,
    cli_actor,
    existing_store,
    store_file,
)
from lfr_actors.plaintext import not_plain

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands
    from lfr_actors.store.policy import ThresholdPolicy


def _print_policy(policy: ThresholdPolicy, out: TextIO) -> None:
    print(f"deployment_max  {policy.deployment_max:g}", file=out)
    print(f"entry_max       {policy.entry_max:g}", file=out)
    print(f"origin          {policy.origin()}", file=out)


def show_policy(path: Path, out: TextIO, *, as_json: bool = False) -> int:
    """``lfr policy show``: the policy in force and where it came from."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.policy import ThresholdPolicies

    with Database(existing_store(path), readonly=True) as db:
        policy = ThresholdPolicies(db).get()
    if as_json:
        print(json.dumps(policy.as_dict(), indent=2), file=out)
    else:
        _print_policy(policy, out)
    return EXIT_OK


def set_policy(
    path: Path,
    deployment_max: float,
    entry_max: float | None,
    *,
    reason: str,
    out: TextIO,
    err: TextIO,
) -> int:
    """``lfr policy set``: set the policy (audited); refusals are :class:`LfrError` lines.

    ``entry_max`` None means ``deployment_max``. A policy that a deployment not closed (or
    one of its entries) already breaks is refused naming them.
    """
    from lfr_actors.store.db import Database
    from lfr_actors.store.policy import ThresholdPolicies, value_problems

    entry = deployment_max if entry_max is None else entry_max
    problems = value_problems(deployment_max, entry)
    if problems:
        name, why = problems[0]
        raise UsageError(f"--{name.replace('_', '-')}: {why}")
    if not reason.strip():
        raise UsageError("--reason: say why the policy changes (it is kept in the audit log)")
    if (unreadable := not_plain(reason)) is not None:
        raise UsageError(f"--reason {unreadable}")
    new_store = not path.is_file()
    with Database(path) as db:
        policy, changed = ThresholdPolicies(db).set(
            deployment_max, entry, actor=cli_actor(), reason=reason
        )
    if new_store:
        print(f"created a new store at {path}", file=err)
    if changed:
        print("threshold policy set (audited as policy.threshold)", file=out)
    else:
        print("threshold policy unchanged: it already has these values", file=out)
    _print_policy(policy, out)
    return EXIT_OK


def cmd_policy_show(args: argparse.Namespace) -> int:
    """``lfr policy show``: the threshold policy in force."""
    return show_policy(store_file(args), sys.stdout, as_json=args.json)


def cmd_policy_set(args: argparse.Namespace) -> int:
    """``lfr policy set``: change the threshold policy."""
    return set_policy(
        store_file(args),
        args.deployment_max,
        args.entry_max,
        reason=args.reason,
        out=sys.stdout,
        err=sys.stderr,
    )


def _distance(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number < 2:
        raise argparse.ArgumentTypeError(f"{value!r} is not a distance between 0 and 2")
    return number


def add_policy(sub: Commands) -> None:
    """``lfr policy`` and its actions."""
    policy_sub = add_group(
        sub, "policy", "the store's threshold policy: the loosest threshold allowed"
    )
    show = policy_sub.add_parser("show", help="the policy in force and where it came from")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add_store(show)
    show.set_defaults(func=cmd_policy_show)
    change = policy_sub.add_parser(
        "set", help="set the loosest threshold deployments and entries may use (audited)"
    )
    change.add_argument(
        "--deployment-max",
        required=True,
        type=_distance,
        metavar="X",
        help="the loosest threshold any deployment may use",
    )
    change.add_argument(
        "--entry-max",
        type=_distance,
        metavar="Y",
        help="the loosest own threshold any watchlist entry may use (default: X; at most X)",
    )
    change.add_argument("--reason", required=True, help="why (kept in the audit log)")
    add_store(change)
    change.set_defaults(func=cmd_policy_set)
