"""Read topology and watchlist files, and say exactly what is wrong with them.

Loading is three steps, each reporting every problem it finds, not the first:

1. **Parse** the YAML into plain data while recording the line of every key and value.
   The reader follows YAML 1.2 where YAML 1.1 surprises people: only ``true``/``false``
   are booleans (``no`` and ``on`` stay text), ``012`` is twelve, ``1e3`` is a number and
   dates stay text for the schema to read. Repeated keys are errors.
2. **Validate** with the pydantic models in :mod:`lfr_actors.topology.schema`, then map
   every error's location back to a line: ``file:line: field.path: got VALUE — what is
   wrong. What to change.``
3. **Resolve** relative paths against the file's folder.

:func:`check_files` is the separate I/O step: do the files the topology names exist.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, TextIO, TypeVar, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import AwareDatetime, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lfr_actors.errors import LfrError
from lfr_actors.models.spec import EmbedderSpec
from lfr_actors.topology.schema import (
    ACTOR_ID_PATTERN,
    ENTRY_ID_PATTERN,
    HEX_COLOUR_PATTERN,
    RULES_ERROR,
    FileModel,
    FileSource,
    PathKey,
    RuleViolation,
    SyntheticSource,
    Topology,
    Watchlist,
)

__all__ = [
    "TopologyError",
    "TopologyIssue",
    "check_files",
    "load_embedder_spec",
    "load_topology",
    "load_watchlist",
    "summary",
    "validate_command",
]

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=FileModel)

MAX_VALUE_CHARS = 60
MAX_NODES = 1_000_000  # guards against alias bombs ("billion laughs")
MAX_DEPTH = 64
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


# -- step 1: YAML with line numbers ------------------------------------------------------

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _YamlReader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and numbers, and timestamps left as text."""


_YamlReader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlReader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_YamlReader.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_YamlReader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        return int(text, 10)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot read {text!r} as a whole number", node.start_mark
        ) from None


_YamlReader.add_constructor(_INT, _construct_int)


def _construct_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


_YamlReader.add_constructor(_TIMESTAMP, _construct_text)

Lines = dict[PathKey, tuple[int | None, int]]
"""For each data path: the line of its key (None for list items) and of its value."""


@dataclass(frozen=True)
class _Origin:
    """Where a loaded model came from, so later checks can name lines too."""

    file: Path
    lines: Lines
    data: Any = None

    def line(self, path: PathKey) -> int | None:
        return _line(self.lines, path)

    def written(self, path: PathKey, fallback: Any) -> str:
        """The value at ``path`` as the file has it (paths there are still relative)."""
        found, raw = _lookup(self.data, path)
        return _show(raw if found else fallback)


class _TooLarge(Exception):
    pass


