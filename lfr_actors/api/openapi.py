"""``GET /v1/openapi.json``: the API's OpenAPI 3.1 document, generated from the code itself.

Nothing here describes a route or a body by hand. Each handler declares its operation
beside itself with :func:`operation` (summary, description, query parameters, request
body model, the response model or media type per status); :func:`build_document` walks
the application's router, reads each route's declaration, takes who may call it from
:data:`lfr_actors.api.auth.ROLE_MATRIX` (``security`` and ``x-roles``) and collects the
JSON Schema of every model named (:mod:`lfr_actors.api.schemas` for the answers, the
request models beside their handlers) into ``components``. A route without a declaration
is a programming error (:class:`OpenApiError`), so a new route cannot be served
undocumented, and a response's documented schema is the model that builds it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel

from lfr_actors.api.auth import ROLE_MATRIX, Rule, route_key
from lfr_actors.api.problems import PROBLEM_CONTENT_TYPE, ProblemError
from lfr_actors.api.schemas import Problem
from lfr_actors.errors import LfrError

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "bearerAuth"
_REF = "#/components/schemas/"
_ATTRIBUTE = "__lfr_operation__"

Json = dict[str, Any]
_Handler = TypeVar("_Handler", bound=Callable[..., Any])

PATH_PARAMETERS = {
    "alert_id": "The alert's id.",
    "deployment_id": "The deployment's id.",
    "entry_id": "The watchlist entry's id.",
}
"""Every path placeholder of the API and what it names."""

STRING: Json = {"type": "string"}
BINARY: Json = {"type": "string", "format": "binary"}


class OpenApiError(LfrError):
    """A route has no operation declared, or the declarations do not fit together."""


@dataclass(frozen=True)
class PageLimits:
    """A list route's ``limit`` parameter: its default and its largest value."""

    default: int
    maximum: int


@dataclass(frozen=True)
class Reply:
    """One documented answer: a model's JSON, or another media type with its schema."""

    description: str
    model: type[BaseModel] | None = None
    media: str = "application/json"
    schema: Json | None = None


@dataclass(frozen=True)
class Param:
    """One query (or header) parameter."""

    name: str
    schema: Json
    description: str
    location: Literal["query", "header"] = "query"


@dataclass(frozen=True)
class Body:
    """A request body: its model, media type and size limit."""

    model: type[BaseModel]
    max_bytes: int
    required: bool = True
    media: str = "application/json"


@dataclass(frozen=True)
class Operation:
    """What the document says about one handler."""

    summary: str
    responses: Mapping[int, Reply]
    description: str | None = None
    parameters: tuple[Param, ...] = ()
    body: Body | None = None


# -- what handlers declare -------------------------------------------------------------


def operation(
    summary: str,
    *,
    responses: Mapping[int, Reply],
    description: str | None = None,
    parameters: Iterable[Param] = (),
    body: Body | None = None,
) -> Callable[[_Handler], _Handler]:
    """Declare a handler's operation for the document (the handler itself is unchanged)."""
    declared = Operation(summary, dict(responses), description, tuple(parameters), body)

    def attach(handler: _Handler) -> _Handler:
        setattr(handler, _ATTRIBUTE, declared)
        return handler

    return attach


def declared_operation(handler: Callable[..., Any]) -> Operation | None:
    """The operation ``handler`` declared with :func:`operation`, or None."""
    found = getattr(handler, _ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


@web.middleware
async def declared_query_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse (400) any query parameter on a route whose operation declares none.

    A parameter the route does not take (a filter it does not have, a misspelt one) would
    otherwise be ignored, and the answer read as filtered when it is not. A route that
    declares parameters parses them itself and reports every problem at once, unknown
    names included (``tests/unit/test_bad_input_walk.py`` holds every route to it). Public
    routes (probes, the console page) are left alone.
    """
    match = request.match_info
    if request.query and match.http_exception is None:
        rule = ROLE_MATRIX.get(route_key(request.method, match.route.name))
        declared = declared_operation(match.handler)
        if (
            rule is not None
            and not rule.public
            and declared is not None
            and not any(p.location == "query" for p in declared.parameters)
        ):
            raise ProblemError(
                400,
                "This route takes no query parameters.",
                invalid_params=[
                    {"name": n, "reason": "unknown parameter"} for n in sorted(request.query)
                ],
            )
    return await handler(request)


def ok(model: type[BaseModel], description: str) -> Reply:
    """A JSON answer whose body is ``model``."""
    return Reply(description, model)


def problem(description: str) -> Reply:
    """An RFC 9457 problem answer."""
    return Reply(description, Problem, PROBLEM_CONTENT_TYPE)


def media(content_type: str, description: str, schema: Json = STRING) -> Reply:
    """An answer in another media type (a page, an image, a stream)."""
    return Reply(description, None, content_type, schema)


def no_content(description: str) -> Reply:
    """An answer with no body."""
    return Reply(description, None, "", None)


def body_problems(max_bytes: int) -> dict[int, Reply]:
    """The problems every route with a JSON body can answer (:func:`read_json_body`)."""
    return {
        400: problem("The body is not well-formed JSON."),
        413: problem(f"The body is over {max_bytes:,} bytes."),
        415: problem("The body is not declared as JSON."),
        422: problem("Invalid fields (all listed in invalid_params)."),
    }


def query(name: str, schema: Json, description: str) -> Param:
    """A query parameter."""
    return Param(name, schema, description)


def limit_param(limits: PageLimits) -> Param:
    """A list route's ``limit``."""
    return query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": limits.maximum, "default": limits.default},
        f"Page size, 1..{limits.maximum} (default {limits.default}).",
    )


