"""The alert actor: threshold, fusion and persistence of possible matches.

Promises, in plain words:

- **Persisted before acknowledged.** ``submit`` returns only after every alert event its
  sightings caused is committed to the store. If the store cannot be written (a full
  disk, say), ``submit`` raises :class:`StoreUnavailableError` ("alert store unavailable:
  disk full"), so the sender knows the batch was not acknowledged and sends it again
  later; ``stats()`` and ``health()`` show the cause as ``store_error`` until a write
  succeeds, and the log gets one error line per outage (repeated at most every
  minute), never a traceback per batch.
- **Restarts neither duplicate nor forget.** On start the actor reloads the alerts of the
  last fusion window and the sighting ids already counted in them. A sighting whose id is
  already stored is dropped as a duplicate; later sightings of the same person update the
  alert they belong to. Alert ids are derived from their first sighting, so a replay
  yields the same ids.
- **Non-matches leave nothing behind.** A sighting above the threshold is counted and
  dropped at once; logs carry ids and counters only, never crops, boxes or distances.
- **An officer's "not a match" stops the track.** A sighting of a face track whose alert
  an officer rejected (the decision in force is ``not_a_match``) raises and updates
  nothing; the store is asked for each sighting with a track (only possible matches get
  here, few), so a decision or its correction counts from the next sighting on. Such
  sightings are counted as ``rejected_track_sightings``; a sighting of a track that
  already belongs to another entry's alert is dropped and counted as ``track_conflicts``.
- **Bad input is counted, never fatal.** A message that does not decode, or a sighting
  with a malformed field, is counted and logged as ``message_dropped`` (without payload).

The actor is a plain class; the kernel wraps it with ``ray.remote(cls).options(...)``.
Its methods are ``async`` so that Ray runs it as an async actor, but each one runs to
completion without awaiting, so calls never interleave and the single SQLite writer
needs no lock.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from lfr_actors import logs
from lfr_actors.actors.settings import AlertSettings
from lfr_actors.alerts.fusion import Fuser, FusionCounters
from lfr_actors.messages import MessageDecodeError, SightingBatch
from lfr_actors.store.alerts import AlertStore, StoreError
from lfr_actors.store.db import store_cause

_REASON_CHARS = 200
_STORE_ERROR_LOG_INTERVAL_S = 60.0


class _StoreCallFailed(Exception):
    """A store read made inside the fuser failed; ``cause`` is the original exception."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class StoreUnavailableError(StoreError):
    """The alert store cannot be written now; the batch was not acknowledged.

    Its message is ``"alert store unavailable: <cause>"``, the cause being short and
    free of face data (``"disk full"``, or SQLite's own message).
    """


