"""Monitoring categories through the API: the lists, decisions that record them, the report.

A real store file and the real application on loopback (aiohttp's test client).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.testing.doubles import make_sighting
from tests.api_helpers import problem

URL = "/v1/policy/monitoring-categories"
CATEGORIES = {
    "perceived_sex": ["female", "male"],
    "ethnicity_group": ["Asian", "Black", "Mixed", "White", "Other"],
}


class Api:
    """The real app over one store: a token per role, a deployment with four alerts."""

    def __init__(self, client: Any, db: Path, alerts: list[str], tokens: dict[Role, str]):
        self.client = client
        self.db = db
        self.alerts = alerts
        self.tokens = tokens

    async def call(
        self, method: str, url: str, role: Role = Role.ADMIN, json: Any = None
    ) -> ClientResponse:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        kw = {} if json is None else {"json": json}
        resp: ClientResponse = await self.client.request(method, url, headers=headers, **kw)
        return resp

    async def set_categories(self, categories: Any = None) -> ClientResponse:
        body = {"categories": CATEGORIES if categories is None else categories, "reason": "duty"}
        return await self.call("PUT", URL, json=body)

    async def decide(self, n: int, body: dict[str, Any]) -> ClientResponse:
        return await self.call(
            "POST", f"/v1/alerts/{self.alerts[n]}/adjudication", Role.ADJUDICATOR, body
        )

    async def report(self, role: Role) -> dict[str, Any]:
        resp = await self.call("GET", "/v1/deployments/dep1/report", role)
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    def stored(self) -> dict[str, Any]:
        raw = sqlite3.connect(self.db)
        try:
            return {
                table: raw.execute(f"SELECT * FROM {table}").fetchall()
                for table in ("adjudications", "audit_log", "store_settings", "alerts")
            }
        finally:
            raw.close()


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Api]:
    db = tmp_path / "alerts.sqlite3"
    now = time.time()
    with Database(db) as store:
        Deployments(store).create(
            make_deployment("dep1", now - 3600, now + 3600), actor=Actor("cli:test")
        )
        tokens = TokenStore(store)
        secrets = {r: tokens.create(f"holder {r}", r, by=Actor("cli:test")).secret for r in Role}
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    alerts = []
    with AlertStore(db) as alert_store:
        for n in range(1, 5):
            event = fuser.observe(make_sighting(n, entry=f"E{n}", at=float(n)))
            assert event is not None
            alert_store.apply(event)
            alerts.append(event.alert.id)
    client = await aiohttp_client(create_app(db))
    yield Api(client, db, alerts, secrets)


# -- the lists -------------------------------------------------------------------------


async def test_an_admin_sets_the_lists_and_the_change_is_audited(api: Api) -> None:
    resp = await api.call("GET", URL, Role.AUDITOR)
    assert resp.status == 200
    assert await resp.json() == {
        "categories": {},
        "not_recorded": "not recorded",
        "configured": False,
        "set_by": None,
        "set_at": None,
    }
    resp = await api.set_categories()
    assert resp.status == 200
    body = await resp.json()
    assert (body["categories"], body["configured"], body["changed"]) == (CATEGORIES, True, True)
    assert body["set_by"] == "holder admin" and body["set_at"].endswith("Z")
    again = await (await api.set_categories()).json()
    assert again["changed"] is False
    for role in (Role.ADJUDICATOR, Role.AUDITOR, Role.AUTHORISER):
        shown = await (await api.call("GET", URL, role)).json()
        assert list(shown["categories"]) == list(CATEGORIES)  # the admin's order
    resp = await api.call("GET", "/v1/audit?action=policy.monitoring_categories", Role.AUDITOR)
    entries = (await resp.json())["entries"]
    assert len(entries) == 1
    assert entries[0]["actor"] == "holder admin"
    assert entries[0]["details"] == {"from": None, "to": CATEGORIES, "reason": "duty"}


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
async def test_only_an_admin_may_set_them(api: Api, role: Role) -> None:
    before = api.stored()
    resp = await api.call("PUT", URL, role, {"categories": CATEGORIES, "reason": "x"})
    await problem(resp, 403)
    assert api.stored() == before


@pytest.mark.parametrize("role", [Role.VIEWER, Role.WATCHLIST_MANAGER])
async def test_roles_that_neither_decide_nor_audit_do_not_read_them(api: Api, role: Role) -> None:
    await problem(await api.call("GET", URL, role), 403)


@pytest.mark.parametrize(
    ("body", "name", "reason"),
    [
        ({"categories": {"Sex!": ["a"]}, "reason": "x"}, "categories.Sex!", "identifier"),
        ({"categories": {"sex": ["a", "a"]}, "reason": "x"}, "categories.sex.1", "repeats"),
        ({"categories": {"sex": []}, "reason": "x"}, "categories.sex", "at least one"),
        ({"categories": {"sex": [""]}, "reason": "x"}, "categories.sex.0", "non-blank"),
        ({"categories": {"sex": ["a"]}, "reason": " "}, "reason", "pattern"),
        ({"categories": {"sex": ["a"]}}, "reason", "required"),
        ({"categories": {"sex": "a"}, "reason": "x"}, "categories.sex", "array"),
        ({"categories": {"sex": ["a"]}, "reason": "x", "more": 1}, "more", "unknown field"),
    ],
)
async def test_bad_lists_are_422_naming_the_field_and_write_nothing(
    api: Api, body: Any, name: str, reason: str
) -> None:
    before = api.stored()
    found = await problem(await api.call("PUT", URL, json=body), 422)
    assert any(p["name"] == name and reason in p["reason"] for p in found["invalid_params"]), found
    assert api.stored() == before


# -- decisions -------------------------------------------------------------------------


async def test_a_decision_records_values_from_the_lists(api: Api) -> None:
    await api.set_categories()
    resp = await api.decide(
        0,
        {
            "decision": "not_a_match",
            "demographics": {"perceived_sex": "male", "ethnicity_group": "not recorded"},
        },
    )
    assert resp.status == 201
    assert (await resp.json())["demographics"] == {"perceived_sex": "male"}
    resp = await api.call(
        "GET", "/v1/audit?action=alert.adjudicate&subject=" + api.alerts[0], Role.AUDITOR
    )
    (entry,) = (await resp.json())["entries"]
    assert entry["details"]["demographics"] == {"perceived_sex": "male"}


async def test_confirmed_decisions_may_record_them_too(api: Api) -> None:
    await api.set_categories()
    resp = await api.decide(
        0,
        {
            "decision": "match_confirmed",
            "outcome": "arrest",
            "demographics": {"ethnicity_group": "White"},
        },
    )
    assert resp.status == 201
    assert (await resp.json())["demographics"] == {"ethnicity_group": "White"}


async def test_a_value_outside_the_list_is_422_naming_the_allowed_and_stores_nothing(
    api: Api,
) -> None:
    await api.set_categories()
    before = api.stored()
    resp = await api.decide(
        0, {"decision": "not_a_match", "demographics": {"ethnicity_group": "Purple"}}
    )
    body = await problem(resp, 422)
    (bad,) = body["invalid_params"]
    assert bad["name"] == "demographics.ethnicity_group"
    for allowed in [*CATEGORIES["ethnicity_group"], "not recorded"]:
        assert repr(allowed) in bad["reason"]
    resp = await api.decide(0, {"decision": "not_a_match", "demographics": {"height": "tall"}})
    body = await problem(resp, 422)
    assert body["invalid_params"][0]["name"] == "demographics.height"
    assert "perceived_sex, ethnicity_group" in body["invalid_params"][0]["reason"]
    assert api.stored() == before


async def test_unsure_takes_no_demographics(api: Api) -> None:
    await api.set_categories()
    before = api.stored()
    resp = await api.decide(0, {"decision": "unsure", "demographics": {"perceived_sex": "male"}})
    body = await problem(resp, 422)
    assert [p["name"] for p in body["invalid_params"]] == ["demographics"]
    assert api.stored() == before


async def test_until_configured_recording_one_is_422_saying_how_to_configure(api: Api) -> None:
    before = api.stored()
    resp = await api.decide(0, {"decision": "not_a_match", "demographics": {"perceived_sex": "x"}})
    body = await problem(resp, 422)
    (bad,) = body["invalid_params"]
    assert bad["name"] == "demographics.perceived_sex"
    assert "no monitoring categories are configured" in bad["reason"]
    assert "PUT /v1/policy/monitoring-categories" in bad["reason"]
    assert api.stored() == before
    # Without any, the decision is recorded as ever.
    assert (await api.decide(0, {"decision": "not_a_match"})).status == 201


async def test_viewers_do_not_see_the_values_on_an_alert(api: Api) -> None:
    await api.set_categories()
    await api.decide(0, {"decision": "not_a_match", "demographics": {"perceived_sex": "female"}})
    url = f"/v1/alerts/{api.alerts[0]}"
    seen = {}
    for role in (Role.VIEWER, Role.ADJUDICATOR, Role.AUDITOR, Role.ADMIN):
        body = await (await api.call("GET", url, role)).json()
        seen[role] = body["adjudications"][0]["demographics"]
    assert seen == {
        Role.VIEWER: None,
        Role.ADJUDICATOR: {"perceived_sex": "female"},
        Role.AUDITOR: {"perceived_sex": "female"},
        Role.ADMIN: {"perceived_sex": "female"},
    }


async def test_no_other_body_accepts_demographics(api: Api) -> None:
    """Nothing of the kind is recorded for faces that raised no alert: only the
    adjudication body declares the field."""
    resp = await api.call("GET", "/v1/openapi.json")
    document = await resp.json()
    schemas = document["components"]["schemas"]
    bodies = []
    for item in document["paths"].values():
        for op in item.values():
            for content in op.get("requestBody", {}).get("content", {}).values():
                bodies.append(content["schema"]["$ref"].rsplit("/", 1)[-1])
    holders = [name for name in bodies if "demographics" in schemas[name].get("properties", {})]
    assert holders == ["Adjudication"]
    for name in bodies:
        assert schemas[name].get("additionalProperties") is False or name == "EntryUpload"


# -- the report ------------------------------------------------------------------------


async def test_the_breakdown_counts_by_the_decision_in_force(api: Api) -> None:
    await api.set_categories()
    await api.decide(0, {"decision": "not_a_match", "demographics": {"perceived_sex": "male"}})
    await api.decide(
        1,
        {
            "decision": "not_a_match",
            "demographics": {"perceived_sex": "male", "ethnicity_group": "Black"},
        },
    )
    await api.decide(
        2,
        {
            "decision": "match_confirmed",
            "outcome": "arrest",
            "demographics": {"perceived_sex": "female"},
        },
    )
    await api.decide(3, {"decision": "unsure"})
    report = await api.report(Role.AUDITOR)
    assert report["demographics_withheld"] is False
    false_ = report["demographics"]["false"]
    assert false_["alerts"] == 2
    assert false_["by_category"]["perceived_sex"] == {"female": 0, "male": 2, "not recorded": 0}
    assert false_["by_category"]["ethnicity_group"] == {
        "Asian": 0,
        "Black": 1,
        "Mixed": 0,
        "White": 0,
        "Other": 0,
        "not recorded": 1,
    }
    confirmed = report["demographics"]["confirmed"]
    assert confirmed["alerts"] == 1
    assert confirmed["by_category"]["perceived_sex"] == {"female": 1, "male": 0, "not recorded": 0}
    assert confirmed["by_category"]["ethnicity_group"]["not recorded"] == 1

    # A correction supersedes: the alert moves from false to confirmed, with its new values.
    resp = await api.decide(
        0,
        {
            "decision": "match_confirmed",
            "outcome": "arrest",
            "correction": True,
            "correction_reason": "recognised on review",
            "demographics": {"ethnicity_group": "Asian"},
        },
    )
    assert resp.status == 201
    report = await api.report(Role.AUTHORISER)
    false_, confirmed = report["demographics"]["false"], report["demographics"]["confirmed"]
    assert (false_["alerts"], confirmed["alerts"]) == (1, 2)
    assert false_["by_category"]["perceived_sex"]["male"] == 1
    assert confirmed["by_category"]["ethnicity_group"]["Asian"] == 1
    assert confirmed["by_category"]["perceived_sex"]["not recorded"] == 1
    assert report["alerts"]["false"] == 1 and report["alerts"]["confirmed"] == 2

    page = await (await api.call("GET", "/v1/deployments/dep1/report.html", Role.AUDITOR)).text()
    assert "<h2>Equality monitoring of adjudicated alerts</h2>" in page
    assert "<tr><th>perceived sex</th><td>male</td><td>1</td><td>0</td></tr>" in page
    assert "<tr><th>ethnicity group</th><td>Asian</td><td>0</td><td>1</td></tr>" in page


async def test_the_breakdown_counts_suspects_alerts_like_the_figures_beside_it(api: Api) -> None:
    await api.set_categories()
    with Database(api.db) as store:  # alert 1 is a test subject's (as raised from its entry)
        store.conn.execute("UPDATE alerts SET test_subject = 1 WHERE id = ?", (api.alerts[1],))
    for n in (0, 1):
        body = {"decision": "not_a_match", "demographics": {"perceived_sex": "male"}}
        assert (await api.decide(n, body)).status == 201
    report = await api.report(Role.AUDITOR)
    false_ = report["demographics"]["false"]
    assert false_["alerts"] == report["alerts"]["false"] == 1
    assert false_["by_category"]["perceived_sex"]["male"] == 1


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ADJUDICATOR])
async def test_the_breakdown_is_withheld_from_other_roles(api: Api, role: Role) -> None:
    await api.set_categories()
    await api.decide(0, {"decision": "not_a_match", "demographics": {"perceived_sex": "male"}})
    report = await api.report(role)
    assert report["demographics"] is None and report["demographics_withheld"] is True
    assert report["alerts"]["false"] == 1  # the published figures are still there
    resp = await api.call("GET", "/v1/deployments/dep1/report.html", role)
    page = await resp.text()
    assert "Withheld: only auditor, authoriser and admin tokens" in page
    assert "<td>male</td>" not in page
    # The exports' audit entries say the breakdown was not in them; an auditor's says it was.
    await api.report(Role.AUDITOR)
    raw = sqlite3.connect(api.db)
    try:
        rows = raw.execute(
            "SELECT details FROM audit_log WHERE action = 'report.export' ORDER BY seq"
        ).fetchall()
    finally:
        raw.close()
    shown = [json.loads(details)["demographics"] for (details,) in rows]
    assert shown == [False, False, True]


async def test_the_breakdown_lists_configured_values_before_any_decision(api: Api) -> None:
    report = await api.report(Role.ADMIN)
    assert report["demographics"] == {
        "false": {"alerts": 0, "by_category": {}},
        "confirmed": {"alerts": 0, "by_category": {}},
    }
    page = await (await api.call("GET", "/v1/deployments/dep1/report.html")).text()
    assert "No monitoring categories are configured." in page
    await api.set_categories({"perceived_sex": ["female", "male"]})
    report = await api.report(Role.ADMIN)
    assert report["demographics"]["false"]["by_category"] == {
        "perceived_sex": {"female": 0, "male": 0, "not recorded": 0}
    }
