"""What a topology, watchlist or embedder spec file has wrong, as operators read it.

Every reader and check of these files reports :class:`TopologyIssue` values, one per
problem, and raises :class:`TopologyError` holding all of them, never just the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lfr_actors.errors import LfrError
from lfr_actors.topology.schema import PathKey

__all__ = ["DOCS", "TopologyError", "TopologyIssue", "fmt_path", "whole_file"]

DOCS = "docs/topology.md"


@dataclass(frozen=True)
class TopologyIssue:
    """One problem in a topology, watchlist or embedder spec file.

    ``path`` is the field path (``cameras[1].source.url``; empty for the whole file),
    ``value`` the offending value as written (shortened), ``message`` what is wrong and
    ``fix`` what to change. ``column`` is set for YAML syntax errors only.
    """

    file: Path
    line: int | None
    path: str
    value: str | None
    message: str
    fix: str
    column: int | None = None

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        head = f"{where}: {self.path}: " if self.path else f"{where}: "
        got = f"got {self.value} — " if self.value is not None else ""
        end = " " if self.message.endswith(("?", ".", "!")) else ". "
        return f"{head}{got}{self.message}{end}{self.fix}"


class TopologyError(LfrError):
    """A topology or watchlist file is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: Iterable[TopologyIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def fmt_path(path: PathKey) -> str:
    """A data path as operators write it: ``cameras[1].source.url``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def whole_file(file: Path, message: str, fix: str) -> TopologyError:
    """An error about the whole file, with no line: missing, unreadable, empty."""
    return TopologyError([TopologyIssue(file, None, "", None, message, fix)])
