"""The alert store: one SQLite file in WAL mode, one writer, any number of readers.

The alert actor is the only writer of alerts; it applies each alert event in one
transaction (the alert row, its new sighting rows, one row in the event log) before it
acknowledges the sightings. Readers (the API, the JSON Lines sink) open their own read-only
connections; WAL lets them read while the writer writes. The API's adjudications set an
alert's ``status`` through their own connection (:mod:`lfr_actors.store.adjudications`).

``synchronous=FULL``: with WAL, NORMAL is safe from corruption but a power cut or OS crash
can roll back the last commits, and an alert acknowledged to its sender must survive that.
Alerts are rare (only possible matches are written), so an fsync per commit costs little.

What is stored is limited by invariant 1: the best face crop of each alert (a possible
match awaiting adjudication) and, for every sighting, ids and numbers only.

Schema changes are numbered migrations in :mod:`lfr_actors.store.migrations` (re-exported
here), applied in order when a writer opens the file; tokens, adjudications and the audit
log share this file and add their tables there.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfr_actors.alerts.records import Alert, AlertEvent
from lfr_actors.store.db import Closing, Database, StoreError
from lfr_actors.store.filters import given
from lfr_actors.store.migrations import MIGRATIONS, Migration

__all__ = ["MIGRATIONS", "AlertPage", "AlertStore", "Migration", "StoreError"]


_ALERT_COLUMNS = (
    "id, deployment_id, entry_id, first_camera_id, cameras, first_seen, last_seen, "
    "sightings, best_distance, best_sighting_id, best_box, best_quality, status, "
    "created_at, updated_at, track_id, tracks, track_frames, media_index, media_time_s, "
    "test_subject"
)
NOT_A_MATCH = "not_a_match"
"""The officer's decision that rejects an alert (``Decision.NOT_A_MATCH`` of
:mod:`lfr_actors.store.adjudications`, which imports this module)."""
_MAX_LIMIT = 10_000
_SQL_VARIABLES = 500


@dataclass(frozen=True)
class AlertPage:
    """One page of alerts, newest raised first; pass ``next_before_event`` for the next."""

    alerts: list[dict[str, Any]]
    next_before_event: int | None
    last_event_id: int = 0
    """The newest event the page reflects: stream from it (``?after=``) to miss nothing."""


class AlertStore(Closing):
    """Alerts, their sightings and the event log in one SQLite file.

    Open it as the writer with ``AlertStore(path)`` (creates the file and applies
    migrations) or as a reader with :meth:`open_readonly`. One instance may be used from
    several threads (calls are serialised); use one alert writer per file.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self._db = Database(path, readonly=readonly)
        self.path = self._db.path
        self.readonly = readonly
        self._lock = self._db.lock
        self._conn = self._db.conn

    @classmethod
    def open_readonly(cls, path: Path, *, create: bool = True) -> AlertStore:
        """A read-only store; with ``create``, first create or migrate the file if needed."""
        if create and not Database.is_current(Path(path)):
            cls(path).close()
        return cls(path, readonly=True)

    # -- life cycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the main file where no reader needs it (a passive checkpoint)."""
        self._db.checkpoint("PASSIVE")

    def schema_version(self) -> int:
        """The highest migration applied to this file (0 for none)."""
        return self._db.schema_version()

    # -- writing --------------------------------------------------------------------

    def apply(self, event: AlertEvent) -> int:
        """Persist one alert event atomically and return its ``event_id``.

        One transaction writes the alert (insert or update; an adjudicated ``status`` is
        kept), a row per sighting in ``event.sightings`` and one row in ``alert_events``
        holding a snapshot of the alert without its crop. The event's kind is recorded as
        ``"raised"`` when the alert is new to the store and ``"updated"`` otherwise, so the
        log has exactly one ``"raised"`` per alert.

        Idempotent: if the event's last sighting (the one that caused it) is already
        stored, nothing changes and the id of the event that stored it is returned.
        """
        if not event.sightings:
            raise ValueError("an alert event must carry the sighting that caused it")
        alert = event.alert
        cause = event.sightings[-1]
        now = time.time()
        with self._lock, self._write() as conn:
            row = conn.execute(
                "SELECT event_id FROM alert_sightings WHERE sighting_id = ?",
                (cause.sighting_id,),
            ).fetchone()
            if row is not None:
                return int(row["event_id"])
            exists = (
                conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert.id,)).fetchone()
                is not None
            )
            values = (
                alert.first_camera_id,
                json.dumps(alert.cameras),
                alert.first_seen,
                alert.last_seen,
                alert.sightings,
                alert.best_distance,
                alert.best_sighting_id,
                json.dumps(alert.best_box),
                json.dumps(alert.best_quality),
                alert.best_crop_jpeg,
                now,
                alert.track_id,
                json.dumps(sorted(alert.tracks)),
                alert.track_frames,
                alert.media_index,
                alert.media_time_s,
            )
            if exists:
                conn.execute(
                    "UPDATE alerts SET first_camera_id = ?, cameras = ?, first_seen = ?, "
                    "last_seen = ?, sightings = ?, best_distance = ?, best_sighting_id = ?, "
                    "best_box = ?, best_quality = ?, best_crop = ?, updated_at = ?, "
                    "track_id = ?, tracks = ?, track_frames = ?, media_index = ?, "
                    "media_time_s = ? WHERE id = ?",
                    (*values, alert.id),
                )
            else:
                conn.execute(
                    "INSERT INTO alerts (first_camera_id, cameras, first_seen, last_seen, "
                    "sightings, best_distance, best_sighting_id, best_box, best_quality, "
                    "best_crop, updated_at, track_id, tracks, track_frames, media_index, "
                    "media_time_s, id, deployment_id, entry_id, status, created_at, "
                    "test_subject) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    # Whether the entry is a test subject, read in the same statement: the
                    # watchlist is in this file, and the flag outlives its destruction.
                    "COALESCE((SELECT test_subject FROM watchlist_entries "
                    "WHERE deployment_id = ? AND id = ?), 0))",
                    (
                        *values,
                        alert.id,
                        alert.deployment_id,
                        alert.entry_id,
                        alert.status,
                        now,
                        alert.deployment_id,
                        alert.entry_id,
                    ),
                )
            snapshot = self._get(alert.id)
            kind = "updated" if exists else "raised"
            event_id = conn.execute(
                "INSERT INTO alert_events (alert_id, kind, at, alert) VALUES (?, ?, ?, ?)",
                (alert.id, kind, now, json.dumps(snapshot)),
            ).lastrowid
            assert event_id is not None  # an INSERT into a rowid table always sets it
            if not exists:
                conn.execute(
                    "UPDATE alerts SET raised_event_id = ? WHERE id = ?", (event_id, alert.id)
                )
            conn.executemany(
                "INSERT OR IGNORE INTO alert_sightings (alert_id, sighting_id, camera_id, "
                "captured_at, distance, event_id, track_id, media_index, media_time_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        alert.id,
                        s.sighting_id,
                        s.camera_id,
                        s.captured_at,
                        s.distance,
                        event_id,
                        s.track_id,
                        s.media_index,
                        s.media_time_s,
                    )
                    for s in event.sightings
                ],
            )
            return int(event_id)

    # -- reading --------------------------------------------------------------------

    def get(self, alert_id: str) -> dict[str, Any] | None:
        """The alert as a JSON-ready map (times as Unix seconds), without its crop."""
        with self._lock:
            return self._get(alert_id)

    def deployment_of(self, alert_id: str) -> str | None:
        """The id of the deployment the alert belongs to, or None if there is no such alert."""
        with self._lock:
            row = self._conn.execute(
                "SELECT deployment_id FROM alerts WHERE id = ?", (alert_id,)
            ).fetchone()
        return None if row is None else str(row["deployment_id"])

    def crop(self, alert_id: str) -> bytes | None:
        """The alert's best face crop (JPEG), or None if there is no such alert."""
        with self._lock:
            row = self._conn.execute(
                "SELECT best_crop FROM alerts WHERE id = ?", (alert_id,)
            ).fetchone()
        return None if row is None else bytes(row["best_crop"])

    def has_sighting(self, sighting_id: str) -> bool:
        """Whether a sighting is already counted in a stored alert."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM alert_sightings WHERE sighting_id = ?", (sighting_id,)
            ).fetchone()
        return row is not None

    def list_alerts(
        self,
        *,
        deployment_id: str | None = None,
        status: str | None = None,
        camera_id: str | None = None,
        entry_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        before_event: int | None = None,
        track_id: str | None = None,
        deployment_ids: Collection[str] | None = None,
        test_subject: bool | None = None,
    ) -> AlertPage:
        """Alerts newest raised first, filtered, one page at a time.

        ``deployment_ids`` keeps only those deployments' alerts (a scoped token's view;
        an empty collection keeps none).

        ``camera_id`` matches any camera an alert was seen on, ``track_id`` any face track
        fused into it (one of its sightings'); ``since``/``until`` (Unix
        seconds) keep alerts whose sighting span overlaps that interval. The cursor is the
        event id that raised an alert, which never changes, so pages are stable while new
        alerts arrive and old ones are updated. ``test_subject`` keeps only the alerts of
        test subjects (True) or only those of suspects (False); None keeps both.
        """
        _check_limit(limit)
        conditions, params = given(
            ("deployment_id = ?", deployment_id),
            ("status = ?", status),
            ("id IN (SELECT alert_id FROM alert_sightings WHERE camera_id = ?)", camera_id),
            ("entry_id = ?", entry_id),
            ("id IN (SELECT alert_id FROM alert_sightings WHERE track_id = ?)", track_id),
            ("last_seen >= ?", since),
            ("first_seen <= ?", until),
            ("raised_event_id < ?", before_event),
            ("test_subject = ?", None if test_subject is None else int(test_subject)),
        )
        where = ["raised_event_id IS NOT NULL", *conditions]
        if deployment_ids is not None:
            scope = sorted(deployment_ids)
            where.append(f"deployment_id IN ({', '.join('?' * len(scope))})")
            params = [*params, *scope]
        sql = (
            f"SELECT {_ALERT_COLUMNS}, raised_event_id FROM alerts "
            f"WHERE {' AND '.join(where)} ORDER BY raised_event_id DESC LIMIT ?"
        )
        with self._db.snapshot() as conn:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            last = conn.execute("SELECT MAX(event_id) FROM alert_events").fetchone()[0]
        more = len(rows) > limit
        rows = rows[:limit]
        return AlertPage(
            alerts=[_alert_dict(row) for row in rows],
            next_before_event=int(rows[-1]["raised_event_id"]) if more else None,
            last_event_id=int(last or 0),
        )

    def events_after(self, event_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Events with an id above ``event_id``, oldest first.

        Each is ``{"event_id", "kind", "at", "alert"}``; ``alert`` is the alert as it was
        right after that event (without crop).
        """
        _check_limit(limit)
        with self._lock:
            rows = self._conn.execute(
                "SELECT event_id, kind, at, alert FROM alert_events WHERE event_id > ? "
                "ORDER BY event_id LIMIT ?",
                (event_id, limit),
            ).fetchall()
        return [
            {
                "event_id": int(r["event_id"]),
                "kind": r["kind"],
                "at": float(r["at"]),
                "alert": _with_track_fields(json.loads(r["alert"])),
            }
            for r in rows
        ]

    def last_event_id(self) -> int:
        """The id of the newest event, 0 when there is none."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(event_id) FROM alert_events").fetchone()
        return int(row[0] or 0)

    def latest_seen(self, deployment_id: str | None = None) -> float | None:
        """The newest ``last_seen`` of any alert (of one deployment), or None."""
        sql = "SELECT MAX(last_seen) FROM alerts"
        params: tuple[Any, ...] = ()
        if deployment_id is not None:
            sql, params = f"{sql} WHERE deployment_id = ?", (deployment_id,)
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return None if row[0] is None else float(row[0])

    def open_alerts(
        self, since_captured_at: float, deployment_id: str | None = None
    ) -> list[Alert]:
        """Alerts last seen at or after ``since_captured_at``, crops included (to restore).

        Adjudicated alerts are included: a person still in view keeps adding to the alert
        the officer already has rather than raising a second one.
        """
        sql = f"SELECT {_ALERT_COLUMNS}, best_crop FROM alerts WHERE last_seen >= ?"
        params: tuple[Any, ...] = (since_captured_at,)
        if deployment_id is not None:
            sql, params = f"{sql} AND deployment_id = ?", (*params, deployment_id)
        with self._lock:
            rows = self._conn.execute(f"{sql} ORDER BY last_seen", params).fetchall()
        alerts = []
        for row in rows:
            data = _alert_dict(row)
            alerts.append(
                Alert(
                    id=data["id"],
                    deployment_id=data["deployment_id"],
                    entry_id=data["entry_id"],
                    first_camera_id=data["first_camera_id"],
                    cameras=data["cameras"],
                    first_seen=data["first_seen"],
                    last_seen=data["last_seen"],
                    sightings=data["sightings"],
                    best_distance=data["best_distance"],
                    best_sighting_id=data["best_sighting_id"],
                    best_box=data["best_box"],
                    best_quality=data["best_quality"],
                    best_crop_jpeg=bytes(row["best_crop"]),
                    status=data["status"],
                    track_id=data["track_id"],
                    tracks=data["tracks"],
                    track_frames=data["track_frames"],
                    media_index=data["media_index"],
                    media_time_s=data["media_time_s"],
                )
            )
        return alerts

    def sighting_ids(self, alert_ids: Iterable[str]) -> dict[str, set[str]]:
        """The sighting ids counted in each of the given alerts."""
        ids = list(alert_ids)
        out: dict[str, set[str]] = {alert_id: set() for alert_id in ids}
        with self._lock:
            for start in range(0, len(ids), _SQL_VARIABLES):
                chunk = ids[start : start + _SQL_VARIABLES]
                marks = ", ".join("?" * len(chunk))
                for alert_id, sighting_id in self._conn.execute(
                    f"SELECT alert_id, sighting_id FROM alert_sightings "
                    f"WHERE alert_id IN ({marks})",
                    chunk,
                ):
                    out[alert_id].add(sighting_id)
        return out

    def track_rejected(self, track_id: str) -> bool:
        """Whether an officer rejected a face track ("not a match" on an alert of it).

        True when the decision in force on one of the track's alerts is ``not_a_match``.
        An alert is the track's when one of its sightings is (every track in an alert's
        ``tracks`` came with a stored sighting). The decision in force is an alert's latest
        adjudication, so a correction to another decision un-rejects the track. Asked per
        sighting with a track (sightings are only possible matches, few); nothing cached.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM adjudications AS a "
                "WHERE a.alert_id IN (SELECT alert_id FROM alert_sightings WHERE track_id = ?) "
                "AND a.id = (SELECT MAX(id) FROM adjudications WHERE alert_id = a.alert_id) "
                "AND a.decision = ? LIMIT 1",
                (track_id, NOT_A_MATCH),
            ).fetchone()
        return row is not None

    def counts(self) -> dict[str, Any]:
        """Row counts: alerts (total and by status), sightings, events, last event id."""
        with self._lock:
            by_status = dict(
                self._conn.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status")
            )
            sightings = self._conn.execute("SELECT COUNT(*) FROM alert_sightings").fetchone()
            events = self._conn.execute(
                "SELECT COUNT(*) AS events, COALESCE(MAX(event_id), 0) AS last_event_id "
                "FROM alert_events"
            ).fetchone()
        return {
            "alerts": sum(by_status.values()),
            "alerts_by_status": by_status,
            "sightings": int(sightings[0]),
            "events": int(events["events"]),
            "last_event_id": int(events["last_event_id"]),
        }

    # -- internals ------------------------------------------------------------------

    def _get(self, alert_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?",
            (alert_id,),
        ).fetchone()
        return None if row is None else _alert_dict(row)

    def _require_writer(self) -> None:
        self._db.require_writer("only the alert actor writes alerts")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.transaction()


