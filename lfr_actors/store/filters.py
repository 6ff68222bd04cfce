"""Optional filters of a query: the SQL conditions a caller asked for, with their values."""

from __future__ import annotations

from typing import Any


def given(*filters: tuple[str, Any]) -> tuple[list[str], list[Any]]:
    """The conditions of ``filters`` whose value is not None, and those values, in order.

    Each filter is a ``(condition with one ?, value)`` pair; a filter left as None is no
    condition at all.
    """
    kept = [(condition, value) for condition, value in filters if value is not None]
    return [condition for condition, _ in kept], [value for _, value in kept]
