"""Bearer tokens and the role matrix: every route of the app, every way to be refused."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from aiohttp import FormData, web
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.api.auth import (
    ROLE_MATRIX,
    RoleMatrixError,
    check_role_matrix,
    roles,
    route_key,
)
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled
from lfr_actors.store.tokens import (
    LOCAL_TOKEN_NAME,
    Role,
    TokenStore,
    UnknownTokenError,
    check_token_name,
    issue_local_token,
    revoke_local_tokens,
    secret_digest,
)
from lfr_actors.testing.declarations import make_deployment, make_entry
from lfr_actors.testing.doubles import make_sighting
from tests.api_helpers import problem
from tests.calibration_samples import sample_calibration

OPERATOR = Actor("cli:test")
TINY_JPEG = bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
"""A real (blank) JPEG: uploads are checked for an image header before the enroller."""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.sqlite3"


@pytest.fixture
def alert_id(db: Path) -> str:
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    event = fuser.observe(make_sighting(1))
    assert event is not None
    with AlertStore(db) as store:
        store.apply(event)
    return event.alert.id


@pytest.fixture
def secrets_by_role(db: Path) -> dict[Role, str]:
    with Database(db) as store:
        tokens = TokenStore(store)
        return {role: tokens.create(f"holder {role}", role, by=OPERATOR).secret for role in Role}


@pytest.fixture
def revoked_secret(db: Path) -> str:
    with Database(db) as store:
        tokens = TokenStore(store)
        issued = tokens.create("former officer", Role.ADMIN, by=OPERATOR)
        tokens.revoke(issued.record.id, by=OPERATOR)
    return issued.secret


ANY_TOKEN = frozenset(
    {
        ("GET", "whoami"),
        ("GET", "deployments"),
        ("GET", "deployment"),
        ("GET", "entries"),
        ("GET", "entry"),
        ("GET", "policy"),
    }
)
"""Routes open to every role on purpose: who the caller is, and a deployment's authority
and its watchlist's metadata (no image, no embedding), for every officer to see, and the
store's threshold policy."""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def status_source() -> dict[str, Any]:
    return {"deployment": "dep1"}


def fake_enroller(data: bytes, name: str) -> Enrolled:
    """Enrolment without models: the role matrix is under test here, not the photo."""
    return Enrolled(
        image=data,
        image_type="image/jpeg",
        embeddings=np.ones((1, 128), dtype=np.float32),
        quality={},
    )


