"""Deployments, watchlists and reports through the API, with the real models and photos.

Auth is on: each request carries the token of a role that may make it (two authorisers, a
watchlist manager, an adjudicator, a viewer and an auditor), so the four-eyes rule and the
audit trail are exercised as in service. Enrolment runs the real default pipeline on the
photos in ``../shared/data``; both skip with their reason where they are missing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import ClientResponse, FormData
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.alerts.records import AlertEvent
from lfr_actors.api.app import create_app
from lfr_actors.api.deployments import MAX_BODY_BYTES as MAX_DEPLOYMENT_BYTES
from lfr_actors.api.watchlist import MAX_BODY_BYTES, MAX_IMAGE_BYTES
from lfr_actors.enrolment import Enroller, pipeline_enroller
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.tokens import Role, TokenStore
from lfr_actors.testing.doubles import make_sighting
from tests.api_helpers import problem
from tests.unit.test_api import read_event

pytestmark = [pytest.mark.models, pytest.mark.data]

LOCATION = "Westfield Stratford <east entrance> & car park"
"""Where the cameras watch: with characters the report page must escape."""

TOKENS = {
    "adams": ("Insp Adams", Role.AUTHORISER),
    "baker": ("Supt Baker", Role.AUTHORISER),
    "clark": ("PC Clark", Role.WATCHLIST_MANAGER),
    # The same officer with a second, authorising token: still the person who added it.
    "clark_authoriser": ("PC Clark", Role.AUTHORISER),
    "evans": ("PC Evans", Role.ADJUDICATOR),
    "viewer": ("Control room", Role.VIEWER),
    "auditor": ("DS Ford", Role.AUDITOR),
}


@pytest.fixture(scope="module")
def enroller(model_cache: ModelCache) -> Enroller:
    pipeline = FacePipeline.build(RuntimeConfig(device="cpu"), cache=model_cache)
    pipeline.warm_up()
    return pipeline_enroller(pipeline)


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, Path]:
    found = {
        "obama": shared_data / "faces/people/obama/obama.jpg",
        "biden": shared_data / "faces/people/biden/biden2.jpg",
        "kit": shared_data / "faces/people/kit_harington/john1.jpeg",
        "dogs": shared_data / "detection/dogs.jpg",
        "two_faces": shared_data / "faces/scenes/obama_and_biden.jpg",
        "small_face": shared_data / "faces/scenes/obama-240p.jpg",
    }
    missing = [str(p) for p in found.values() if not p.is_file()]
    assert not missing, f"shared data is missing {missing}"
    return found


def window(start_h: float = -1.0, end_h: float = 1.0) -> tuple[str, str]:
    now = datetime.now(UTC)
    return (
        (now + timedelta(hours=start_h)).isoformat(),
        (now + timedelta(hours=end_h)).isoformat(),
    )


def deployment_body(deployment_id: str, **changes: Any) -> dict[str, Any]:
    start, end = window()
    return {
        "id": deployment_id,
        "authorised_by": "Supt Baker, Metropolitan Police",
        "purpose": "Locate people wanted for serious offences",
        "location": LOCATION,
        "start": start,
        "end": end,
        "impact_assessment_ref": "DPIA-2026-017",
        "threshold": 0.55,
        **changes,
    }


ENTRY_FIELDS = {
    "display_name": "Barack Example",
    "category": "wanted",
    "legal_basis": "PACE 1984 s.24",
    "source": "custody record 01/2026",
    "image_date": "2025-11-02",
}


def upload_form(
    entry_id: str | None,
    image: bytes | None,
    *,
    filename: str = "photo.jpg",
    **changes: str,
) -> FormData:
    """The multipart enrolment form; ``changes`` replace or add text fields."""
    form = FormData(default_to_multipart=True)
    fields = {"id": entry_id, **ENTRY_FIELDS, **changes}
    for name, value in fields.items():
        if value is not None:
            form.add_field(name, value)
    if image is not None:
        form.add_field("image", image, filename=filename, content_type="image/jpeg")
    return form


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of a JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def assert_no_embedding(body: Any) -> None:
    for key, value in walk(body):
        assert "embedding" not in key.lower(), key
        assert "template" not in key.lower() or isinstance(value, int), key
        if isinstance(value, list):
            assert not (len(value) >= 64 and all(isinstance(v, float) for v in value)), key


@dataclass
class Api:
    """A client of the real app with a token per officer, over one store file."""

    client: Any
    db: Path
    secrets: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    async def request(self, method: str, url: str, who: str, **kw: Any) -> ClientResponse:
        headers = {**self.auth(who), **kw.pop("headers", {})}
        resp: ClientResponse = await self.client.request(method, url, headers=headers, **kw)
        return resp

    async def ok(self, method: str, url: str, who: str, status: int = 200, **kw: Any) -> Any:
        resp = await self.request(method, url, who, **kw)
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def create_deployment(self, deployment_id: str, **changes: Any) -> dict[str, Any]:
        body = deployment_body(deployment_id, **changes)
        created: dict[str, Any] = await self.ok("POST", "/v1/deployments", "adams", 201, json=body)
        return created

    async def upload(
        self, deployment_id: str, entry_id: str, image: bytes, who: str = "clark", **kw: Any
    ) -> ClientResponse:
        return await self.request(
            "POST",
            f"/v1/deployments/{deployment_id}/entries",
            who,
            data=upload_form(entry_id, image, **kw),
        )

    async def enrol(
        self, deployment_id: str, entry_id: str, image: bytes, *, approve: bool = True
    ) -> dict[str, Any]:
        resp = await self.upload(deployment_id, entry_id, image)
        assert resp.status == 201, await resp.text()
        entry: dict[str, Any] = await resp.json()
        if approve:
            url = f"/v1/deployments/{deployment_id}/entries/{entry_id}/approval"
            entry = await self.ok("POST", url, "adams", 201)
        return entry

    async def audit(self, action: str) -> list[dict[str, Any]]:
        page = await self.ok("GET", "/v1/audit", "auditor", params={"action": action})
        entries: list[dict[str, Any]] = page["entries"]
        return entries

    def stored_entries(self) -> list[tuple[Any, ...]]:
        """Every watchlist row, biometric columns included, straight from the file."""
        raw = sqlite3.connect(self.db)
        try:
            return raw.execute(
                "SELECT deployment_id, id, state, image, embeddings FROM watchlist_entries "
                "ORDER BY deployment_id, id"
            ).fetchall()
        finally:
            raw.close()

    def push_alerts(self, deployment_id: str, *entries: str, first: int = 1) -> list[AlertEvent]:
        """Alerts as the alert actor writes them: one per entry, through a fuser."""
        fuser = Fuser(deployment_id, FusionConfig(threshold=0.5))
        events = []
        with AlertStore(self.db) as store:
            for n, entry_id in enumerate(entries, start=first):
                event = fuser.observe(make_sighting(n, entry=entry_id, at=float(n)))
                assert event is not None
                store.apply(event)
                events.append(event)
        return events


def issue_tokens(db: Path) -> dict[str, str]:
    """A new token per officer of :data:`TOKENS` in the store at ``db``: their secrets."""
    with Database(db) as store:
        tokens = TokenStore(store)
        return {
            key: tokens.create(name, role, by=Actor("cli:test")).secret
            for key, (name, role) in TOKENS.items()
        }


@pytest.fixture
async def api(
    aiohttp_client: AiohttpClient, tmp_path: Path, enroller: Enroller
) -> AsyncIterator[Api]:
    db = tmp_path / "lfr.sqlite3"
    secrets = issue_tokens(db)
    app = create_app(db, enroller=enroller, poll_interval_s=0.02, heartbeat_s=0.2)
    yield Api(await aiohttp_client(app), db, secrets)


# -- deployments ------------------------------------------------------------------------


async def test_create_list_get_and_the_audit_trail(api: Api) -> None:
    resp = await api.request("POST", "/v1/deployments", "adams", json=deployment_body("west-1"))
    assert resp.status == 201
    assert resp.headers["Location"] == "/v1/deployments/west-1"
    active = await resp.json()
    assert active["state"] == "active"
    assert (active["created_by"], active["location"], active["threshold"]) == (
        "Insp Adams",
        LOCATION,
        0.55,
    )
    assert active["starts_at"].endswith("Z") and active["closed_at"] is None
    assert active["links"] == {
        "entries": "/v1/deployments/west-1/entries",
        "report": "/v1/deployments/west-1/report",
        "report_page": "/v1/deployments/west-1/report.html",
        "alerts": "/v1/alerts?deployment=west-1",
    }
    start, end = window(24, 30)
    scheduled = await api.create_deployment("west-2", start=start, end=end, threshold=0.5)
    assert scheduled["state"] == "scheduled"

    listed = await api.ok("GET", "/v1/deployments", "viewer")
    assert [d["id"] for d in listed["deployments"]] == ["west-2", "west-1"]  # newest window
    assert await api.ok("GET", "/v1/deployments/west-1", "clark") == active

    again = deployment_body("west-1", location="somewhere else")
    body = await problem(await api.request("POST", "/v1/deployments", "baker", json=again), 409)
    assert "west-1" in body["detail"] and "already exists" in body["detail"]
    body = await problem(await api.request("GET", "/v1/deployments/nowhere", "viewer"), 404)
    assert "nowhere" in body["detail"]
    close = {"json": {"reason": "x"}}
    await problem(await api.request("POST", "/v1/deployments/nowhere/close", "adams", **close), 404)
    await problem(await api.request("GET", "/v1/deployments/nowhere/report", "viewer"), 404)

    created = await api.audit("deployment.create")
    assert [(e["subject"], e["actor"]) for e in created] == [
        ("west-1", "Insp Adams"),
        ("west-2", "Insp Adams"),
    ]
    assert created[0]["details"]["location"] == LOCATION
    assert created[0]["actor_token"] is not None
    # Only an authoriser (or admin) records a deployment.
    refused = await api.request("POST", "/v1/deployments", "clark", json=deployment_body("w-3"))
    await problem(refused, 403)


DROP = object()
"""A field left out of the body."""


def _window(start_h: float, end_h: float) -> dict[str, str]:
    start, end = window(start_h, end_h)
    return {"start": start, "end": end}


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        pytest.param(lambda: _window(3, 2), ["end"], id="end-before-start"),
        pytest.param(lambda: _window(-1, 31 * 24), ["end"], id="window-over-31-days"),
        pytest.param(lambda: _window(-3, -1), ["end"], id="end-in-the-past"),
        pytest.param(lambda: {"camera": "cam_a"}, ["camera"], id="unknown-field"),
        pytest.param(lambda: {"id": "West Field!"}, ["id"], id="bad-id-pattern"),
        pytest.param(lambda: {"id": "x" * 65}, ["id"], id="id-too-long"),
        pytest.param(lambda: {"threshold": "0.5"}, ["threshold"], id="threshold-as-string"),
        pytest.param(lambda: {"threshold": 2.0}, ["threshold"], id="threshold-out-of-range"),
        pytest.param(lambda: {"start": 1_800_000_000}, ["start"], id="start-as-number"),
        pytest.param(lambda: {"start": "2026-11-26T10:00:00"}, ["start"], id="no-utc-offset"),
        pytest.param(lambda: {"location": "   "}, ["location"], id="blank-location"),
        pytest.param(lambda: {"location": "x" * 501}, ["location"], id="location-too-long"),
        pytest.param(
            lambda: {"purpose": DROP, "authorised_by": 7, "threshold": None},
            ["authorised_by", "purpose", "threshold"],
            id="missing-and-wrong-types",
        ),
    ],
)
async def test_a_bad_deployment_is_422_with_each_field_and_stores_nothing(
    api: Api, changes: Callable[[], dict[str, Any]], names: list[str]
) -> None:
    body = {k: v for k, v in deployment_body("west-1", **changes()).items() if v is not DROP}
    resp = await api.request("POST", "/v1/deployments", "adams", json=body)
    found = await problem(resp, 422)
    assert sorted(p["name"] for p in found["invalid_params"]) == names
    if names == ["camera"]:
        assert found["invalid_params"][0]["reason"].startswith("unknown field")
    assert (await api.ok("GET", "/v1/deployments", "viewer"))["deployments"] == []
    assert await api.audit("deployment.create") == []


async def test_bad_deployment_requests_are_refused_by_kind(api: Api) -> None:
    json_type = {"Content-Type": "application/json"}
    resp = await api.request("POST", "/v1/deployments", "adams", data=b'{"id": ', headers=json_type)
    assert "not well-formed JSON" in (await problem(resp, 400))["detail"]
    text = json.dumps(deployment_body("west-1")).encode()
    resp = await api.request(
        "POST", "/v1/deployments", "adams", data=text, headers={"Content-Type": "text/plain"}
    )
    assert "application/json" in (await problem(resp, 415))["detail"]
    big = json.dumps(deployment_body("west-1", purpose="p" * MAX_DEPLOYMENT_BYTES)).encode()
    resp = await api.request("POST", "/v1/deployments", "adams", data=big, headers=json_type)
    assert (await problem(resp, 413))["max_bytes"] == MAX_DEPLOYMENT_BYTES

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    resp = await api.request("POST", "/v1/deployments", "adams", data=chunks(), headers=json_type)
    await problem(resp, 413)
    resp = await api.request("POST", "/v1/deployments", "adams", json=["west-1"])
    assert (await problem(resp, 422))["invalid_params"][0]["name"] == "(body)"
    await problem(await api.request("GET", "/v1/deployments", "viewer", params={"x": "1"}), 400)
    assert (await api.ok("GET", "/v1/deployments", "viewer"))["deployments"] == []
    assert await api.audit("deployment.create") == []


async def test_closing_destroys_the_watchlist_and_is_audited(
    api: Api, photos: dict[str, Path]
) -> None:
    await api.create_deployment("west-1")
    await api.enrol("west-1", "W-1", photos["obama"].read_bytes())
    await api.enrol("west-1", "W-2", photos["biden"].read_bytes(), approve=False)
    resp = await api.request(
        "POST", "/v1/deployments/west-1/close", "clark", json={"reason": "operation over"}
    )
    await problem(resp, 403)  # a watchlist manager cannot close a deployment

    closed = await api.ok(
        "POST", "/v1/deployments/west-1/close", "baker", json={"reason": "operation over"}
    )
    assert (closed["state"], closed["closed_by"], closed["close_reason"]) == (
        "closed",
        "Supt Baker",
        "operation over",
    )
    assert closed["closed_at"].endswith("Z")
    assert closed["entries_destroyed"] == {"active": 1, "pending_approval": 1}
    again = await api.request(
        "POST", "/v1/deployments/west-1/close", "adams", json={"reason": "twice"}
    )
    assert "closed" in (await problem(again, 409))["detail"]
    assert (await api.ok("GET", "/v1/deployments/west-1", "viewer"))["state"] == "closed"

    for entry_id in ("W-1", "W-2"):
        url = f"/v1/deployments/west-1/entries/{entry_id}"
        entry = await api.ok("GET", url, "clark")
        assert (entry["state"], entry["display_name"], entry["source"]) == (
            "destroyed",
            None,
            None,
        )
        assert (entry["has_image"], entry["templates"], entry["image_url"]) == (False, 0, None)
        await problem(await api.request("GET", f"{url}/image", "adams"), 410)
        await problem(await api.request("POST", f"{url}/approval", "adams"), 409)
        await problem(await api.request("DELETE", url, "clark"), 409)
    # Nothing biometric is left in the file.
    assert [(row[2], row[3], row[4]) for row in api.stored_entries()] == [
        ("destroyed", None, None),
        ("destroyed", None, None),
    ]
    resp = await api.upload("west-1", "W-3", photos["kit"].read_bytes())
    assert "closed" in (await problem(resp, 409))["detail"]
    assert len(api.stored_entries()) == 2

    (close_entry,) = await api.audit("deployment.close")
    assert (close_entry["subject"], close_entry["actor"]) == ("west-1", "Supt Baker")
    assert close_entry["details"] == {
        "reason": "operation over",
        "entries_destroyed": {"active": 1, "pending_approval": 1},
    }
    # The report remains after the close.
    report = await api.ok("GET", "/v1/deployments/west-1/report", "baker")
    assert report["state"] == "closed"
    assert report["watchlist"] == {
        "size": 1,
        "active": 0,
        "pending_approval": 0,
        "deleted": 0,
        "destroyed": 2,
        "damaged": 0,
        "damaged_entries": [],
        "stale": 0,
        "stale_entries": [],
    }


# -- watchlist entries ------------------------------------------------------------------


async def test_enrol_view_approve_and_delete_an_entry(api: Api, photos: dict[str, Path]) -> None:
    await api.create_deployment("west-1")
    original = photos["obama"].read_bytes()
    assert b"Exif" in original[:4096]
    resp = await api.upload("west-1", "W-1", original, filename="obama.jpg", threshold="0.45")
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == "/v1/deployments/west-1/entries/W-1"
    entry = await resp.json()
    assert_no_embedding(entry)
    assert (entry["state"], entry["has_image"], entry["templates"]) == (
        "pending_approval",
        True,
        1,
    )
    assert (entry["added_by"], entry["approved_by"], entry["origin"]) == ("PC Clark", None, "api")
    assert entry["display_name"] == ENTRY_FIELDS["display_name"]
    assert (entry["image_date"], entry["threshold"]) == ("2025-11-02", 0.45)
    assert entry["image_url"] == "/v1/deployments/west-1/entries/W-1/image"
    assert entry["quality"]["size_px"] > 100 and entry["quality"]["score"] > 0.95
    assert await api.ok("GET", "/v1/deployments/west-1/entries/W-1", "viewer") == entry
    listed = await api.ok(
        "GET", "/v1/deployments/west-1/entries", "auditor", params={"state": "pending_approval"}
    )
    assert listed == {"entries": [entry]}
    assert_no_embedding(listed)
    none = await api.ok(
        "GET", "/v1/deployments/west-1/entries", "viewer", params={"state": "active"}
    )
    assert none == {"entries": []}

    # The stored photo is a re-encoded JPEG of the same picture, without its EXIF data.
    # While pending, only those who enrol and approve entries see it (not yet searched, so
    # no officer compares a live face with it).
    image_url = entry["image_url"]
    views = []
    for who in ("adams", "clark"):
        resp = await api.request("GET", image_url, who)
        assert resp.status == 200
        assert resp.content_type == "image/jpeg"
        assert resp.headers["Cache-Control"] == "no-store"
        views.append(await resp.read())
    stored = views[0]
    assert stored == views[1] and stored.startswith(b"\xff\xd8") and b"Exif" not in stored
    decoded = cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR)
    reference = cv2.imread(str(photos["obama"]), cv2.IMREAD_COLOR)
    assert decoded is not None and reference is not None
    assert decoded.shape == reference.shape
    assert float(np.abs(decoded.astype(float) - reference.astype(float)).mean()) < 5.0
    await problem(await api.request("GET", image_url, "auditor"), 403)  # no faces for auditors
    for who in ("viewer", "evans"):
        body = await problem(await api.request("GET", image_url, who), 403)
        assert body["allowed_roles"] == ["admin", "authoriser", "watchlist-manager"]
    viewed = await api.audit("entry.view")
    assert [(e["subject"], e["actor"], e["details"]) for e in viewed] == [
        ("west-1/W-1", "Insp Adams", {"part": "image"}),
        ("west-1/W-1", "PC Clark", {"part": "image"}),
    ]

    # Four eyes: the person who added it cannot approve it, whatever token they use.
    approval = "/v1/deployments/west-1/entries/W-1/approval"
    body = await problem(await api.request("POST", approval, "clark_authoriser"), 409)
    assert "added by PC Clark" in body["detail"]
    body = await problem(await api.request("POST", approval, "clark"), 403)
    assert body["allowed_roles"] == ["admin", "authoriser"]
    resp = await api.request("POST", approval, "adams", json={"approved": True})
    await problem(resp, 400)  # approval takes no body
    still = await api.ok("GET", "/v1/deployments/west-1/entries/W-1", "viewer")
    assert still["state"] == "pending_approval"
    assert await api.audit("entry.approve") == []

    approved = await api.ok("POST", approval, "adams", 201)
    assert (approved["state"], approved["approved_by"]) == ("active", "Insp Adams")
    assert approved["approved_at"].endswith("Z")
    assert_no_embedding(approved)
    again = await api.ok("POST", approval, "baker", 200)
    assert again == approved  # still Insp Adams's approval
    approvals = await api.audit("entry.approve")
    assert [(e["subject"], e["actor"]) for e in approvals] == [("west-1/W-1", "Insp Adams")]
    # Approved, it is searched: the officers comparing live faces see it now.
    for who in ("viewer", "evans"):
        resp = await api.request("GET", image_url, who)
        assert resp.status == 200 and await resp.read() == stored

    deleted = await api.ok(
        "DELETE", "/v1/deployments/west-1/entries/W-1", "clark", json={"reason": "arrested"}
    )
    assert (deleted["state"], deleted["remove_reason"], deleted["removed_by"]) == (
        "deleted",
        "arrested",
        "PC Clark",
    )
    assert (deleted["has_image"], deleted["templates"], deleted["display_name"]) == (
        False,
        0,
        None,
    )
    assert_no_embedding(deleted)
    body = await problem(await api.request("GET", image_url, "adams"), 410)
    assert "destroyed" in body["detail"]
    assert (await api.ok("GET", "/v1/deployments/west-1/entries/W-1", "viewer")) == deleted
    await problem(await api.request("POST", approval, "baker"), 409)  # a deleted entry
    assert api.stored_entries() == [("west-1", "W-1", "deleted", None, None)]

    resp = await api.upload("west-1", "W-1", photos["biden"].read_bytes())
    assert "never reused" in (await problem(resp, 409))["detail"]
    created = await api.audit("entry.create")
    assert [(e["subject"], e["actor"]) for e in created] == [("west-1/W-1", "PC Clark")]
    deletes = await api.audit("entry.delete")
    assert [(e["subject"], e["details"]) for e in deletes] == [
        ("west-1/W-1", {"was": "active", "reason": "arrested"})
    ]
    await problem(await api.request("GET", "/v1/deployments/west-1/entries/W-9", "viewer"), 404)
    await problem(await api.request("GET", "/v1/deployments/nope/entries/W-1", "viewer"), 404)
    await problem(await api.request("GET", "/v1/deployments/nope/entries", "viewer"), 404)
    resp = await api.request(
        "GET", "/v1/deployments/west-1/entries", "viewer", params={"state": "gone"}
    )
    assert (await problem(resp, 400))["invalid_params"][0]["name"] == "state"


def _huge_image() -> bytes:
    """An upload just over the image limit (JPEG magic first, so only its size is wrong)."""
    return b"\xff\xd8\xff\xe0" + b"\0" * MAX_IMAGE_BYTES


def _multipart(entry_id: str, image: bytes, boundary: str = "lfr-boundary") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in {"id": entry_id, **ENTRY_FIELDS}.items()
    ]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    return ("".join(parts) + head).encode() + image + f"\r\n--{boundary}--\r\n".encode()


BAD_UPLOADS: list[Any] = [
    pytest.param("dogs", {}, 422, "no_face", None, id="no-face"),
    pytest.param("two_faces", {}, 422, "multiple_faces", None, id="two-similar-faces"),
    pytest.param("small_face", {}, 422, "face_too_small", None, id="tiny-face"),
    pytest.param("truncated", {}, 422, "unreadable", None, id="truncated-jpeg"),
    pytest.param("text", {}, 415, None, None, id="text-file-as-image"),
    pytest.param("huge", {}, 413, None, None, id="image-over-10-MiB"),
    pytest.param("huge-body", {}, 413, None, None, id="declared-body-over-the-limit"),
    pytest.param("huge-chunked", {}, 413, None, None, id="chunked-image-over-10-MiB"),
    pytest.param("no-image", {}, 422, None, ["image"], id="missing-image"),
    pytest.param("obama", {"nickname": "Bazza"}, 422, None, ["nickname"], id="unknown-field"),
    pytest.param("obama", {"image_date": "02/11/2025"}, 422, None, ["image_date"], id="bad-date"),
    pytest.param("obama", {"id": "W 1!"}, 422, None, ["id"], id="bad-entry-id"),
    pytest.param("obama", {"threshold": "3"}, 422, None, ["threshold"], id="bad-threshold"),
    pytest.param("obama", {"threshold": "0.6"}, 422, None, ["threshold"], id="looser-threshold"),
    pytest.param("obama", {"display_name": " "}, 422, None, ["display_name"], id="blank-name"),
    pytest.param("json", {}, 415, None, None, id="json-instead-of-multipart"),
    pytest.param("unknown-deployment", {}, 404, None, None, id="unknown-deployment"),
]


@pytest.mark.parametrize(("photo", "changes", "status", "reason", "names"), BAD_UPLOADS)
async def test_a_refused_upload_stores_nothing(
    api: Api,
    photos: dict[str, Path],
    photo: str,
    changes: dict[str, str],
    status: int,
    reason: str | None,
    names: list[str] | None,
) -> None:
    await api.create_deployment("west-1")
    url = "/v1/deployments/west-1/entries"
    kw: dict[str, Any] = {}
    if photo in photos:
        kw["data"] = upload_form("W-1", photos[photo].read_bytes(), **changes)
    elif photo == "truncated":
        whole = photos["obama"].read_bytes()
        kw["data"] = upload_form("W-1", whole[: len(whole) // 2])
    elif photo == "text":
        kw["data"] = upload_form("W-1", b"Barack Obama, born 1961\n", filename="notes.txt")
    elif photo == "huge":  # the whole body is within its limit; the image part is not
        kw["data"] = _multipart("W-1", _huge_image())
        assert len(kw["data"]) < MAX_BODY_BYTES
    elif photo == "huge-body":
        kw["data"] = _multipart("W-1", _huge_image() + b"\0" * 64 * 1024)
        assert len(kw["data"]) > MAX_BODY_BYTES
    elif photo == "huge-chunked":
        whole = _multipart("W-1", _huge_image())

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for start in range(0, len(whole), 256 * 1024):
                yield whole[start : start + 256 * 1024]

        kw["data"] = chunks()
    elif photo == "no-image":
        kw["data"] = upload_form("W-1", None)
    elif photo == "json":
        kw["json"] = {"id": "W-1", **ENTRY_FIELDS, "image": "aGVsbG8="}
    elif photo == "unknown-deployment":
        url = "/v1/deployments/nowhere/entries"
        kw["data"] = upload_form("W-1", photos["obama"].read_bytes())
    if photo.startswith("huge"):
        kw["headers"] = {"Content-Type": "multipart/form-data; boundary=lfr-boundary"}

    resp = await api.request("POST", url, "clark", **kw)
    body = await problem(resp, status)
    if reason is not None:
        assert body["reason"] == reason, body
    if names is not None:
        assert [p["name"] for p in body["invalid_params"]] == names, body
    if status == 413:
        assert body["max_bytes"] in (MAX_IMAGE_BYTES, MAX_BODY_BYTES)
    assert api.stored_entries() == []
    assert (await api.ok("GET", "/v1/deployments/west-1/entries", "viewer")) == {"entries": []}
    assert await api.audit("entry.create") == []


async def test_uploads_need_a_watchlist_manager(api: Api, photos: dict[str, Path]) -> None:
    await api.create_deployment("west-1")
    for who in ("adams", "viewer", "auditor"):
        resp = await api.upload("west-1", "W-1", photos["obama"].read_bytes(), who=who)
        assert (await problem(resp, 403))["allowed_roles"] == ["admin", "watchlist-manager"]
    assert api.stored_entries() == []


# -- the report, alert filters and the live stream --------------------------------------


async def adjudicate(api: Api, alert_id: str, decision: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = await api.ok(
        "POST", f"/v1/alerts/{alert_id}/adjudication", "evans", 201, json=decision
    )
    return record


async def test_the_report_counts_decisions_and_every_export_is_audited(
    api: Api, photos: dict[str, Path]
) -> None:
    await api.create_deployment("west-1")
    await api.create_deployment("east-1", location="Romford")
    for entry_id, photo in (("W-1", "obama"), ("W-2", "biden")):
        await api.enrol("west-1", entry_id, photos[photo].read_bytes())
    await api.enrol("west-1", "W-3", photos["kit"].read_bytes(), approve=False)
    arrest, false_alert, _open = api.push_alerts("west-1", "W-1", "W-2", "W-1-other")
    (elsewhere,) = api.push_alerts("east-1", "E-1", first=10)
    await adjudicate(api, arrest.alert.id, {"decision": "match_confirmed", "outcome": "arrest"})
    await adjudicate(api, false_alert.alert.id, {"decision": "not_a_match"})
    await adjudicate(api, elsewhere.alert.id, {"decision": "not_a_match"})

    report = await api.ok("GET", "/v1/deployments/west-1/report", "viewer")
    assert report["alerts"] == {
        "total": 3,
        "confirmed": 1,
        "false": 1,
        "unsure": 0,
        "not_adjudicated": 1,
    }
    assert report["outcomes"] == {"arrest": 1}
    assert report["watchlist"] == {
        "size": 2,
        "active": 2,
        "pending_approval": 1,
        "deleted": 0,
        "destroyed": 0,
        "damaged": 0,
        "damaged_entries": [],
        "stale": 0,
        "stale_entries": [],
    }
    assert (report["deployment_id"], report["state"], report["location"]) == (
        "west-1",
        "active",
        LOCATION,
    )
    assert (report["faces_seen"], report["tracks_seen"], report["false_alert_rate"]) == (
        0,
        0,
        None,
    )
    assert report["generated_at"].endswith("Z") and report["closed_at"] is None
    assert_no_embedding(report)

    resp = await api.request("GET", "/v1/deployments/west-1/report.html", "baker")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert resp.headers["Cache-Control"] == "no-store"
    page = await resp.text()
    assert "<td>Westfield Stratford &lt;east entrance&gt; &amp; car park</td>" in page
    assert LOCATION not in page  # escaped, never raw
    for label, value in (
        ("Alerts", "3"),
        ("Confirmed alerts", "1"),
        ("False alerts", "1"),
        ("Not adjudicated", "1"),
        ("Watchlist size", "2"),
        ("arrest", "1"),
        ("Impact assessment", "DPIA-2026-017"),
        ("People seen (face tracks)", "0"),
    ):
        assert f"<th>{label}</th><td>{value}</td>" in page, label
    assert "<script" not in page.lower()
    # Not for the watchlist manager; no parameters.
    await problem(await api.request("GET", "/v1/deployments/west-1/report", "clark"), 403)
    resp = await api.request("GET", "/v1/deployments/west-1/report", "viewer", params={"x": "1"})
    await problem(resp, 400)

    exports = await api.audit("report.export")
    assert [(e["subject"], e["actor"], e["details"]) for e in exports] == [
        ("west-1", "Control room", {"form": "json", "demographics": False}),
        ("west-1", "Supt Baker", {"form": "html", "demographics": True}),
    ]


async def test_alert_list_filters_by_deployment_and_status(api: Api) -> None:
    await api.create_deployment("west-1")
    await api.create_deployment("east-1")
    west = api.push_alerts("west-1", "W-1", "W-2")
    east = api.push_alerts("east-1", "E-1", first=10)
    await adjudicate(api, west[0].alert.id, {"decision": "unsure"})

    async def ids(**params: str) -> set[str]:
        page = await api.ok("GET", "/v1/alerts", "viewer", params=params)
        return {a["id"] for a in page["alerts"]}

    every = {e.alert.id for e in west + east}
    assert await ids() == every
    assert await ids(deployment="west-1") == {e.alert.id for e in west}
    assert await ids(deployment="east-1") == {east[0].alert.id}
    assert await ids(deployment="nowhere") == set()
    assert await ids(status="adjudicated") == {west[0].alert.id}
    assert await ids(status="open") == every - {west[0].alert.id}
    assert await ids(status="open", deployment="west-1") == {west[1].alert.id}
    page = await api.ok("GET", "/v1/alerts", "viewer", params={"deployment": "west-1"})
    assert {a["deployment_id"] for a in page["alerts"]} == {"west-1"}
    body = await problem(
        await api.request("GET", "/v1/alerts", "viewer", params={"status": "x"}), 400
    )
    assert body["invalid_params"] == [{"name": "status", "reason": "one of open, adjudicated"}]


async def test_the_stream_sends_adjudications_of_its_deployment_only(api: Api) -> None:
    await api.create_deployment("west-1")
    await api.create_deployment("east-1")
    west = api.push_alerts("west-1", "W-1", "W-2")
    east = api.push_alerts("east-1", "E-1", first=10)
    stream = await api.request(
        "GET", "/v1/alerts/stream", "viewer", params={"after": "0", "deployment": "west-1"}
    )
    assert stream.status == 200
    assert stream.content_type == "text/event-stream"
    replayed = [await read_event(stream), await read_event(stream)]
    assert [e["event"] for e in replayed] == ["raised", "raised"]
    assert [json.loads(e["data"])["id"] for e in replayed] == [e.alert.id for e in west]

    # East's decision is stored first, then west's: the stream skips east's.
    await adjudicate(api, east[0].alert.id, {"decision": "not_a_match"})
    await adjudicate(api, west[1].alert.id, {"decision": "match_confirmed", "outcome": "arrest"})
    event = await read_event(stream)
    assert event["event"] == "adjudicated"
    data = json.loads(event["data"])
    assert (data["id"], data["deployment_id"], data["status"]) == (
        west[1].alert.id,
        "west-1",
        "adjudicated",
    )
    assert int(event["id"]) > int(replayed[-1]["id"]) + 1  # east's event came between
    stream.close()

    # Unfiltered, the same events include east's adjudication, in order.
    everything = await api.request("GET", "/v1/alerts/stream", "viewer", params={"after": "0"})
    events = [await read_event(everything) for _ in range(5)]
    everything.close()
    assert [(e["event"], json.loads(e["data"])["deployment_id"]) for e in events] == [
        ("raised", "west-1"),
        ("raised", "west-1"),
        ("raised", "east-1"),
        ("adjudicated", "east-1"),
        ("adjudicated", "west-1"),
    ]
    resp = await api.request("GET", "/v1/alerts/stream", "viewer", params={"room": "x"})
    await problem(resp, 400)


# -- edges the first version got wrong ---------------------------------------------------


async def test_a_window_ending_after_the_year_9999_is_refused_or_shown(api: Api) -> None:
    body = deployment_body(
        "far-1", start="9999-12-31T00:00:00+00:00", end="9999-12-31T23:59:59-01:00"
    )
    resp = await api.request("POST", "/v1/deployments", "adams", json=body)
    assert resp.status in (201, 422), await resp.text()
    resp = await api.request("GET", "/v1/deployments", "viewer")
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(
    "part_headers",
    [
        pytest.param(b"Content-Disposition form-data\r\n", id="header-without-colon"),
        pytest.param(
            b'Content-Disposition: form-data; name="id"\r\nX-Long: ' + b"a" * 9000 + b"\r\n",
            id="header-over-8190-bytes",
        ),
    ],
)
async def test_a_malformed_part_header_is_a_400(api: Api, part_headers: bytes) -> None:
    await api.create_deployment("west-1")
    data = b"--abc\r\n" + part_headers + b"\r\nW-1\r\n--abc--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=abc"}
    url = "/v1/deployments/west-1/entries"
    await problem(await api.request("POST", url, "clark", data=data, headers=headers), 400)
    assert api.stored_entries() == []


async def test_a_chunked_upload_over_the_body_limit_is_a_413(api: Api) -> None:
    await api.create_deployment("west-1")
    part = b'--abc\r\nContent-Disposition: form-data; name="notes"\r\n\r\n' + b"x" * (4 << 20)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for _ in range(3):  # 12 MiB in all, over MAX_BODY_BYTES
            yield part + b"\r\n"
        yield b"--abc--\r\n"

    headers = {"Content-Type": "multipart/form-data; boundary=abc"}
    url = "/v1/deployments/west-1/entries"
    await problem(await api.request("POST", url, "clark", data=chunks(), headers=headers), 413)


async def test_a_cursor_beyond_sqlite_integers_is_a_400(api: Api) -> None:
    resp = await api.request("GET", "/v1/alerts", "viewer", params={"cursor": str(2**63)})
    body = await problem(resp, 400)
    assert [p["name"] for p in body["invalid_params"]] == ["cursor"]


def several_photos(entry_id: str, *images: tuple[str, bytes]) -> FormData:
    """The enrolment form with one image part per photo."""
    form = upload_form(entry_id, None)
    for filename, image in images:
        form.add_field("image", image, filename=filename, content_type="image/jpeg")
    return form


async def test_several_photos_give_an_entry_one_template_each(
    api: Api, photos: dict[str, Path], shared_data: Path
) -> None:
    await api.create_deployment("west-1")
    url = "/v1/deployments/west-1/entries"
    obama = photos["obama"].read_bytes()
    other = (shared_data / "faces/people/obama/obama2.jpg").read_bytes()
    entry = await api.ok(
        "POST", url, "clark", 201, data=several_photos("W-2", ("a.jpg", obama), ("b.jpg", other))
    )
    assert entry["templates"] == 2 and entry["state"] == "pending_approval"
    assert_no_embedding(entry)

    # One photo that fails refuses the whole upload, naming which one.
    dogs = photos["dogs"].read_bytes()
    resp = await api.request(
        "POST", url, "clark", data=several_photos("W-3", ("a.jpg", obama), ("dogs.jpg", dogs))
    )
    body = await problem(resp, 422)
    assert body["reason"] == "no_face" and body["image"] == "image 2 'dogs.jpg'"
    too_many = several_photos("W-4", *[(f"{i}.jpg", obama) for i in range(6)])
    body = await problem(await api.request("POST", url, "clark", data=too_many), 422)
    assert body["invalid_params"] == [{"name": "image", "reason": "6 images; at most 5 per entry"}]
    assert [row[1] for row in api.stored_entries()] == ["W-2"]
