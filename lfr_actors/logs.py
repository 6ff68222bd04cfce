"""structlog configured once per process: JSON off a terminal, readable on one.

Every process that logs (the CLI driver and each Ray worker) calls :func:`configure`
once at start-up; calling it again is harmless.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_configured = False


def configure(*, level: str | None = None, json: bool | None = None) -> None:
    """Configure structlog and the standard library's root logger for this process.

    ``json`` defaults to ``$LFR_LOG_FORMAT`` (json, console or auto); auto is JSON when
    stderr is not a terminal (a service, a container, CI, a Ray worker) and readable text
    on one. ``level`` defaults to ``$LFR_LOG_LEVEL`` or INFO. The kernel passes both
    variables to every Ray worker, so the topology's ``logging`` section applies there.
    """
    global _configured  # noqa: PLW0603 - one switch per process, by design
    level_name = (level or os.environ.get("LFR_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    if json is None:
        fmt = os.environ.get("LFR_LOG_FORMAT", "auto").lower()
        json = {"json": True, "console": False}.get(fmt, not sys.stderr.isatty())
    use_json = json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    _configured = True


def get_logger(name: str) -> Any:
    """A structlog logger bound with ``logger=name``."""
    return structlog.get_logger(name).bind(logger=name)
