"""Turn pydantic's validation errors into what an operator reads and what to change.

Each error's location is followed through the models to the field it names, and mapped
back to the line the file has it on: ``file:line: field.path: got VALUE — what is wrong.
What to change.`` The "what" comes from the error and the field's limits; the fix from
the field's description (a noun phrase) and its example or default. A rules error
(:data:`~lfr_actors.topology.schema.RULES_ERROR`) stands for every cross-field rule it
carries, each with its own line and the lines of the fields it relates.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
from pydantic import AwareDatetime, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lfr_actors.timefmt import iso_z
from lfr_actors.topology.issues import DOCS, TopologyError, TopologyIssue, fmt_path
from lfr_actors.topology.schema import (
    ACTOR_ID_PATTERN,
    ENTRY_ID_PATTERN,
    HEX_COLOUR_PATTERN,
    RULES_ERROR,
    PathKey,
    RuleViolation,
)
from lfr_actors.topology.yaml import Lines, Parsed, line_of, lookup

__all__ = ["MAX_VALUE_CHARS", "show", "validate", "yaml_text"]

M = TypeVar("M", bound=BaseModel)

MAX_VALUE_CHARS = 60


def _related(lines: Lines, path: PathKey) -> str:
    where = f"line {line_of(lines, path)}" if path in lines else "not written: its default"
    return f"{fmt_path(path)} ({where})"


def yaml_text(value: Any) -> str:
    """A value as an operator would write it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, (date, Path, int)):
        return str(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z0-9_./@+-][^#:{}\[\]&*!|>'\"%`]*", value)
        return value if plain and value == value.strip() else json.dumps(value)
    return repr(value)


def show(value: Any) -> str:
    """A value as the file has it, quoted when text and shortened to MAX_VALUE_CHARS."""
    text = repr(value) if isinstance(value, str) else yaml_text(value)
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


_TAG_FIELDS = ("type", "model")
"""The fields whose one-value ``Literal`` picks a member of a union (``source.type``,
``embedder.detector.model``)."""

_TAG_HINTS = {
    "type": "a network stream such as rtsp:// is type: url",
    "model": "leave model out for the embedder device's default",
}


def _tag_field(model: type[BaseModel]) -> str | None:
    """The field that names ``model`` among its union's members, if it has one."""
    for name in _TAG_FIELDS:
        field = model.model_fields.get(name)
        if field is not None and get_origin(field.annotation) is Literal:
            return name
    return None


def _tag_of(model: type[BaseModel]) -> str | None:
    name = _tag_field(model)
    if name is None:
        return None
    return str(get_args(model.model_fields[name].annotation)[0])


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
    variants: tuple[type[BaseModel], ...] = ()
    """The members of the union ``container`` was chosen from, when it was."""


def _locate(root: type[BaseModel], loc: tuple[str | int, ...]) -> _At:
    """Follow ``loc`` through the models, dropping the union tags pydantic inserts."""
    at = _At(path=(), container=root, annotation=root)
    variants: tuple[type[BaseModel], ...] = ()
    for part in loc:
        bare = _unwrap(at.annotation)[0]
        members = _union_members(bare)
        if members and isinstance(part, str):
            chosen = [m for m in members if _tag_of(m) == part]
            if chosen:
                at.annotation = chosen[0]
                variants = tuple(members)
                continue
        if _is_model(bare) and isinstance(part, str):
            at.container = bare
            at.variants, variants = variants, ()
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
        fix += f", e.g. {yaml_text(example)}"
    return fix + "."


def _bounds(constraints: Iterable[Any]) -> str:
    low = high = ""
    for c in constraints:
        if isinstance(c, annotated_types.Gt):
            low = f"greater than {yaml_text(c.gt)}"
        elif isinstance(c, annotated_types.Ge):
            low = f"at least {yaml_text(c.ge)}"
        elif isinstance(c, annotated_types.Lt):
            high = f"less than {yaml_text(c.lt)}"
        elif isinstance(c, annotated_types.Le):
            high = f"at most {yaml_text(c.le)}"
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
        return "one of " + ", ".join(yaml_text(a) for a in get_args(bare))
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


def _number(bound: Any) -> float:
    return float(bound)


def _nearest_multiples(value: Any, step: int, constraints: Iterable[Any]) -> list[int]:
    """The multiples of ``step`` nearest ``value`` within the field's bounds, low first."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or step < 1:
        return []
    lowest: float = -math.inf
    highest: float = math.inf
    for c in constraints:
        if isinstance(c, annotated_types.Ge):
            lowest = max(lowest, math.ceil(_number(c.ge) / step) * step)
        elif isinstance(c, annotated_types.Gt):
            lowest = max(lowest, (math.floor(_number(c.gt) / step) + 1) * step)
        elif isinstance(c, annotated_types.Le):
            highest = min(highest, math.floor(_number(c.le) / step) * step)
        elif isinstance(c, annotated_types.Lt):
            highest = min(highest, (math.ceil(_number(c.lt) / step) - 1) * step)
    if lowest > highest:
        return []
    below = math.floor(value / step) * step
    found: list[int] = []
    for near in (below, below + step):
        candidate = int(min(max(near, lowest), highest))
        if candidate not in found:
            found.append(candidate)
    return sorted(found)


def _sibling_field(at: _At, data: Any) -> tuple[str, str] | None:
    """The message and fix for a field of another member of the container's union.

    Such as ``thresholds`` (MTCNN's) under ``model: centerface``; None for any other field.
    """
    container, name = at.container, at.name
    key = _tag_field(container) if container else None
    if container is None or key is None or name is None:
        return None
    owners = [
        tag
        for m in at.variants
        if m is not container and name in m.model_fields and (tag := _tag_of(m))
    ]
    if not owners:
        return None
    this = _tag_of(container)
    holder = at.path[:-1]
    where = fmt_path((*holder, key))
    message = f"unknown field '{name}' for {key}: {this} — it is a field of " + " and ".join(
        f"{key}: {o}" for o in owners
    )
    if not lookup(data, (*holder, key))[0]:
        message += f" ({where} is not written, so it is {this} here)"
    fix = f"Remove it, or set {where} to {owners[0]} to use it."
    return message, fix


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
        found, raw = lookup(data, where)
        value = show(raw) if found and show_value else None
        return TopologyIssue(file, line_of(lines, where), fmt_path(where), value, message, fix)

    name = at.name or "the file"
    path = fmt_path(at.path) or "the top level"

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
                    _set_fix(holder, fmt_path(holder.path)),
                    holder.path,
                )
            ]
        parent_text = fmt_path(at.path[:-1])
        under = f"under {parent_text}" if parent_text else "at the top level of the file"
        if _is_model(_unwrap(at.annotation)[0]):
            fix = f"Add a {name}: section {under}: {_what(at)}; {DOCS} lists its fields."
        else:
            example = _example(at)
            shown = f"{name}: {yaml_text(example)}" if example is not None else f"{name}:"
            fix = f"Add {name} {under}: {_what(at)}, e.g. {shown}."
        return [issue(f"required field '{name}' is missing", fix, show_value=False)]

    if kind == "extra_forbidden":
        allowed = list(at.container.model_fields) if at.container else []
        sibling = _sibling_field(at, data) if at.container else None
        if sibling is not None:
            return [issue(*sibling, show_value=False)]
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        parent_text = fmt_path(at.path[:-1]) or "the top level"
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
        raw = lookup(data, at.path)[1]
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
        raw = lookup(data, at.path)[1]
        suggestion = _suggest_id(raw, pattern) if "64" in human else None
        return [issue(f"{name} must be {human}", _set_fix(at, path, suggestion))]

    if kind == "literal_error":
        options = [str(a) for a in get_args(_unwrap(at.annotation)[0])]
        raw = lookup(data, at.path)[1]
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
        members = _union_members(_unwrap(at.annotation)[0])
        tags = [t for m in members if (t := _tag_of(m))]
        key = next((k for m in members if (k := _tag_field(m))), "type")
        where = (*at.path, key)
        tag = ctx.get("tag")
        if kind == "union_tag_not_found":
            message = f"{name} has no {key}"
        else:
            message = f"{name} {key} {tag!r} is not one of {', '.join(tags)}"
            close = difflib.get_close_matches(str(tag), tags, n=1, cutoff=0.6)
            if close:
                message += f" — did you mean '{close[0]}'?"
        fix = (
            f"Set {fmt_path(where)} to one of {', '.join(tags)} and give the fields that {key} "
            f"needs ({DOCS}); {_TAG_HINTS.get(key, 'see the examples there')}."
        )
        return [issue(message, fix, where)]

    if kind == "multiple_of":
        step = int(ctx.get("multiple_of", 1))
        raw = lookup(data, at.path)[1]
        nearest = _nearest_multiples(raw, step, at.constraints)
        bounds = _bounds(at.constraints)
        message = f"{name} must be a multiple of {step}" + (f", {bounds}" if bounds else "")
        if not nearest:
            return [issue(message, _set_fix(at, path))]
        return [
            issue(
                message,
                f"Set {path} to {' or '.join(yaml_text(v) for v in nearest)}, the nearest "
                "valid value" + ("s." if len(nearest) > 1 else "."),
            )
        ]

    if kind == "timezone_aware":
        raw = lookup(data, at.path)[1]
        if isinstance(raw, str) and "T" in raw.upper():
            example = f"{raw}Z"
        elif isinstance(raw, str) and raw.strip():
            example = f"{raw.strip()}T00:00:00Z"  # a date alone: midnight UTC is the nearest
        else:
            example = "2026-11-20T08:00:00Z"
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
        raw = lookup(data, at.path)[1]
        if raw is None and any(
            getattr(c, "pattern", None) == HEX_COLOUR_PATTERN for c in at.constraints
        ):
            message += "; an unquoted # starts a YAML comment, so quote the colour"
        if _is_model(_unwrap(at.annotation)[0]) or at.annotation is None:
            return [issue(message, f"Write {path} as indented key: value lines; see {DOCS}.")]
        return [issue(message, _set_fix(at, path))]

    return [issue(str(error.get("msg", kind)), _set_fix(at, path))]


def validate(model: type[M], parsed: Parsed, file: Path) -> M:
    """Validate parsed data as ``model``, or raise :class:`TopologyError` with every problem.

    The list holds the reader's problems (repeated keys, say) and validation's, by line.
    """
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
