"""``lfr test-subjects pass`` and ``passes``: record and list test subjects' passes.

A volunteer enrolled as a test subject walks past a camera; whoever sees it records the
pass (``pass``), audited as ``test_subject.pass`` with the command's user as actor. The
report then counts how many recorded passes an alert saw
(:mod:`lfr_actors.store.test_subjects`). Both commands work beside a running deployment.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
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
from lfr_actors.timefmt import iso_utc, parse_time

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands


def record_pass(
    path: Path,
    deployment_id: str,
    entry_id: str,
    camera_id: str,
    passed_at: float,
    *,
    out: TextIO,
    note: str | None = None,
) -> int:
    """``lfr test-subjects pass``: record one pass; a refusal is one line and exit 1."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.test_subjects import TestSubjectPasses

    with Database(existing_store(path)) as db:
        stored = TestSubjectPasses(db).record(
            deployment_id, entry_id, camera_id, passed_at, actor=cli_actor(), note=note
        )
    print(
        f"recorded pass {stored.id}: test subject {stored.entry_id} passed camera "
        f"{stored.camera_id} at {iso_utc(stored.passed_at, 'seconds')} "
        f"({'alerted' if stored.alerted else 'not alerted yet'})",
        file=out,
    )
    return EXIT_OK


def list_passes(path: Path, deployment_id: str, out: TextIO, *, as_json: bool = False) -> int:
    """``lfr test-subjects passes``: every recorded pass, with whether an alert saw it."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.test_subjects import TestSubjectPasses

    with Database(existing_store(path), readonly=True) as db:
        passes = TestSubjectPasses(db).passes(deployment_id)
    if as_json:
        print(json.dumps([p.as_dict() for p in passes], indent=2), file=out)
        return EXIT_OK
    if not passes:
        print(
            f"no passes recorded for deployment {deployment_id}; "
            "`lfr test-subjects pass` records one",
            file=out,
        )
        return EXIT_OK
    print(f"{'passed at':<22}{'entry':<20}{'camera':<16}alerted", file=out)
    for p in passes:
        seen = "no" if p.seconds_to_alert is None else f"yes, {p.seconds_to_alert:+.1f} s"
        print(
            f"{iso_utc(p.passed_at, 'seconds'):<22}{p.entry_id:<20}{p.camera_id:<16}{seen}",
            file=out,
        )
    alerted = sum(p.alerted for p in passes)
    print(f"{alerted} of {len(passes)} passes alerted", file=out)
    return EXIT_OK


def cmd_pass(args: argparse.Namespace) -> int:
    """``lfr test-subjects pass``."""
    passed_at = time.time() if args.at is None else args.at
    note = (args.note or "").strip() or None
    return record_pass(
        store_file(args),
        args.deployment,
        args.entry,
        args.camera,
        passed_at,
        out=sys.stdout,
        note=note,
    )


def cmd_passes(args: argparse.Namespace) -> int:
    """``lfr test-subjects passes``."""
    return list_passes(store_file(args), args.deployment, sys.stdout, as_json=args.json)


def _time(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _camera(value: str) -> str:
    from lfr_actors.topology.schema import ACTOR_ID_PATTERN

    if not re.match(ACTOR_ID_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a camera id (1 to 64 lower-case letters, digits, '_' or '-')"
        )
    return value


def _note(value: str) -> str:
    from lfr_actors.store.test_subjects import MAX_NOTE

    if len(value) > MAX_NOTE:
        raise argparse.ArgumentTypeError(f"a note may be at most {MAX_NOTE} characters")
    return value


def add_test_subjects(sub: Commands) -> None:
    """``lfr test-subjects`` and its actions."""
    group = add_group(
        sub, "test-subjects", "record test subjects' passes and see which ones alerted"
    )
    record = group.add_parser("pass", help="record that a test subject passed a camera (audited)")
    record.add_argument("--deployment", required=True, help="the deployment's id")
    record.add_argument("--entry", required=True, help="the test subject's watchlist entry id")
    record.add_argument("--camera", required=True, type=_camera, help="the camera passed")
    record.add_argument(
        "--at",
        type=_time,
        default=None,
        metavar="TIME",
        help="when (ISO 8601, UTC without an offset, or Unix seconds; default: now)",
    )
    record.add_argument("--note", default=None, type=_note, help="anything worth noting")
    add_store(record)
    record.set_defaults(func=cmd_pass)
    listed = group.add_parser("passes", help="every recorded pass, and whether it alerted")
    listed.add_argument("--deployment", required=True, help="the deployment's id")
    listed.add_argument("--json", action="store_true", help="machine-readable output")
    add_store(listed)
    listed.set_defaults(func=cmd_passes)