class _Builder:
    """Turns a composed YAML node tree into plain data, recording lines and repeated keys."""

    def __init__(self, loader: _YamlReader, file: Path) -> None:
        self.loader = loader
        self.file = file
        self.lines: Lines = {}
        self.issues: list[TopologyIssue] = []
        self.nodes = 0

    def build(self, node: yaml.Node, path: PathKey = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or len(path) > MAX_DEPTH:
            raise _TooLarge
        if isinstance(node, yaml.MappingNode):
            self._repeated_keys(node, path)
            self.loader.flatten_mapping(node)
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.issues.append(
                        TopologyIssue(
                            self.file,
                            key_node.start_mark.line + 1,
                            _fmt(path),
                            None,
                            "a key must be a plain name, not a list or mapping",
                            "Write the key as a plain word followed by a colon.",
                        )
                    )
                    continue
                key = str(key_node.value)
                child = (*path, key)
                self.lines[child] = (key_node.start_mark.line + 1, value_node.start_mark.line + 1)
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = (None, item.start_mark.line + 1)
                items.append(self.build(item, (*path, i)))
            return items
        return self.loader.construct_object(node, deep=True)

    def _repeated_keys(self, node: yaml.MappingNode, path: PathKey) -> None:
        # Checked before merging, so that keys overriding a merged (<<) mapping are fine.
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = "on this line" if seen[key] == line else f"at lines {seen[key]} and {line}"
                self.issues.append(
                    TopologyIssue(
                        self.file,
                        line,
                        _fmt((*path, key)),
                        None,
                        f"'{key}' is written twice, {where}",
                        "Keep one of them; YAML would silently use the last.",
                    )
                )
            else:
                seen[key] = line


def _syntax_issue(file: Path, exc: yaml.YAMLError) -> TopologyIssue:
    line = column = None
    message = str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
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


@dataclass(frozen=True)
class _Parsed:
    data: Any
    lines: Lines
    issues: list[TopologyIssue]


def _whole_file(file: Path, message: str, fix: str) -> TopologyError:
    return TopologyError([TopologyIssue(file, None, "", None, message, fix)])


def _parse(file: Path, what: str) -> _Parsed:
    """Read one YAML file into data, lines and problems; raise if nothing usable."""
    try:
        text = file.read_text("utf-8")
    except FileNotFoundError:
        raise _whole_file(
            file,
            f"{what} file not found",
            "Check the path; relative paths start from the current folder.",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise _whole_file(
            file, f"cannot read the {what} file: {reason}", "Make it a readable UTF-8 text file."
        ) from exc
    loader = _YamlReader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise _whole_file(
                file,
                f"the {what} file is empty",
                f"Write the {what}; {DOCS} describes it, with examples.",
            )
        builder = _Builder(loader, file)
        builder.lines[()] = (None, node.start_mark.line + 1)
        data = builder.build(node)
    except yaml.YAMLError as exc:
        raise TopologyError([_syntax_issue(file, exc)]) from None
    except _TooLarge:
        raise _whole_file(
            file,
            f"the {what} nests too deeply or expands to too many values",
            "Write it out plainly, without deeply nested or repeated aliases.",
        ) from None
    finally:
        loader.dispose()
    return _Parsed(data, builder.lines, builder.issues)


# -- step 2: validation errors mapped to lines and fixes ---------------------------------


def _fmt(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line(lines: Lines, path: PathKey) -> int | None:
    """The line of ``path``'s key (or value), else of its nearest written ancestor."""
    for n in range(len(path), -1, -1):
        found = lines.get(path[:n])
        if found is not None:
            key_line, value_line = found
            return key_line if key_line is not None else value_line
    return None


def _related(lines: Lines, path: PathKey) -> str:
    where = f"line {_line(lines, path)}" if path in lines else "not written: its default"
    return f"{_fmt(path)} ({where})"


def _lookup(data: Any, path: PathKey) -> tuple[bool, Any]:
    for part in path:
        present = (isinstance(data, Mapping) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        )
        if not present:
            return False, None
        data = data[part]
    return True, data


def _yaml_text(value: Any) -> str:
    """A value as an operator would write it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (date, Path, int)):
        return str(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z0-9_./@+-][^#:{}\[\]&*!|>'\"%`]*", value)
        return value if plain and value == value.strip() else json.dumps(value)
    return repr(value)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else _yaml_text(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` and ``| None``; return the bare type and its constraints."""
    constraints: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extras = get_args(annotation)
            for extra in extras:
                if isinstance(extra, FieldInfo):
                    constraints.extend(extra.metadata)
                else:
                    constraints.append(extra)
        elif origin in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not NoneType]
            if len(members) != 1:
                return annotation, constraints
            annotation = members[0]
        else:
            return annotation, constraints


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    if get_origin(annotation) in (Union, UnionType):
        return [a for a in get_args(annotation) if _is_model(a)]
    return []


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is not None and get_origin(field.annotation) is Literal:
        return str(get_args(field.annotation)[0])
    return None


@dataclass
class _At:
    """Where a pydantic error location lands in the schema and in the data."""

    path: PathKey
    container: type[BaseModel] | None = None
    field: FieldInfo | None = None
    name: str | None = None
    annotation: Any = None
    constraints: tuple[Any, ...] = ()
    element: int | None = None


def _locate(root: type[BaseModel], loc: tuple[str | int, ...]) -> _At:
    """Follow ``loc`` through the models, dropping the union tags pydantic inserts."""
    at = _At(path=(), container=root, annotation=root)
    for part in loc:
        bare = _unwrap(at.annotation)[0]
        members = _union_members(bare)
        if members and isinstance(part, str):
            chosen = [m for m in members if _tag_of(m) == part]
            if chosen:
                at.annotation = chosen[0]
                continue
        if _is_model(bare) and isinstance(part, str):
            at.container = bare
            at.path = (*at.path, part)
            at.name = part
            at.element = None
            at.field = bare.model_fields.get(part)
            at.annotation = at.field.annotation if at.field else None
            at.constraints = tuple(at.field.metadata) if at.field else ()
            continue
        if isinstance(part, int) and get_origin(bare) in (tuple, list):
            args = get_args(bare)
            item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
            if item is None and part < len(args):
                item = args[part]
            at.path = (*at.path, part)
            at.element = part
            at.annotation = item
            at.constraints = tuple(_unwrap(item)[1]) if item is not None else ()
            continue
        at.path = (*at.path, part)
        at.field = None
        at.annotation = None
        at.name = str(part)
    return at


def _what(at: _At) -> str:
    """The field's description up to its first full stop: a noun phrase."""
    text = (at.field.description if at.field else None) or ""
    text = re.split(r"(?<!e\.g)\.\s", text, maxsplit=1)[0].rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def _example(at: _At) -> Any:
    field = at.field
    if field is None:
        return None
    value: Any = None
    if field.examples:
        value = field.examples[0]
    elif field.default is not PydanticUndefined and not isinstance(field.default, BaseModel):
        value = field.default
    if at.element is not None and isinstance(value, (tuple, list)):
        value = value[at.element] if at.element < len(value) else None
    return value


def _set_fix(at: _At, path: str, example: Any = None) -> str:
    what = _what(at)
    example = _example(at) if example is None else example
    fix = f"Set {path} to {what}" if what else f"Set {path} to a valid value"
    if example is not None and not isinstance(example, BaseModel):
        fix += f", e.g. {_yaml_text(example)}"
    return fix + "."


def _bounds(constraints: Iterable[Any]) -> str:
    low = high = ""
    for c in constraints:
        if isinstance(c, annotated_types.Gt):
            low = f"greater than {_yaml_text(c.gt)}"
        elif isinstance(c, annotated_types.Ge):
            low = f"at least {_yaml_text(c.ge)}"
        elif isinstance(c, annotated_types.Lt):
            high = f"less than {_yaml_text(c.lt)}"
        elif isinstance(c, annotated_types.Le):
            high = f"at most {_yaml_text(c.le)}"
    return " and ".join(p for p in (low, high) if p)


def _lengths(constraints: Iterable[Any]) -> tuple[int | None, int | None]:
    low = high = None
    for c in constraints:
        if isinstance(c, annotated_types.MinLen):
            low = c.min_length
        elif isinstance(c, annotated_types.MaxLen):
            high = c.max_length
    return low, high


_PATTERNS = {
    ACTOR_ID_PATTERN: "1 to 64 lower-case letters, digits, '_' or '-', starting with a letter "
    "or digit",
    ENTRY_ID_PATTERN: "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    HEX_COLOUR_PATTERN: 'a quoted hex colour such as "#406080"',
    r"\S": "non-empty text",
    r"^\S+$": "text without spaces",
}


def _expected(annotation: Any) -> str:
    bare, _ = _unwrap(annotation)
    if get_origin(bare) is Literal:
        return "one of " + ", ".join(_yaml_text(a) for a in get_args(bare))
    if _union_members(bare) or _is_model(bare):
        return "a mapping of fields (indented key: value lines)"
    if get_origin(bare) in (tuple, list):
        return "a list"
    if bare is AwareDatetime:
        return "an ISO 8601 date and time with a time zone, such as 2026-11-20T08:00:00Z"
    names: dict[Any, str] = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "text",
        Path: "a file path",
        datetime: "an ISO 8601 date and time with a time zone, such as 2026-11-20T08:00:00Z",
        date: "a date, YYYY-MM-DD",
    }
    for kind, name in names.items():
        if isinstance(bare, type) and issubclass(bare, kind):
            return name
    return "a value of another type"


_TYPE_ERRORS = {
    "bool_not_number",
    "bool_parsing",
    "bool_type",
    "date_from_datetime_parsing",
    "date_parsing",
    "date_type",
    "datetime_from_date_parsing",
    "datetime_parsing",
    "datetime_type",
    "dict_type",
    "float_parsing",
    "float_type",
    "int_parsing",
    "int_type",
    "list_type",
    "model_attributes_type",
    "model_type",
    "path_type",
    "string_type",
    "tuple_type",
}


def _suggest_id(value: Any, pattern: str) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if pattern == ACTOR_ID_PATTERN:
        text = text.lower()
        text = re.sub(r"[^a-z0-9_-]+", "_", text).strip("_-")
    else:
        text = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")
    return text[:64] or None


def _error_issues(
    error: Mapping[str, Any], file: Path, data: Any, lines: Lines, root: type[BaseModel]
) -> list[TopologyIssue]:
    """Every issue one pydantic error stands for (a rules error stands for several)."""
    at = _locate(root, tuple(error["loc"]))
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}

    def issue(
        message: str, fix: str, path: PathKey | None = None, show_value: bool = True
    ) -> TopologyIssue:
        where = at.path if path is None else path
        found, raw = _lookup(data, where)
        value = _show(raw) if found and show_value else None
        return TopologyIssue(file, _line(lines, where), _fmt(where), value, message, fix)

    name = at.name or "the file"
    path = _fmt(at.path) or "the top level"

    if kind == RULES_ERROR:
        out = []
        for v in ctx.get("violations", ()):
            assert isinstance(v, RuleViolation)
            where = (*at.path, *v.path)
            message = v.message
            if v.related:
                also = ", ".join(_related(lines, (*at.path, *r)) for r in v.related)
                message += f"; see {also}"
            out.append(issue(message, v.fix, where))
        return out

    if kind == "missing":
        if at.element is not None:
            holder = _locate(root, tuple(error["loc"])[:-1])
            need = len(get_args(_unwrap(holder.annotation)[0]))
            return [
                issue(
                    f"{holder.name} needs exactly {need} values",
                    _set_fix(holder, _fmt(holder.path)),
                    holder.path,
                )
            ]
        parent_text = _fmt(at.path[:-1])
        under = f"under {parent_text}" if parent_text else "at the top level of the file"
        if _is_model(_unwrap(at.annotation)[0]):
            fix = f"Add a {name}: section {under}: {_what(at)}; {DOCS} lists its fields."
        else:
            example = _example(at)
            shown = f"{name}: {_yaml_text(example)}" if example is not None else f"{name}:"
            fix = f"Add {name} {under}: {_what(at)}, e.g. {shown}."
        return [issue(f"required field '{name}' is missing", fix, show_value=False)]

    if kind == "extra_forbidden":
        allowed = list(at.container.model_fields) if at.container else []
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        parent_text = _fmt(at.path[:-1]) or "the top level"
        if close:
            return [
                issue(
                    f"unknown field '{name}' — did you mean '{close[0]}'?",
                    f"Rename it to {close[0]}.",
                    show_value=False,
                )
            ]
        return [
            issue(
                f"unknown field '{name}'",
                f"Remove it; {parent_text} accepts {', '.join(allowed)}.",
                show_value=False,
            )
        ]

    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return [issue(f"{name} must be {_bounds(at.constraints)}", _set_fix(at, path))]

    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        low, high = _lengths(at.constraints)
        raw = _lookup(data, at.path)[1]
        if kind == "too_short" and isinstance(raw, list) and len(raw) >= (low or 0):
            return []  # pydantic counts only the valid items; the others have their own errors
        if kind.startswith("string"):
            message = f"{name} must be at most {high} characters"
        elif low is not None and low == high:
            message = f"{name} needs exactly {low} values, not {ctx.get('actual_length')}"
        elif kind == "too_short":
            message = f"{name} needs at least {low} item{'s' if low != 1 else ''}"
        else:
            message = f"{name} may have at most {high} items, not {ctx.get('actual_length')}"
        return [issue(message, _set_fix(at, path))]

    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        human = _PATTERNS.get(pattern, f"text matching {pattern}")
        raw = _lookup(data, at.path)[1]
        suggestion = _suggest_id(raw, pattern) if "64" in human else None
        return [issue(f"{name} must be {human}", _set_fix(at, path, suggestion))]

    if kind == "literal_error":
        options = [str(a) for a in get_args(_unwrap(at.annotation)[0])]
        raw = _lookup(data, at.path)[1]
        close = difflib.get_close_matches(str(raw), options, n=1, cutoff=0.6)
        message = (
            f"{name} must be {options[0]}"
            if len(options) == 1
            else f"{name} must be one of {', '.join(options)}"
        )
        if close:
            message += f" — did you mean '{close[0]}'?"
        fix = f"Set {path} to {_what(at) or 'one of them'}."
        return [issue(message, fix)]

    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t for m in _union_members(_unwrap(at.annotation)[0]) if (t := _tag_of(m))]
        where = (*at.path, "type")
        tag = ctx.get("tag")
        if kind == "union_tag_not_found":
            message = f"{name} has no type"
        else:
            message = f"{name} type {tag!r} is not one of {', '.join(tags)}"
            close = difflib.get_close_matches(str(tag), tags, n=1, cutoff=0.6)
            if close:
                message += f" — did you mean '{close[0]}'?"
        fix = (
            f"Set {_fmt(where)} to one of {', '.join(tags)} and give the fields that type "
            f"needs ({DOCS}); a network stream such as rtsp:// is type: url."
        )
        return [issue(message, fix, where)]

    if kind == "timezone_aware":
        raw = _lookup(data, at.path)[1]
        example = f"{raw}Z" if isinstance(raw, str) else "2026-11-20T08:00:00Z"
        return [
            issue(
                f"{name} has no time zone",
                f"Add the time zone to {path}, e.g. {example} for UTC, or an offset such as "
                "+01:00.",
            )
        ]

    if kind == "int_from_float":
        return [issue(f"{name} must be a whole number", _set_fix(at, path))]

    if kind == "finite_number":
        return [issue(f"{name} must be a finite number", _set_fix(at, path))]

    if kind == "path_empty":
        return [issue(f"{name} must not be empty", _set_fix(at, path))]

    if kind == "date_from_datetime_inexact":
        return [issue(f"{name} must be a date without a time of day", _set_fix(at, path))]

    if kind in _TYPE_ERRORS:
        expected = _expected(at.annotation) if at.annotation is not None else "another type"
        message = f"{name} must be {expected}" if at.path else f"the file must be {expected}"
        if "error" in ctx:
            message += f" ({ctx['error']})"
        raw = _lookup(data, at.path)[1]
        if raw is None and any(
            getattr(c, "pattern", None) == HEX_COLOUR_PATTERN for c in at.constraints
        ):
            message += "; an unquoted # starts a YAML comment, so quote the colour"
        if _is_model(_unwrap(at.annotation)[0]) or at.annotation is None:
            return [issue(message, f"Write {path} as indented key: value lines; see {DOCS}.")]
        return [issue(message, _set_fix(at, path))]

    return [issue(str(error.get("msg", kind)), _set_fix(at, path))]