class AlertActor:
    """Turns the sightings of one deployment into persisted alerts.

    ``settings`` name the actor's topology id, its deployment, the store file and the
    :class:`~lfr_actors.alerts.fusion.FusionConfig` rules it starts with.
    """

    def __init__(self, settings: AlertSettings) -> None:
        logs.configure()
        self.actor_id = settings.actor_id
        self.deployment_id = deployment_id = settings.deployment_id
        self._log = logs.get_logger(__name__).bind(actor=self.actor_id)
        self._fusion = settings.fusion
        self._store = AlertStore(Path(settings.db_path))
        self._closed = False
        self._received = 0
        self._decode_errors = 0
        self._store_duplicates = 0
        self._events = 0
        self._high_water: float | None = None
        self._store_error: str | None = None
        self._store_failures = 0
        self._store_failed_since: float | None = None
        self._store_error_logged_at: float | None = None
        self._store_failures_unlogged = 0
        restored = self._restore(FusionCounters())
        self._log.info(
            "alert_actor_started",
            deployment=deployment_id,
            restored_alerts=restored,
            last_event_id=self._store.last_event_id(),
        )

    async def set_threshold(
        self, threshold: float, entry_thresholds: dict[str, float] | None = None
    ) -> float:
        """Apply a new deployment threshold (and entries' own) to the sightings that come next.

        ``entry_thresholds``, when given, replaces every entry's own threshold.
        """
        changes: dict[str, Any] = {"threshold": float(threshold)}
        if entry_thresholds is not None:
            changes["entry_thresholds"] = dict(entry_thresholds)
        self._fusion = dataclasses.replace(self._fusion, **changes)
        self._fuser.config = self._fusion
        self._log.info(
            "threshold_changed",
            threshold=self._fusion.threshold,
            entry_thresholds=len(self._fusion.entry_thresholds),
        )
        return self._fusion.threshold

    async def submit(self, data: bytes) -> dict[str, int]:
        """Process one encoded :class:`~lfr_actors.messages.SightingBatch`.

        Returns how many sightings were ``accepted`` (decoded and processed) and
        ``dropped`` (undecodable; a message that does not decode at all counts as one), and
        of the accepted ones how many were ``below_threshold``, ``duplicates``, held
        below ``min_sightings`` (``held``), or ``raised`` / ``updated`` an alert, and how
        many were dropped as sightings of a rejected track (``rejected_track_sightings``)
        or of a track of another entry's alert (``track_conflicts``). Returning is the
        acknowledgement: every event is in the store by then.
        """
        self._require_open()
        result = dict.fromkeys(
            (
                "accepted",
                "dropped",
                "below_threshold",
                "duplicates",
                "held",
                "raised",
                "updated",
                "rejected_track_sightings",
                "track_conflicts",
            ),
            0,
        )
        try:
            sightings = SightingBatch.decode(data).checked()
        except MessageDecodeError as exc:
            self._drop(str(exc), data)
            result["dropped"] = 1
            return result
        before = dataclasses.replace(self._fuser.counters)
        for sighting in sightings:
            if isinstance(sighting, MessageDecodeError):
                self._drop(str(sighting), data)
                result["dropped"] += 1
                continue
            result["accepted"] += 1
            self._received += 1
            try:
                if self._store.has_sighting(sighting.sighting_id):
                    self._store_duplicates += 1
                    result["duplicates"] += 1
                    continue
            except Exception as exc:
                raise self._store_failed(exc) from None
            try:
                event = self._fuser.observe(sighting)
            except _StoreCallFailed as failed:
                raise self._store_failed(failed.cause) from None
            self._high_water = max(self._high_water or sighting.captured_at, sighting.captured_at)
            if event is None:
                continue
            try:
                event_id = self._store.apply(event)
            except Exception as exc:
                # The fuser already counted this sighting; rebuild it from what is stored so
                # that a resent batch is processed again instead of dropped as duplicates.
                error = self._store_failed(exc)
                try:
                    self._restore(self._fuser.counters)
                except Exception as again:
                    self._log.warning("fusion_restore_failed", reason=store_cause(again))
                raise error from None
            self._store_ok()
            self._events += 1
            # DEBUG: lfr up prints each alert on stdout already, and this is once a sighting.
            self._log.debug(
                "alert_raised" if event.kind == "raised" else "alert_updated",
                alert_id=event.alert.id,
                entry_id=event.alert.entry_id,
                camera_id=event.sightings[-1].camera_id,
                sightings=event.alert.sightings,
                event_id=event_id,
            )
        after = self._fuser.counters
        result["below_threshold"] = after.below_threshold - before.below_threshold
        result["duplicates"] += after.duplicates - before.duplicates
        result["held"] = after.held - before.held
        result["raised"] = after.raised - before.raised
        result["updated"] = after.updated - before.updated
        result["rejected_track_sightings"] = after.rejected_tracks - before.rejected_tracks
        result["track_conflicts"] = after.track_conflicts - before.track_conflicts
        if self._high_water is not None:
            self._expire(self._high_water)
        return result

    async def health(self) -> dict[str, Any]:
        """Liveness and the store's reachability: ``status`` is ``ok`` or ``error``."""
        if self._closed:
            return {"status": "error", "actor": self.actor_id, "reason": "closed"}
        try:
            last_event_id = self._store.last_event_id()
        except Exception as exc:
            return {
                "status": "error",
                "actor": self.actor_id,
                "reason": type(exc).__name__,
                "store_error": self._store_error or store_cause(exc),
            }
        unavailable = self._store_error is not None
        return {
            "status": "error" if unavailable else "ok",
            **({"reason": f"alert store unavailable: {self._store_error}"} if unavailable else {}),
            "store_error": self._store_error,
            "actor": self.actor_id,
            "deployment": self.deployment_id,
            "open_alerts": len(self._fuser.open_alerts),
            "pending": self._fuser.pending,
            "last_event_id": last_event_id,
        }

    async def stats(self) -> dict[str, Any]:
        """Counters since this actor started (counters only, never face data).

        ``store_error`` is None while the last write succeeded, else its short cause
        (``"disk full"``); ``store_failures`` counts the batches refused for it.
        """
        counters = self._fuser.counters
        return {
            "threshold": self._fusion.threshold,
            "entries_with_own_threshold": len(self._fusion.entry_thresholds),
            "sightings_received": self._received,
            "below_threshold": counters.below_threshold,
            "duplicates": counters.duplicates + self._store_duplicates,
            "held": counters.held,
            "alerts_raised": counters.raised,
            "alerts_updated": counters.updated,
            "alerts_closed": counters.closed,
            "pending_dropped": counters.pending_dropped,
            "rejected_track_sightings": counters.rejected_tracks,
            "track_conflicts": counters.track_conflicts,
            "tracks_remembered": self._fuser.tracks,
            "decode_errors": self._decode_errors,
            "events_persisted": self._events,
            "open_alerts": len(self._fuser.open_alerts),
            "pending": self._fuser.pending,
            "store_error": self._store_error,
            "store_failures": self._store_failures,
        }

    async def flush(self) -> None:
        """Close ended fusion windows and checkpoint the WAL.

        Everything acknowledged is already durable; this only tidies up (before a drain).
        """
        self._require_open()
        if self._high_water is not None:
            self._expire(self._high_water)
        self._store.checkpoint()

    async def close(self) -> None:
        """Close the store; the actor accepts nothing afterwards. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._store.close()
        self._log.info("alert_actor_stopped", **(await self.stats()))

    def _restore(self, counters: FusionCounters) -> int:
        """Rebuild the fuser from the store's last fusion window; returns alerts restored."""
        self._fuser = Fuser(self.deployment_id, self._fusion, rejected=self._track_rejected)
        self._fuser.counters = counters
        latest = self._store.latest_seen(self.deployment_id)
        if latest is None:
            return 0
        # The alerts a track may still join: those of the window and of remembered tracks.
        memory = max(self._fusion.fusion_window_s, self._fusion.track_memory_s)
        alerts = self._store.open_alerts(latest - memory, self.deployment_id)
        self._fuser.restore(alerts, self._store.sighting_ids(a.id for a in alerts))
        self._high_water = max(self._high_water or latest, latest)
        return len(alerts)

    def _track_rejected(self, track_id: str) -> bool:
        """Whether an officer rejected the track (asked of the store each time, not cached)."""
        try:
            return self._store.track_rejected(track_id)
        except Exception as exc:
            raise _StoreCallFailed(exc) from exc

    def _store_failed(self, exc: BaseException) -> StoreUnavailableError:
        """Note a failed store call; log it at most once a minute; the error to raise."""
        cause = store_cause(exc)
        now = time.monotonic()
        self._store_failures += 1
        if self._store_error is None:
            self._store_failed_since = now
        self._store_error = cause
        if (
            self._store_error_logged_at is None
            or now - self._store_error_logged_at >= _STORE_ERROR_LOG_INTERVAL_S
        ):
            self._log.error(
                "alert_store_unavailable",
                reason=cause,
                error=type(exc).__name__,
                failures_since_last_line=self._store_failures_unlogged,
            )
            self._store_error_logged_at = now
            self._store_failures_unlogged = 0
        else:
            self._store_failures_unlogged += 1
        return StoreUnavailableError(f"alert store unavailable: {cause}")

    def _store_ok(self) -> None:
        """A write succeeded: an outage, if there was one, is over (one line says so)."""
        if self._store_error is None:
            return
        since = self._store_failed_since
        self._log.warning(
            "alert_store_available",
            was=self._store_error,
            outage_s=None if since is None else round(time.monotonic() - since, 1),
            failures=self._store_failures,
        )
        self._store_error = None
        self._store_failed_since = None
        self._store_error_logged_at = None
        self._store_failures_unlogged = 0

    def _expire(self, now_captured_at: float) -> None:
        for alert in self._fuser.expire(now_captured_at):
            self._log.debug("alert_window_closed", alert_id=alert.id, sightings=alert.sightings)

    def _drop(self, reason: str, data: object) -> None:
        self._decode_errors += 1
        size = len(data) if isinstance(data, bytes | bytearray | memoryview) else None
        self._log.warning("message_dropped", reason=reason[:_REASON_CHARS], bytes=size)

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError(f"alert actor {self.actor_id} is closed")
