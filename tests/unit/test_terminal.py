"""What ``lfr up`` prints per alert event: readable and coalesced on a terminal, JSON off one."""

from __future__ import annotations

import json
from typing import Any

from lfr_actors.control.terminal import AlertPrinter, json_line, readable_line

ALERT_A = "a1b2c3d4-0000-5000-8000-000000000001"
ALERT_B = "b1b2c3d4-0000-5000-8000-000000000002"


def event(kind: str, alert_id: str = ALERT_A, sightings: int = 1, **alert: Any) -> dict[str, Any]:
    return {
        "event_id": sightings,
        "kind": kind,
        "at": 1_764_633_600.0 + sightings,
        "alert": {
            "id": alert_id,
            "entry_id": "wl-0007",
            "first_camera_id": "cam-east",
            "cameras": ["cam-east"],
            "best_distance": 0.41234,
            "sightings": sightings,
            "last_seen": 1_764_633_600.0 + sightings,  # 2025-12-02 00:00:00 UTC, plus
            "track_id": "t-1",
            "media_index": 12,
            "media_time_s": 0.48,
            **alert,
        },
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def printer(interval_s: float = 5.0) -> tuple[AlertPrinter, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    return (
        AlertPrinter(lines.append, readable=True, interval_s=interval_s, clock=clock),
        lines,
        clock,
    )


def test_readable_line_has_time_entry_camera_distance_sightings_and_id() -> None:
    line = readable_line(event("raised", sightings=3))
    assert line == (
        f"00:00:03 alert raised      wl-0007  camera cam-east  best distance 0.412  "
        f"sightings 3  id {ALERT_A}"
    )


def test_readable_line_names_the_display_name_when_the_event_has_one() -> None:
    line = readable_line(event("raised", display_name="J. Doe"))
    assert " J. Doe (wl-0007)  camera" in line


def test_off_a_terminal_every_event_is_a_json_line_with_best_distance() -> None:
    lines: list[str] = []
    out = AlertPrinter(lines.append, readable=False, clock=Clock())
    for n in range(1, 5):
        out(event("raised" if n == 1 else "updated", sightings=n))
    out.close()
    records = [json.loads(line) for line in lines]
    assert [r["sightings"] for r in records] == [1, 2, 3, 4]
    assert records[0] == {
        "event": "raised",
        "id": ALERT_A,
        "entry_id": "wl-0007",
        "camera": "cam-east",
        "best_distance": 0.4123,
        "sightings": 1,
        "track_id": "t-1",
        "media_index": 12,
        "media_time_s": 0.48,
        "test_subject": False,
    }
    assert "distance" not in records[0]


def test_updates_within_the_interval_are_held_back_and_the_next_after_it_prints() -> None:
    out, lines, clock = printer()
    out(event("raised", sightings=1))
    for n in range(2, 6):  # four updates within one second
        clock.now += 0.25
        out(event("updated", sightings=n))
    assert len(lines) == 1
    clock.now += 5.0
    out(event("updated", sightings=6))
    assert len(lines) == 2
    assert "alert updated" in lines[1] and "sightings 6" in lines[1]


def test_close_prints_the_last_state_held_back_once() -> None:
    out, lines, clock = printer()
    out(event("raised", sightings=1))
    clock.now += 1.0
    out(event("updated", sightings=2))
    clock.now += 1.0
    out(event("updated", sightings=3))
    out.close()
    assert len(lines) == 2
    assert "sightings 3" in lines[1]
    out.close()  # nothing is held back any more
    assert len(lines) == 2


def test_an_update_of_one_alert_releases_another_alerts_update_once_due() -> None:
    out, lines, clock = printer()
    out(event("raised", ALERT_A, sightings=1))
    clock.now += 1.0
    out(event("updated", ALERT_A, sightings=2))  # held back
    clock.now += 4.5
    out(event("raised", ALERT_B, sightings=1))
    assert [ALERT_A in line for line in lines] == [True, False, True]
    assert "alert updated" in lines[2] and "sightings 2" in lines[2]


def test_each_alert_has_its_own_interval() -> None:
    out, lines, clock = printer()
    out(event("raised", ALERT_A, sightings=1))
    out(event("raised", ALERT_B, sightings=1))
    clock.now += 1.0
    out(event("updated", ALERT_A, sightings=2))
    out(event("updated", ALERT_B, sightings=2))
    assert len(lines) == 2
    out.close()
    assert sorted(line.split()[-1] for line in lines[2:]) == [ALERT_A, ALERT_B]


def test_an_adjudication_prints_at_once_and_supersedes_a_held_back_update() -> None:
    out, lines, clock = printer()
    out(event("raised", sightings=1))
    clock.now += 1.0
    out(event("updated", sightings=2))
    clock.now += 1.0
    out(event("adjudicated", sightings=2, status="adjudicated"))
    out.close()
    assert len(lines) == 2
    assert "alert adjudicated" in lines[1]


def test_json_line_is_the_printer_form_off_a_terminal() -> None:
    e = event("updated", sightings=9)
    lines: list[str] = []
    AlertPrinter(lines.append, readable=False)(e)
    assert lines == [json_line(e)]