class Samples:
    """Path parameters and bodies for walking the routes, over objects seeded in the store.

    A route that changes its object's state (close, approve, delete, enrol) gets a fresh
    object for every call, so each allowed role meets the object as the first caller did.
    A new route with a parameter or a body fails the walk until it has a sample here.
    """

    FRESH_DEPLOYMENT = frozenset({("POST", "deployment_close")})
    FRESH_ENTRY = frozenset({("POST", "entry_approve"), ("DELETE", "entry_delete")})
    ACTIVE_ENTRY = frozenset({("GET", "entry_image")})
    """Routes walked on an approved entry: a pending entry's photo has its own rule
    (test_a_pending_entrys_photo_is_for_those_who_enrol_and_approve)."""
    BODIES: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {
        ("POST", "alert_adjudication"): {"decision": "not_a_match"},
        ("POST", "alert_hold"): {"reason": "case 42: disclosure"},
        ("DELETE", "alert_release"): {"reason": "case closed"},
        ("POST", "deployment_close"): {"reason": "operation over"},
        ("DELETE", "deployment_calibration_remove"): {"reason": "another population"},
        ("POST", "deployment_threshold"): {"threshold": 0.5, "reason": "fewer false alerts"},
        ("PUT", "deployment_calibration"): sample_calibration(),
        ("DELETE", "entry_delete"): {"reason": "arrested"},
        ("PUT", "monitoring_categories_set"): {
            "categories": {"perceived_sex": ["female", "male"]},
            "reason": "equality monitoring",
        },
        # The samples' deployments use 0.6, so this policy (the default's values) holds.
        ("PUT", "policy_set"): {"deployment_max": 0.6, "reason": "the model's calibration"},
    }
    NO_BODY = frozenset({("POST", "entry_approve")})

    def __init__(self, db: Path, alert_id: str) -> None:
        self.db = db
        self.alert_id = alert_id
        self.made = 0
        self.deployment_id = self.deployment()
        self.entry_id = self.entry(self.deployment_id)
        self.active_entry_id = self.entry(self.deployment_id)
        self.test_subject_id = self._name("TS-")
        with Database(self.db) as store:
            Deployments(store).approve_entry(
                self.deployment_id, self.active_entry_id, actor=Actor("Insp Adams")
            )
            Deployments(store).add_entry(
                self.deployment_id,
                make_entry(self.test_subject_id, consent_ref="CONSENT-1"),
                fake_enroller(b"\xff\xd8\xff fake", ""),
                actor=OPERATOR,
                approved_by=Actor("Insp Adams"),
            )

    def _name(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}{self.made}"

    def window(self) -> tuple[float, float]:
        now = time.time()
        return now - 3600.0, now + 3600.0

    def deployment(self) -> str:
        deployment_id = self._name("dep-")
        start, end = self.window()
        with Database(self.db) as store:
            Deployments(store).create(
                make_deployment(
                    deployment_id, start, end, authorised_by="Supt Baker", location="Stratford"
                ),
                actor=OPERATOR,
            )
        return deployment_id

    def entry(self, deployment_id: str) -> str:
        """A pending entry added by the operator (so no token holder added it)."""
        entry_id = self._name("E-")
        new = make_entry(entry_id, source="custody")
        with Database(self.db) as store:
            Deployments(store).add_entry(
                deployment_id, new, fake_enroller(b"\xff\xd8\xff fake", ""), actor=OPERATOR
            )
        return entry_id

    def params(self, method: str, name: str, placeholders: list[str]) -> dict[str, str]:
        deployment_id = self.deployment_id
        if (method, name) in self.FRESH_DEPLOYMENT:
            deployment_id = self.deployment()
        entry_id = self.entry_id
        if (method, name) in self.FRESH_ENTRY:
            entry_id = self.entry(deployment_id)
        if (method, name) in self.ACTIVE_ENTRY:
            entry_id = self.active_entry_id
        known = {"alert_id": self.alert_id, "deployment_id": deployment_id, "entry_id": entry_id}
        for placeholder in placeholders:
            assert placeholder in known, f"add a sample value for {{{placeholder}}} to Samples"
        return {p: known[p] for p in placeholders}

    def body(self, method: str, name: str) -> dict[str, Any]:
        """The request's body as keyword arguments of ``client.request``."""
        key = (method, name)
        if method == "GET" or key in self.NO_BODY:
            return {}
        if key == ("POST", "entry_create"):
            form = FormData()
            form.add_field("id", self._name("NEW-"))
            for field in ("display_name", "category", "legal_basis", "source"):
                form.add_field(field, "sample")
            form.add_field("image_date", "2026-01-01")
            form.add_field("image", TINY_JPEG, filename="p.jpg")
            return {"data": form}
        if key == ("POST", "deployment_create"):
            start, end = self.window()
            return {
                "json": {
                    "id": self._name("new-"),
                    "authorised_by": "Supt Baker",
                    "purpose": "testing",
                    "location": "Stratford",
                    "start": datetime.fromtimestamp(start, UTC).isoformat(),
                    "end": datetime.fromtimestamp(end, UTC).isoformat(),
                    "threshold": 0.6,
                }
            }
        if key == ("POST", "test_pass_record"):
            passed_at = datetime.fromtimestamp(time.time(), UTC).isoformat()
            return {
                "json": {
                    "entry_id": self.test_subject_id,
                    "camera_id": "cam-1",
                    "passed_at": passed_at,
                }
            }
        assert key in self.BODIES, f"add a sample body for {method} {name} to Samples.BODIES"
        return {"json": self.BODIES[key]}


def every_route(app: web.Application) -> Iterator[tuple[str, str]]:
    """(method, matrix name) for every route in the router (HEAD is covered by GET)."""
    for route in app.router.routes():
        if route.method != "HEAD":
            yield route.method, route.name or ""


def _placeholders(formatter: str) -> list[str]:
    return [part.split("}")[0] for part in formatter.split("{")[1:]]


