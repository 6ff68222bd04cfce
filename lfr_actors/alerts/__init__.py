"""Alerts: fusing sightings into alerts, and writing them out.

:mod:`.records` holds the alert records shared with the store; :mod:`.fusion` is the pure
decision logic. The store lives in :mod:`lfr_actors.store`; the actor that joins them in
:mod:`lfr_actors.actors.alerts`; the JSON Lines sink of persisted alert events in
:mod:`lfr_actors.control.jsonl_sink`.
"""

from __future__ import annotations

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.alerts.records import Alert, AlertEvent, SightingRef, alert_id

__all__ = [
    "Alert",
    "AlertEvent",
    "Fuser",
    "FusionConfig",
    "SightingRef",
    "alert_id",
]
