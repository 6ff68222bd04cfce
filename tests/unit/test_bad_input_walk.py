"""Every route of the API, walked with malformed input: never a 500, always a problem.

DESIGN.md §4 asks for a clear error for every bad input. The role-matrix walk
(``test_auth.py``) calls each route with a good sample; this one sends each route what
a careless or hostile client might: bodies that are not JSON, not objects, missing or
mistyped fields, numbers JSON cannot hold, NUL and lone surrogates, huge strings, odd
path segments and nonsense query parameters. Each answer must be below 500 and, when it
refuses, an RFC 9457 problem document. The admin token is used so that the input, not
the role, is what is judged. Real aiohttp, real SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.api.auth import ROLE_MATRIX, route_key
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.doubles import make_sighting
from tests.api_helpers import PROBLEM
from tests.unit.test_auth import (
    TINY_JPEG,
    Samples,
    _placeholders,
    every_route,
    fake_enroller,
    status_source,
)

HUGE = "x" * 100_000
NOT_PLAIN = ("\x00", "\ud800", "stop\x1b[2J", "a\x7fb")
"""Text no field takes (lfr_actors.plaintext): a request carrying one must be refused."""
ODD_STRINGS = ["", " ", *NOT_PLAIN, "é" * 40, HUGE, "../../etc/passwd"]
ODD_VALUES: list[Any] = [None, True, [], {}, -1, 0, 10**30, 1.5, *ODD_STRINGS]
RAW_BODIES = [b"{", b"[]", b"null", b"42", b'"text"', b"\xff\xfe\x00", b"{}" * 5, b"{}"]
ODD_SEGMENTS = ["x" * 300, "..", "a b", "\x00", "é", "%", "x" * 4000]
ODD_QUERIES = [
    {"limit": "abc"},
    {"limit": "-1"},
    {"limit": "99999999999999999999999"},
    {"after": "1e3"},
    {"after": "-5"},
    {"cursor": "!!!not-a-cursor"},
    {"cursor": "x" * 5000},
    {"state": "\x00"},
    {"since": "yesterday"},
    {"deployment": "\ud800"},
    {"queue": "both"},
    {"zzz": "1"},
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.sqlite3"


@pytest.fixture
def alert_id(db: Path) -> str:
    event = Fuser("dep1", FusionConfig(threshold=0.5)).observe(make_sighting(1))
    assert event is not None
    with AlertStore(db) as store:
        store.apply(event)
    return event.alert.id


Variant = tuple[str, dict[str, Any], bool]
"""(label, request kwargs, whether the request must be refused)."""


def _json_variants(sample: dict[str, Any]) -> Iterator[Variant]:
    """A JSON body's variants: raw garbage, then each field spoiled."""
    for raw in RAW_BODIES:
        kwargs = {"data": raw, "headers": {"Content-Type": "application/json"}}
        yield f"raw {raw[:12]!r}", kwargs, False
    yield "form instead of JSON", {"data": {"a": "b"}}, False
    yield "an unknown field", {"json": {**sample, "surprise": 1}}, True
    for key in sample:
        yield f"{key} missing", {"json": {k: v for k, v in sample.items() if k != key}}, False
        for value in ODD_VALUES:
            refused = value in NOT_PLAIN or isinstance(value, bool)
            yield f"{key}={value!r:.30}", {"json": {**sample, key: value}}, refused
        for number in ("1e999", "NaN", "-Infinity"):
            text = json.dumps({**sample, key: "@@"}).replace('"@@"', number)
            kwargs = {"data": text.encode(), "headers": {"Content-Type": "application/json"}}
            yield f"{key}={number}", kwargs, True