async def call(
    client: Any, samples: Samples, method: str, name: str, headers: dict[str, str]
) -> Any:
    resource = client.app.router[name]
    placeholders = _placeholders(resource.get_info().get("formatter", ""))
    url = str(resource.url_for(**samples.params(method, name, placeholders)))
    return await client.request(method, url, headers=headers, **samples.body(method, name))


async def test_every_route_is_guarded_by_the_role_matrix(
    aiohttp_client: AiohttpClient,
    db: Path,
    alert_id: str,
    secrets_by_role: dict[Role, str],
    revoked_secret: str,
) -> None:
    app = create_app(db, status=status_source, heartbeat_s=0.1, enroller=fake_enroller)
    client = await aiohttp_client(app)
    samples = Samples(db, alert_id)
    routes = list(every_route(client.app))
    assert {route_key(m, n) for m, n in routes} == set(ROLE_MATRIX)
    for method, name in routes:
        rule = ROLE_MATRIX[route_key(method, name)]
        if rule.public:
            resp = await call(client, samples, method, name, {})
            assert resp.status in (200, 204), (method, name)  # 204: the empty favicon
            continue
        where = f"{method} {name}"

        body = await problem(await call(client, samples, method, name, {}), 401)
        assert "Authorization: Bearer" in body["detail"], where
        for headers in (
            bearer("lfr_not-a-token-anyone-was-given"),
            bearer(revoked_secret),
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer"},
        ):
            resp = await call(client, samples, method, name, headers)
            await problem(resp, 401)
            assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="lfr"'), where

        refused = [r for r in Role if r not in rule.roles]
        if (method, name) in ANY_TOKEN:
            assert not refused, f"{where}: narrowed; remove it from ANY_TOKEN"
        else:
            assert refused, f"{where}: every role may call it; say so with a narrower rule"
        for role in refused:
            resp = await call(client, samples, method, name, bearer(secrets_by_role[role]))
            body = await problem(resp, 403)
            assert body["allowed_roles"] == sorted(str(r) for r in rule.roles), where
            assert body["role"] == str(role)
            for allowed in rule.roles:
                assert str(allowed) in body["detail"]
            assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]

        assert Role.ADMIN in rule.roles, f"{where}: admin may call every route"
        for role in sorted(rule.roles):
            resp = await call(client, samples, method, name, bearer(secrets_by_role[role]))
            assert resp.status < 400, (where, role, resp.status, await resp.text())
            resp.close()  # the alert stream would otherwise stay open


