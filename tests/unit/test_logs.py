"""structlog set-up: loggers taken at import follow the configuration made later."""

from __future__ import annotations

import json

import pytest
import structlog

from lfr_actors import logs


def test_a_logger_taken_before_configure_obeys_it(capsys: pytest.CaptureFixture[str]) -> None:
    early = logs.get_logger("early")
    logs.configure(level="ERROR", json=True)
    early.warning("filtered_out")
    early.error("kept", camera="cam_1")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [json.loads(line) for line in captured.err.splitlines() if line.strip()]
    assert [x["event"] for x in lines] == ["kept"]
    assert lines[0]["logger"] == "early" and lines[0]["camera"] == "cam_1"


def test_events_are_captured_as_key_values() -> None:
    logs.configure(level="INFO")
    with structlog.testing.capture_logs() as events:
        logs.get_logger("t").info("batch_embedded", n=32, ms=4.1)
    assert events == [{"event": "batch_embedded", "n": 32, "ms": 4.1, "log_level": "info"}]
