"""What ``lfr up`` prints on stdout for each alert event: a readable line, or a JSON line.

On a terminal an operator reads the lines, so each alert raised is one line, an alert's
updates are coalesced to at most one line every ``interval_s`` per alert (the last state
held back is printed when the next update comes after the interval, or at :meth:`close`),
and each adjudication is one line. Off a terminal a program reads them: every event is a
JSON line (see :func:`json_line`), none held back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

UPDATE_INTERVAL_S = 5.0
"""The least time between two printed update lines of one alert, on a terminal."""


def json_line(event: dict[str, Any]) -> str:
    """The JSON line of one alert event (``lfr up`` off a terminal)."""
    alert = event["alert"]
    return json.dumps(
        {
            "event": event["kind"],
            "id": alert["id"],
            "entry_id": alert["entry_id"],
            "camera": alert["first_camera_id"],
            "best_distance": round(alert["best_distance"], 4),
            "sightings": alert["sightings"],
            "track_id": alert["track_id"],
            "media_index": alert["media_index"],
            "media_time_s": alert["media_time_s"],
            "test_subject": bool(alert.get("test_subject", False)),
        }
    )


def readable_line(event: dict[str, Any]) -> str:
    """The terminal line of one alert event: time, who, camera, distance, sightings, id."""
    alert = event["alert"]
    kind = event["kind"]
    at = event.get("at") if kind == "adjudicated" else alert.get("last_seen")
    when = "--:--:--" if at is None else datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")
    who = alert.get("display_name") or alert["entry_id"]
    if alert.get("display_name"):
        who = f"{who} ({alert['entry_id']})"
    if alert.get("test_subject"):
        who = f"{who} [TEST SUBJECT, not a suspect]"
    cameras = alert.get("cameras") or [alert["first_camera_id"]]
    return (
        f"{when} alert {kind:<11} {who}  camera {', '.join(cameras)}  "
        f"best distance {alert['best_distance']:.3f}  sightings {alert['sightings']}  "
        f"id {alert['id']}"
    )


class AlertPrinter:
    """Turns alert events into stdout lines, coalescing updates on a terminal.

    ``print_line`` writes one line; ``clock`` is a monotonic clock in seconds (injected so
    that tests need not wait). Call the printer with each event, in order, and
    :meth:`close` once at the end.
    """

    def __init__(
        self,
        print_line: Callable[[str], None],
        *,
        readable: bool,
        interval_s: float = UPDATE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.print_line = print_line
        self.readable = readable
        self.interval_s = interval_s
        self.clock = clock
        self._printed_at: dict[str, float] = {}
        self._pending: dict[str, dict[str, Any]] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        """Print ``event`` now, hold it back (an update within the interval), or both."""
        if not self.readable:
            self.print_line(json_line(event))
            return
        now = self.clock()
        alert_id = event["alert"]["id"]
        if event["kind"] == "updated":
            last = self._printed_at.get(alert_id)
            if last is not None and now - last < self.interval_s:
                self._pending[alert_id] = event  # the newest state replaces an older one
            else:
                self._print(alert_id, event, now)
        else:
            # raised and adjudicated show at once; an adjudication carries the alert's
            # state, so an update held back before it has nothing more to say.
            self._print(alert_id, event, now)
        self._print_due(now)

    def close(self) -> None:
        """Print the last state of every alert whose update was held back."""
        now = self.clock()
        for alert_id, event in list(self._pending.items()):
            self._print(alert_id, event, now)

    def _print(self, alert_id: str, event: dict[str, Any], now: float) -> None:
        self._pending.pop(alert_id, None)
        self._printed_at[alert_id] = now
        self.print_line(readable_line(event))

    def _print_due(self, now: float) -> None:
        """Updates of other alerts held back for a whole interval: printed now."""
        for alert_id, event in list(self._pending.items()):
            if now - self._printed_at[alert_id] >= self.interval_s:
                self._print(alert_id, event, now)
