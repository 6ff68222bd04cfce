"""What every module of the API shares: problem errors, the stores' app keys, JSON bodies.

Every error leaves the API as an RFC 9457 problem body (``application/problem+json``):
handlers raise :class:`ProblemError` (or one of aiohttp's HTTP exceptions) and
:func:`problem_middleware` answers it, so no client ever sees an HTML page or a traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from lfr_actors import logs
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
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extra,
    }
    return web.json_response(body, status=status, content_type=PROBLEM_CONTENT_TYPE)


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every error as a JSON problem; log unexpected ones without their data."""
    try:
        return await handler(request)
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
    except Exception:
        _log.exception("request_failed", method=request.method, path=request.path)
        return problem_response(
            request, 500, "The server hit an unexpected error; it has been logged."
        )


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


def _too_large(size: int, max_bytes: int) -> ProblemError:
    return ProblemError(
        413,
        f"The body is {size:,} bytes or more; this route takes at most {max_bytes:,} bytes.",
        max_bytes=max_bytes,
    )
