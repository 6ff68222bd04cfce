"""Read an operator's YAML file into plain data and the line of every key and value.

:func:`parse` reads with ruamel.yaml's round-trip loader, whose mappings and lists keep
the line and column of every key, value and item (``.lc``). Its scalars follow the rules
this project has always read files by, stricter than either YAML version where YAML
surprises people:

- only ``true`` and ``false`` (any case style) are booleans: ``yes``, ``no``, ``on`` and
  ``off`` stay text;
- a whole number is decimal digits with an optional sign: ``012`` is twelve, while
  ``0o12``, ``0x1F``, ``1_000`` and ``1:30`` stay text;
- ``1e3``, ``1.``, ``.5``, ``.inf`` and ``.nan`` are numbers;
- dates and times stay text, for the schema to read with its own messages;
- a tag the reader does not know (``!thing``) is an error.

Repeated keys are errors (all of them, with both lines), keys must be plain names, and a
file whose aliases expand beyond :data:`MAX_NODES` values or that nests deeper than
:data:`MAX_DEPTH` is refused in one line: aliases are shared, not copied, while reading,
but everything after reading walks them expanded ("billion laughs").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap, CommentedSeq, merge_attrib
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import Node
from ruamel.yaml.resolver import BaseResolver

from lfr_actors.topology.issues import (
    DOCS,
    TopologyError,
    TopologyIssue,
    fmt_path,
    whole_file,
)
from lfr_actors.topology.schema import PathKey

__all__ = ["MAX_DEPTH", "MAX_NODES", "Lines", "Parsed", "line_of", "lookup", "parse"]

MAX_NODES = 1_000_000  # guards against alias bombs ("billion laughs")
MAX_DEPTH = 64

Lines = dict[PathKey, tuple[int | None, int]]
"""For each data path: the line of its key (None for list items) and of its value."""

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Resolver(BaseResolver):
    """Which plain scalars are booleans, numbers and nulls; everything else is text."""

    def __init__(self, version: Any = None, loader: Any = None) -> None:
        super().__init__(loader)

    @property
    def processing_version(self) -> tuple[int, int]:
        """The scanner reads YAML 1.2 syntax; the scalars follow the rules registered below."""
        return (1, 2)


for _tag, _pattern, _first in (
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (_INT, r"^[-+]?[0-9]+$", "-+0123456789"),
    (
        _FLOAT,
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    (_MERGE, r"^<<$", "<"),
    (_NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _Resolver.add_implicit_resolver_base(_tag, re.compile(_pattern), list(_first))


def _scalar_text(node: Node) -> str:
    return str(node.value)


_T = TypeVar("_T")


def _read(node: Node, convert: Callable[[str], _T], what: str) -> _T:
    """A tagged scalar converted, or a YAML error at its place naming what it should be."""
    text = _scalar_text(node)
    try:
        return convert(text)
    except (ValueError, KeyError):
        raise ConstructorError(
            None, None, f"cannot read {text!r} as {what}", node.start_mark
        ) from None


class _Constructor(RoundTripConstructor):
    """The round-trip constructor with plain scalars, and repeated keys noted, not raised."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repeats: dict[int, list[tuple[str, int, int]]] = {}
        """For each mapping (by ``id``): its repeated keys, first line and repeat line."""

    def check_mapping_key(
        self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
    ) -> bool:
        # Called before the mapping's merges (<<) are added: overriding a merged key is fine.
        # The last value is kept, as YAML would, so that its other problems are named too.
        if key in mapping:
            repeats = self.repeats.setdefault(id(mapping), [])
            earlier = [first for name, first, _ in repeats if name == str(key)]
            first = earlier[0] if earlier else mapping.lc.key(key)[0] + 1
            repeats.append((str(key), first, key_node.start_mark.line + 1))
        return True

    def _int(self, node: Node) -> int:
        return _read(node, lambda text: int(text, 10), "a whole number")

    def _float(self, node: Node) -> float:
        special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
        return _read(node, lambda text: special.get(text.lower()) or float(text), "a number")

    def _bool(self, node: Node) -> bool:
        return _read(node, lambda text: bool(self.bool_values[text.lower()]), "true or false")

    def _text(self, node: Node) -> str:
        return _scalar_text(node)

    def _unknown(self, node: Node) -> None:
        raise ConstructorError(
            None,
            None,
            f"could not determine a constructor for the tag {str(node.tag)!r}",
            node.start_mark,
        )


_Constructor.add_constructor(_INT, _Constructor._int)
_Constructor.add_constructor(_FLOAT, _Constructor._float)
_Constructor.add_constructor(_BOOL, _Constructor._bool)
_Constructor.add_constructor(_STR, _Constructor._text)
_Constructor.add_constructor(_TIMESTAMP, _Constructor._text)
_Constructor.add_constructor(None, _Constructor._unknown)


class _TooLarge(Exception):
    pass


def _check_shape(node: Node, open_nodes: set[int], done: set[int], depth: int = 0) -> None:
    """Refuse nesting beyond MAX_DEPTH and an alias inside its own anchor (a loop).

    ruamel.yaml reads such a loop as null; it is refused like any other alias misuse.
    Each node is walked once, however many aliases name it.
    """
    if depth > MAX_DEPTH or id(node) in open_nodes:
        raise _TooLarge
    if id(node) in done or not isinstance(node.value, list):
        return
    open_nodes.add(id(node))
    for child in node.value:
        for part in child if isinstance(child, tuple) else (child,):
            _check_shape(part, open_nodes, done, depth + 1)
    open_nodes.discard(id(node))
    done.add(id(node))


