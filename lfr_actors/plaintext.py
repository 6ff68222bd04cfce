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

__all__ = ["PLAIN", "plain"]

_NOT_PLAIN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def plain(value: str) -> str:
    """``value`` unchanged, or a validation error naming the first character it refuses."""
    found = _NOT_PLAIN.search(value)
    if found is not None:
        raise PydanticCustomError(
            "plain_text",
            "must be plain text: {code} at position {at} is a control character or half a "
            "surrogate pair",
            {"code": f"U+{ord(found.group()):04X}", "at": found.start()},
        )
    return value


PLAIN = AfterValidator(plain)
"""Pydantic metadata: ``Annotated[str, ..., PLAIN]`` takes only plain text."""