def _validate(model: type[M], parsed: _Parsed, file: Path) -> M:
    issues = list(parsed.issues)
    result: M | None = None
    try:
        result = model.model_validate(parsed.data)
    except ValidationError as exc:
        for error in exc.errors():
            issues.extend(_error_issues(error, file, parsed.data, parsed.lines, model))
    if issues:
        issues.sort(key=lambda i: math.inf if i.line is None else i.line)
        raise TopologyError(issues)
    assert result is not None
    return result


# -- step 3: relative paths --------------------------------------------------------------


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
    parsed = _parse(path, what)
    loaded = _resolve_paths(_validate(model, parsed, path), path.parent)
    loaded._origin = _Origin(path, parsed.lines, parsed.data)
    return loaded


def load_topology(path: Path) -> Topology:
    """Read and validate a topology file; relative paths in it start from its folder.

    Raises :class:`TopologyError` listing every problem found. Reads only this file.
    """
    return _load(Topology, path, "topology")


def load_watchlist(path: Path) -> Watchlist:
    """Read and validate a watchlist file; image paths start from its folder.

    Raises :class:`TopologyError` listing every problem found. Reads only this file; the
    images are checked by :func:`check_files`.
    """
    return _load(Watchlist, path, "watchlist")


def load_embedder_spec(path: Path) -> EmbedderSpec:
    """Read an embedder spec file (an operator's own model); ``path:`` starts from its folder.

    Raises :class:`TopologyError` listing every problem found.
    """
    path = Path(path)
    parsed = _parse(path, "embedder spec")
    spec = _validate(EmbedderSpec, parsed, path)
    if spec.path is not None:
        spec = spec.model_copy(update={"path": _absolute(spec.path, path.parent)})
    return spec


