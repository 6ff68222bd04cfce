"""Read topology, watchlist and embedder spec files, and say exactly what is wrong with them.

Loading is three steps, each reporting every problem it finds, not the first:

1. **Parse** the YAML into plain data while recording the line of every key and value
   (:mod:`~lfr_actors.topology.yaml`, which also says how scalars are read).
2. **Validate** with the pydantic models in :mod:`lfr_actors.topology.schema`, and explain
   every error with its line and fix (:mod:`~lfr_actors.topology.explain`).
3. **Resolve** relative paths against the file's folder.

:func:`lfr_actors.topology.checks.check_files` is the separate I/O step: do the files the
topology names exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from lfr_actors.models.spec import EmbedderSpec
from lfr_actors.topology.explain import show, validate
from lfr_actors.topology.issues import TopologyError, TopologyIssue
from lfr_actors.topology.schema import FileModel, PathKey, Topology, Watchlist
from lfr_actors.topology.yaml import Lines, line_of, lookup, parse

__all__ = [
    "Origin",
    "TopologyError",
    "TopologyIssue",
    "load_embedder_spec",
    "load_topology",
    "load_watchlist",
]

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=FileModel)


@dataclass(frozen=True)
class Origin:
    """Where a loaded model came from, so later checks can name lines too."""

    file: Path
    lines: Lines
    data: Any = None

    def line(self, path: PathKey) -> int | None:
        """The line of ``path`` in the file, else of its nearest written ancestor."""
        return line_of(self.lines, path)

    def written(self, path: PathKey, fallback: Any) -> str:
        """The value at ``path`` as the file has it (paths there are still relative)."""
        found, raw = lookup(self.data, path)
        return show(raw if found else fallback)


def _absolute(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _resolve_paths(model: M, base: Path) -> M:
    """A copy of ``model`` with every relative ``Path`` made absolute against ``base``."""

    def resolve(value: Any) -> Any:
        if isinstance(value, Path):
            return _absolute(value, base)
        if isinstance(value, BaseModel):
            return _resolve_paths(value, base)
        if isinstance(value, tuple):
            return tuple(resolve(v) for v in value)
        return value

    updates = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = resolve(value)
        if new != value or isinstance(value, BaseModel):
            updates[name] = new
    return model.model_copy(update=updates)


def _load(model: type[F], path: Path, what: str) -> F:
    path = Path(path)
    parsed = parse(path, what)
    loaded = _resolve_paths(validate(model, parsed, path), path.parent)
    loaded._origin = Origin(path, parsed.lines, parsed.data)
    return loaded


def load_topology(path: Path) -> Topology:
    """Read and validate a topology file; relative paths in it start from its folder.

    Raises :class:`TopologyError` listing every problem found. Reads only this file.
    """
    return _load(Topology, path, "topology")


def load_watchlist(path: Path) -> Watchlist:
    """Read and validate a watchlist file; image paths start from its folder.

    Raises :class:`TopologyError` listing every problem found. Reads only this file; the
    images are checked by :func:`~lfr_actors.topology.checks.check_files`.
    """
    return _load(Watchlist, path, "watchlist")


def load_embedder_spec(path: Path) -> EmbedderSpec:
    """Read an embedder spec file (an operator's own model); ``path:`` starts from its folder.

    Raises :class:`TopologyError` listing every problem found.
    """
    path = Path(path)
    parsed = parse(path, "embedder spec")
    spec = validate(EmbedderSpec, parsed, path)
    if spec.path is not None:
        spec = spec.model_copy(update={"path": _absolute(spec.path, path.parent)})
    return spec
