"""The threshold policy over the API: real aiohttp on loopback over a real store file."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import FormData
from pytest_aiohttp import AiohttpClient

from lfr_actors.api.app import create_app
from lfr_actors.store.audit import Action, Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled
from lfr_actors.store.tokens import Role
from lfr_actors.testing.declarations import make_deployment
from tests.api_helpers import bearer, problem

TINY_JPEG = bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())


def fake_enroller(data: bytes, name: str) -> Enrolled:
    """Enrolment without models: the policy is under test here, not the photo."""
    return Enrolled(
        image=data, image_type="image/jpeg", embeddings=np.ones((1, 128), np.float32), quality={}
    )


class Api:
    def __init__(self, client: Any, db: Path) -> None:
        self.client = client
        self.db = db
        self.admin = bearer(db, Role.ADMIN, "Ch Supt Admin")
        self.authoriser = bearer(db, Role.AUTHORISER, "Supt Clarke")
        self.manager = bearer(db, Role.WATCHLIST_MANAGER, "PC Brown")
        self.viewer = bearer(db, Role.VIEWER, "PC Viewer")

    def audit(self, action: Action | None = None) -> list[Any]:
        with Database(self.db, readonly=True) as store:
            found = AuditLog(store).page(limit=1000, action=None if action is None else str(action))
        return found.entries

    def settings(self) -> list[Any]:
        with Database(self.db, readonly=True) as store:
            return store.conn.execute("SELECT name FROM store_settings").fetchall()


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, tmp_path: Path) -> Api:
    db = tmp_path / "alerts.sqlite3"
    Database(db).close()
    client = await aiohttp_client(create_app(db, enroller=fake_enroller))
    return Api(client, db)


def seed(db: Path, deployment_id: str, threshold: float, *, closed: bool = False) -> None:
    now = time.time()
    with Database(db) as store:
        deployments = Deployments(store)
        deployments.create(
            make_deployment(deployment_id, now - 60, now + 3600, threshold), actor=Actor("cli:t")
        )
        if closed:
            deployments.close(deployment_id, actor=Actor("cli:t"), reason="over")


def new_deployment(deployment_id: str, threshold: float) -> dict[str, Any]:
    now = time.time()
    return {
        "id": deployment_id,
        "authorised_by": "Supt Clarke",
        "purpose": "testing",
        "location": "Stratford",
        "start": datetime.fromtimestamp(now, UTC).isoformat(),
        "end": datetime.fromtimestamp(now + 3600, UTC).isoformat(),
        "threshold": threshold,
    }


async def test_every_role_reads_the_default_policy_and_its_origin(api: Api) -> None:
    resp = await api.client.get("/v1/policy", headers=api.viewer)
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "deployment_max": 0.6,
        "entry_max": 0.6,
        "default": True,
        "set_by": None,
        "set_at": None,
        "reason": None,
        "origin": "the default model's declared threshold (dlib_resnet_v1: 0.6); no admin "
        "has set a policy",
    }


async def test_an_admin_sets_it_and_the_audit_log_has_old_new_who_why(api: Api) -> None:
    body = {"deployment_max": 0.55, "entry_max": 0.5, "reason": "NPL calibration"}
    resp = await api.client.put("/v1/policy", json=body, headers=api.admin)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert (answer["deployment_max"], answer["entry_max"], answer["changed"]) == (0.55, 0.5, True)
    assert answer["set_by"] == "Ch Supt Admin" and answer["reason"] == "NPL calibration"
    assert answer["origin"].startswith("set by Ch Supt Admin at ")
    [entry] = api.audit(Action.POLICY_CHANGE)
    assert entry.actor == "Ch Supt Admin" and entry.actor_token is not None
    assert entry.details_map() == {
        "from": {"deployment_max": 0.6, "entry_max": 0.6, "default": True},
        "to": {"deployment_max": 0.55, "entry_max": 0.5},
        "reason": "NPL calibration",
    }
    read = await (await api.client.get("/v1/policy", headers=api.manager)).json()
    assert read["deployment_max"] == 0.55 and read["default"] is False
    # entry_max left out is deployment_max; the same values again change nothing.
    resp = await api.client.put(
        "/v1/policy", json={"deployment_max": 0.5, "reason": "r"}, headers=api.admin
    )
    assert (await resp.json())["entry_max"] == 0.5
    resp = await api.client.put(
        "/v1/policy", json={"deployment_max": 0.5, "reason": "again"}, headers=api.admin
    )
    assert (await resp.json())["changed"] is False
    assert len(api.audit(Action.POLICY_CHANGE)) == 2


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
async def test_only_an_admin_may_set_it(api: Api, role: Role) -> None:
    headers = bearer(api.db, role)
    before = len(api.audit())
    body = {"deployment_max": 0.5, "reason": "r"}
    refused = await problem(await api.client.put("/v1/policy", json=body, headers=headers), 403)
    assert refused["allowed_roles"] == ["admin"]
    assert api.settings() == [] and len(api.audit()) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"deployment_max": 0, "reason": "r"}, "deployment_max"),
        ({"deployment_max": 2.5, "reason": "r"}, "deployment_max"),
        ({"deployment_max": 0.5, "entry_max": 0.55, "reason": "r"}, "entry_max"),
        ({"deployment_max": 0.5, "entry_max": -1, "reason": "r"}, "entry_max"),
        ({"deployment_max": "0.5", "reason": "r"}, "deployment_max"),
        ({"deployment_max": 0.5}, "reason"),
        ({"deployment_max": 0.5, "reason": "  "}, "reason"),
        ({"deployment_max": 0.5, "reason": "r", "max": 1}, "max"),
    ],
)
async def test_bad_values_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    before = len(api.audit())
    resp = await api.client.put("/v1/policy", json=body, headers=api.admin)
    refused = await problem(resp, 422)
    assert [p["name"] for p in refused["invalid_params"]] == [field]
    assert api.settings() == [] and len(api.audit()) == before


async def test_a_policy_an_open_deployment_breaks_is_409_naming_it(api: Api) -> None:
    seed(api.db, "north", 0.6)
    seed(api.db, "south", 0.45)
    seed(api.db, "old", 0.6, closed=True)  # a closed deployment does not block it
    before = len(api.audit())
    body = {"deployment_max": 0.5, "reason": "tighter"}
    refused = await problem(await api.client.put("/v1/policy", json=body, headers=api.admin), 409)
    assert refused["detail"].startswith(
        "Refused: the policy is broken by 1 deployment not closed: north threshold 0.6 "
        "(> deployment_max 0.5)"
    )
    assert refused["breaches"] == [
        {
            "deployment_id": "north",
            "entry_id": None,
            "threshold": 0.6,
            "policy_field": "deployment_max",
            "policy_max": 0.5,
        }
    ]
    assert refused["breaches_total"] == 1
    assert api.settings() == [] and len(api.audit()) == before


async def test_looser_create_change_and_entry_are_409_with_the_policys_value(api: Api) -> None:
    resp = await api.client.put(
        "/v1/policy",
        json={"deployment_max": 0.55, "entry_max": 0.5, "reason": "calibration"},
        headers=api.admin,
    )
    assert resp.status == 200
    before = len(api.audit())

    resp = await api.client.post(
        "/v1/deployments", json=new_deployment("loose", 0.6), headers=api.authoriser
    )
    refused = await problem(resp, 409)
    assert (refused["policy_max"], refused["policy_field"]) == (0.55, "deployment_max")
    assert refused["detail"].startswith(
        "Refused: threshold 0.6 is looser than the store's threshold policy allows: "
        "deployment_max 0.55 (set by Ch Supt Admin at "
    )
    assert "lfr policy set" in refused["detail"]
    resp = await api.client.get("/v1/deployments/loose", headers=api.authoriser)
    assert resp.status == 404

    seed(api.db, "dep1", 0.55)
    before += 1  # the seeded deployment's creation
    resp = await api.client.post(
        "/v1/deployments/dep1/threshold",
        json={"threshold": 0.58, "reason": "more alerts"},
        headers=api.authoriser,
    )
    refused = await problem(resp, 409)
    assert (refused["policy_max"], refused["policy_field"]) == (0.55, "deployment_max")

    form = FormData()
    for name, value in {
        "id": "E-1",
        "display_name": "A Person",
        "category": "wanted",
        "legal_basis": "warrant",
        "source": "custody",
        "image_date": "2026-01-01",
        "threshold": "0.52",
    }.items():
        form.add_field(name, value)
    form.add_field("image", TINY_JPEG, filename="p.jpg")
    resp = await api.client.post("/v1/deployments/dep1/entries", data=form, headers=api.manager)
    refused = await problem(resp, 409)
    assert (refused["policy_max"], refused["policy_field"]) == (0.5, "entry_max")
    assert "the entry's own threshold 0.52 is looser" in refused["detail"]

    with Database(api.db, readonly=True) as store:
        deployments = Deployments(store)
        assert deployments.get("dep1").threshold == 0.55
        assert deployments.entry_ids("dep1") == set()
    assert len(api.audit()) == before  # nothing of the refusals was audited

    # Within the policy, each goes through.
    resp = await api.client.post(
        "/v1/deployments/dep1/threshold",
        json={"threshold": 0.5, "reason": "tighter"},
        headers=api.authoriser,
    )
    assert resp.status == 200


async def test_the_report_has_the_threshold_history_and_the_policy(api: Api) -> None:
    seed(api.db, "dep1", 0.55)
    resp = await api.client.post(
        "/v1/deployments/dep1/threshold",
        json={"threshold": 0.5, "reason": "near misses"},
        headers=api.authoriser,
    )
    assert resp.status == 200
    report = await (await api.client.get("/v1/deployments/dep1/report", headers=api.viewer)).json()
    history = report["threshold_history"]
    assert [(s["change"], s["from"], s["to"], s["by"], s["reason"]) for s in history] == [
        ("created", None, 0.55, "cli:t", None),
        ("changed", 0.55, 0.5, "Supt Clarke", "near misses"),
    ]
    assert history[0]["at"].endswith("Z")
    assert report["threshold_policy"]["deployment_max"] == 0.6
    assert report["threshold_policy"]["default"] is True
    page = await (
        await api.client.get("/v1/deployments/dep1/report.html", headers=api.viewer)
    ).text()
    assert "<h2>Threshold history</h2>" in page
    assert (
        "<td>changed</td><td>0.55</td><td>0.5</td><td>Supt Clarke</td><td>near misses</td>" in page
    )
    assert "the default model&#x27;s declared threshold" in page
