"""Every error the API answers is an RFC 9457 problem body (``application/problem+json``).

Handlers raise :class:`ProblemError` (or one of aiohttp's HTTP exceptions) and
:func:`problem_middleware` answers it as a :class:`lfr_actors.api.schemas.Problem`, so no
client ever sees an HTML page or a traceback. A write the store refuses for want of space
(or an I/O error) is answered 503 with the fix.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

from lfr_actors import logs
from lfr_actors.api.keys import STORE_HEALTH
from lfr_actors.api.schemas import Problem

PROBLEM_CONTENT_TYPE = "application/problem+json"

STORE_RETRY_AFTER_S = 30
"""The ``Retry-After`` a write refused for a full disk carries."""

_log = logs.get_logger(__name__)

_SQLITE_FULL = 13
_SQLITE_IOERR = 10
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def store_write_failure(exc: BaseException) -> str | None:
    """Why ``exc`` (or what caused it) means the store cannot be written, else None.

    "disk full" for SQLite's SQLITE_FULL or ENOSPC/EDQUOT, "I/O error" for SQLITE_IOERR.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            if isinstance(code, int):
                if code & 0xFF == _SQLITE_FULL:
                    return "disk full"
                if code & 0xFF == _SQLITE_IOERR:
                    return "I/O error"
            elif "database or disk is full" in str(current):
                return "disk full"
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return "disk full"
        current = current.__cause__ or current.__context__
    return None


class ProblemError(Exception):
    """An error answered as an RFC 9457 problem; ``extra`` adds extension members."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(request: web.Request, status: int, detail: str, **extra: Any) -> web.Response:
    """A JSON problem body: type, title, status, detail, instance (+ extensions)."""
    body = Problem(
        type="about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.path,
        **extra,
    )
    return web.json_response(
        body.model_dump(mode="json", exclude_unset=True),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
    )


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every error as a JSON problem; log unexpected ones without their data.

    A write the store refuses for want of space (or an I/O error) is answered 503 with
    the fix, and logged as one rate-limited line by :class:`StoreHealth`, not a traceback.
    """
    try:
        response = await handler(request)
    except ProblemError as exc:
        response = problem_response(request, exc.status, exc.detail, **exc.extra)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        default_text = f"{exc.status}: {exc.reason}"
        detail = exc.text if exc.text and exc.text != default_text else _default_detail(exc)
        response = problem_response(request, exc.status, detail)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        cause = store_write_failure(exc)
        if cause is None:
            _log.exception("request_failed", method=request.method, path=request.path)
            return problem_response(
                request, 500, "The server hit an unexpected error; it has been logged."
            )
        return _store_unwritable(request, cause)
    if request.method not in _READ_METHODS and 200 <= response.status < 300:
        health = request.app.get(STORE_HEALTH)
        if health is not None:
            health.note_success()
    return response


_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _store_unwritable(request: web.Request, cause: str) -> web.Response:
    health = request.app.get(STORE_HEALTH)
    route = request.match_info.route.name or request.path[:80]
    where = "the data folder"
    if health is not None:
        health.note_failure(cause, route)
        where = str(health.data_dir)
    fix = f"free space in {where}" if cause == "disk full" else f"check the disk holding {where}"
    response = problem_response(
        request,
        503,
        f"The store cannot be written: {cause}; {fix}, then retry.",
        store_error=cause,
    )
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
    return response


def _default_detail(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "No such resource; see the API's routes."
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"Method {exc.method} is not allowed here; allowed: {allowed}."
    return exc.reason