def record_event(conn: sqlite3.Connection, alert_id: str, kind: str, at: float) -> int:
    """Append an event about an alert (its snapshot as it is now) in the caller's transaction.

    Other writers than the alert actor use it (an adjudication is ``"adjudicated"``), so
    live clients see every change of an alert through the one event log.
    """
    row = conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        raise StoreError(f"no alert with id {alert_id[:80]!r}")
    event_id = conn.execute(
        "INSERT INTO alert_events (alert_id, kind, at, alert) VALUES (?, ?, ?, ?)",
        (alert_id, kind, at, json.dumps(_alert_dict(row))),
    ).lastrowid
    assert event_id is not None  # an INSERT into a rowid table always sets it
    return int(event_id)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise ValueError(f"Got {limit!r} for limit. limit must be a whole number 1..{_MAX_LIMIT}.")


def _with_track_fields(snapshot: dict[str, Any]) -> dict[str, Any]:
    """An event's alert snapshot with every track field.

    Snapshots written before alerts had tracks (migration 9) read as no track, one frame
    and no media position; those written before test subjects (migration 12) as a
    suspect's.
    """
    missing: dict[str, Any] = {
        "track_id": None,
        "tracks": [],
        "track_frames": 1,
        "media_index": None,
        "media_time_s": None,
        "test_subject": False,
    }
    return snapshot | {k: v for k, v in missing.items() if k not in snapshot}


def _alert_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "deployment_id": row["deployment_id"],
        "entry_id": row["entry_id"],
        "first_camera_id": row["first_camera_id"],
        "cameras": json.loads(row["cameras"]),
        "first_seen": float(row["first_seen"]),
        "last_seen": float(row["last_seen"]),
        "sightings": int(row["sightings"]),
        "best_distance": float(row["best_distance"]),
        "best_sighting_id": row["best_sighting_id"],
        "best_box": json.loads(row["best_box"]),
        "best_quality": json.loads(row["best_quality"]),
        "status": row["status"],
        "created_at": float(row["created_at"]),
        "updated_at": float(row["updated_at"]),
        "track_id": row["track_id"],
        "tracks": json.loads(row["tracks"]),
        "track_frames": int(row["track_frames"]),
        "media_index": None if row["media_index"] is None else int(row["media_index"]),
        "media_time_s": None if row["media_time_s"] is None else float(row["media_time_s"]),
        "test_subject": bool(row["test_subject"]),
    }