class _Plain:
    """Copies ruamel's mappings and lists into plain data, recording lines and problems."""

    def __init__(self, constructor: _Constructor, file: Path) -> None:
        self.constructor = constructor
        self.file = file
        self.lines: Lines = {}
        self.issues: list[TopologyIssue] = []
        self.nodes = 0

    def copy(self, value: Any, path: PathKey = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or len(path) > MAX_DEPTH:
            raise _TooLarge
        if isinstance(value, CommentedMap):
            return self._mapping(value, path)
        if isinstance(value, CommentedSeq):
            items = []
            for i, item in enumerate(value):
                self.lines[(*path, i)] = (None, value.lc.item(i)[0] + 1)
                items.append(self.copy(item, (*path, i)))
            return items
        return value

    def _mapping(self, mapping: CommentedMap, path: PathKey) -> dict[str, Any]:
        for key, first, line in self.constructor.repeats.get(id(mapping), ()):
            where = "on this line" if first == line else f"at lines {first} and {line}"
            self.issues.append(
                TopologyIssue(
                    self.file,
                    line,
                    fmt_path((*path, key)),
                    None,
                    f"'{key}' is written twice, {where}",
                    "Keep one of them; YAML would silently use the last.",
                )
            )
        result: dict[str, Any] = {}
        for key, value in mapping.items():
            key_line, value_line = _key_lines(mapping, key)
            if isinstance(key, (tuple, Mapping)):
                self.issues.append(
                    TopologyIssue(
                        self.file,
                        key_line,
                        fmt_path(path),
                        None,
                        "a key must be a plain name, not a list or mapping",
                        "Write the key as a plain word followed by a colon.",
                    )
                )
                continue
            name = _key_name(key)
            child = (*path, name)
            self.lines[child] = (key_line, value_line)
            result[name] = self.copy(value, child)
        return result


def _key_lines(mapping: CommentedMap, key: Any) -> tuple[int, int]:
    """The lines of ``key`` and its value; a merged (<<) key's are where its anchor has it."""
    for source in (mapping, *getattr(mapping, merge_attrib, ())):
        if key in source.lc.data:
            key_line, _, value_line, _ = source.lc.data[key]
            return key_line + 1, value_line + 1
    line = mapping.lc.line + 1
    return line, line


def _key_name(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


@dataclass(frozen=True)
class Parsed:
    """One file read: its plain data, the lines of its paths, and the problems found."""

    data: Any
    lines: Lines
    issues: list[TopologyIssue]


def _syntax_issue(file: Path, exc: YAMLError) -> TopologyIssue:
    line = column = None
    message = str(exc)
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
        message = exc.problem or message
        if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        elif exc.context:
            message += f" ({exc.context})"
    if "'\\t'" in message:
        fix = "Indent with spaces; YAML does not allow tabs."
    elif "mapping values are not allowed" in message:
        fix = "Check the indentation above this point, and quote any value holding ': '."
    else:
        fix = "Check the indentation, colons and quotes at this point."
    return TopologyIssue(file, line, "", None, f"invalid YAML: {message}", fix, column)


def parse(file: Path, what: str) -> Parsed:
    """Read one YAML file into data, lines and problems; raise if nothing usable.

    ``what`` names the file in messages ("topology", "watchlist", "embedder spec").
    Raises :class:`TopologyError` when the file is missing, unreadable, empty, not YAML,
    or too large once its aliases are expanded.
    """
    try:
        text = file.read_text("utf-8")
    except FileNotFoundError:
        raise whole_file(
            file,
            f"{what} file not found",
            "Check the path; relative paths start from the current folder.",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise whole_file(
            file, f"cannot read the {what} file: {reason}", "Make it a readable UTF-8 text file."
        ) from exc
    reader = YAML(typ="rt")
    reader.Resolver = _Resolver
    reader.Constructor = _Constructor
    too_large = whole_file(
        file,
        f"the {what} nests too deeply or expands to too many values",
        "Write it out plainly, without deeply nested or repeated aliases.",
    )
    try:
        node = reader.compose(text)
        if node is None:
            raise whole_file(
                file,
                f"the {what} file is empty",
                f"Write the {what}; {DOCS} describes it, with examples.",
            )
        _check_shape(node, set(), set())
        constructor = reader.constructor
        assert isinstance(constructor, _Constructor)
        plain = _Plain(constructor, file)
        plain.lines[()] = (None, node.start_mark.line + 1)
        data = plain.copy(constructor.construct_document(node))
    except YAMLError as exc:
        raise TopologyError([_syntax_issue(file, exc)]) from None
    except (_TooLarge, RecursionError):
        raise too_large from None
    return Parsed(data, plain.lines, plain.issues)


def line_of(lines: Lines, path: PathKey) -> int | None:
    """The line of ``path``'s key (or value), else of its nearest written ancestor."""
    for n in range(len(path), -1, -1):
        found = lines.get(path[:n])
        if found is not None:
            key_line, value_line = found
            return key_line if key_line is not None else value_line
    return None


def lookup(data: Any, path: PathKey) -> tuple[bool, Any]:
    """Whether ``path`` is written in ``data``, and its value there."""
    for part in path:
        present = (isinstance(data, Mapping) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        )
        if not present:
            return False, None
        data = data[part]
    return True, data
