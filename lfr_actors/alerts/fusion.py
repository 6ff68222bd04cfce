"""Threshold and fusion of sightings into alerts: pure logic, no I/O.

A :class:`Fuser` turns the stream of :class:`~lfr_actors.messages.Sighting` messages of one
deployment into alert events. Its promises:

- A sighting farther from its watchlist entry than the threshold (the entry's own, else
  the deployment's) raises nothing; it is counted and forgotten.
- Repeated sightings of one entry, on any camera, whose capture times fall within
  ``fusion_window_s`` of the alert's span, update that one alert instead of raising
  another. The alert keeps the crop, box and quality of its best (nearest) sighting.
- An alert is raised once it has ``min_sightings`` sightings; until then they are held
  in memory as ids and numbers (plus the best crop), and dropped if the window passes.
- Alert ids are derived from the deployment, the entry and the first sighting's id, and a
  sighting id seen before is dropped, so a replay after a restart yields the same ids and
  no double counting.

Times are capture times (``Sighting.captured_at``, Unix seconds), never the wall clock, so
fusion is deterministic for a given sequence of sightings. The records it produces
(:class:`~lfr_actors.alerts.records.Alert`, its events and ids) live in
:mod:`lfr_actors.alerts.records`, below both this module and the store.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lfr_actors.alerts.records import Alert, AlertEvent, SightingRef, alert_id
from lfr_actors.messages import Sighting


@dataclass(frozen=True)
class FusionConfig:
    """How sightings become alerts.

    ``threshold`` and ``entry_thresholds`` are maximum distances (a sighting matches when
    its distance is at most the threshold); ``fusion_window_s`` is how far apart in capture
    time two sightings of one entry may be and still belong to one alert;
    ``min_sightings`` is how many sightings an alert needs before it is raised.
    """

    threshold: float
    fusion_window_s: float = 30.0
    min_sightings: int = 1
    entry_thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_positive("threshold", self.threshold)
        _require_positive("fusion_window_s", self.fusion_window_s)
        if (
            isinstance(self.min_sightings, bool)
            or not isinstance(self.min_sightings, int)
            or self.min_sightings < 1
        ):
            raise ValueError(
                f"Got {self.min_sightings!r} for min_sightings. "
                "min_sightings must be a whole number of at least 1."
            )
        if not isinstance(self.entry_thresholds, Mapping):
            raise ValueError(
                f"Got {type(self.entry_thresholds).__name__} for entry_thresholds. "
                "entry_thresholds must map entry ids to distances."
            )
        for entry, value in self.entry_thresholds.items():
            _require_positive(f"entry_thresholds.{entry}", value)
        # A private copy, so the caller's dict cannot change a running fuser's thresholds.
        object.__setattr__(self, "entry_thresholds", dict(self.entry_thresholds))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FusionConfig:
        """Build from a configuration map; unknown keys are an error, listed by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Got unknown fusion settings {unknown}. Known settings: {sorted(known)}."
            )
        if "threshold" not in data:
            raise ValueError("Fusion settings need a 'threshold' (the maximum distance).")
        return cls(**data)

    def threshold_for(self, entry_id: str) -> float:
        """The entry's own threshold, else the deployment's."""
        return self.entry_thresholds.get(entry_id, self.threshold)


