"""Text a person wrote, as every declaration and request body takes it.

A reason in the audit log, a name shown to an officer, a note on a decision: each must be
readable wherever it goes (a terminal, a report page, a JSON Lines file, the console).
A control character (NUL, escape, backspace; tab and line breaks are allowed) or half of
a UTF-16 surrogate pair (which no UTF-8 text can hold) is refused with its position, so
that a reason of one NUL byte is not taken as a reason given.
"""

from __future__ import annotations

import re

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

__all__ = ["PLAIN", "not_plain", "plain"]

_NOT_PLAIN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


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


PLAIN = AfterValidator(plain)
"""Pydantic metadata: ``Annotated[str, ..., PLAIN]`` takes only plain text."""