async def test_the_401s_say_what_is_wrong(
    aiohttp_client: AiohttpClient, db: Path, revoked_secret: str
) -> None:
    client = await aiohttp_client(create_app(db))
    resp = await client.get("/v1/alerts")
    await problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="lfr"'
    resp = await client.get("/v1/alerts", headers={"Authorization": "Token abc"})
    body = await problem(resp, 401)
    assert "'Bearer <token>'" in body["detail"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="lfr", error="invalid_request"'
    resp = await client.get("/v1/alerts", headers=bearer("lfr_unknown"))
    body = await problem(resp, 401)
    assert body["detail"] == "The token is not known."
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="lfr", error="invalid_token"'
    body = await problem(await client.get("/v1/alerts", headers=bearer(revoked_secret)), 401)
    assert body["detail"] == "The token was revoked."


async def test_healthz_is_public_and_unknown_routes_need_a_token(
    aiohttp_client: AiohttpClient, db: Path, secrets_by_role: dict[Role, str]
) -> None:
    client = await aiohttp_client(create_app(db))
    assert (await client.get("/healthz")).status == 200
    await problem(await client.get("/no/such/route"), 401)
    await problem(await client.post("/v1/alerts"), 401)
    viewer = bearer(secrets_by_role[Role.WATCHLIST_MANAGER])
    await problem(await client.get("/no/such/route", headers=viewer), 404)
    await problem(await client.post("/v1/alerts", headers=viewer), 405)


async def test_a_revoked_token_is_refused_at_once(
    aiohttp_client: AiohttpClient, db: Path, alert_id: str
) -> None:
    with Database(db) as store:
        issued = TokenStore(store).create("PC Smith", Role.VIEWER, by=OPERATOR)
    client = await aiohttp_client(create_app(db))
    assert (await client.get(f"/v1/alerts/{alert_id}", headers=bearer(issued.secret))).status == 200
    with Database(db) as store:  # `lfr tokens revoke` while the API runs
        TokenStore(store).revoke(issued.record.id, by=OPERATOR)
    resp = await client.get(f"/v1/alerts/{alert_id}", headers=bearer(issued.secret))
    await problem(resp, 401)


async def test_a_route_missing_from_the_matrix_stops_the_app_from_building(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    app = create_app(db)
    app.router.add_get("/v1/forgotten", handler, name="forgotten")
    app.router.add_post("/v1/anonymous", handler)
    with pytest.raises(RoleMatrixError) as caught:
        check_role_matrix(app.router.routes())
    message = str(caught.value)
    assert "GET /v1/forgotten (name 'forgotten') has no entry in ROLE_MATRIX" in message
    assert "POST /v1/anonymous has no name" in message
    # Added after create_app: refused when the app starts.
    with pytest.raises(RoleMatrixError, match="forgotten"):
        await aiohttp_client(app)


def test_a_matrix_entry_without_a_route_is_an_error(db: Path) -> None:
    app = create_app(db)
    stale = {**ROLE_MATRIX, ("DELETE", "alert"): roles(Role.AUDITOR)}
    with pytest.raises(RoleMatrixError, match=r"\('DELETE', 'alert'\) matches no route"):
        check_role_matrix(app.router.routes(), stale)


async def test_auth_off_admits_everyone_as_anonymous(
    aiohttp_client: AiohttpClient, db: Path, alert_id: str
) -> None:
    client = await aiohttp_client(create_app(db, auth=False))
    assert (await client.get(f"/v1/alerts/{alert_id}")).status == 200
    resp = await client.post(f"/v1/alerts/{alert_id}/adjudication", json={"decision": "unsure"})
    assert resp.status == 201
    assert (await resp.json())["officer"] == "anonymous (auth off)"


# -- the token store ------------------------------------------------------------------------


def test_only_the_digest_is_stored_and_creation_is_audited(db: Path) -> None:
    with Database(db) as store:
        issued = TokenStore(store, clock=lambda: 1_700_000_000.0).create(
            "  PC Smith ", "adjudicator", by=OPERATOR
        )
        assert issued.secret.startswith("lfr_") and len(issued.secret) == 4 + 43
        assert issued.secret not in repr(issued)
        record = issued.record
        assert (record.name, record.role, record.created_by) == (
            "PC Smith",
            Role.ADJUDICATOR,
            "cli:test",
        )
        assert TokenStore(store).lookup(issued.secret) == record
        assert TokenStore(store).lookup(issued.secret + "x") is None
        entries = AuditLog(store).page().entries
        assert [(e.action, e.subject, e.actor) for e in entries] == [
            ("token.create", record.id, "cli:test")
        ]
        assert entries[0].details_map() == {
            "name": "PC Smith",
            "role": "adjudicator",
            "internal": False,
        }
    raw = sqlite3.connect(db)
    try:
        stored = raw.execute("SELECT secret_sha256 FROM api_tokens").fetchall()
        assert stored == [(secret_digest(issued.secret),)]
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    content = b"".join(p.read_bytes() for p in db.parent.glob("alerts.sqlite3*"))
    assert issued.secret.encode() not in content


def test_revoking_is_audited_once_and_unknown_ids_are_refused(db: Path) -> None:
    with Database(db) as store:
        tokens = TokenStore(store)
        issued = tokens.create("PC Smith", Role.VIEWER, by=OPERATOR)
        revoked = tokens.revoke(issued.record.id, by=Actor("cli:sergeant"))
        assert not revoked.active and revoked.revoked_by == "cli:sergeant"
        assert tokens.revoke(issued.record.id, by=OPERATOR) == revoked  # no second entry
        with pytest.raises(UnknownTokenError, match="no token with id 'nope'"):
            tokens.revoke("nope", by=OPERATOR)
        actions = [e.action for e in AuditLog(store).page().entries]
        assert actions == ["token.create", "token.revoke"]
        assert tokens.get(issued.record.id) == revoked


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "empty"), ("   ", "empty"), ("x" * 81, "at most 80"), ("a\nb", "control"),
     ("System", "reserved")],
)  # fmt: skip
def test_token_names_are_checked(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_token_name(name)


def test_a_failed_audit_write_leaves_no_token(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("disk full")

    monkeypatch.setattr("lfr_actors.store.tokens.append_entry", broken)
    with Database(db) as store:
        with pytest.raises(sqlite3.OperationalError):
            TokenStore(store).create("PC Smith", Role.VIEWER, by=OPERATOR)
        assert TokenStore(store).records() == []


def test_issue_local_token_replaces_the_previous_runs(db: Path) -> None:
    first = issue_local_token(db).secret
    second = issue_local_token(db).secret
    with Database(db) as store:
        tokens = TokenStore(store)
        old, new = tokens.lookup(first), tokens.lookup(second)
        assert old is not None and new is not None
        assert not old.active and new.active
        assert (new.name, new.role, new.internal, new.created_by) == (
            LOCAL_TOKEN_NAME,
            Role.ADMIN,
            True,
            "system",
        )
        actions = [(e.action, e.actor) for e in AuditLog(store).page().entries]
    assert actions == [
        ("token.create", "system"),
        ("token.revoke", "system"),
        ("token.create", "system"),
    ]
    assert revoke_local_tokens(db) == 1
    with Database(db) as store:
        found = TokenStore(store).lookup(second)
        assert found is not None and not found.active


def test_an_operators_token_is_not_touched_by_local_token_rotation(db: Path) -> None:
    with Database(db) as store:
        mine = TokenStore(store).create(LOCAL_TOKEN_NAME, Role.VIEWER, by=OPERATOR)
    issue_local_token(db)
    with Database(db) as store:
        found = TokenStore(store).lookup(mine.secret)
        assert found is not None and found.active and not found.internal


async def test_a_pending_entrys_photo_is_for_those_who_enrol_and_approve(
    aiohttp_client: AiohttpClient, db: Path, alert_id: str, secrets_by_role: dict[Role, str]
) -> None:
    """Officers compare live faces only with searched (approved) entries' photos."""
    client = await aiohttp_client(create_app(db, status=status_source, enroller=fake_enroller))
    samples = Samples(db, alert_id)
    pending = client.app.router["entry_image"].url_for(
        deployment_id=samples.deployment_id, entry_id=samples.entry_id
    )
    active = client.app.router["entry_image"].url_for(
        deployment_id=samples.deployment_id, entry_id=samples.active_entry_id
    )
    for role in Role:
        resp = await client.get(pending, headers=bearer(secrets_by_role[role]))
        if role in (Role.WATCHLIST_MANAGER, Role.AUTHORISER, Role.ADMIN):
            assert resp.status == 200, role
            continue
        body = await problem(resp, 403)
        if role is Role.AUDITOR:  # refused by the matrix, whatever the entry's state
            assert "auditor" not in body["allowed_roles"]
            continue
        assert body["allowed_roles"] == ["admin", "authoriser", "watchlist-manager"], role
        assert body["detail"].startswith("The photo of an entry not yet approved needs")
        assert (await client.get(active, headers=bearer(secrets_by_role[role]))).status == 200
    with Database(db) as store:
        views = [e for e in AuditLog(store).page().entries if e.action == "entry.view"]
    assert len(views) == 5  # the three pending and two active photos shown, no refusal


async def test_auditors_see_who_did_what_not_the_faces(
    aiohttp_client: AiohttpClient, db: Path, alert_id: str, secrets_by_role: dict[Role, str]
) -> None:
    client = await aiohttp_client(create_app(db, status=status_source))
    auditor = bearer(secrets_by_role[Role.AUDITOR])
    assert (await client.get(f"/v1/alerts/{alert_id}", headers=auditor)).status == 200
    body = await problem(await client.get(f"/v1/alerts/{alert_id}/crop.jpg", headers=auditor), 403)
    assert body["allowed_roles"] == ["adjudicator", "admin", "viewer"]
    for role in (Role.VIEWER, Role.ADJUDICATOR):
        resp = await client.get(
            f"/v1/alerts/{alert_id}/crop.jpg", headers=bearer(secrets_by_role[role])
        )
        assert resp.status == 200 and resp.content_type == "image/jpeg"
