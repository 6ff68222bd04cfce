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

Face tracks (``Sighting.track_id``: one person on one camera) make the alert one per person:

- One track never raises two alerts. The fuser remembers which alert each track belongs
  to; a later sighting of the track and its entry joins that alert whenever it comes,
  even past the fusion window (a person in view for longer than the window is one alert,
  its ``last_seen`` extended), until the track has been unseen for ``track_memory_s``.
  A sighting of a track that belongs to ANOTHER entry's alert is dropped and counted
  (``track_conflicts``).
- Sightings of the same entry from other tracks (other cameras, or the person tracked
  afresh) join the entry's alert within the fusion window, as sightings without a track
  do; their tracks join the alert's ``tracks``.
- A track an officer rejected (the ``rejected`` predicate or set) raises and updates
  nothing again; its sightings are dropped and counted (``rejected_tracks``).
- Sightings without a track id fuse exactly as they did before tracks existed.
- :meth:`Fuser.restore` rebuilds the track -> alert map from the stored alerts'
  ``tracks``, so a replay after a restart neither duplicates nor raises a second alert
  for a track.

Times are capture times (``Sighting.captured_at``, Unix seconds), never the wall clock, so
fusion is deterministic for a given sequence of sightings. The records it produces
(:class:`~lfr_actors.alerts.records.Alert`, its events and ids) live in
:mod:`lfr_actors.alerts.records`, below both this module and the store.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
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
    ``min_sightings`` is how many sightings an alert needs before it is raised;
    ``track_memory_s`` is how long after a face track's last sighting the fuser still
    knows which alert the track belongs to (a track seen again later would start afresh;
    the embedder ends a track long before that, after a few missed frames).
    """

    threshold: float
    fusion_window_s: float = 30.0
    min_sightings: int = 1
    entry_thresholds: Mapping[str, float] = field(default_factory=dict)
    track_memory_s: float = 3600.0

    def __post_init__(self) -> None:
        _require_positive("threshold", self.threshold)
        _require_positive("fusion_window_s", self.fusion_window_s)
        _require_positive("track_memory_s", self.track_memory_s)
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


MAX_TRACKS = 100_000
"""The most face tracks a fuser remembers; past it the least recently seen are forgotten."""


@dataclass
class _Tracked:
    alert: Alert
    raised: bool
    sighting_ids: set[str]
    held: list[SightingRef]


@dataclass
class _Link:
    """Which alert a face track belongs to, and when the track was last seen."""

    entry_id: str
    alert_id: str
    last_seen: float


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
    rejected_tracks: int = 0
    """Sightings dropped because an officer rejected their track ("not a match")."""
    track_conflicts: int = 0
    """Sightings dropped because their track already belongs to another entry's alert."""


RejectedTracks = Callable[[str], bool] | Collection[str]
"""Which tracks an officer rejected: a predicate on a track id, or a set of track ids."""


