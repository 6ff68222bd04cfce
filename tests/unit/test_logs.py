"""structlog set-up: loggers taken at import follow the configuration made later."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from lfr_actors import logs
from lfr_actors.kernel import kernel


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


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("fmt", "tty", "decided"),
    [
        ("auto", True, "console"),
        ("auto", False, "json"),
        (None, True, "console"),
        ("json", True, "json"),
        ("console", False, "console"),
        ("CONSOLE", False, "console"),
    ],
)
def test_the_driver_decides_auto_by_its_own_stream(
    fmt: str | None, tty: bool, decided: str
) -> None:
    assert logs.decided_format(fmt, _Stream(tty)) == decided


def test_workers_get_the_format_the_driver_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    """start_ray passes a decided format, never auto (a worker's stderr is never a tty)."""
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(kernel.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(kernel.ray, "init", lambda **options: calls.append(options))
    monkeypatch.setattr(kernel, "check_reachable", lambda address: None)
    monkeypatch.setattr(logs.sys, "stderr", _Stream(True))
    kernel.start_ray("ray://head:10001", "ns", env_vars={"LFR_LOG_FORMAT": "auto"})
    assert calls[0]["runtime_env"] == {"env_vars": {"LFR_LOG_FORMAT": "console"}}
    monkeypatch.setattr(logs.sys, "stderr", _Stream(False))
    kernel.start_ray("ray://head:10001", "ns", env_vars={"LFR_LOG_FORMAT": "auto"})
    assert calls[1]["runtime_env"] == {"env_vars": {"LFR_LOG_FORMAT": "json"}}


def test_a_cached_logger_writes_to_the_stderr_of_the_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loggers are cached on first use; one that kept its first stderr would write to a
    # closed file once that stream was swapped out and closed.
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logs.configure(level="INFO", json=True)
    log = logs.get_logger("test.swap")
    log.info("before_swap")
    monkeypatch.setattr("sys.stderr", second)
    first.close()
    log.info("after_swap", n=2)
    assert json.loads(second.getvalue())["event"] == "after_swap"


def test_configure_reaches_a_logger_already_used(capsys: pytest.CaptureFixture[str]) -> None:
    # As when lfr runs in-process twice: the first run's level must not stick.
    logs.configure(level="INFO", json=True)
    log = logs.get_logger("test.reconfigure")
    log.info("shown_at_info")
    logs.configure(level="WARNING", json=True)
    log.info("hidden_at_warning")
    log.warning("shown_at_warning")
    events = [json.loads(x)["event"] for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert events == ["shown_at_info", "shown_at_warning"]
