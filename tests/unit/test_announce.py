"""The serving line: its two forms, and that it is printed once, before any alert line.

The deployment is a test double (a real ``lfr up`` prints it in
tests/integration/test_cli_up.py and test_examples.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lfr_actors.control.announce import Announcer, serving_line
from lfr_actors.control.live import Live


def test_off_a_terminal_the_line_is_a_json_event_beside_the_alert_events() -> None:
    line = serving_line("demo", "http://127.0.0.1:41234", as_json=True)
    assert json.loads(line) == {
        "event": "serving",
        "deployment": "demo",
        "api": "http://127.0.0.1:41234",
        "console": "http://127.0.0.1:41234/console",
    }


def test_on_a_terminal_the_line_is_a_sentence_with_both_addresses() -> None:
    line = serving_line("demo", "http://127.0.0.1:8080", as_json=False)
    assert line.startswith("lfr: deployment demo is running; API http://127.0.0.1:8080, ")
    assert "console http://127.0.0.1:8080/console" in line
    assert "\n" not in line


class DeploymentDouble:
    """Binds its API, starts its actors, then raises one alert before it is stopped."""

    namespace = "demo"

    def __init__(self, fail: bool = False) -> None:
        self.live = Live()
        self.fail = fail
        self.on_alert: Any = None

    async def run(self) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        self.live.api_url = "http://127.0.0.1:5555"
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("an embedder did not start")
        self.live.actors_started = True
        await asyncio.sleep(0.2)
        self.on_alert()
        return {"frames": 1}


def test_the_line_is_printed_once_when_every_actor_has_started() -> None:
    lines: list[str] = []
    deployment = DeploymentDouble()
    announce = Announcer(deployment, lines.append, as_json=False)  # type: ignore[arg-type]

    def on_alert() -> None:
        announce()
        lines.append("ALERT")

    deployment.on_alert = on_alert
    assert asyncio.run(announce.run()) == {"frames": 1}
    assert len(lines) == 2
    assert lines[0].startswith("lfr: deployment demo is running; API http://127.0.0.1:5555")
    assert lines[1] == "ALERT"


def test_an_alert_before_the_poll_still_follows_the_line() -> None:
    lines: list[str] = []
    deployment = DeploymentDouble()
    deployment.live.api_url = "http://127.0.0.1:5555"
    announce = Announcer(deployment, lines.append, as_json=True)  # type: ignore[arg-type]
    announce()  # what on_alert does first
    lines.append("ALERT")
    announce()
    assert [json.loads(lines[0])["event"], lines[1]] == ["serving", "ALERT"]
    assert len(lines) == 2


def test_a_start_that_fails_prints_no_line() -> None:
    lines: list[str] = []
    announce = Announcer(DeploymentDouble(fail=True), lines.append, as_json=True)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="an embedder did not start"):
        asyncio.run(announce.run())
    assert lines == []