class Fuser:
    """Turns one deployment's sightings into alert events (one tracked alert per entry).

    ``rejected`` says which face tracks an officer has rejected (a predicate on the track
    id, asked once per sighting that has a track, or a collection of track ids); their
    sightings raise and update nothing.
    """

    def __init__(
        self,
        deployment_id: str,
        config: FusionConfig,
        *,
        rejected: RejectedTracks | None = None,
    ) -> None:
        self.deployment_id = deployment_id
        self.config = config
        self.counters = FusionCounters()
        self._rejected = _rejection_test(rejected)
        self._alerts: dict[str, _Tracked] = {}
        """Every alert held, by alert id: the entries' current ones and, past their window,
        raised ones that a remembered track still belongs to."""
        self._current: dict[str, str] = {}
        """Each entry's current alert (the one other tracks fuse into), by entry id."""
        self._links: OrderedDict[str, _Link] = OrderedDict()
        """Track id -> its alert, least recently seen first."""

    def observe(self, sighting: Sighting) -> AlertEvent | None:
        """Apply one sighting; return the event it causes, if any."""
        self.counters.observed += 1
        # Written so that a NaN distance counts as not matching.
        if not sighting.distance <= self.config.threshold_for(sighting.entry_id):
            self.counters.below_threshold += 1
            return None
        track = sighting.track_id
        if track is not None and self._rejected(track):
            self.counters.rejected_tracks += 1
            return None
        link = None if track is None else self._links.get(track)
        if link is not None and link.entry_id != sighting.entry_id:
            self.counters.track_conflicts += 1
            return None
        tracked = None if link is None else self._alerts.get(link.alert_id)
        if tracked is None:
            current = self._current.get(sighting.entry_id)
            tracked = None if current is None else self._alerts[current]
        if tracked is not None and sighting.sighting_id in tracked.sighting_ids:
            self.counters.duplicates += 1
            return None
        ref = SightingRef.of(sighting)
        if tracked is not None and (
            link is not None
            or (
                self._in_window(tracked.alert, sighting.captured_at)
                and not self._all_rejected(tracked.alert)
            )
        ):
            # A track's own alert takes its sightings whenever they come; another track
            # joins the entry's alert within the window, unless an officer found every
            # track of that alert not a match: then the new track is a new alert, shown.
            tracked.alert = _fused(tracked.alert, sighting)
            tracked.sighting_ids.add(sighting.sighting_id)
            self._current.setdefault(sighting.entry_id, tracked.alert.id)
        else:
            self._detach(sighting.entry_id)
            tracked = _Tracked(self._new_alert(sighting), False, {sighting.sighting_id}, [])
            self._alerts[tracked.alert.id] = tracked
            self._current[sighting.entry_id] = tracked.alert.id
        if track is not None:
            self._link(track, tracked.alert, sighting.captured_at)
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

    def _all_rejected(self, alert: Alert) -> bool:
        """Whether the alert has tracks and an officer rejected every one of them."""
        return bool(alert.tracks) and all(self._rejected(t) for t in alert.tracks)

    def expire(self, now_captured_at: float) -> list[Alert]:
        """Stop tracking alerts whose window ended before ``now_captured_at``.

        Returns the raised alerts closed this way. Held sightings of alerts that never
        reached ``min_sightings`` are dropped. A later sighting of the same entry from
        another track (or from none) starts a new alert; one from a track of a raised
        alert still joins that alert until the track has been unseen for
        ``track_memory_s``, when the alert is closed.
        """
        horizon = now_captured_at - self.config.fusion_window_s
        closed: list[Alert] = []
        for entry_id, current in list(self._current.items()):
            if self._alerts[current].alert.last_seen < horizon:
                self._detach(entry_id, closed)
        track_horizon = now_captured_at - self.config.track_memory_s
        while self._links:
            track, link = next(iter(self._links.items()))
            if link.last_seen >= track_horizon and len(self._links) <= MAX_TRACKS:
                break
            del self._links[track]
            self._close_if_unheld(link.alert_id, closed)
        return closed

    def restore(
        self,
        open_alerts: Iterable[Alert],
        known_sighting_ids: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """Seed the tracked alerts from persisted ones (after a restart).

        ``known_sighting_ids`` maps an alert id to the sighting ids already counted in it,
        so that replayed sightings are dropped as duplicates. Where two alerts share an
        entry, the most recently seen one is the entry's current alert. Every track of
        every alert given (its ``tracks``) belongs to that alert again, so a replayed or
        later sighting of a track neither duplicates nor raises a second alert; pass the
        alerts of the last ``track_memory_s`` for that.
        """
        known = known_sighting_ids or {}
        for alert in sorted(open_alerts, key=lambda a: a.last_seen):
            ids = set(known.get(alert.id, ())) | {alert.best_sighting_id}
            self._alerts[alert.id] = _Tracked(alert, True, ids, [])
            previous = self._current.get(alert.entry_id)
            self._current[alert.entry_id] = alert.id
            for track in alert.tracks:
                self._link(track, alert, alert.last_seen)
            if previous is not None and previous != alert.id:
                self._close_if_unheld(previous, count=False)

    @property
    def open_alerts(self) -> list[Alert]:
        """The raised alerts still held: within their window, or of a remembered track."""
        return [t.alert for t in self._alerts.values() if t.raised]

    @property
    def pending(self) -> int:
        """How many alerts are held below ``min_sightings``."""
        return sum(1 for t in self._alerts.values() if not t.raised)

    @property
    def tracks(self) -> int:
        """How many face tracks the fuser remembers (each belongs to one alert)."""
        return len(self._links)

    def _in_window(self, alert: Alert, captured_at: float) -> bool:
        window = self.config.fusion_window_s
        return alert.first_seen - window <= captured_at <= alert.last_seen + window

    def _link(self, track: str, alert: Alert, seen: float) -> None:
        link = self._links.get(track)
        if link is None or link.alert_id != alert.id:
            self._links[track] = _Link(alert.entry_id, alert.id, seen)
        else:
            link.last_seen = max(link.last_seen, seen)
        self._links.move_to_end(track)

    def _detach(self, entry_id: str, closed: list[Alert] | None = None) -> None:
        """The entry's current alert stops being current; closed unless a track holds it."""
        alert_id = self._current.pop(entry_id, None)
        if alert_id is not None:
            self._close_if_unheld(alert_id, closed)

    def _close_if_unheld(
        self, alert_id: str, closed: list[Alert] | None = None, *, count: bool = True
    ) -> None:
        """Forget an alert that is neither current nor (if raised) held by a track.

        A raised alert forgotten is counted as closed and added to ``closed``; a pending
        one is counted as dropped. ``count=False`` forgets without counting (restore).
        """
        tracked = self._alerts.get(alert_id)
        if tracked is None or self._current.get(tracked.alert.entry_id) == alert_id:
            return
        held_by_track = any(
            (link := self._links.get(t)) is not None and link.alert_id == alert_id
            for t in tracked.alert.tracks
        )
        if tracked.raised and held_by_track:
            return
        del self._alerts[alert_id]
        for track in tracked.alert.tracks:
            link = self._links.get(track)
            if link is not None and link.alert_id == alert_id:
                del self._links[track]
        if not count:
            return
        if tracked.raised:
            self.counters.closed += 1
            if closed is not None:
                closed.append(tracked.alert)
        else:
            self.counters.pending_dropped += 1

    def _new_alert(self, sighting: Sighting) -> Alert:
        track = sighting.track_id
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
            track_id=track,
            tracks=[] if track is None else [track],
            track_frames=sighting.track_frames,
            media_index=sighting.media_index,
            media_time_s=sighting.media_time_s,
        )


def _rejection_test(rejected: RejectedTracks | None) -> Callable[[str], bool]:
    if rejected is None:
        return lambda track: False
    if callable(rejected):
        return rejected
    if isinstance(rejected, str) or not isinstance(rejected, Collection):
        raise ValueError(
            f"Got {type(rejected).__name__} for rejected. rejected must be a predicate on "
            "a track id or a collection of track ids."
        )
    ids = frozenset(rejected)
    return ids.__contains__


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
            track_frames=sighting.track_frames,
            media_index=sighting.media_index,
            media_time_s=sighting.media_time_s,
        )
    if sighting.track_id is not None and sighting.track_id not in alert.tracks:
        changes["tracks"] = sorted({*alert.tracks, sighting.track_id})
    return dataclasses.replace(alert, **changes)
