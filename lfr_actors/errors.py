"""Exceptions shared by every floor of the package.

Each carries a message written for the person who has to act on it: what went
wrong, with which file or value, and what to do about it.
"""

from __future__ import annotations


class LfrError(Exception):
    """Base of every error this package raises on purpose."""


class ModelError(LfrError):
    """A model file is missing, corrupt, or cannot be converted."""


class ModelFormatError(ModelError):
    """A source model file does not have the structure its reader expects."""


class HashMismatchError(ModelError):
    """A downloaded or cached file does not have the SHA-256 it must have."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{what}: SHA-256 mismatch: expected {expected}, got {actual}. "
            "The file was not used; the cache is unchanged."
        )
        self.what = what
        self.expected = expected
        self.actual = actual


class ModelCacheError(ModelError):
    """The model cache cannot be read or written, or a source cannot be fetched."""


class ProviderUnavailableError(ModelError):
    """An execution provider asked for by configuration does not really run."""


class ImageError(LfrError):
    """An image file is unreadable, corrupt or of an unsupported kind."""


class EnrolmentRejectedError(LfrError):
    """An enrolment image does not qualify; ``reason`` is a stable machine code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