# -- the walker ------------------------------------------------------------------------


def _ref(name: str) -> Json:
    return {"$ref": _REF + name}


def _component_name(model: type[BaseModel]) -> str:
    title = model.model_config.get("title")
    return title if isinstance(title, str) else model.__name__


class _Components:
    """The JSON Schemas of the models named, each once, with their nested definitions."""

    def __init__(self) -> None:
        self.schemas: dict[str, Json] = {}
        self._models: dict[str, type[BaseModel]] = {}

    def add(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Json:
        """Collect ``model``'s schema; return the reference to it."""
        name = _component_name(model)
        if self._models.setdefault(name, model) is not model:
            raise OpenApiError(f"two models are named {name!r} in the document")
        if name not in self.schemas:
            schema = model.model_json_schema(ref_template=_REF + "{model}", mode=mode)
            for nested, sub in {**schema.pop("$defs", {}), name: schema}.items():
                if self.schemas.setdefault(nested, sub) != sub:
                    raise OpenApiError(f"two different schemas are named {nested!r}")
        return _ref(name)


def _response(reply: Reply, components: _Components) -> Json:
    if reply.model is not None:
        schema = components.add(reply.model, "serialization")
    elif reply.schema is not None:
        schema = reply.schema
    else:
        return {"description": reply.description}
    return {"description": reply.description, "content": {reply.media: {"schema": schema}}}


def _parameters(path: str, declared: Operation) -> list[Json]:
    out = []
    for name in re.findall(r"{(\w+)}", path):
        if name not in PATH_PARAMETERS:
            raise OpenApiError(f"path {path}: placeholder {name!r} is not in PATH_PARAMETERS")
        out.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": dict(STRING),
                "description": PATH_PARAMETERS[name],
            }
        )
    for param in declared.parameters:
        out.append(
            {
                "name": param.name,
                "in": param.location,
                "required": False,
                "schema": param.schema,
                "description": param.description,
            }
        )
    return out


def _operation(name: str, path: str, declared: Operation, components: _Components) -> Json:
    out: Json = {"operationId": name, "summary": declared.summary}
    if declared.description is not None:
        out["description"] = declared.description
    parameters = _parameters(path, declared)
    if parameters:
        out["parameters"] = parameters
    body = declared.body
    if body is not None:
        limit = f"at most {body.max_bytes:,} bytes."
        out["requestBody"] = {
            "required": body.required,
            "description": limit.capitalize() if body.required else f"Optional; {limit}",
            "content": {body.media: {"schema": components.add(body.model, "validation")}},
        }
    out["responses"] = {
        str(status): _response(reply, components)
        for status, reply in sorted(declared.responses.items())
    }
    return out


def _security(operation: Json, rule: Rule, components: _Components) -> None:
    if rule.public:
        operation["security"] = []
        operation["x-public"] = True
        operation["x-roles"] = []
        return
    operation["security"] = [{SECURITY_SCHEME: []}]
    operation["x-roles"] = sorted(str(r) for r in rule.roles)
    responses = operation["responses"]
    if "400" not in responses and not any(
        p.get("in") == "query" for p in operation.get("parameters", [])
    ):  # declared_query_middleware
        responses["400"] = _response(
            problem("A query parameter (this route takes none)."), components
        )
    responses["401"] = _response(
        problem("No token, or a malformed, unknown or revoked one."), components
    )
    responses["403"] = _response(problem("The token's role may not call this route."), components)


def build_document(
    routes: Iterable[web.AbstractRoute],
    *,
    matrix: Mapping[tuple[str, str], Rule] = ROLE_MATRIX,
) -> Json:
    """The OpenAPI 3.1 document of ``routes`` (HEAD, served for every GET, is implied).

    Raises :class:`OpenApiError` listing every route that has no name, no declared
    operation (:func:`operation`), or no entry in ``matrix``.
    """
    components = _Components()
    components.add(Problem, "serialization")
    paths: dict[str, Json] = {}
    missing = []
    for route in routes:
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        key = route_key(route.method, route.name)
        declared = declared_operation(route.handler)
        if route.name is None or declared is None or key not in matrix:
            missing.append(f"{route.method} {path} (name {route.name!r})")
            continue
        built = _operation(route.name, path, declared, components)
        _security(built, matrix[key], components)
        paths.setdefault(path, {})[route.method.lower()] = built
    if missing:
        raise OpenApiError(
            "routes without a declared operation (lfr_actors.api.openapi.operation beside "
            "the handler) or a ROLE_MATRIX entry: " + "; ".join(missing)
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "lfr-actors alert API",
            "version": "1",
            "description": "Alerts of a live facial recognition deployment. Every error "
            "is an RFC 9457 problem (application/problem+json).",
        },
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `lfr tokens create`; its role must be in "
                    "the operation's x-roles.",
                }
            },
        },
    }


@operation(
    "This document.",
    responses={200: media("application/json", "The OpenAPI 3.1 document.", {"type": "object"})},
)
async def openapi(request: web.Request) -> web.Response:
    """The API's OpenAPI 3.1 document: the router, the handlers' declarations, the roles."""
    return web.json_response(build_document(request.app.router.routes()))
