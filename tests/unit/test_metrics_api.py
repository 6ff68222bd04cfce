"""Prometheus metrics and readiness: the pure renderer and the two routes."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.api import metrics as metrics_module
from lfr_actors.api.app import create_app
from lfr_actors.api.metrics import CAMERA_STATES, render_metrics
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.tokens import Role
from tests.api_helpers import bearer, problem, store_with_one_alert

ENTRY_ID = "entry-7f3a9c"
ALERT_ID = "alert-0b1d2e"


TODAYS_FAMILIES = {
    "lfr_actor_restarts_total": ("counter", "Times the supervisor restarted the actor."),
    "lfr_actor_up": ("gauge", "Whether the actor answered for its figures (1) or not (0)."),
    "lfr_alert_events_persisted_total": ("counter", "Alert events persisted."),
    "lfr_alert_events_stored": ("gauge", "Alert events in the store."),
    "lfr_alert_sightings_received_total": ("counter", "Sightings received."),
    "lfr_alert_sightings_stored": ("gauge", "Alert sightings in the store."),
    "lfr_alerts_closed_total": ("counter", "Alerts closed."),
    "lfr_alerts_open": ("gauge", "Alerts open in the alert actor's fusion windows."),
    "lfr_alerts_raised_total": ("counter", "Alerts raised."),
    "lfr_alerts_stored": ("gauge", "Alerts in the store."),
    "lfr_alerts_updated_total": ("counter", "Alert updates."),
    "lfr_camera_candidates_total": ("counter", "Watchlist candidates from the frames."),
    "lfr_camera_corrupt_frames_total": ("counter", "Frames that could not be decoded."),
    "lfr_camera_faces_total": ("counter", "Faces detected in the camera's frames."),
    "lfr_camera_fps": ("gauge", "Measured sampling rate (frames/s)."),
    "lfr_camera_frames_dropped_total": ("counter", "Frames dropped before processing."),
    "lfr_camera_frames_failed_total": ("counter", "Frames whose processing failed."),
    "lfr_camera_frames_processed_total": ("counter", "Frames the pipeline answered."),
    "lfr_camera_frames_retried_total": (
        "counter",
        "Frames sent a second time because their embedder died or could not be reached.",
    ),
    "lfr_camera_latency_ms": (
        "gauge",
        "Capture-to-result latency over recent frames (ms), by quantile.",
    ),
    "lfr_camera_queue": ("gauge", "Frames waiting in the camera's queue."),
    "lfr_camera_reconnects_total": ("counter", "Reconnections to the camera's source."),
    "lfr_camera_seconds_since_frame": (
        "gauge",
        "Seconds since the camera's source last delivered a frame.",
    ),
    "lfr_camera_stalls_total": (
        "counter",
        "Times the camera's source delivered no frame for its stall timeout.",
    ),
    "lfr_camera_state": (
        "gauge",
        "The camera's state: 1 for the state it is in, 0 for the others.",
    ),
    "lfr_camera_up": ("gauge", "Whether the camera is running (1) or not (0)."),
    "lfr_decode_errors_total": (
        "counter",
        "Messages the actor dropped because they could not be decoded.",
    ),
    "lfr_deployment_closed": (
        "gauge",
        "Whether the deployment was closed (1): cameras stopped, watchlist destroyed.",
    ),
    "lfr_deployment_threshold": ("gauge", "The distance threshold in force (changes are audited)."),
    "lfr_embedder_batch_size_mean": ("gauge", "Mean batch size over recent batches."),
    "lfr_embedder_batches_total": ("counter", "Batches the embedder ran."),
    "lfr_embedder_candidates_total": ("counter", "Watchlist candidates found."),
    "lfr_embedder_faces_compared_total": ("counter", "Faces compared against the watchlist."),
    "lfr_embedder_faces_total": ("counter", "Faces the embedder embedded."),
    "lfr_embedder_frames_total": ("counter", "Frames the embedder processed."),
    "lfr_embedder_non_matches_discarded_total": (
        "counter",
        "Face tracks ended without matching any watchlist entry; what they held was discarded.",
    ),
    "lfr_embedder_sightings_lost_total": (
        "counter",
        "Sightings dropped because the buffer of unstored ones was full.",
    ),
    "lfr_embedder_sightings_resent_total": (
        "counter",
        "Sightings sent again to the alert actor after it could not store them.",
    ),
    "lfr_embedder_sightings_unstored": (
        "gauge",
        "Possible matches held in the embedder's memory until the alert store takes them.",
    ),
    "lfr_embedder_stage_ms": (
        "gauge",
        "Median time per batch in each stage over recent batches (ms).",
    ),
    "lfr_index_queries_total": ("counter", "Query vectors the index actor searched."),
    "lfr_index_searches_total": ("counter", "Searches the index actor answered."),
    "lfr_status_age_seconds": ("gauge", "Seconds since the deployment's status was last gathered."),
    "lfr_status_gathers_total": (
        "counter",
        "Status gathers the background task has made (requests never add to it).",
    ),
    "lfr_status_up": (
        "gauge",
        "Whether the deployment's status was gathered and is fresh (1), or the last "
        "gather failed or it is stale (0).",
    ),
    "lfr_store_writable": (
        "gauge",
        "Whether the alert store can be written (1) or a write failed for space or I/O (0).",
    ),
    "lfr_watchlist_damaged_entries": (
        "gauge",
        "Watchlist entries left out of the index: their templates fail their checksum or "
        "are not finite (lfr store check names them).",
    ),
    "lfr_watchlist_entries": ("gauge", "Watchlist entries in the index (approved, not deleted)."),
}
"""Every metric family the hand-written exposition of 2026-12-01 wrote (name: type, help),
recorded before /metrics moved to prometheus_client: the names, types and help stay."""

TRACK_FAMILIES = {
    "lfr_camera_tracks_total": ("counter", "Face tracks (people) the camera's frames began."),
    "lfr_embedder_tracks_started_total": ("counter", "Face tracks the embedder began."),
    "lfr_embedder_tracks_ended_total": ("counter", "Face tracks the embedder ended."),
    "lfr_embedder_tracks_live": ("gauge", "Face tracks the embedder follows now (people in view)."),
    "lfr_alert_rejected_track_sightings_total": (
        "counter",
        "Sightings dropped because an officer found their face track not a match.",
    ),
    "lfr_alert_track_conflicts_total": (
        "counter",
        "Sightings dropped because their face track belongs to another entry's alert.",
    ),
}
"""The families added when the face track became the unit of decision (issue 10)."""


def realistic_status() -> dict[str, Any]:
    """A status dict as Deployment.status() returns it, with watchlist data mixed in."""
    return {
        "deployment": {
            "id": "dep1",
            "location": "Market Square",
            "start": "2025-01-31T09:00:00+00:00",
            "end": "2025-01-31T17:00:00+00:00",
            "threshold": 0.5,
            "watchlist_entries": 12,
        },
        "api": "http://127.0.0.1:8080",
        "uptime_s": 312.4,
        "cameras": {
            "cam_north": {
                "frames_read": 900,
                "frames_sampled": 300,
                "frames_processed": 290,
                "frames_dropped": 7,
                "frames_failed": 3,
                "corrupt_frames": 1,
                "reconnects": 2,
                "stalls": 1,
                "faces": 41,
                "tracks": 6,
                "candidates": 2,
                "decode_errors": 0,
                "id": "cam_north",
                "state": "running",
                "last_error": "decode failed for entry " + ENTRY_ID,
                "fps": 4.98,
                "seconds_since_frame": 0.1,
                "queue": 1,
                "in_flight": 2,
                "latency_ms_p50": 81.5,
                "latency_ms_p95": 140.2,
                "latency_ms_p99": 201.0,
                "role": "camera",
                "restarts": 1,
                "supervisor_error": None,
            },
            'cam "south"\\gate\n2': {
                "frames_processed": 10,
                "state": "reconnecting",
                "fps": None,
                "latency_ms_p50": None,
                "role": "camera",
                "restarts": 0,
            },
            "cam_east": {
                "unavailable": "GetTimeoutError: stats timed out",
                "role": "camera",
                "restarts": 3,
                "supervisor_error": "RayActorError: died",
            },
        },
        "embedders": {
            "embedder": {
                "frames": 290,
                "batches": 60,
                "faces": 41,
                "faces_compared": 41,
                "non_matches_discarded": 39,
                "candidates": 2,
                "tracks_started": 6,
                "tracks_ended": 4,
                "tracks_live": 2,
                "decode_errors": 4,
                "downstream_errors": 0,
                "id": "embedder",
                "providers": ["CPUExecutionProvider"],
                "batch_size_mean": 4.83,
                "batch_size_max": 8,
                "stage_ms_median": {
                    "detect": 12.5,
                    "embed": 8.25,
                    "search": 0.75,
                    "alerts": 1.0,
                    "batch": None,
                },
                "role": "embedder",
                "restarts": 0,
                "supervisor_error": None,
            }
        },
        "index": {
            "index_router": {"searches": 60, "queries": 41, "role": "index_router", "restarts": 0},
            "shard-0": {
                "searches": 60,
                "queries": 41,
                "enrolled": 12,
                "role": "index_shard",
                "restarts": 0,
            },
        },
        "alerts": {
            "store": {
                "alerts": 3,
                "alerts_by_status": {"open": 2, "closed": 1},
                "sightings": 9,
                "events": 5,
                "last_event_id": 5,
            },
            "alerts": {
                "sightings_received": 9,
                "alerts_raised": 3,
                "alerts_updated": 2,
                "alerts_closed": 1,
                "decode_errors": 0,
                "events_persisted": 5,
                "rejected_track_sightings": 1,
                "track_conflicts": 0,
                "open_alerts": 2,
                "role": "alerts",
                "restarts": 0,
                "recent": [{"id": ALERT_ID, "entry_id": ENTRY_ID, "name": "Jane Doe"}],
                ENTRY_ID: 1,
            },
        },
    }


SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\\\|\\"|\\n|[^"\\\n])*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|[+-]Inf)$"
)


def test_exact_lines_for_cameras_embedders_and_the_store() -> None:
    lines = render_metrics(realistic_status()).splitlines()
    for expected in (
        'lfr_camera_frames_processed_total{camera="cam_north"} 290.0',
        'lfr_camera_frames_dropped_total{camera="cam_north"} 7.0',
        'lfr_camera_frames_failed_total{camera="cam_north"} 3.0',
        'lfr_camera_corrupt_frames_total{camera="cam_north"} 1.0',
        'lfr_camera_reconnects_total{camera="cam_north"} 2.0',
        'lfr_camera_faces_total{camera="cam_north"} 41.0',
        'lfr_camera_tracks_total{camera="cam_north"} 6.0',
        'lfr_camera_fps{camera="cam_north"} 4.98',
        'lfr_camera_up{camera="cam_north"} 1.0',
        'lfr_camera_up{camera="cam_east"} 0.0',
        'lfr_camera_latency_ms{camera="cam_north",quantile="0.5"} 81.5',
        'lfr_camera_latency_ms{camera="cam_north",quantile="0.95"} 140.2',
        'lfr_camera_latency_ms{camera="cam_north",quantile="0.99"} 201.0',
        'lfr_embedder_frames_total{embedder="embedder"} 290.0',
        'lfr_embedder_batches_total{embedder="embedder"} 60.0',
        'lfr_embedder_faces_compared_total{embedder="embedder"} 41.0',
        'lfr_embedder_non_matches_discarded_total{embedder="embedder"} 39.0',
        'lfr_embedder_batch_size_mean{embedder="embedder"} 4.83',
        'lfr_embedder_tracks_started_total{embedder="embedder"} 6.0',
        'lfr_embedder_tracks_ended_total{embedder="embedder"} 4.0',
        'lfr_embedder_tracks_live{embedder="embedder"} 2.0',
        "# TYPE lfr_camera_tracks_total counter",
        "# TYPE lfr_embedder_tracks_live gauge",
        'lfr_embedder_stage_ms{embedder="embedder",stage="detect"} 12.5',
        'lfr_actor_restarts_total{actor="cam_north",role="camera"} 1.0',
        'lfr_actor_restarts_total{actor="cam_east",role="camera"} 3.0',
        'lfr_actor_up{actor="cam_east",role="camera"} 0.0',
        'lfr_decode_errors_total{actor="embedder",role="embedder"} 4.0',
        'lfr_index_queries_total{actor="shard-0",role="index_shard"} 41.0',
        'lfr_alerts_raised_total{actor="alerts"} 3.0',
        "lfr_alerts_stored 3.0",
        "lfr_alert_sightings_stored 9.0",
        "# TYPE lfr_camera_frames_processed_total counter",
        "# TYPE lfr_camera_fps gauge",
        "# TYPE lfr_alerts_stored gauge",
    ):
        assert expected in lines, expected


def test_help_and_type_once_per_metric_and_every_line_is_well_formed() -> None:
    text = render_metrics(realistic_status())
    assert text.endswith("\n")
    lines = text.splitlines()
    helps = [line.split()[2] for line in lines if line.startswith("# HELP ")]
    types = [line.split()[2] for line in lines if line.startswith("# TYPE ")]
    assert helps == types
    assert len(set(helps)) == len(helps)
    current = None  # HELP, TYPE, then the family's samples, all together
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert lines[i + 1].startswith(f"# TYPE {current} "), line
        elif not line.startswith("#"):
            assert current is not None and re.match(rf"{current}[{{ ]", line), line
    for line in lines:
        if line.startswith("#"):
            continue
        assert SAMPLE.match(line), line
    for line in lines:
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line


def test_label_values_are_escaped() -> None:
    text = render_metrics(realistic_status())
    assert 'lfr_camera_frames_processed_total{camera="cam \\"south\\"\\\\gate\\n2"} 10.0' in (
        text.splitlines()
    )


def test_missing_and_none_values_are_skipped() -> None:
    lines = render_metrics(realistic_status()).splitlines()
    south = [line for line in lines if "south" in line]
    assert not any(line.startswith("lfr_camera_fps{") for line in south)
    assert not any(line.startswith("lfr_camera_latency_ms{") for line in south)
    assert not any('stage="batch"' in line for line in lines)
    assert not any(line.startswith("lfr_camera_frames_processed_total") and "east" in line
                   for line in lines)  # fmt: skip
    assert render_metrics({}) == ""
    assert render_metrics({"cameras": None, "alerts": "nonsense"}) == ""


def test_no_watchlist_or_alert_data_reaches_a_scrape() -> None:
    text = render_metrics(realistic_status())
    for secret in (ENTRY_ID, ALERT_ID, "Jane Doe", "Market Square", "decode failed", "Ray"):
        assert secret not in text
    label_names = set(re.findall(r'[{,]([a-z_]+)="', text))
    assert label_names == {"camera", "embedder", "actor", "role", "stage", "quantile", "state"}
    states = set(re.findall(r'state="([^"]*)"', text))
    assert states == set(CAMERA_STATES)  # a fixed vocabulary, never free text


def test_a_stalled_camera_is_down_and_says_so() -> None:
    status = {
        "cameras": {
            "cam_gate": {"state": "stalled", "stalls": 2, "seconds_since_frame": 14.2},
            "cam_yard": {"state": "running", "stalls": 0, "seconds_since_frame": 0.0},
            "cam_lost": {"unavailable": "timed out", "state": "running"},
        }
    }
    lines = render_metrics(status).splitlines()
    assert 'lfr_camera_up{camera="cam_gate"} 0.0' in lines
    assert 'lfr_camera_up{camera="cam_yard"} 1.0' in lines
    assert 'lfr_camera_stalls_total{camera="cam_gate"} 2.0' in lines
    assert 'lfr_camera_seconds_since_frame{camera="cam_gate"} 14.2' in lines
    on = [line for line in lines if line.startswith("lfr_camera_state{") and line.endswith(" 1.0")]
    assert on == [
        'lfr_camera_state{camera="cam_gate",state="stalled"} 1.0',
        'lfr_camera_state{camera="cam_yard",state="running"} 1.0',
    ]  # an unreachable camera is in no state
    gate = [line for line in lines if line.startswith('lfr_camera_state{camera="cam_gate"')]
    assert len(gate) == len(CAMERA_STATES)


def test_the_deployment_gauges_carry_numbers_only() -> None:
    status = {
        "deployment": {
            "id": "dep1",
            "location": "Market Square",
            "threshold": 0.55,
            "watchlist_entries": 12,
            "state": "closed",
        }
    }
    lines = render_metrics(status).splitlines()
    assert "lfr_deployment_threshold 0.55" in lines
    assert "lfr_watchlist_entries 12.0" in lines
    assert "lfr_deployment_closed 1.0" in lines
    assert "Market Square" not in "\n".join(lines)


def test_status_up_is_reported_when_given() -> None:
    assert "lfr_status_up 0.0" in render_metrics({}, status_up=False).splitlines()
    assert "lfr_status_up 1.0" in render_metrics({}, status_up=True).splitlines()


# -- the routes -----------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return store_with_one_alert(tmp_path / "alerts.db")


async def test_metrics_needs_a_viewer_token_and_speaks_prometheus(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    async def source() -> dict[str, Any]:
        return realistic_status()

    client = await aiohttp_client(create_app(db, status=source))
    await problem(await client.get("/metrics"), 401)
    await problem(await client.get("/metrics", headers=bearer(db, Role.WATCHLIST_MANAGER)), 403)
    resp = await client.get("/metrics", headers=bearer(db, Role.VIEWER))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = (await resp.text()).splitlines()
    assert 'lfr_camera_frames_processed_total{camera="cam_north"} 290.0' in lines
    assert "lfr_status_up 1.0" in lines
    assert "lfr_alerts_stored 1.0" in lines  # the API's own store, not the status dict's


async def test_metrics_without_a_status_source_still_has_the_store_counts(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await aiohttp_client(create_app(db))
    resp = await client.get("/metrics", headers=bearer(db, Role.ADMIN))
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    assert "lfr_alerts_stored 1.0" in lines
    assert "lfr_alert_sightings_stored 1.0" in lines
    assert not any(line.startswith("lfr_status_up") for line in lines)


async def test_metrics_when_the_status_source_fails(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("kernel gone")

    client = await aiohttp_client(create_app(db, status=broken))
    resp = await client.get("/metrics", headers=bearer(db, Role.AUDITOR))
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    assert "lfr_status_up 0.0" in lines
    assert "lfr_alerts_stored 1.0" in lines


async def test_readyz_is_public_and_ready(aiohttp_client: AiohttpClient, db: Path) -> None:
    async def source() -> dict[str, Any]:
        status = realistic_status()
        del status["cameras"]["cam_east"]
        return status

    for app in (create_app(db), create_app(db, status=source)):
        client = await aiohttp_client(app)
        resp = await client.get("/readyz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ready"}


async def test_readyz_names_unreachable_actors(aiohttp_client: AiohttpClient, db: Path) -> None:
    async def source() -> dict[str, Any]:
        status = realistic_status()
        status["embedders"]["embedder"] = {"unavailable": "RayActorError: x", "role": "embedder"}
        return status

    client = await aiohttp_client(create_app(db, status=source))
    body = await problem(await client.get("/readyz"), 503)
    assert body["not_ready"] == ["camera cam_east: unreachable", "embedder embedder: unreachable"]
    assert "RayActorError" not in str(body) and "GetTimeoutError" not in str(body)


async def test_readyz_503_when_the_status_source_raises(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("kernel gone")

    client = await aiohttp_client(create_app(db, status=broken))
    body = await problem(await client.get("/readyz"), 503)
    assert body["not_ready"] == ["deployment status: could not be read"]
    assert "kernel gone" not in str(body)


async def test_readyz_503_when_the_status_source_times_out(
    aiohttp_client: AiohttpClient, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "READY_STATUS_TIMEOUT_S", 0.05)

    async def slow() -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    client = await aiohttp_client(create_app(db, status=slow))
    body = await problem(await client.get("/readyz"), 503)
    # The request waited (briefly) for the first gather; it did not start one.
    assert body["not_ready"] == ["deployment status: not gathered yet"]


async def test_readyz_503_when_the_store_cannot_be_read(
    aiohttp_client: AiohttpClient, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AlertStore) -> dict[str, Any]:
        raise OSError("disk gone")

    # The gatherer reads the store (its counts) at its own rate; readiness reads the result.
    monkeypatch.setattr(AlertStore, "counts", broken)
    client = await aiohttp_client(create_app(db))
    body = await problem(await client.get("/readyz"), 503)
    assert body["not_ready"] == ["alert store: cannot be read"]
    assert "disk gone" not in str(body)


def test_damaged_entries_and_the_sighting_path_counters_are_exported() -> None:
    status = {
        "deployment": {
            "id": "dep1",
            "watchlist_entries": 11,
            "damaged_entries": 1,
            "damaged": [{"entry_id": ENTRY_ID, "reason": "checksum"}],
        },
        "cameras": {"cam_north": {"state": "running", "frames_retried": 2}},
        "embedders": {
            "embedder": {"sightings_unstored": 3, "sightings_lost": 1, "sightings_resent": 5}
        },
    }
    lines = render_metrics(status).splitlines()
    assert "lfr_watchlist_damaged_entries 1.0" in lines
    assert 'lfr_camera_frames_retried_total{camera="cam_north"} 2.0' in lines
    assert 'lfr_embedder_sightings_unstored{embedder="embedder"} 3.0' in lines
    assert 'lfr_embedder_sightings_lost_total{embedder="embedder"} 1.0' in lines
    assert 'lfr_embedder_sightings_resent_total{embedder="embedder"} 5.0' in lines
    assert ENTRY_ID not in "\n".join(lines)  # the damaged entry's id is never a label


def full_status() -> dict[str, Any]:
    """:func:`realistic_status` with every figure the exposition reads."""
    status = realistic_status()
    status["deployment"].update({"damaged_entries": 1, "state": "active"})
    status["cameras"]["cam_north"].update(
        {"frames_retried": 2, "stalls": 1, "candidates": 1, "seconds_since_frame": 0.1, "queue": 0}
    )
    status["embedders"]["embedder"].update(
        {"sightings_unstored": 3, "sightings_lost": 1, "sightings_resent": 5}
    )
    return status


async def test_the_scraped_families_are_todays_names_types_and_help(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    async def source() -> dict[str, Any]:
        return full_status()

    client = await aiohttp_client(create_app(db, status=source))
    resp = await client.get("/metrics", headers=bearer(db, Role.VIEWER))
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    helps = {line.split()[2]: line.split(" ", 3)[3] for line in lines if line.startswith("# HELP ")}
    types = {line.split()[2]: line.split()[3] for line in lines if line.startswith("# TYPE ")}
    assert set(helps) == set(types)
    families = {**TODAYS_FAMILIES, **TRACK_FAMILIES}
    assert {name: (types[name], helps[name]) for name in helps} == families
    # Each family's samples carry its exposed name (counters keep their _total).
    sampled = {re.split(r"[{ ]", line)[0] for line in lines if not line.startswith("#")}
    assert sampled == set(families)


def test_an_embedder_that_reports_no_tracks_gets_no_track_samples() -> None:
    # An embedder from before tracking (or one that has not answered yet): nothing guessed.
    status = realistic_status()
    for key in ("tracks_started", "tracks_ended", "tracks_live"):
        del status["embedders"]["embedder"][key]
    lines = render_metrics(status).splitlines()
    assert not [line for line in lines if line.startswith("lfr_embedder_tracks")]
    assert 'lfr_camera_tracks_total{camera="cam_north"} 6.0' in lines


def test_alert_outputs_and_stale_entries_have_their_families() -> None:
    status = realistic_status()
    status["deployment"]["stale_entries"] = 2
    status["alert_outputs"] = [
        {"name": "stdout", "position": 5, "delivered": 5, "attempts_failed": 0, "up": True},
        {
            "name": "alerts_jsonl",
            "position": 3,
            "delivered": 3,
            "attempts_failed": 4,
            "up": False,
            "last_error": "No space left on device",
        },
    ]
    lines = render_metrics(status).splitlines()
    for expected in (
        "lfr_watchlist_stale_entries 2.0",
        "# TYPE lfr_watchlist_stale_entries gauge",
        'lfr_alert_output_up{output="stdout"} 1.0',
        'lfr_alert_output_up{output="alerts_jsonl"} 0.0',
        'lfr_alert_output_delivered_total{output="alerts_jsonl"} 3.0',
        'lfr_alert_output_attempts_failed_total{output="alerts_jsonl"} 4.0',
        "# TYPE lfr_alert_output_delivered_total counter",
    ):
        assert expected in lines, expected
    assert not any("No space" in line for line in lines)  # errors are for the status, not here
