"""Adjudicating alerts through the API: decisions, repeats, conflicts, corrections, bad bodies."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.alerts.records import AlertEvent
from lfr_actors.api.adjudication import MAX_BODY_BYTES
from lfr_actors.api.app import create_app
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.doubles import make_sighting
from tests.api_helpers import problem


class Api:
    """A client of the real app, an adjudicator's and a viewer's token, one stored alert."""

    def __init__(self, client: Any, db: Path, alert_id: str, tokens: dict[str, str]) -> None:
        self.client = client
        self.db = db
        self.alert_id = alert_id
        self.tokens = tokens

    async def decide(
        self, body: Any = None, *, as_: str = "officer", alert_id: str | None = None, **kw: Any
    ) -> ClientResponse:
        headers = {"Authorization": f"Bearer {self.tokens[as_]}", **kw.pop("headers", {})}
        url = f"/v1/alerts/{alert_id or self.alert_id}/adjudication"
        if body is not None:
            kw["json"] = body
        resp: ClientResponse = await self.client.post(url, headers=headers, **kw)
        return resp

    async def alert(self) -> dict[str, Any]:
        resp = await self.client.get(
            f"/v1/alerts/{self.alert_id}",
            headers={"Authorization": f"Bearer {self.tokens['viewer']}"},
        )
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body

    def stored(self) -> dict[str, Any]:
        """Everything a request could change, read straight from the file."""
        raw = sqlite3.connect(self.db)
        try:
            return {
                "alerts": raw.execute("SELECT id, status, updated_at FROM alerts").fetchall(),
                "adjudications": raw.execute("SELECT * FROM adjudications").fetchall(),
                "audit": raw.execute("SELECT * FROM audit_log").fetchall(),
                "tokens": raw.execute("SELECT * FROM api_tokens").fetchall(),
            }
        finally:
            raw.close()

    def audit(self) -> list[tuple[str, str, str, str | None]]:
        raw = sqlite3.connect(self.db)
        try:
            return raw.execute(
                "SELECT action, subject, actor, actor_token FROM audit_log "
                "WHERE action LIKE 'alert.%' ORDER BY seq"
            ).fetchall()
        finally:
            raw.close()


def raise_alert(db: Path, n: int = 1) -> AlertEvent:
    event = Fuser("dep1", FusionConfig(threshold=0.5)).observe(make_sighting(n, entry=f"E{n}"))
    assert event is not None
    with AlertStore(db) as store:
        store.apply(event)
    return event


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Api]:
    db = tmp_path / "alerts.sqlite3"
    event = raise_alert(db)
    with Database(db) as store:
        tokens = TokenStore(store)
        secrets = {
            "officer": tokens.create("PC Smith", Role.ADJUDICATOR, by=Actor("cli:test")),
            "sergeant": tokens.create("Sgt Jones", Role.ADJUDICATOR, by=Actor("cli:test")),
            "viewer": tokens.create("Control room", Role.VIEWER, by=Actor("cli:test")),
        }
    app = create_app(db)
    client = await aiohttp_client(app)
    yield Api(client, db, event.alert.id, {k: v.secret for k, v in secrets.items()})


async def test_a_decision_is_recorded_with_the_officer_and_the_server_time(api: Api) -> None:
    before = await api.alert()
    assert (before["status"], before["adjudications"]) == ("open", [])
    resp = await api.decide(
        {
            "decision": "match_confirmed",
            "outcome": "engaged_no_further_action",
            "note": "Spoke to him; not the wanted man's brother.",
        }
    )
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v1/alerts/{api.alert_id}"
    record = await resp.json()
    assert record["officer"] == "PC Smith"
    assert record["decision"] == "match_confirmed"
    assert record["outcome"] == "engaged_no_further_action"
    assert record["correction"] is False and record["supersedes"] is None
    assert record["decided_at"].endswith("Z")
    after = await api.alert()
    assert after["status"] == "adjudicated"
    assert after["adjudications"] == [record]
    ((action, subject, actor, token),) = api.audit()
    assert (action, subject, actor) == ("alert.adjudicate", api.alert_id, "PC Smith")
    assert token is not None


async def test_the_same_decision_again_returns_the_stored_one(api: Api) -> None:
    body = {"decision": "not_a_match", "note": "different person"}
    first = await api.decide(body)
    assert first.status == 201
    stored = api.stored()
    again = await api.decide(body, as_="sergeant")
    assert again.status == 200
    assert await again.json() == await first.json()  # the first officer's record
    assert api.stored() == stored


async def test_a_conflicting_decision_is_refused_and_changes_nothing(api: Api) -> None:
    first = await api.decide({"decision": "not_a_match"})
    assert first.status == 201
    stored = api.stored()
    resp = await api.decide({"decision": "match_confirmed", "outcome": "arrest"}, as_="sergeant")
    body = await problem(resp, 409)
    assert "already adjudicated as not_a_match by PC Smith" in body["detail"]
    assert "correction" in body["detail"]
    assert body["current"] == await first.json()
    # A different note is a different decision too.
    await problem(await api.decide({"decision": "not_a_match", "note": "x"}), 409)
    assert api.stored() == stored


async def test_a_correction_with_a_reason_supersedes_and_is_audited(api: Api) -> None:
    first = await (await api.decide({"decision": "unsure"})).json()
    resp = await api.decide(
        {
            "decision": "match_confirmed",
            "outcome": "arrest",
            "correction": True,
            "correction_reason": "confirmed by fingerprint at the station",
        },
        as_="sergeant",
    )
    assert resp.status == 201
    second = await resp.json()
    assert (second["officer"], second["correction"], second["supersedes"]) == (
        "Sgt Jones",
        True,
        first["id"],
    )
    assert second["correction_reason"] == "confirmed by fingerprint at the station"
    alert = await api.alert()
    assert [a["id"] for a in alert["adjudications"]] == [first["id"], second["id"]]
    assert [(a, s, who) for a, s, who, _ in api.audit()] == [
        ("alert.adjudicate", api.alert_id, "PC Smith"),
        ("alert.correct", api.alert_id, "Sgt Jones"),
    ]
    raw = sqlite3.connect(api.db)
    try:
        details = raw.execute(
            "SELECT details FROM audit_log WHERE action = 'alert.correct'"
        ).fetchone()[0]
    finally:
        raw.close()
    assert '"previous_decision":"unsure"' in details
    assert '"correction_reason":"confirmed by fingerprint at the station"' in details


async def test_a_correction_needs_a_reason_and_something_to_correct(api: Api) -> None:
    stored = api.stored()
    body = await problem(await api.decide({"decision": "unsure", "correction": True}), 422)
    assert body["invalid_params"] == [
        {"name": "correction_reason", "reason": "required when correction is true"}
    ]
    resp = await api.decide({"decision": "unsure", "correction": True, "correction_reason": "typo"})
    body = await problem(resp, 409)
    assert "no decision to correct" in body["detail"]
    assert body["current"] is None
    body = await problem(
        await api.decide({"decision": "unsure", "correction_reason": "why not"}), 422
    )
    assert body["invalid_params"][0]["name"] == "correction_reason"
    assert api.stored() == stored


async def test_a_confirmed_match_needs_an_outcome(api: Api) -> None:
    stored = api.stored()
    body = await problem(await api.decide({"decision": "match_confirmed"}), 422)
    assert body["invalid_params"] == [
        {
            "name": "outcome",
            "reason": "required when decision is match_confirmed: say what happened",
        }
    ]
    assert api.stored() == stored


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["decision"]),
        ({"decision": "maybe"}, ["decision"]),
        ({"decision": "unsure", "outcome": "detained"}, ["outcome"]),
        ({"decision": "unsure", "correction": "yes"}, ["correction"]),
        ({"decision": "unsure", "correction": 1}, ["correction"]),
        ({"decision": "unsure", "note": 42}, ["note"]),
        ({"decision": "unsure", "note": "x" * 2001}, ["note"]),
        ({"decision": "unsure", "officer": "someone else"}, ["officer"]),
        ({"decision": "unsure", "decided_at": "2020-01-01T00:00:00Z"}, ["decided_at"]),
        (["decision", "unsure"], ["(body)"]),
    ],
)
async def test_wrong_types_and_unknown_fields_are_422_with_their_paths(
    api: Api, body: Any, fields: list[str]
) -> None:
    stored = api.stored()
    problem_body = await problem(await api.decide(body), 422)
    assert [p["name"] for p in problem_body["invalid_params"]] == fields
    if fields == ["officer"]:
        assert problem_body["invalid_params"][0]["reason"].startswith("unknown field")
        assert "correction_reason" in problem_body["invalid_params"][0]["reason"]
    assert api.stored() == stored


async def test_malformed_json_is_400_and_the_wrong_media_type_415(api: Api) -> None:
    stored = api.stored()
    json_type = {"Content-Type": "application/json"}
    body = await problem(await api.decide(data=b'{"decision": ', headers=json_type), 400)
    assert "not well-formed JSON" in body["detail"]
    await problem(await api.decide(data=b"\xff\xfe", headers=json_type), 400)
    body = await problem(
        await api.decide(data=b"decision=unsure", headers={"Content-Type": "text/plain"}), 415
    )
    assert "application/json" in body["detail"]
    assert api.stored() == stored


async def test_a_body_over_the_limit_is_413_declared_or_streamed(api: Api) -> None:
    stored = api.stored()
    big = b'{"decision": "unsure", "note": "' + b"x" * MAX_BODY_BYTES + b'"}'
    body = await problem(
        await api.decide(data=big, headers={"Content-Type": "application/json"}), 413
    )
    assert body["max_bytes"] == MAX_BODY_BYTES

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    await problem(
        await api.decide(data=chunks(), headers={"Content-Type": "application/json"}), 413
    )
    assert api.stored() == stored


async def test_unknown_alert_is_404_and_writes_nothing(api: Api) -> None:
    stored = api.stored()
    body = await problem(await api.decide({"decision": "unsure"}, alert_id="no-such-alert"), 404)
    assert "no-such-alert" in body["detail"]
    assert api.stored() == stored


async def test_a_viewer_cannot_adjudicate(api: Api) -> None:
    stored = api.stored()
    body = await problem(await api.decide({"decision": "unsure"}, as_="viewer"), 403)
    assert body["allowed_roles"] == ["adjudicator", "admin"]
    assert api.stored() == stored


async def test_the_alert_actor_keeps_the_adjudicated_status(api: Api) -> None:
    assert (await api.decide({"decision": "not_a_match"})).status == 201
    # The same person is seen again: the alert actor updates the alert it already has.
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    with AlertStore(api.db) as store:
        fuser.restore(store.open_alerts(0), store.sighting_ids([api.alert_id]))
        event = fuser.observe(make_sighting(2, entry="E1", at=1))
        assert event is not None and event.alert.id == api.alert_id
        store.apply(event)
    alert = await api.alert()
    assert (alert["status"], alert["sightings"], len(alert["adjudications"])) == (
        "adjudicated",
        2,
        1,
    )


async def test_viewing_a_crop_is_audited(api: Api) -> None:
    headers = {"Authorization": f"Bearer {api.tokens['viewer']}"}
    resp = await api.client.get(f"/v1/alerts/{api.alert_id}/crop.jpg", headers=headers)
    assert resp.status == 200
    await problem(await api.client.get("/v1/alerts/nope/crop.jpg", headers=headers), 404)
    raw = sqlite3.connect(api.db)
    try:
        rows = raw.execute(
            "SELECT actor, t.id = a.actor_token, subject, details FROM audit_log a "
            "JOIN api_tokens t ON t.name = a.actor WHERE action = 'alert.view'"
        ).fetchall()
    finally:
        raw.close()
    assert rows == [("Control room", 1, api.alert_id, '{"part":"crop"}')]
