"""Request and response bodies: a JSON body read against its model, a model sent as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from lfr_actors.api.problems import ProblemError
from lfr_actors.topology.schema import RULES_ERROR

_Body = TypeVar("_Body", bound=BaseModel)


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
            if error["type"] == RULES_ERROR:  # cross-field rules: each names its own field
                for rule in error["ctx"]["violations"]:
                    name = ".".join(str(part) for part in (*error["loc"], *rule.path))
                    invalid.append({"name": name, "reason": rule.message})
                continue
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
