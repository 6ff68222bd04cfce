"""Text a person wrote, as every declaration and request body takes it.

A reason in the audit log, a name shown to an officer, a note on a decision: each must be
readable wherever it goes (a terminal, a report page, a JSON Lines file, the console).
A control character (NUL, escape, backspace; tab and line breaks are allowed) or half of
a UTF-16 surrogate pair (which no UTF-8 text can hold) is refused with its position, so
that a reason of one NUL byte is not taken as a reason given.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["PLAIN", "not_plain", "plain"]

_NOT_PLAIN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
PLAIN_PATTERN = f"^[^{_CONTROL}]*$"
"""What the OpenAPI document says of a plain text field (a JSON string has no lone
surrogates to exclude)."""
PLAIN_NOT_BLANK_PATTERN = f"^[^{_CONTROL}]*[^\\s{_CONTROL}][^{_CONTROL}]*$"
"""The same, for a field that must also hold something other than spaces."""


def not_plain(value: str) -> str | None:
    """Why ``value`` is not plain text (naming the first such character), or None."""
    found = _NOT_PLAIN.search(value)
    if found is None:
        return None
    return (
        f"must be plain text: U+{ord(found.group()):04X} at position {found.start()} is a "
        "control character or half a surrogate pair"
    )


def plain(value: str) -> str:
    """``value`` unchanged, or a validation error naming the first character it refuses."""
    why = not_plain(value)
    if why is not None:
        raise PydanticCustomError("plain_text", why)
    return value


class _Plain:
    """Pydantic metadata: validate with :func:`plain`, and say so in the JSON Schema.

    The schema's ``pattern`` becomes :data:`PLAIN_PATTERN` (or
    :data:`PLAIN_NOT_BLANK_PATTERN` where it asked for a non-space), so a client generating
    requests from the OpenAPI document (a fuzzer, a form) sends text the API takes. The
    check itself is :func:`plain`, for its message naming the character.
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(plain, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        pattern = json_schema.get("pattern")
        if pattern is None:
            json_schema["pattern"] = PLAIN_PATTERN
        elif pattern == r"\S":
            json_schema["pattern"] = PLAIN_NOT_BLANK_PATTERN
        return json_schema


PLAIN = _Plain()
"""Pydantic metadata: ``Annotated[str, ..., PLAIN]`` takes only plain text."""