# -- I/O checks --------------------------------------------------------------------------


def _origin(model: BaseModel, fallback: str) -> _Origin:
    origin = getattr(model, "_origin", None)
    return origin if isinstance(origin, _Origin) else _Origin(Path(fallback), {})


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_files(topology: Topology, watchlist: Watchlist | None) -> list[TopologyIssue]:
    """Check what validation cannot without I/O, and what needs both files.

    That every file the topology and watchlist name exists (videos, sprite images, the
    watchlist, the embedder spec and its ONNX file, the watchlist's images), that the data
    folder can be made, and that no watchlist entry's own threshold is looser than the
    deployment's ``alerts.max_threshold``. Returns every problem found (empty when none).
    """
    top = _origin(topology, "<topology>")
    issues: list[TopologyIssue] = []

    def missing(origin: _Origin, where: PathKey, file: Path, what: str, fix: str) -> None:
        state = "is a folder, not a file" if file.is_dir() else "does not exist"
        issues.append(
            TopologyIssue(
                origin.file,
                origin.line(where),
                _fmt(where),
                origin.written(where, str(file)),
                f"{what} {state} (looked for {_shown_path(file)})",
                fix,
            )
        )

    for i, camera in enumerate(topology.cameras):
        source = camera.source
        if isinstance(source, FileSource) and not source.path.is_file():
            missing(
                top,
                ("cameras", i, "source", "path"),
                source.path,
                "the video file",
                "Correct the path (relative to the topology file's folder) or put the video there.",
            )
        if isinstance(source, SyntheticSource):
            for j, sprite in enumerate(source.sprites):
                if not sprite.image.is_file():
                    missing(
                        top,
                        ("cameras", i, "source", "sprites", j, "image"),
                        sprite.image,
                        "the sprite image",
                        "Correct the path (relative to the topology file's folder).",
                    )

    model_file = topology.embedder.model_file
    if model_file is not None:
        if not model_file.is_file():
            missing(
                top,
                ("embedder", "model_file"),
                model_file,
                "the embedder spec file",
                "Correct the path, or remove model_file to use a default model.",
            )
        else:
            issues.extend(_check_spec(model_file))

    if topology.watchlist is not None and not topology.watchlist.file.is_file():
        missing(
            top,
            ("watchlist", "file"),
            topology.watchlist.file,
            "the watchlist file",
            "Correct the path (relative to the topology file's folder) or write the "
            f"watchlist there; {DOCS} describes it.",
        )

    data_dir = topology.storage.data_dir
    ancestor = data_dir
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if data_dir.exists() and not data_dir.is_dir():
        problem = f"the data folder {_shown_path(data_dir)} is a file"
    elif not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        problem = f"the data folder cannot be written: {_shown_path(ancestor)} is not writable"
    else:
        problem = ""
    if problem:
        where = ("storage", "data_dir")
        issues.append(
            TopologyIssue(
                top.file,
                top.line(where),
                _fmt(where),
                top.written(where, str(data_dir)),
                problem,
                "Set storage.data_dir to a folder this user can create and write.",
            )
        )

    if watchlist is not None:
        issues.extend(_check_watchlist(topology, watchlist))
    return issues


