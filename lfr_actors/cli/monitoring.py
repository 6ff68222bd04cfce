"""``lfr monitoring show`` and ``lfr monitoring set``: the store's equality-monitoring lists.

``set`` reads a YAML file with one key, ``categories`` (category name -> list of values;
``topology/monitoring_categories.example.yaml`` is an example), checks it with the same
rules as the API (:func:`lfr_actors.store.monitoring.category_problems`) and replaces the
store's lists as the operator at the terminal (``cli:<user>``), audited with the reason.
A bad file is one line on stderr naming each bad path and its line, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

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
from lfr_actors.timefmt import iso_utc

if TYPE_CHECKING:
    from lfr_actors.cli.common import Commands
    from lfr_actors.store.monitoring import CategorySetting


def read_categories_file(file: Path) -> dict[str, list[str]]:
    """The ``categories`` map of a YAML file, or a :class:`UsageError` naming every problem.

    The file's own YAML problems (repeated keys, bad syntax) are raised as the topology
    reader raises them (:class:`lfr_actors.topology.issues.TopologyError`).
    """
    from lfr_actors.store.monitoring import category_problems
    from lfr_actors.topology.issues import TopologyError
    from lfr_actors.topology.yaml import line_of, parse

    parsed = parse(file, "monitoring categories")
    if parsed.issues:
        raise TopologyError(parsed.issues)
    data: Any = parsed.data
    if not isinstance(data, dict) or set(data) != {"categories"}:
        raise UsageError(
            f"{file}: the file has one key, categories (a map of category name to its list "
            "of values); see topology/monitoring_categories.example.yaml"
        )
    problems = category_problems(data["categories"])
    if problems:
        shown = []
        for path, reason in problems:
            keys = tuple(int(p) if p.isdigit() else p for p in path.split("."))
            line = line_of(parsed.lines, keys)
            shown.append(f"{'' if line is None else f'line {line}: '}{path}: {reason}")
        raise UsageError(f"{file}: " + "; ".join(shown))
    categories: dict[str, list[str]] = data["categories"]
    return categories


def describe(setting: CategorySetting) -> str:
    """The lists as ``lfr monitoring show`` prints them."""
    from lfr_actors.store.monitoring import HOW_TO_SET, NOT_RECORDED

    if setting.set_by is None:
        return f"no monitoring categories are configured; {HOW_TO_SET}"
    assert setting.set_at is not None
    lines = [f"set by {setting.set_by} at {iso_utc(setting.set_at, 'seconds')}"]
    if not setting.categories:
        lines.append("no category is configured (monitoring is off)")
    for name, values in setting.categories.items():
        shown = ", ".join(json.dumps(v, ensure_ascii=False) for v in [*values, NOT_RECORDED])
        lines.append(f"{name}: {shown}")
    return "\n".join(lines)


def show_categories(path: Path, out: TextIO, *, as_json: bool = False) -> int:
    """``lfr monitoring show``: the lists in force and who set them."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.monitoring import NOT_RECORDED, MonitoringCategories

    with Database(existing_store(path), readonly=True) as db:
        setting = MonitoringCategories(db).get()
    if as_json:
        body = {
            "categories": setting.categories,
            "not_recorded": NOT_RECORDED,
            "configured": setting.configured,
            "set_by": setting.set_by,
            "set_at": None if setting.set_at is None else iso_utc(setting.set_at),
        }
        print(json.dumps(body, indent=2, ensure_ascii=False), file=out)
    else:
        print(describe(setting), file=out)
    return EXIT_OK


def set_categories(path: Path, file: Path, reason: str, out: TextIO) -> int:
    """``lfr monitoring set``: replace the lists from ``file`` (audited with ``reason``)."""
    from lfr_actors.store.db import Database
    from lfr_actors.store.monitoring import MAX_REASON_CHARS, MonitoringCategories

    if not reason.strip() or len(reason.strip()) > MAX_REASON_CHARS:
        raise UsageError(f"--reason: say why the lists change (1..{MAX_REASON_CHARS} characters)")
    if (why := not_plain(reason)) is not None:
        raise UsageError(f"--reason {why}")
    categories = read_categories_file(file)
    with Database(existing_store(path)) as db:
        setting, changed = MonitoringCategories(db).set(
            categories, actor=cli_actor(), reason=reason
        )
    if changed:
        print("monitoring categories set (audited as policy.monitoring_categories)", file=out)
    else:
        print("monitoring categories unchanged: the store already has these lists", file=out)
    print(describe(setting), file=out)
    return EXIT_OK


def cmd_monitoring_show(args: argparse.Namespace) -> int:
    """``lfr monitoring show``."""
    return show_categories(store_file(args), sys.stdout, as_json=args.json)


def cmd_monitoring_set(args: argparse.Namespace) -> int:
    """``lfr monitoring set --file F.yaml --reason R``."""
    return set_categories(store_file(args), Path(args.file), args.reason, sys.stdout)


def add_monitoring(sub: Commands) -> None:
    """``lfr monitoring`` and its actions."""
    monitoring_sub = add_group(
        sub, "monitoring", "the equality-monitoring categories officers may record"
    )
    show = monitoring_sub.add_parser("show", help="the category lists in force")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add_store(show)
    show.set_defaults(func=cmd_monitoring_show)
    change = monitoring_sub.add_parser(
        "set", help="replace the category lists from a YAML file (audited)"
    )
    change.add_argument("--file", required=True, metavar="FILE", help="the lists (YAML)")
    change.add_argument("--reason", required=True, help="why the lists change (audited)")
    add_store(change)
    change.set_defaults(func=cmd_monitoring_set)
