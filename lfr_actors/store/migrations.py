"""The store file's schema: its numbered migrations and the watchlist templates' checksum.

Schema changes are numbered migrations, applied in order and in one transaction when a
writer opens the file (:class:`lfr_actors.store.db.Database` runs them), and recorded in
``schema_migrations``; a feature adds its tables by appending to :data:`MIGRATIONS`. A
migration may end with a Python step (``backfill``) for what SQL alone cannot compute, such
as a checksum of existing rows.

Each watchlist entry's templates are stored with a SHA-256 (:func:`template_checksum`);
:func:`template_problem` says why templates read back cannot be used.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Migration:
    """One numbered schema change: statements run in one transaction.

    ``backfill``, when given, runs last in the same transaction, for values of existing
    rows that SQL cannot compute (a checksum).
    """

    version: int
    description: str
    statements: tuple[str, ...]
    backfill: Callable[[sqlite3.Connection], None] | None = None


def template_checksum(dimension: int, blob: bytes) -> str:
    """The SHA-256 stored with a watchlist entry's templates: its dimension, then its bytes.

    A template changed on disk (or a row whose dimension was changed) no longer matches.
    """
    digest = hashlib.sha256(f"lfr-templates:{int(dimension)}:".encode())
    digest.update(blob)
    return digest.hexdigest()


def template_problem(blob: bytes | None, dimension: int | None, checksum: str | None) -> str | None:
    """Why a stored entry's templates cannot be used (None when they can).

    The reason names the fault (checksum, shape, non-finite values), never the values.
    """
    if blob is None or dimension is None:
        return "no templates stored"
    if checksum is None:
        return "no checksum stored with its templates"
    if template_checksum(dimension, blob) != checksum:
        return "its templates do not match their stored checksum (changed on disk)"
    if dimension < 1 or len(blob) == 0 or len(blob) % (4 * dimension):
        return f"its templates are {len(blob)} bytes, not whole vectors of {dimension}"
    if not np.isfinite(np.frombuffer(blob, dtype=np.float32)).all():
        return "its templates hold values that are not finite (NaN or infinity)"
    return None


def _checksum_existing_templates(conn: sqlite3.Connection) -> None:
    rows = conn.execute(
        "SELECT rowid, embeddings, dimension FROM watchlist_entries "
        "WHERE embeddings IS NOT NULL AND dimension IS NOT NULL"
    ).fetchall()
    for rowid, blob, dimension in rows:
        conn.execute(
            "UPDATE watchlist_entries SET embeddings_sha256 = ? WHERE rowid = ?",
            (template_checksum(int(dimension), bytes(blob)), rowid),
        )


def _append_only(table: str) -> tuple[str, ...]:
    return tuple(
        f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows are never changed or "
        f"removed'); END"
        for verb in ("UPDATE", "DELETE")
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "alerts, their sightings (ids and numbers only) and the alert event log",
        (
            """CREATE TABLE alerts (
                id TEXT PRIMARY KEY,
                deployment_id TEXT NOT NULL,
                entry_id TEXT NOT NULL,
                first_camera_id TEXT NOT NULL,
                cameras TEXT NOT NULL,
                first_seen REAL NOT NULL,
                last_seen REAL NOT NULL,
                sightings INTEGER NOT NULL,
                best_distance REAL NOT NULL,
                best_sighting_id TEXT NOT NULL,
                best_box TEXT NOT NULL,
                best_quality TEXT NOT NULL,
                best_crop BLOB NOT NULL,
                status TEXT NOT NULL DEFAULT 'open',
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                raised_event_id INTEGER UNIQUE
            )""",
            "CREATE INDEX alerts_entry ON alerts (entry_id, raised_event_id)",
            "CREATE INDEX alerts_last_seen ON alerts (deployment_id, last_seen)",
            """CREATE TABLE alert_sightings (
                alert_id TEXT NOT NULL REFERENCES alerts (id),
                sighting_id TEXT NOT NULL UNIQUE,
                camera_id TEXT NOT NULL,
                captured_at REAL NOT NULL,
                distance REAL NOT NULL,
                event_id INTEGER NOT NULL
            )""",
            "CREATE INDEX alert_sightings_alert ON alert_sightings (alert_id)",
            "CREATE INDEX alert_sightings_camera ON alert_sightings (camera_id, alert_id)",
            """CREATE TABLE alert_events (
                event_id INTEGER PRIMARY KEY AUTOINCREMENT,
                alert_id TEXT NOT NULL REFERENCES alerts (id),
                kind TEXT NOT NULL,
                at REAL NOT NULL,
                alert TEXT NOT NULL
            )""",
            "CREATE INDEX alert_events_alert ON alert_events (alert_id, event_id)",
        ),
    ),
    Migration(
        2,
        "API bearer tokens, stored as SHA-256 digests only",
        (
            # No CHECK on role: SQLite cannot alter a CHECK, and roles will be added.
            """CREATE TABLE api_tokens (
                id TEXT PRIMARY KEY,
                secret_sha256 TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                internal INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                created_by TEXT NOT NULL,
                revoked_at REAL,
                revoked_by TEXT
            )""",
        ),
    ),
    Migration(
        3,
        "the append-only, hash-chained audit log",
        (
            # AUTOINCREMENT keeps the highest seq ever used in sqlite_sequence, so removing
            # the newest entries leaves a trace that verification reports.
            """CREATE TABLE audit_log (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                at REAL NOT NULL,
                actor TEXT NOT NULL,
                actor_token TEXT,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                details TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            "CREATE INDEX audit_log_subject ON audit_log (subject, seq)",
            "CREATE INDEX audit_log_action ON audit_log (action, seq)",
            *_append_only("audit_log"),
        ),
    ),
    Migration(
        4,
        "adjudications of alerts: decisions, outcomes and corrections",
        (
            """CREATE TABLE adjudications (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                alert_id TEXT NOT NULL REFERENCES alerts (id),
                decision TEXT NOT NULL,
                outcome TEXT,
                note TEXT,
                officer TEXT NOT NULL,
                officer_token TEXT,
                decided_at REAL NOT NULL,
                correction INTEGER NOT NULL,
                correction_reason TEXT,
                supersedes INTEGER REFERENCES adjudications (id)
            )""",
            "CREATE INDEX adjudications_alert ON adjudications (alert_id, id)",
        ),
    ),
    Migration(
        5,
        "retention of alert crops: purge times and evidential holds",
        (
            # best_crop stays NOT NULL (SQLite cannot drop the constraint without rebuilding
            # the table); a purged crop is an empty blob and crop_purged_at says when.
            "ALTER TABLE alerts ADD COLUMN crop_purged_at REAL",
            """CREATE TABLE alert_holds (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                alert_id TEXT NOT NULL REFERENCES alerts (id),
                set_by TEXT NOT NULL,
                set_by_token TEXT,
                reason TEXT NOT NULL,
                at REAL NOT NULL,
                released_at REAL,
                released_by TEXT,
                release_reason TEXT
            )""",
            "CREATE UNIQUE INDEX alert_holds_active ON alert_holds (alert_id) "
            "WHERE released_at IS NULL",
            # A crop written again after a purge (the person seen anew) is no longer purged.
            "CREATE TRIGGER alerts_crop_restored AFTER UPDATE OF best_crop ON alerts "
            "WHEN length(NEW.best_crop) > 0 AND NEW.crop_purged_at IS NOT NULL "
            "BEGIN UPDATE alerts SET crop_purged_at = NULL WHERE id = NEW.id; END",
        ),
    ),
    Migration(
        6,
        "deployments and their watchlist entries (images and embeddings until destroyed)",
        (
            """CREATE TABLE deployments (
                id TEXT PRIMARY KEY,
                authorised_by TEXT NOT NULL,
                purpose TEXT NOT NULL,
                location TEXT NOT NULL,
                starts_at REAL NOT NULL,
                ends_at REAL NOT NULL,
                impact_assessment_ref TEXT,
                threshold REAL NOT NULL,
                origin TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_by_token TEXT,
                created_at REAL NOT NULL,
                closed_at REAL,
                closed_by TEXT,
                close_reason TEXT,
                watchlist_revision INTEGER NOT NULL DEFAULT 0,
                frames INTEGER NOT NULL DEFAULT 0,
                faces_seen INTEGER NOT NULL DEFAULT 0,
                counters_at REAL
            )""",
            """CREATE TABLE watchlist_entries (
                deployment_id TEXT NOT NULL REFERENCES deployments (id),
                id TEXT NOT NULL,
                display_name TEXT,
                category TEXT NOT NULL,
                legal_basis TEXT NOT NULL,
                source TEXT,
                image_date TEXT,
                threshold REAL,
                origin TEXT NOT NULL,
                state TEXT NOT NULL,
                image BLOB,
                image_type TEXT,
                embeddings BLOB,
                dimension INTEGER,
                quality TEXT,
                added_by TEXT NOT NULL,
                added_by_token TEXT,
                added_at REAL NOT NULL,
                approved_by TEXT,
                approved_by_token TEXT,
                approved_at REAL,
                removed_by TEXT,
                removed_at REAL,
                remove_reason TEXT,
                PRIMARY KEY (deployment_id, id)
            )""",
            "CREATE INDEX watchlist_entries_state ON watchlist_entries (deployment_id, state)",
            "CREATE INDEX alerts_deployment ON alerts (deployment_id, raised_event_id)",
        ),
    ),
    Migration(
        7,
        "a checksum with each watchlist entry's templates",
        ("ALTER TABLE watchlist_entries ADD COLUMN embeddings_sha256 TEXT",),
        # Entries stored before this migration are trusted as they are now, once.
        backfill=_checksum_existing_templates,
    ),
    Migration(
        8,
        "API tokens may expire by themselves (the running deployment's local token does)",
        ("ALTER TABLE api_tokens ADD COLUMN expires_at REAL",),
    ),
    Migration(
        9,
        "alerts belong to face tracks: the track ids and the media position of alerts and "
        "their sightings",
        (
            # The raising sighting's track, every track fused in (a JSON list), and the
            # best sighting's evidence count and position in a recording (NULL when live).
            "ALTER TABLE alerts ADD COLUMN track_id TEXT",
            "ALTER TABLE alerts ADD COLUMN tracks TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE alerts ADD COLUMN track_frames INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE alerts ADD COLUMN media_index INTEGER",
            "ALTER TABLE alerts ADD COLUMN media_time_s REAL",
            "ALTER TABLE alert_sightings ADD COLUMN track_id TEXT",
            "ALTER TABLE alert_sightings ADD COLUMN media_index INTEGER",
            "ALTER TABLE alert_sightings ADD COLUMN media_time_s REAL",
            "CREATE INDEX alert_sightings_track ON alert_sightings (track_id)",
        ),
    ),
    Migration(
        10,
        "the face tracks (people) seen in each deployment, beside the faces seen",
        ("ALTER TABLE deployments ADD COLUMN tracks_seen INTEGER NOT NULL DEFAULT 0",),
    ),
    Migration(
        11,
        "each webhook's delivery position in the alert event log",
        (
            # One row per webhook name; url_sha256 tells a webhook moved to another
            # receiver (which starts afresh) from one that resumes. No URL or secret.
            """CREATE TABLE webhook_positions (
                name TEXT PRIMARY KEY,
                url_sha256 TEXT NOT NULL,
                event_id INTEGER NOT NULL,
                delivered INTEGER NOT NULL DEFAULT 0,
                failed INTEGER NOT NULL DEFAULT 0,
                updated_at REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        12,
        "governance above the deployment: store-wide settings (threshold policy, monitoring "
        "categories), calibration and watchlist freshness per deployment, test subjects and "
        "their recorded passes, monitoring categories on adjudications, tokens scoped to "
        "deployments",
        (
            # One row per setting: 'threshold_policy' and 'monitoring_categories' (canonical
            # JSON). Every change is also in the audit log with its old and new value.
            """CREATE TABLE store_settings (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                set_by TEXT NOT NULL,
                set_by_token TEXT,
                set_at REAL NOT NULL
            )""",
            # The calibration file's figures (JSON; scores only, no faces) and the longest
            # time before use that a watchlist entry may have been approved (NULL: no limit).
            "ALTER TABLE deployments ADD COLUMN calibration TEXT",
            "ALTER TABLE deployments ADD COLUMN watchlist_max_age_h REAL",
            # The watchlist searched (active, not stale) counted from the index alone: the
            # rows hold the photo and templates before approved_at, so reading the table
            # would walk every row's overflow pages on each deployment's answer.
            "CREATE INDEX watchlist_entries_searched ON watchlist_entries "
            "(deployment_id, state, id, approved_at)",
            # A test subject is a consenting volunteer: consent_ref replaces the legal basis.
            "ALTER TABLE watchlist_entries ADD COLUMN test_subject INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE watchlist_entries ADD COLUMN consent_ref TEXT",
            # Copied from the entry when the alert is raised, so that the queues and the
            # webhooks tell them apart after the watchlist is destroyed.
            "ALTER TABLE alerts ADD COLUMN test_subject INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX alerts_test_subject ON alerts (deployment_id, test_subject)",
            """CREATE TABLE test_subject_passes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                deployment_id TEXT NOT NULL REFERENCES deployments (id),
                entry_id TEXT NOT NULL,
                camera_id TEXT NOT NULL,
                passed_at REAL NOT NULL,
                note TEXT,
                recorded_by TEXT NOT NULL,
                recorded_by_token TEXT,
                recorded_at REAL NOT NULL
            )""",
            "CREATE INDEX test_subject_passes_deployment ON test_subject_passes "
            "(deployment_id, entry_id, passed_at)",
            # Broad equality-monitoring categories an officer recorded on deciding an alert
            # (JSON object category -> value, NULL when none); never for unmatched faces.
            "ALTER TABLE adjudications ADD COLUMN demographics TEXT",
            # The deployments a token may see (a JSON list of ids; NULL: every deployment).
            "ALTER TABLE api_tokens ADD COLUMN deployments TEXT",
        ),
    ),
)
"""Every schema change, in order. Append; never edit one that has shipped."""