def _check_spec(file: Path) -> list[TopologyIssue]:
    try:
        spec = load_embedder_spec(file)
    except TopologyError as exc:
        return exc.issues
    parsed = _parse(file, "embedder spec")
    if spec.path is None:
        return [
            TopologyIssue(
                file,
                _line(parsed.lines, ()),
                "path",
                None,
                "the embedder spec names no ONNX file",
                "Add path: with the model's ONNX file, relative to the spec file's folder.",
            )
        ]
    if not spec.path.is_file():
        return [
            TopologyIssue(
                file,
                _line(parsed.lines, ("path",)),
                "path",
                _show(_shown_path(spec.path)),
                "the ONNX model file does not exist",
                "Correct the path (relative to the spec file's folder).",
            )
        ]
    return []


def _check_watchlist(topology: Topology, watchlist: Watchlist) -> list[TopologyIssue]:
    origin = _origin(watchlist, "<watchlist>")
    issues = []
    cap = topology.alerts.max_threshold
    for i, entry in enumerate(watchlist.entries):
        for j, image in enumerate(entry.images):
            if not image.is_file():
                where: PathKey = ("entries", i, "images", j)
                state = "is a folder, not a file" if image.is_dir() else "does not exist"
                issues.append(
                    TopologyIssue(
                        origin.file,
                        origin.line(where),
                        _fmt(where),
                        origin.written(where, str(image)),
                        f"the image of entry {entry.id!r} {state} (looked for "
                        f"{_shown_path(image)})",
                        "Correct the path (relative to the watchlist file's folder), or "
                        "remove the image from the entry.",
                    )
                )
        if cap is not None and entry.threshold is not None and entry.threshold > cap:
            where = ("entries", i, "threshold")
            issues.append(
                TopologyIssue(
                    origin.file,
                    origin.line(where),
                    _fmt(where),
                    _show(entry.threshold),
                    f"entry {entry.id!r} has a threshold looser than the deployment's "
                    f"alerts.max_threshold {cap}",
                    f"Set its threshold to {cap} or lower, or remove it to use the deployment's.",
                )
            )
    return issues


