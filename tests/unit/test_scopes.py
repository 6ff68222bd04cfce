"""Tokens scoped to deployments: the store, the CLI, and every route walked with scopes.

A token scoped to the deployment a route names is admitted as its role allows; a token
of the same role scoped to another deployment meets that deployment, its entries and its
alerts exactly as unknown ids (the same 404 body), sees filtered lists and stream, and is
refused store-wide actions. Refusals store and audit nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.api.auth import ROLE_MATRIX, route_key
from lfr_actors.cli.main import main
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Action, Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import Role, TokenScopeError, TokenStore
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.testing.doubles import make_sighting
from tests.api_helpers import problem
from tests.unit.test_api import read_event
from tests.unit.test_auth import Samples, _placeholders, every_route, fake_enroller

OPERATOR = Actor("cli:test")
HOME = "dep-1"
"""The first deployment :class:`Samples` makes: the routes under test name it."""
OTHER = "other-dep"
UNKNOWN_DEPLOYMENT = "no-such-dep"
UNKNOWN_ALERT = "00000000-0000-5000-8000-000000000000"

STORE_WIDE = frozenset(
    {
        ("POST", "deployment_create"),
        ("GET", "audit_verify"),
        ("GET", "metrics"),
        ("PUT", "monitoring_categories_set"),
        ("PUT", "policy_set"),
    }
)
"""Routes about the whole store: refused (403) to every scoped token."""
STORE_READS = frozenset({("GET", "monitoring_categories"), ("GET", "policy")})
"""Store-wide settings every scope reads alike (they name no deployment's data)."""
LISTS = frozenset(
    {
        ("GET", "deployments"),
        ("GET", "alerts"),
        ("GET", "alert_stream"),
        ("GET", "audit"),
        ("GET", "whoami"),
        ("GET", "status"),
    }
)
"""Routes that name no object: their answer is filtered by the scope."""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.sqlite3"


def add_deployment(db: Path, deployment_id: str) -> None:
    now = time.time()
    with Database(db) as store:
        Deployments(store).create(
            make_deployment(deployment_id, now - 3600, now + 3600), actor=OPERATOR
        )


def add_alert(db: Path, deployment_id: str, n: int = 1, entry: str = "E1") -> str:
    event = Fuser(deployment_id, FusionConfig(threshold=0.5)).observe(
        make_sighting(n, entry=entry, at=float(n))
    )
    assert event is not None
    with AlertStore(db) as store:
        store.apply(event)
    return event.alert.id


def scoped(db: Path, role: Role, *deployments: str, name: str | None = None) -> dict[str, str]:
    with Database(db) as store:
        issued = TokenStore(store).create(
            name or f"{role} of {','.join(deployments)}",
            role,
            by=OPERATOR,
            deployments=list(deployments),
        )
    return {"Authorization": f"Bearer {issued.secret}"}


def status_source_for(deployment_id: str) -> Any:
    async def source() -> dict[str, Any]:
        return {"deployment": {"id": deployment_id, "state": "running"}, "alerts": {}}

    return source


def audit_count(db: Path) -> int:
    with Database(db) as store:
        return len(AuditLog(store).page(limit=500).entries)


async def test_every_route_walks_scopes(aiohttp_client: AiohttpClient, db: Path) -> None:
    home_alert = add_alert(db, HOME)
    samples = Samples(db, home_alert)
    assert samples.deployment_id == HOME
    add_deployment(db, OTHER)
    other_alert = add_alert(db, OTHER, n=2, entry="E9")
    app = create_app(db, status=status_source_for(HOME), heartbeat_s=0.1, enroller=fake_enroller)
    client = await aiohttp_client(app)
    others = {role: scoped(db, role, OTHER, name=f"other {role}") for role in Role}

    async def send(method: str, name: str, params: dict[str, str], headers: Any) -> Any:
        url = str(client.app.router[name].url_for(**params))
        return await client.request(method, url, headers=headers, **samples.body(method, name))

    for method, name in every_route(client.app):
        rule = ROLE_MATRIX[route_key(method, name)]
        if rule.public:
            continue
        key = (method, name)
        where = f"{method} {name}"
        placeholders = _placeholders(client.app.router[name].get_info().get("formatter", ""))
        names_object = bool({"deployment_id", "alert_id"} & set(placeholders))
        assert names_object != (key in LISTS or key in STORE_WIDE or key in STORE_READS), (
            f"{where}: classify it in test_scopes (names an object, a list, or store-wide)"
        )
        for role in sorted(rule.roles):
            # A token scoped to the deployment the route names: admitted as its role allows.
            params = samples.params(method, name, placeholders)
            home = scoped(db, role, params.get("deployment_id", HOME))
            resp = await send(method, name, params, home)
            if key in STORE_WIDE:
                body = await problem(resp, 403)
                assert "not limited to deployments" in body["detail"], where
            else:
                assert resp.status < 400, (where, role, resp.status, await resp.text())
            resp.close()

            # The same role scoped to another deployment.
            other = others[role]
            params = samples.params(method, name, placeholders)
            before = audit_count(db)
            resp = await send(method, name, params, other)
            if key in STORE_WIDE:
                await problem(resp, 403)
            elif names_object:
                body = await problem(resp, 404)
                unknown = {
                    **params,
                    **({"deployment_id": UNKNOWN_DEPLOYMENT} if "deployment_id" in params else {}),
                    **({"alert_id": UNKNOWN_ALERT} if "alert_id" in params else {}),
                }
                again = await problem(await send(method, name, unknown, other), 404)
                seen = json.dumps(body)
                for real, fake in (
                    (params.get("deployment_id"), UNKNOWN_DEPLOYMENT),
                    (params.get("alert_id"), UNKNOWN_ALERT),
                ):
                    if real is not None:
                        seen = seen.replace(real, fake)
                assert seen == json.dumps(again), (where, role, body, again)
            else:
                await _check_filtered(resp, key, other_alert, home_alert)
            resp.close()
            assert audit_count(db) == before, f"{where}: another scope's call audited something"

    with Database(db) as store:
        entries = AuditLog(store).page(limit=500).entries
    assert not [e for e in entries if e.actor.startswith("other ")]


async def _check_filtered(resp: Any, key: tuple[str, str], mine: str, theirs: str) -> None:
    """A list answered to a token scoped to OTHER: nothing of HOME's in it."""
    if key == ("GET", "status"):
        body = await problem(resp, 404)
        assert body["detail"] == "No deployment in this token's scope runs here."
        return
    assert resp.status == 200, await resp.text()
    if key in STORE_READS:
        return  # the same settings for every scope: nothing of a deployment's in them
    if key == ("GET", "alert_stream"):
        return  # filtered events: test_the_stream_sends_only_the_scopes_events
    body = await resp.json()
    if key == ("GET", "deployments"):
        assert [d["id"] for d in body["deployments"]] == [OTHER]
    elif key == ("GET", "alerts"):
        assert [a["id"] for a in body["alerts"]] == [mine]
    elif key == ("GET", "whoami"):
        assert body["deployments"] == [OTHER]
    elif key == ("GET", "audit"):
        subjects = {e["subject"] for e in body["entries"]}
        assert subjects, "the scope's own entries are shown"
        assert all(s in (OTHER, mine) or s.startswith(f"{OTHER}/") for s in subjects)
        assert theirs not in subjects and HOME not in subjects


async def test_another_deployments_alert_with_a_bad_body_is_404_like_an_unknown_one(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    """The 404 comes before the body is read: a bad body tells nothing either."""
    add_deployment(db, HOME)
    add_deployment(db, OTHER)
    home_alert = add_alert(db, HOME)
    other = scoped(db, Role.ADJUDICATOR, OTHER)
    client = await aiohttp_client(create_app(db))
    for alert_id in (home_alert, UNKNOWN_ALERT):
        resp = await client.post(
            f"/v1/alerts/{alert_id}/adjudication", headers=other, json={"decision": "nope"}
        )
        body = await problem(resp, 404)
        assert body["detail"] == f"No alert with id {alert_id!r}."
    before = audit_count(db)
    resp = await client.post(
        f"/v1/deployments/{HOME}/threshold", headers=scoped(db, Role.AUTHORISER, OTHER), json={}
    )
    assert (await problem(resp, 404))["detail"] == f"No deployment with id {HOME!r}."
    assert audit_count(db) == before + 1  # the token's creation, not the refused change
    with Database(db) as store:
        assert Deployments(store).find(HOME).threshold == 0.6  # type: ignore[union-attr]


async def test_the_stream_sends_only_the_scopes_events(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    add_deployment(db, HOME)
    add_deployment(db, OTHER)
    writer = AlertStore(db)
    home_fuser = Fuser(HOME, FusionConfig(threshold=0.5))
    other_fuser = Fuser(OTHER, FusionConfig(threshold=0.5))

    def add(fuser: Fuser, n: int, entry: str) -> None:
        event = fuser.observe(make_sighting(n, entry=entry, at=float(n)))
        assert event is not None
        writer.apply(event)

    try:
        add(home_fuser, 1, "H1")
        add(other_fuser, 2, "O1")
        add(home_fuser, 3, "H2")
        viewer = scoped(db, Role.VIEWER, OTHER)
        client = await aiohttp_client(create_app(db, poll_interval_s=0.05, heartbeat_s=0.2))
        # Resumed from the store (Last-Event-ID) ...
        resumed = await client.get("/v1/alerts/stream", headers={**viewer, "Last-Event-ID": "0"})
        first = await read_event(resumed)
        assert json.loads(first["data"])["deployment_id"] == OTHER and first["id"] == "2"
        # ... then live, from the shared cache: HOME's event first would come first.
        add(home_fuser, 4, "H3")
        add(other_fuser, 5, "O2")
        live = await read_event(resumed)
        assert json.loads(live["data"])["deployment_id"] == OTHER and live["id"] == "5"
        resumed.close()
        # A second stream resumed inside the cache: again only OTHER's.
        cached = await client.get("/v1/alerts/stream", headers={**viewer, "Last-Event-ID": "3"})
        assert (await read_event(cached))["id"] == "5"
        cached.close()
        for deployment in (HOME, UNKNOWN_DEPLOYMENT):
            resp = await client.get(
                "/v1/alerts/stream", params={"deployment": deployment}, headers=viewer
            )
            body = await problem(resp, 404)
            assert body["detail"] == f"No deployment with id {deployment!r}."
    finally:
        writer.close()


async def test_status_for_a_scoped_token_hides_the_store_wide_counts(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    add_deployment(db, HOME)
    add_deployment(db, OTHER)
    add_alert(db, OTHER)
    client = await aiohttp_client(create_app(db, status=status_source_for(HOME)))
    mine = await client.get("/v1/status", headers=scoped(db, Role.VIEWER, HOME))
    assert mine.status == 200
    body = await mine.json()
    assert body["deployment"]["id"] == HOME and "store" not in body["alerts"]
    everyone = await client.get("/v1/status", headers=scoped(db, Role.VIEWER, HOME, OTHER))
    assert "store" not in (await everyone.json())["alerts"]
    with Database(db) as store:
        secret = TokenStore(store).create("unscoped", Role.VIEWER, by=OPERATOR).secret
    full = await client.get("/v1/status", headers={"Authorization": f"Bearer {secret}"})
    assert (await full.json())["alerts"]["store"]["alerts"] == 1
    # No status source at all: the same 404 as another deployment running.
    bare = await aiohttp_client(create_app(db))
    body = await problem(await bare.get("/v1/status", headers=scoped(db, Role.VIEWER, HOME)), 404)
    assert body["detail"] == "No deployment in this token's scope runs here."


# -- the store -----------------------------------------------------------------------------


def test_a_scope_is_stored_shown_and_audited(db: Path) -> None:
    add_deployment(db, HOME)
    add_deployment(db, OTHER)
    with Database(db) as store:
        tokens = TokenStore(store)
        issued = tokens.create("PC Jones", Role.VIEWER, by=OPERATOR, deployments=[OTHER, HOME])
        record = issued.record
        assert record.deployments == (OTHER, HOME) and record.scoped
        assert record.in_scope(HOME) and not record.in_scope("elsewhere")
        assert tokens.lookup(issued.secret) == record
        assert record.as_dict()["deployments"] == [OTHER, HOME]
        unscoped = tokens.create("Sgt Lee", Role.VIEWER, by=OPERATOR).record
        assert unscoped.deployments is None and unscoped.as_dict()["deployments"] is None
        entries = AuditLog(store).page(action=str(Action.TOKEN_CREATE)).entries
    assert entries[-2].details_map()["deployments"] == [OTHER, HOME]
    assert "deployments" not in entries[-1].details_map()


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ([], "at least one deployment"),
        ([HOME, HOME], f"repeated: {HOME}"),
        ([HOME, "typo-dep"], "no deployment with id 'typo-dep'"),
        (["  "], "must not be empty"),
    ],
)
def test_a_bad_scope_stores_and_audits_nothing(db: Path, scope: list[str], message: str) -> None:
    add_deployment(db, HOME)
    before = audit_count(db)
    with Database(db) as store:
        with pytest.raises(TokenScopeError, match=message):
            TokenStore(store).create("PC Jones", Role.VIEWER, by=OPERATOR, deployments=scope)
        assert TokenStore(store).records() == []
    assert audit_count(db) == before


def test_a_closed_deployment_may_be_in_a_scope(db: Path) -> None:
    """An auditor reviewing a finished deployment: closed deployments are still known."""
    add_deployment(db, HOME)
    with Database(db) as store:
        Deployments(store).close(HOME, actor=OPERATOR, reason="over")
        record = (
            TokenStore(store)
            .create("Auditor", Role.AUDITOR, by=OPERATOR, deployments=[HOME])
            .record
        )
    assert record.deployments == (HOME,)


def test_the_audit_scope_goes_by_action_not_by_a_subject_that_looks_alike(db: Path) -> None:
    """A deployment named "alerts" does not see retention purges (subject "alerts")."""
    add_deployment(db, "alerts")
    add_deployment(db, OTHER)
    alert_id = add_alert(db, OTHER)
    with Database(db) as store:
        log = AuditLog(store)
        log.append(OPERATOR, Action.RETENTION_PURGE, "alerts", {"count": 0})
        log.append(OPERATOR, Action.ALERT_VIEW, alert_id, {"part": "crop"})
        log.append(OPERATOR, Action.ENTRY_VIEW, f"{OTHER}/E1", {"part": "image"})
        log.append(OPERATOR, Action.REPORT_EXPORT, "alerts", {"form": "json"})
        mine = [(e.action, e.subject) for e in log.page(deployments=["alerts"]).entries]
        theirs = [(e.action, e.subject) for e in log.page(deployments=[OTHER]).entries]
        assert log.page(deployments=[]).entries == []
    assert mine == [("deployment.create", "alerts"), ("report.export", "alerts")]
    assert theirs == [
        ("deployment.create", OTHER),
        ("alert.view", alert_id),
        ("entry.view", f"{OTHER}/E1"),
    ]


# -- the CLI -------------------------------------------------------------------------------


def test_cli_creates_and_lists_scoped_tokens(db: Path, capfd: pytest.CaptureFixture[str]) -> None:
    add_deployment(db, HOME)
    add_deployment(db, OTHER)
    args = ["tokens", "create", "--name", "PC Jones", "--role", "viewer", "--db", str(db)]
    assert main([*args, "--deployment", HOME, "--deployment", OTHER]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("lfr_") and f"for deployments {HOME},{OTHER}" in err
    assert main(["tokens", "create", "--name", "Sgt Lee", "--role", "admin", "--db", str(db)]) == 0
    capfd.readouterr()
    assert main(["tokens", "list", "--db", str(db)]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert "deployments" in lines[0]
    jones = next(line for line in lines if line.endswith("PC Jones"))
    lee = next(line for line in lines if line.endswith("Sgt Lee"))
    assert f"{HOME},{OTHER}" in jones and " all " in lee
    assert main(["tokens", "list", "--json", "--db", str(db)]) == 0
    listed = {t["name"]: t["deployments"] for t in json.loads(capfd.readouterr().out)}
    assert listed == {"PC Jones": [HOME, OTHER], "Sgt Lee": None}


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        (["typo-dep"], "no deployment with id 'typo-dep'"),
        ([HOME, HOME], "repeated"),
    ],
)
def test_cli_refuses_a_bad_scope_in_one_line_and_stores_nothing(
    db: Path, capfd: pytest.CaptureFixture[str], scope: list[str], message: str
) -> None:
    add_deployment(db, HOME)
    before = audit_count(db)
    args = ["tokens", "create", "--name", "PC Jones", "--role", "viewer", "--db", str(db)]
    assert main([*args, *(x for d in scope for x in ("--deployment", d))]) == 1
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err
    assert err.startswith("lfr: error: ")
    with Database(db) as store:
        assert TokenStore(store).records() == []
    assert audit_count(db) == before


def test_cli_makes_no_store_for_a_scoped_token(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite3"
    args = ["tokens", "create", "--name", "PC Jones", "--role", "viewer", "--db", str(missing)]
    assert main([*args, "--deployment", HOME]) == 1
    assert "no alert store at" in capfd.readouterr().err
    assert not missing.exists()
