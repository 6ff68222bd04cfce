"""The alert records shared by fusion, the store and the actors: pure data, no logic.

An :class:`Alert` is one possible match fused from sightings of one watchlist entry; an
:class:`AlertEvent` is a change to it to persist and publish; a :class:`SightingRef` is all an
alert keeps of a sighting (ids and numbers, never face data). :func:`alert_id` derives an
alert's stable id. The store (:mod:`lfr_actors.store.alerts`) reads and writes these and the
fuser (:mod:`lfr_actors.alerts.fusion`) makes them; this module imports nothing of the
project but :mod:`lfr_actors.messages`, so neither of them has to import the other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from lfr_actors.messages import Sighting

NAMESPACE = uuid.UUID("1f4bd176-145a-5eeb-aede-65c18b936b69")
"""Namespace of alert ids (``uuid5(NAMESPACE_URL, "urn:lfr-actors:alert")``); never change it."""

ALERT_OPEN = "open"

EventKind = Literal["raised", "updated"]


def alert_id(deployment_id: str, entry_id: str, first_sighting_id: str) -> str:
    """The stable id of the alert whose first sighting is ``first_sighting_id``."""
    return str(uuid.uuid5(NAMESPACE, f"{deployment_id}:{entry_id}:{first_sighting_id}"))


@dataclass(frozen=True)
class SightingRef:
    """What an alert keeps of each of its sightings: ids and numbers, never face data."""

    sighting_id: str
    camera_id: str
    captured_at: float
    distance: float
    track_id: str | None = None
    """The face track the sighting decided on (None for a sighting without one)."""
    media_index: int | None = None
    """Frame number in the recording of the track's best face (None for live sources)."""
    media_time_s: float | None = None
    """Media time in the recording of the track's best face, seconds (None for live)."""

    @staticmethod
    def of(sighting: Sighting) -> SightingRef:
        """The reference of a sighting."""
        return SightingRef(
            sighting.sighting_id,
            sighting.camera_id,
            sighting.captured_at,
            sighting.distance,
            sighting.track_id,
            sighting.media_index,
            sighting.media_time_s,
        )


@dataclass(frozen=True)
class Alert:
    """One possible match, fused from one or more sightings of one watchlist entry.

    ``cameras`` is sorted. ``best_*`` describe the sighting with the lowest distance;
    ``best_crop_jpeg`` is its face crop, the only face image an alert holds. ``status``
    is the adjudication state: ``"open"`` until an officer decides.

    An alert belongs to face tracks: ``track_id`` is the track of its first sighting (the
    one that raised it; None when that sighting had no track) and ``tracks`` every track
    fused into it, sorted. ``track_frames`` and the media position (``media_index``,
    ``media_time_s``: where in a recording, None for live sources) are those of its best
    sighting. Their defaults let records written before tracks existed load unchanged.
    """

    id: str
    deployment_id: str
    entry_id: str
    first_camera_id: str
    cameras: list[str]
    first_seen: float
    last_seen: float
    sightings: int
    best_distance: float
    best_sighting_id: str
    best_box: list[float]
    best_quality: dict[str, float]
    best_crop_jpeg: bytes = field(repr=False)
    status: str = ALERT_OPEN
    track_id: str | None = None
    tracks: list[str] = field(default_factory=list)
    track_frames: int = 1
    media_index: int | None = None
    media_time_s: float | None = None


@dataclass(frozen=True)
class AlertEvent:
    """A change to persist and publish.

    ``sightings`` are the references this event adds to the alert: the raising sighting and
    those held before it for ``"raised"``, the one new sighting for ``"updated"``. The last
    one is the sighting that caused the event.
    """

    kind: EventKind
    alert: Alert
    sightings: tuple[SightingRef, ...]