# -- summary and the validate command ----------------------------------------------------


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary(topology: Topology, watchlist: Watchlist | None, *, now: datetime | None = None) -> str:
    """A one-screen account of what this topology would run, for operators."""
    now = now or datetime.now(UTC)
    d = topology.deployment
    if d.is_active(now):
        state = f"ACTIVE now, ends in {_span(d.end - now)}"
    elif now < d.start:
        state = f"not active: starts in {_span(d.start - now)}"
    else:
        state = f"not active: ended {_span(now - d.end)} ago"

    def when(t: datetime) -> str:
        return t.isoformat(timespec="minutes").replace("+00:00", "Z")

    rows = [
        f"deployment   {d.id}",
        f"  authorised {d.authorised_by}",
        f"  purpose    {d.purpose}",
        f"  location   {d.location}",
        f"  window     {when(d.start)} -> {when(d.end)} ({_span(d.duration)}); {state}",
    ]
    if d.impact_assessment_ref:
        rows.append(f"  assessment {d.impact_assessment_ref}")
    rows.append(f"cameras      {len(topology.cameras)}")
    width = max(len(c.id) for c in topology.cameras)
    for c in topology.cameras:
        source = c.source
        text = (
            f"file {_shown_path(source.path)}"
            if isinstance(source, FileSource)
            else source.describe()
        )
        rows.append(f"  {c.id:<{width}}  {text}, {_yaml_text(c.fps)} fps")
    e = topology.embedder
    device = e.device if e.device == "cpu" else f"{e.device}, {_yaml_text(e.gpus_per_replica)} GPU"
    model = f"model file {_shown_path(e.model_file)}" if e.model_file else f"model {e.model}"
    rows.append(
        f"embedder     {e.id}: {_plural(e.replicas, 'replica')} ({device}), {model}, "
        f"batch <= {e.max_batch} within {_yaml_text(e.max_wait_ms)} ms"
    )
    ix = topology.index
    mode = f"auto (exact below {ix.exact_below} entries)" if ix.mode == "auto" else ix.mode
    rows.append(f"index        {ix.id}: {_plural(ix.shards, 'shard')}, {mode}, {ix.dtype}")
    a = topology.alerts
    cap = f" (max {_yaml_text(a.max_threshold)})" if a.max_threshold is not None else ""
    rows.append(
        f"alerts       {a.id}: threshold {_yaml_text(a.threshold)}{cap}, "
        f"{_plural(a.min_sightings, 'sighting')} within {_yaml_text(a.fusion_window_s)} s, "
        f"top {a.top_k}"
    )
    if topology.watchlist is None:
        rows.append("watchlist    none in a file: entries are enrolled through the API")
    else:
        if watchlist is None:
            listed = "not loaded"
        else:
            images = sum(len(x.images) for x in watchlist.entries)
            listed = f"{_plural(len(watchlist.entries), 'entry')}, {_plural(images, 'image')}"
            listed = listed.replace("entrys", "entries")
        rows.append(f"watchlist    {_shown_path(topology.watchlist.file)}: {listed}")
    rows.append(f"api          http://{topology.api.host}:{topology.api.port}")
    rows.append(f"data         {_shown_path(topology.storage.data_dir)}")
    rows.append(f"logging      {topology.logging.level}, {topology.logging.format}")
    return "\n".join(rows)


def validate_command(path: Path, stdout: TextIO, stderr: TextIO) -> int:
    """``lfr validate FILE``: 0 and a summary when valid, else 2 and every issue on stderr."""
    issues: list[TopologyIssue] = []
    watchlist: Watchlist | None = None
    try:
        topology = load_topology(path)
    except TopologyError as exc:
        return _report(path, exc.issues, stderr)
    if topology.watchlist is not None and topology.watchlist.file.is_file():
        try:
            watchlist = load_watchlist(Path(_shown_path(topology.watchlist.file)))
        except TopologyError as exc:
            issues.extend(exc.issues)
    issues.extend(check_files(topology, watchlist))
    if issues:
        return _report(path, issues, stderr)
    print(summary(topology, watchlist), file=stdout)
    print(f"{path}: valid", file=stdout)
    return 0


def _report(path: Path, issues: list[TopologyIssue], stderr: TextIO) -> int:
    for issue in issues:
        print(issue, file=stderr)
    print(f"{path}: {_plural(len(issues), 'problem')}; nothing was started.", file=stderr)
    return 2
