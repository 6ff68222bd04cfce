"""Plugins by name: a registry maps a name to a class and refuses duplicates.

A lookup of an unknown name lists the names it knows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from lfr_actors.errors import LfrError

T = TypeVar("T")


class RegistryError(LfrError):
    """A duplicate registration, or a lookup of a name nobody registered."""


class Registry(Generic[T]):
    """Name -> class, for one kind of plugin (actor roles, camera sources, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a second registration of the name is an error."""
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry registered under ``name``."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
