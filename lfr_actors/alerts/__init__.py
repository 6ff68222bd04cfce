"""Alerts: fusing sightings into alerts, and writing them out.

:mod:`.fusion` is the pure decision logic. The store lives in :mod:`lfr_actors.store`; the
actor that joins them in :mod:`lfr_actors.actors.alerts`; the JSON Lines sink of persisted
alert events in :mod:`lfr_actors.control.jsonl_sink`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from lfr_actors.alerts.fusion import (
    Alert,
    AlertEvent,
    Fuser,
    FusionConfig,
    SightingRef,
    alert_id,
)

__all__ = [
    "Alert",
    "AlertEvent",
    "Fuser",
    "FusionConfig",
    "SightingRef",
    "alert_id",
    "iso_utc",
]


def iso_utc(timestamp: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.250Z``."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