def _form_variants() -> Iterator[Variant]:
    """The enrolment upload's variants: fields missing and spoiled."""
    fields = {
        "id": "NEW-X",
        "display_name": "sample",
        "category": "sample",
        "legal_basis": "sample",
        "source": "sample",
        "image_date": "2026-01-01",
    }

    def form(values: dict[str, str], image: bytes | str | None = TINY_JPEG) -> FormData:
        data = FormData()
        for name, value in values.items():
            data.add_field(name, value)
        if isinstance(image, bytes):
            data.add_field("image", image, filename="p.jpg")
        elif isinstance(image, str):
            data.add_field("image", image)
        return data

    yield "no image", {"data": form(fields, None)}, True
    yield "image as a text field", {"data": form(fields, "not a file")}, True
    yield "image not a JPEG", {"data": form(fields, b"GIF89a" + b"\x00" * 64)}, True
    yield "image empty", {"data": form(fields, b"")}, True
    yield "JSON instead of a form", {"json": fields}, True
    # A form field is UTF-8 on the wire, which cannot carry half a surrogate pair.
    texts = ("", "x" * 20_000, "../x", "2026-13-45", *(t for t in NOT_PLAIN if t != "\ud800"))
    for key in fields:
        yield f"{key} missing", {"data": form({k: v for k, v in fields.items() if k != key})}, False
        for value in texts:
            yield f"{key}={value!r:.30}", {"data": form({**fields, key: value})}, value in NOT_PLAIN


async def _check(
    client: Any, method: str, url: str, label: str, refused: bool = False, **kwargs: Any
) -> str | None:
    """None when the answer is acceptable, else what was wrong."""
    resp = await client.request(method, url, **kwargs)
    try:
        if refused and resp.status < 400:
            return f"{method} {url[:80]} [{label}]: {resp.status}, accepted"
        if resp.status >= 500:
            return f"{method} {url[:80]} [{label}]: {resp.status} {(await resp.text())[:300]}"
        if resp.status >= 400 and resp.content_type != PROBLEM:
            return f"{method} {url[:80]} [{label}]: {resp.status} answered {resp.content_type}"
        return None
    finally:
        resp.close()  # the alert stream would otherwise stay open


async def test_every_route_answers_malformed_input_with_a_problem_never_a_500(
    aiohttp_client: AiohttpClient, db: Path, alert_id: str
) -> None:
    app = create_app(db, status=status_source, heartbeat_s=0.1, enroller=fake_enroller)
    with Database(db) as store:
        secret = TokenStore(store).create("fuzzing admin", Role.ADMIN, by=Actor("cli:t")).secret
    client = await aiohttp_client(app, headers={"Authorization": f"Bearer {secret}"})
    samples = Samples(db, alert_id)
    wrong: list[str] = []
    calls = 0
    for method, name in every_route(client.app):
        resource = client.app.router[name]
        placeholders = _placeholders(resource.get_info().get("formatter", ""))
        good = samples.params(method, name, placeholders)
        url = str(resource.url_for(**good))
        if not ROLE_MATRIX[route_key(method, name)].public:
            # A parameter the route does not take is refused, never ignored: a misspelt
            # filter must not read as a filtered answer. Good path and body otherwise.
            calls += 1
            resp = await client.request(
                method, url, params={"surplus": "1"}, **samples.body(method, name)
            )
            named = []
            if resp.status == 400 and resp.content_type == PROBLEM:
                named = [
                    p["name"] for p in (await resp.json(content_type=PROBLEM))["invalid_params"]
                ]
            resp.close()
            if named != ["surplus"]:
                wrong.append(f"{method} {name}: ?surplus=1 answered {resp.status}, named {named}")
        for placeholder in placeholders:
            for segment in ODD_SEGMENTS:
                odd_url = str(resource.url_for(**{**good, placeholder: segment}))
                calls += 1
                body = samples.body(method, name)
                outcome = await _check(
                    client, method, odd_url, f"{placeholder}={segment!r:.20}", **body
                )
                wrong += [outcome] if outcome else []
        if method == "GET":
            for query in ODD_QUERIES:
                calls += 1
                outcome = await _check(client, method, url, f"query {query!r:.40}", params=query)
                wrong += [outcome] if outcome else []
            continue
        sample = samples.body(method, name)
        if "json" in sample:
            variants = list(_json_variants(sample["json"]))
        elif "data" in sample:
            variants = list(_form_variants())
        else:
            variants = [(f"raw {raw[:12]!r}", {"data": raw}, False) for raw in RAW_BODIES]
        for label, kwargs, refused in variants:
            # A route that changes its object's state gets a fresh one, as in the role walk.
            url = str(resource.url_for(**samples.params(method, name, placeholders)))
            calls += 1
            outcome = await _check(client, method, url, label, refused, **kwargs)
            wrong += [outcome] if outcome else []
    assert calls > 1000, calls  # the walk reached every route's variants
    assert not wrong, f"{len(wrong)} of {calls} answers were not problems:\n" + "\n".join(wrong)
