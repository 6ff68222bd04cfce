"""The OpenAPI document: served publicly, well-formed, and exactly the router's routes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from lfr_actors.api import audit as audit_api
from lfr_actors.api.adjudication import AdjudicationBody
from lfr_actors.api.alerts import ALERT_STATUSES, DEFAULT_PAGE, MAX_ID, MAX_PAGE
from lfr_actors.api.app import create_app
from lfr_actors.api.auth import ROLE_MATRIX, route_key
from lfr_actors.api.openapi import OpenApiError, build_document

pytestmark = pytest.mark.asyncio

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    return create_app(tmp_path / "alerts.db")


@pytest.fixture
async def document(aiohttp_client: AiohttpClient, app: web.Application) -> dict[str, Any]:
    client = await aiohttp_client(app)
    resp = await client.get("/v1/openapi.json")  # no token: the document is public
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return body


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
    }


def router_routes(app: web.Application) -> dict[tuple[str, str], web.AbstractRoute]:
    return {
        (r.method, r.resource.canonical): r
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


async def test_the_document_is_structurally_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert {"title", "version"} <= set(document["info"])
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    ids = []
    for path, item in document["paths"].items():
        assert path.startswith("/")
        assert set(item) <= METHODS
        placeholders = set(re.findall(r"{(\w+)}", path))
        for op in item.values():
            ids.append(op["operationId"])
            assert op["responses"], path
            for code, response in op["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", code), (path, code)
                assert response["description"]
            in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert in_path == placeholders, path
            for param in op.get("parameters", []):
                assert {"name", "in", "schema"} <= set(param)
                assert param["in"] in {"query", "header", "path", "cookie"}
                if param["in"] == "path":
                    assert param["required"] is True
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for ref in refs(document):  # every $ref resolves
        resolve(document, ref)
    jsonschema = pytest.importorskip("jsonschema")
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


async def test_the_document_lists_exactly_the_routers_routes(
    document: dict[str, Any], app: web.Application
) -> None:
    assert set(operations(document)) == set(router_routes(app))
    assert ("GET", "/v1/openapi.json") in operations(document)


async def test_each_operations_security_follows_the_role_matrix(
    document: dict[str, Any], app: web.Application
) -> None:
    routes = router_routes(app)
    for key, op in operations(document).items():
        route = routes[key]
        rule = ROLE_MATRIX[route_key(route.method, route.name)]
        assert op["operationId"] == route.name
        if rule.public:
            assert op["security"] == [], key
            assert op["x-public"] is True
            assert "401" not in op["responses"]
        else:
            assert op["security"] == [{"bearerAuth": []}], key
            assert op["x-roles"] == sorted(str(r) for r in rule.roles), key
            assert "admin" in op["x-roles"]
            for code in ("401", "403"):
                content = op["responses"][code]["content"]
                assert set(content) == {"application/problem+json"}


async def test_bodies_parameters_and_media_types(document: dict[str, Any]) -> None:
    ops = operations(document)
    schemas = document["components"]["schemas"]

    adjudicate = ops[("POST", "/v1/alerts/{alert_id}/adjudication")]
    body = adjudicate["requestBody"]["content"]["application/json"]["schema"]
    assert (
        resolve(document, body["$ref"])["properties"]
        == (
            AdjudicationBody.model_json_schema(ref_template="#/components/schemas/{model}")[
                "properties"
            ]
        )
    )
    assert schemas["Adjudication"]["additionalProperties"] is False
    assert set(schemas["Decision"]["enum"]) == {"match_confirmed", "not_a_match", "unsure"}

    params = {p["name"]: p["schema"] for p in ops[("GET", "/v1/alerts")]["parameters"]}
    assert set(params) == {
        "deployment",
        "status",
        "camera",
        "entry",
        "track_id",
        "since",
        "until",
        "limit",
        "cursor",
        "queue",
    }
    assert params["status"] == {"type": "string", "enum": list(ALERT_STATUSES)}
    assert params["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PAGE,
        "default": DEFAULT_PAGE,
    }
    assert params["cursor"] == {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    audit = {p["name"]: p["schema"] for p in ops[("GET", "/v1/audit")]["parameters"]}
    assert audit["limit"]["maximum"] == audit_api.MAX_PAGE
    assert audit["subject"]["maxLength"] == audit_api.MAX_SUBJECT_CHARS

    def media(key: tuple[str, str], code: str = "200") -> set[str]:
        return set(ops[key]["responses"][code]["content"])

    assert media(("GET", "/v1/alerts/stream")) == {"text/event-stream"}
    assert media(("GET", "/v1/alerts/{alert_id}/crop.jpg")) == {"image/jpeg"}
    assert media(("GET", "/metrics")) == {"text/plain"}
    entry = "/v1/deployments/{deployment_id}/entries/{entry_id}"
    assert media(("GET", f"{entry}/image")) == {"image/jpeg"}
    assert media(("GET", "/v1/deployments/{deployment_id}/report.html")) == {"text/html"}
    upload = ops[("POST", "/v1/deployments/{deployment_id}/entries")]["requestBody"]
    assert set(upload["content"]) == {"multipart/form-data"}
    assert "image" in schemas["EntryUpload"]["required"]
    assert schemas["NewDeployment"]["additionalProperties"] is False
    assert ops[("GET", "/v1/alerts")]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/AlertPage"}
    assert media(("GET", "/v1/alerts"), "400") == {"application/problem+json"}
    assert {"type", "title", "status", "detail"} <= set(schemas["Problem"]["required"])


async def test_a_route_without_a_description_is_refused(app: web.Application) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/secret", handler, name="secret")
    matrix = {**ROLE_MATRIX, ("GET", "secret"): ROLE_MATRIX[("GET", "alerts")]}
    with pytest.raises(OpenApiError, match="GET /v1/secret"):
        build_document(app.router.routes(), matrix=matrix)
