"""Times as people and files read them: ISO 8601 in UTC with a ``Z``, and back.

One module, on the ground floor, so every message, record and command writes a time the
same way. Its promises:

- :func:`iso_utc` writes Unix seconds as ISO 8601 UTC ending in ``Z``, to the precision
  asked (``timespec`` as :meth:`datetime.datetime.isoformat` takes it; excess digits are
  cut, never rounded). The default, milliseconds, is what the API and the alert files
  carry, e.g. ``2025-01-31T12:00:00.250Z``.
- :func:`iso_z` writes an aware :class:`~datetime.datetime` the same way, keeping its own
  offset unless that offset is UTC (then ``Z``).
- :func:`parse_time` reads what an operator types for a moment: Unix seconds, or ISO 8601
  (UTC when it has no offset).

It imports nothing from the project.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_utc", "iso_z", "parse_time"]


def iso_z(moment: datetime, timespec: str = "auto") -> str:
    """``moment`` as ISO 8601, with ``Z`` in place of a ``+00:00`` offset."""
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_utc(timestamp: float, timespec: str = "milliseconds") -> str:
    """Unix seconds as ISO 8601 UTC, e.g. ``2025-01-31T12:00:00.250Z`` (milliseconds).

    ``timespec`` picks the precision: ``"minutes"``, ``"seconds"``, ``"milliseconds"``,
    ``"microseconds"`` or ``"auto"`` (microseconds only when there are any).
    """
    return iso_z(datetime.fromtimestamp(timestamp, tz=UTC), timespec)


def parse_time(value: str) -> float:
    """Unix seconds from an ISO 8601 time (UTC when it has no offset) or from Unix seconds.

    Raises :class:`ValueError` naming the value and both accepted forms.
    """
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an ISO 8601 time (e.g. 2025-01-31T12:00:00Z) or Unix seconds"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