def _require_positive(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Got {value!r} for {name}. {name} must be a finite number above 0.")


@dataclass
class _Tracked:
    alert: Alert
    raised: bool
    sighting_ids: set[str]
    held: list[SightingRef]


@dataclass
class FusionCounters:
    """What a fuser has done since it was made."""

    observed: int = 0
    below_threshold: int = 0
    duplicates: int = 0
    held: int = 0
    raised: int = 0
    updated: int = 0
    closed: int = 0
    pending_dropped: int = 0


class Fuser:
    """Turns one deployment's sightings into alert events (one tracked alert per entry)."""

    def __init__(self, deployment_id: str, config: FusionConfig) -> None:
        self.deployment_id = deployment_id
        self.config = config
        self.counters = FusionCounters()
        self._tracked: dict[str, _Tracked] = {}

    def observe(self, sighting: Sighting) -> AlertEvent | None:
        """Apply one sighting; return the event it causes, if any."""
        self.counters.observed += 1
        # Written so that a NaN distance counts as not matching.
        if not sighting.distance <= self.config.threshold_for(sighting.entry_id):
            self.counters.below_threshold += 1
            return None
        tracked = self._tracked.get(sighting.entry_id)
        if tracked is not None and sighting.sighting_id in tracked.sighting_ids:
            self.counters.duplicates += 1
            return None
        ref = SightingRef.of(sighting)
        if tracked is not None and self._in_window(tracked.alert, sighting.captured_at):
            tracked.alert = _fused(tracked.alert, sighting)
            tracked.sighting_ids.add(sighting.sighting_id)
        else:
            if tracked is not None:
                self._forget(sighting.entry_id)
            tracked = _Tracked(self._new_alert(sighting), False, {sighting.sighting_id}, [])
            self._tracked[sighting.entry_id] = tracked
        if tracked.raised:
            self.counters.updated += 1
            return AlertEvent("updated", tracked.alert, (ref,))
        tracked.held.append(ref)
        if tracked.alert.sightings < self.config.min_sightings:
            self.counters.held += 1
            return None
        tracked.raised = True
        held, tracked.held = tuple(tracked.held), []
        self.counters.raised += 1
        return AlertEvent("raised", tracked.alert, held)

    def expire(self, now_captured_at: float) -> list[Alert]:
        """Stop tracking alerts whose window ended before ``now_captured_at``.

        Returns the raised alerts closed this way. Held sightings of alerts that never
        reached ``min_sightings`` are dropped. A later sighting of the same entry starts a
        new alert.
        """
        horizon = now_captured_at - self.config.fusion_window_s
        closed = []
        for entry_id, tracked in list(self._tracked.items()):
            if tracked.alert.last_seen < horizon:
                if tracked.raised:
                    closed.append(tracked.alert)
                self._forget(entry_id)
        return closed

    def restore(
        self,
        open_alerts: Iterable[Alert],
        known_sighting_ids: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """Seed the tracked alerts from persisted ones (after a restart).

        ``known_sighting_ids`` maps an alert id to the sighting ids already counted in it,
        so that replayed sightings are dropped as duplicates. Where two alerts share an
        entry, the most recently seen one is tracked.
        """
        known = known_sighting_ids or {}
        for alert in open_alerts:
            current = self._tracked.get(alert.entry_id)
            if current is not None and current.alert.last_seen >= alert.last_seen:
                continue
            ids = set(known.get(alert.id, ())) | {alert.best_sighting_id}
            self._tracked[alert.entry_id] = _Tracked(alert, True, ids, [])

    @property
    def open_alerts(self) -> list[Alert]:
        """The raised alerts still within their fusion window."""
        return [t.alert for t in self._tracked.values() if t.raised]

    @property
    def pending(self) -> int:
        """How many alerts are held below ``min_sightings``."""
        return sum(1 for t in self._tracked.values() if not t.raised)

    def _in_window(self, alert: Alert, captured_at: float) -> bool:
        window = self.config.fusion_window_s
        return alert.first_seen - window <= captured_at <= alert.last_seen + window

    def _forget(self, entry_id: str) -> None:
        tracked = self._tracked.pop(entry_id)
        if tracked.raised:
            self.counters.closed += 1
        else:
            self.counters.pending_dropped += 1

    def _new_alert(self, sighting: Sighting) -> Alert:
        return Alert(
            id=alert_id(self.deployment_id, sighting.entry_id, sighting.sighting_id),
            deployment_id=self.deployment_id,
            entry_id=sighting.entry_id,
            first_camera_id=sighting.camera_id,
            cameras=[sighting.camera_id],
            first_seen=sighting.captured_at,
            last_seen=sighting.captured_at,
            sightings=1,
            best_distance=sighting.distance,
            best_sighting_id=sighting.sighting_id,
            best_box=list(sighting.box),
            best_quality=dict(sighting.quality),
            best_crop_jpeg=sighting.crop_jpeg,
        )


def _fused(alert: Alert, sighting: Sighting) -> Alert:
    changes: dict[str, Any] = {
        "cameras": sorted({*alert.cameras, sighting.camera_id}),
        "first_seen": min(alert.first_seen, sighting.captured_at),
        "last_seen": max(alert.last_seen, sighting.captured_at),
        "sightings": alert.sightings + 1,
    }
    if sighting.captured_at < alert.first_seen:
        changes["first_camera_id"] = sighting.camera_id
    if sighting.distance < alert.best_distance:
        changes.update(
            best_distance=sighting.distance,
            best_sighting_id=sighting.sighting_id,
            best_box=list(sighting.box),
            best_quality=dict(sighting.quality),
            best_crop_jpeg=sighting.crop_jpeg,
        )
    return dataclasses.replace(alert, **changes)
