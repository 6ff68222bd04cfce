"""A JSON Lines sink: every persisted alert event, one line each, for files and pipelines.

The sink tails the store's event log through its own read-only connection, so it only
ever writes what is already persisted, and it never writes a crop. It resumes from the
last event id in its output file: after a crash it repairs a torn last line and carries on
without gaps or repeats.

A line::

    {"event": "raised", "event_id": 7, "id": "…", "deployment": "dep1", "camera": "cam_a",
     "cameras": ["cam_a"], "entry_id": "E1", "score": 0.41,
     "first_seen": "2025-01-31T12:00:00.250Z", "last_seen": "…", "sightings": 1}

``score`` is the alert's best (lowest) distance; times are ISO 8601 UTC. The file is
created (or tightened) readable by its owner only (0600), wherever it is: the lines name
watchlist entries and where and when they were seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from lfr_actors.alerts import iso_utc
from lfr_actors.fsutil import open_private_append
from lfr_actors.store.alerts import AlertStore, StoreError

_PAGE = 500
_TAIL_BYTES = 1 << 16


def event_line(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON Lines record of one stored event (as returned by ``events_after``)."""
    alert = event["alert"]
    return {
        "event": event["kind"],
        "event_id": event["event_id"],
        "id": alert["id"],
        "deployment": alert["deployment_id"],
        "camera": alert["first_camera_id"],
        "cameras": alert["cameras"],
        "entry_id": alert["entry_id"],
        "score": alert["best_distance"],
        "first_seen": iso_utc(alert["first_seen"]),
        "last_seen": iso_utc(alert["last_seen"]),
        "sightings": alert["sightings"],
    }


class JsonlSink:
    """Appends the alert events of ``store_path`` to ``out_path``, resumably."""

    def __init__(self, store_path: Path, out_path: Path, *, poll_interval_s: float = 0.2) -> None:
        self.store_path = Path(store_path)
        self.out_path = Path(out_path)
        self.poll_interval_s = poll_interval_s
        self._store: AlertStore | None = None
        self._last_event_id: int | None = None
        self._lock = threading.Lock()

    @property
    def last_event_id(self) -> int:
        """The id of the last event written (0 before any)."""
        with self._lock:
            return self._resume_point()

    def drain(self) -> int:
        """Write every event not yet written; returns how many lines were written.

        Does nothing (returns 0) while the store does not exist yet.
        """
        with self._lock:
            store = self._open_store()
            if store is None:
                return 0
            after = self._resume_point()
            written = 0
            while events := store.events_after(after, _PAGE):
                payload = "".join(
                    json.dumps(event_line(e), separators=(",", ":")) + "\n" for e in events
                ).encode()
                self.out_path.parent.mkdir(parents=True, exist_ok=True)
                with open_private_append(self.out_path) as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
                after = events[-1]["event_id"]
                self._last_event_id = after
                written += len(events)
            return written

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the store and append new events until ``stop`` is set, then drain."""
        while not stop.is_set():
            await asyncio.to_thread(self.drain)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval_s)
        await asyncio.to_thread(self.drain)

    def close(self) -> None:
        """Close the store connection; safe to call twice."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _open_store(self) -> AlertStore | None:
        if self._store is None:
            if not self.store_path.is_file():
                return None
            try:
                self._store = AlertStore.open_readonly(self.store_path, create=False)
            except StoreError:
                return None  # being created or migrated by its writer; try next time
        return self._store

    def _resume_point(self) -> int:
        if self._last_event_id is None:
            self._last_event_id = _last_written_event_id(self.out_path)
        return self._last_event_id


def _last_written_event_id(path: Path) -> int:
    """The event id of the file's last complete line, cutting off a torn last line first."""
    if not path.is_file():
        return 0
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        start = max(0, size - _TAIL_BYTES)
        handle.seek(start)
        tail = handle.read()
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            if cut < 0 and start > 0:
                raise ValueError(f"{path}: last line is longer than {_TAIL_BYTES} bytes")
            keep = start + cut + 1
            handle.truncate(keep)
            tail = tail[: cut + 1]
        lines = tail.splitlines()
        if not lines:
            return 0
        try:
            return int(json.loads(lines[-1])["event_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: the last line is not an alert event line ({exc}); "
                "move the file aside or fix its last line to resume"
            ) from exc
