"""What every module of the API shares: problem errors, the stores' app keys, JSON bodies.

Every error leaves the API as an RFC 9457 problem body (``application/problem+json``):
handlers raise :class:`ProblemError` (or one of aiohttp's HTTP exceptions) and
:func:`problem_middleware` answers it, so no client ever sees an HTML page or a traceback.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from lfr_actors import logs
from lfr_actors.api.schemas import Problem
from lfr_actors.store.adjudications import Adjudications
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import AuditLog
from lfr_actors.store.tokens import TokenStore

PROBLEM_CONTENT_TYPE = "application/problem+json"

STORE = web.AppKey("store", AlertStore)
"""The alert store, read-only (the alert actor writes alerts)."""
TOKENS = web.AppKey("tokens", TokenStore)
"""API tokens, over the API's writing connection."""
AUDIT = web.AppKey("audit", AuditLog)
"""The audit log, over the API's writing connection."""
ADJUDICATIONS = web.AppKey("adjudications", Adjudications)
"""Adjudications, over the API's writing connection."""

_log = logs.get_logger(__name__)
_Body = TypeVar("_Body", bound=BaseModel)

STORE_RETRY_AFTER_S = 30
"""The ``Retry-After`` a write refused for a full disk carries."""
STORE_LOG_EVERY_S = 60.0
"""At most one error line per this many seconds while the store cannot be written."""
STORE_FREE_MARGIN_BYTES = 1 << 20
"""Free space in the data folder's file system at which the store counts as writable again."""


class StoreHealth:
    """Whether the API's own writes to the store fail for want of space (or I/O).

    A write that fails so is answered 503 and noted here; the error is logged as one line
    (no traceback) at most once per :data:`STORE_LOG_EVERY_S`, with the number of refused
    writes since the last line. The store counts as writable again after the next write
    that succeeds, or once the data folder's file system has
    :data:`STORE_FREE_MARGIN_BYTES` free (checked by the status gatherer, so that
    readiness recovers without waiting for a client to write).
    """

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.failing: str | None = None
        """The cause ("disk full", "I/O error") while writes fail, else None."""
        self.refused = 0
        """Writes refused since the store stopped being writable."""
        self._logged_at: float | None = None
        self._suppressed = 0
        self._lock = threading.Lock()

    def note_failure(self, cause: str, route: str) -> None:
        """A write failed for ``cause``: remember it, log one line now and then."""
        with self._lock:
            self.failing = cause
            self.refused += 1
            now = self.clock()
            if self._logged_at is not None and now - self._logged_at < STORE_LOG_EVERY_S:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._logged_at = self._suppressed, 0, now
        _log.error(
            "store_write_failed",
            cause=cause,
            route=route,
            data_dir=str(self.data_dir),
            refused_since_last_line=suppressed,
            fix=f"free space in {self.data_dir}",
        )

    def note_success(self) -> None:
        """A write succeeded: the store is writable again (logged once)."""
        if self.failing is None:
            return
        with self._lock:
            cause, refused = self.failing, self.refused
            self.failing, self.refused, self._logged_at, self._suppressed = None, 0, None, 0
        if cause is not None:
            _log.warning("store_writable_again", after=cause, refused=refused)

    def recheck(self) -> None:
        """While failing for a full disk: writable again once space has come back."""
        if self.failing != "disk full":
            return
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return
        if free >= STORE_FREE_MARGIN_BYTES:
            self.note_success()


STORE_HEALTH = web.AppKey("store_health", StoreHealth)
"""The API's own view of whether the store can be written."""

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


async def read_json_body(request: web.Request, model: type[_Body], *, max_bytes: int) -> _Body:
    """The request's JSON body validated as ``model``, or the problem that says why not.

    413 when the body is larger than ``max_bytes`` (checked before reading when the client
    declares a length, and while reading when it does not), 415 when it is not declared as
    JSON, 400 when it is not well-formed JSON, 422 with every bad field's path when it does
    not fit ``model`` (unknown fields included, types never coerced).
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large(declared, max_bytes)
    if request.content_type != "application/json":
        raise ProblemError(
            415,
            f"The body must be JSON (Content-Type: application/json), not "
            f"{request.content_type!r}.",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        syntax = [e for e in errors if e["type"] == "json_invalid"]
        if syntax:
            raise ProblemError(
                400, f"The body is not well-formed JSON: {syntax[0]['msg']}."
            ) from None
        fields = ", ".join(sorted(model.model_fields))
        invalid = []
        for error in errors:
            name = ".".join(str(part) for part in error["loc"]) or "(body)"
            reason = error["msg"]
            if error["type"] == "extra_forbidden":
                reason = f"unknown field; the fields are: {fields}"
            invalid.append({"name": name, "reason": reason})
        raise ProblemError(422, "The body has invalid fields.", invalid_params=invalid) from None


def model_response(
    body: BaseModel, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``body`` (a response model) as the JSON answer, with ``status`` and ``headers``."""
    return web.json_response(body.model_dump(mode="json"), status=status, headers=headers)


def _too_large(size: int, max_bytes: int) -> ProblemError:
    return ProblemError(
        413,
        f"The body is {size:,} bytes or more; this route takes at most {max_bytes:,} bytes.",
        max_bytes=max_bytes,
    )
