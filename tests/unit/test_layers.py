"""The floors of the code: every import runs down the data flow, never up, and never round.

Each module is read with :mod:`ast` (imports inside functions and under ``TYPE_CHECKING``
count too: a command's lazy import is still a dependency) and every import of the project
becomes an arrow ``module -> module`` with its file and line. The floors below are stated
ground first; a module may import its own floor and the floors under it. On top of that:
the ground floor (the first three floors) imports nothing from actors/, store/, api/,
control/ or the CLI, no two rooms (folders, or modules directly under ``lfr_actors``)
depend on each other both ways, and no modules import each other round in a loop. A new
module must be placed on a floor here before the test passes.

A failure names each offending import as ``file:line: importer -> imported``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from itertools import pairwise
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "lfr_actors"

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    # The ground files, shared by everyone ("lfr_actors" is the package's own __init__).
    ("ground", ("lfr_actors", "errors", "logs", "fsutil", "timefmt", "percentiles", "plaintext")),
    # What flows and what computes: messages, the face-agnostic kernel, models, index,
    # the box tracker.
    ("data", ("messages", "kernel", "models", "index", "tracking.tracker")),
    # The declarations every later floor shares: the topology schema, the alert records,
    # the tracking settings (the schema states their limits).
    ("records", ("topology.schema", "alerts.records", "tracking.config")),
    (
        "rules",
        ("topology", "alerts", "video", "tracking", "evaluate", "evaluate_detect", "calibration"),
    ),
    ("store", ("store", "enrolment", "evaluate_video", "testing")),
    ("services", ("actors", "api")),
    ("control", ("control",)),
    ("commands", ("demo", "cli")),
]
"""Ground first. Each name is a module or folder under ``lfr_actors``; the longest match
places a module (``topology.schema`` is on ``records``, the rest of ``topology`` on
``rules``)."""

GROUND = ("ground", "data", "records")
"""The ground floor: it imports nothing from the rooms named in :data:`ABOVE_GROUND`."""

ABOVE_GROUND = ("actors", "store", "api", "control", "cli")


@dataclass(frozen=True)
class Arrow:
    """One import of one project module by another, where it is written."""

    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        where = self.path.relative_to(REPO)
        return f"{where}:{self.line}: {self.importer} -> {self.imported}"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` is, or is inside (a class or function imported from it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _arrows_of(module: str, path: Path) -> list[Arrow]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    arrows = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import sub` imports the module pkg.sub; `from mod import name`, mod.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            imported = _resolve(target) if target.startswith("lfr_actors") else None
            if imported is not None and imported != module:
                arrows.append(Arrow(module, imported, path, node.lineno))
    return arrows


# One arrow per import statement and imported module (`from m import a, b` is one).
ARROWS = list(
    dict.fromkeys(arrow for module, path in MODULES.items() for arrow in _arrows_of(module, path))
)


def _place(module: str) -> tuple[int, str]:
    """The floor (index, name) of a module: the longest name in FLOORS that contains it."""
    best: tuple[int, int, str] | None = None
    for index, (floor, names) in enumerate(FLOORS):
        for name in names:
            full = "lfr_actors" if name == "lfr_actors" else f"lfr_actors.{name}"
            inside = module == full or (name != "lfr_actors" and module.startswith(full + "."))
            if inside and (best is None or len(full) > best[0]):
                best = (len(full), index, floor)
    assert best is not None, f"{module} is on no floor: add it to FLOORS in {__file__}"
    return best[1], best[2]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _report(arrows: list[Arrow], what: str) -> str:
    return f"{what}:\n" + "\n".join(f"  {arrow}" for arrow in arrows)


def test_the_tree_is_read() -> None:
    # The checks below mean something only if they see the project's imports.
    assert {"lfr_actors.errors", "lfr_actors.store.alerts", "lfr_actors.cli.main"} <= set(MODULES)
    assert any(a.imported == "lfr_actors.alerts.records" for a in ARROWS)


def test_every_module_is_on_a_floor() -> None:
    for module in MODULES:
        _place(module)


def test_no_import_runs_up_the_floors() -> None:
    up = [a for a in ARROWS if _place(a.imported)[0] > _place(a.importer)[0]]
    if up:
        pytest.fail(
            "imports running up the floors:\n"
            + "\n".join(
                f"  {a} ({_place(a.importer)[1]} imports {_place(a.imported)[1]})" for a in up
            )
        )


def test_the_ground_floor_imports_nothing_from_above() -> None:
    bad = [
        a for a in ARROWS if _place(a.importer)[1] in GROUND and _room(a.imported) in ABOVE_GROUND
    ]
    if bad:
        pytest.fail(_report(bad, "the ground floor imports from the rooms above it"))


def test_no_two_rooms_depend_on_each_other() -> None:
    between: dict[tuple[str, str], list[Arrow]] = defaultdict(list)
    for arrow in ARROWS:
        a, b = _room(arrow.importer), _room(arrow.imported)
        if a != b:
            between[a, b].append(arrow)
    both = [pair for pair in between if pair < pair[::-1] and pair[::-1] in between]
    if both:
        pytest.fail(
            "\n".join(
                _report(between[a, b] + between[b, a], f"{a} and {b} import each other")
                for a, b in both
            )
        )


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    where: dict[tuple[str, str], Arrow] = {}
    for arrow in ARROWS:
        graph[arrow.importer].add(arrow.imported)
        where.setdefault((arrow.importer, arrow.imported), arrow)
    try:
        tuple(TopologicalSorter(graph).static_order())
        cycle: list[str] = []
    except CycleError as exc:
        cycle = exc.args[1]  # each module in it is imported by the next
    if cycle:
        arrows = [where[b, a] for a, b in pairwise(cycle)]
        pytest.fail(_report(arrows, "modules import each other round"))
