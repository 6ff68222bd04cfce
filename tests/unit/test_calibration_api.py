"""A deployment's calibration through the API: PUT, GET, the threshold change, the report.

A real store file and the real app on loopback, auth on. Expected false alerts per 1,000
passers-by are checked against 1 - (1 - p)^N for the synthetic calibration's known p.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_aiohttp import AiohttpClient

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.calibration import fpir
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.policy import ThresholdPolicies
from lfr_actors.store.records import Enrolled
from lfr_actors.store.tokens import Role
from lfr_actors.testing.declarations import make_deployment, make_entry
from lfr_actors.testing.doubles import make_sighting
from tests.api_helpers import bearer, problem
from tests.calibration_samples import sample_calibration

ENTRIES = 100
P = 0.001  # the sample calibration's p from 0.55 on; 0 at 0.5 and below


def enrolled(dimension: int = 128) -> Enrolled:
    return Enrolled(
        image=b"\xff\xd8\xff fake",
        image_type="image/jpeg",
        embeddings=np.ones((1, dimension), dtype=np.float32),
        quality={},
    )


def seed(db: Path) -> None:
    """dep1 (active now, threshold 0.6) with 100 approved entries; dep-closed, closed."""
    now = time.time()
    with Database(db) as store:
        deployments = Deployments(store)
        deployments.create(make_deployment("dep1", now - 3600, now + 3600), actor=Actor("op"))
        for i in range(ENTRIES):
            deployments.add_entry(
                "dep1", make_entry(f"E{i}"), enrolled(), actor=Actor("op"),
                approved_by=Actor("Supt Baker"),
            )  # fmt: skip
        deployments.create(make_deployment("dep-closed", now - 3600, now + 3600), actor=Actor("op"))
        deployments.close("dep-closed", actor=Actor("Supt Baker"), reason="over")


class Api:
    def __init__(self, client: Any, db: Path) -> None:
        self.client = client
        self.db = db
        self.authoriser = bearer(db, Role.AUTHORISER, "Insp Adams")
        self.manager = bearer(db, Role.WATCHLIST_MANAGER)
        self.viewer = bearer(db, Role.VIEWER)
        self.adjudicator = bearer(db, Role.ADJUDICATOR)

    async def put(self, body: Any, deployment: str = "dep1", headers: Any = None) -> Any:
        return await self.client.put(
            f"/v1/deployments/{deployment}/calibration",
            json=body,
            headers=headers or self.authoriser,
        )

    async def withdraw(
        self, reason: Any = "another population", deployment: str = "dep1", headers: Any = None
    ) -> Any:
        return await self.client.delete(
            f"/v1/deployments/{deployment}/calibration",
            json={"reason": reason},
            headers=headers or self.authoriser,
        )

    async def get(self) -> dict[str, Any]:
        resp = await self.client.get("/v1/deployments/dep1", headers=self.viewer)
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body

    def stored(self) -> tuple[Any, ...]:
        raw = sqlite3.connect(self.db)
        try:
            return (
                raw.execute("SELECT id, calibration FROM deployments ORDER BY id").fetchall(),
                raw.execute("SELECT seq, action, details FROM audit_log").fetchall(),
            )
        finally:
            raw.close()

    def calibration_audit(self) -> list[tuple[str, str, str]]:
        raw = sqlite3.connect(self.db)
        try:
            return raw.execute(
                "SELECT subject, actor, details FROM audit_log "
                "WHERE action = 'deployment.calibration' ORDER BY seq"
            ).fetchall()
        finally:
            raw.close()


@pytest.fixture
async def api(tmp_path: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[Api]:
    db = tmp_path / "alerts.sqlite3"
    seed(db)
    client = await aiohttp_client(create_app(db, poll_interval_s=0.05))
    yield Api(client, db)


def expected(n: int, p: float) -> float:
    return float(f"{1000 * fpir(p, n):.4g}")


async def test_without_a_calibration_the_figures_say_why(api: Api) -> None:
    figures = (await api.get())["false_alerts"]
    assert figures["watchlist_size"] == ENTRIES and figures["threshold"] == 0.6
    assert figures["expected_per_1000"] is None
    assert "no calibration" in figures["expected_reason"]
    assert figures["observed_per_1000"] is None and figures["observed_reason"]
    assert figures["calibration"] is None


async def test_put_stores_audits_and_shows_the_expected_rate(api: Api) -> None:
    document = sample_calibration(P)
    resp = await api.put(document)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["changed"] is True
    assert body["false_alerts"]["expected_per_1000"] == expected(ENTRIES, P)
    figures = (await api.get())["false_alerts"]
    assert figures["expected_per_1000"] == pytest.approx(95.21, abs=0.01)  # 1-(0.999)^100
    assert figures["expected_upper_per_1000"] > figures["expected_per_1000"]
    assert figures["calibration"]["model"] == "dlib_resnet_v1"
    assert figures["calibration"]["non_mated_comparisons"] == 1000
    [(subject, actor, details)] = api.calibration_audit()
    assert subject == "dep1" and actor == "Insp Adams"
    assert '"from":null' in details.replace(" ", "") and '"sha256"' in details
    # The same file again changes nothing and writes nothing.
    before = api.stored()
    again = await api.put(document)
    assert again.status == 200 and (await again.json())["changed"] is False
    assert api.stored() == before


async def test_the_threshold_change_answers_with_the_new_expected_rate(api: Api) -> None:
    assert (await api.put(sample_calibration(P))).status == 200
    with Database(api.db) as store:  # an admin allows thresholds beyond the calibrated range
        ThresholdPolicies(store).set(0.9, 0.9, actor=Actor("admin"), reason="a wider sweep")

    async def change(threshold: float) -> dict[str, Any]:
        resp = await api.client.post(
            "/v1/deployments/dep1/threshold",
            json={"threshold": threshold, "reason": "governance review"},
            headers=api.authoriser,
        )
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    # 0.55 lies halfway between grid points 0.5 (p = 0) and 0.6 (p = 0.001).
    halfway = await change(0.55)
    assert halfway["expected_false_alerts_per_1000"] == expected(ENTRIES, P / 2)
    assert halfway["false_alerts"]["threshold"] == 0.55
    strict = await change(0.45)
    assert strict["expected_false_alerts_per_1000"] == 0.0
    assert strict["false_alerts"]["expected_upper_per_1000"] > 0  # zero seen, not zero bound
    outside = await change(0.8)
    assert outside["expected_false_alerts_per_1000"] is None
    assert "outside the calibrated range" in outside["false_alerts"]["expected_reason"]


async def test_the_report_gives_expected_beside_observed(api: Api) -> None:
    assert (await api.put(sample_calibration(P))).status == 200
    with Database(api.db) as store:
        Deployments(store).add_counters("dep1", frames=500, faces=10_000, tracks=2_000)
    fuser = Fuser("dep1", FusionConfig(threshold=0.6, fusion_window_s=1.0))
    ids = []
    with AlertStore(api.db) as alerts:
        for n in (1, 2):
            event = fuser.observe(make_sighting(n, entry=f"E{n}", at=100.0 * n))
            assert event is not None
            alerts.apply(event)
            ids.append(event.alert.id)
    for alert_id in ids:
        resp = await api.client.post(
            f"/v1/alerts/{alert_id}/adjudication",
            json={"decision": "not_a_match"},
            headers=api.adjudicator,
        )
        assert resp.status in (200, 201), await resp.text()
    resp = await api.client.get("/v1/deployments/dep1/report", headers=api.viewer)
    assert resp.status == 200
    figures = (await resp.json())["false_alerts"]
    assert figures["false_alerts"] == 2
    assert figures["observed_per_1000"] == 1.0  # 2 per 2,000 people
    assert figures["observed_per_1000_faces"] == 0.2
    assert figures["expected_per_1000"] == expected(ENTRIES, P)
    page = await api.client.get("/v1/deployments/dep1/report.html", headers=api.viewer)
    text = await page.text()
    assert "Expected and observed false alerts" in text
    assert f"{expected(ENTRIES, P):g} per 1,000" in text and "1 per 1,000" in text


async def test_a_stored_calibration_damaged_on_disk_is_said_not_fatal(api: Api) -> None:
    """The deployment's answers and its report stay readable; the expected rate says why."""
    assert (await api.put(sample_calibration(P))).status == 200
    raw = sqlite3.connect(api.db)
    with raw:
        raw.execute("UPDATE deployments SET calibration = '{\"format\": 1}' WHERE id = 'dep1'")
    raw.close()
    figures = (await api.get())["false_alerts"]
    assert figures["expected_per_1000"] is None and figures["calibration"] is None
    assert (
        "the calibration stored for deployment 'dep1' cannot be read"
        in (figures["expected_reason"])
    )
    with Database(api.db) as store:
        report = Deployments(store).report("dep1")
    assert report["false_alerts"]["expected_reason"] == figures["expected_reason"]
    # As the reason says: storing it again mends it, audited with the damaged one's hash.
    mended = await api.put(sample_calibration(P))
    assert mended.status == 200, await mended.text()
    assert (await api.get())["false_alerts"]["expected_per_1000"] == expected(ENTRIES, P)
    last = json.loads(api.calibration_audit()[-1][2])
    assert last["from"]["damaged"] is True and len(last["from"]["sha256"]) == 64
    assert last["to"]["model"] == "dlib_resnet_v1"


async def test_a_calibration_found_unfit_is_withdrawn_audited_with_why(api: Api) -> None:
    assert (await api.put(sample_calibration(P))).status == 200
    resp = await api.withdraw("  calibrated on another population  ")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["changed"] is True
    assert body["false_alerts"]["expected_per_1000"] is None
    assert "no calibration" in body["false_alerts"]["expected_reason"]
    figures = (await api.get())["false_alerts"]
    assert figures["calibration"] is None and figures["expected_per_1000"] is None
    assert figures["observed_reason"] or figures["observed_per_1000"] is not None
    subject, actor, details = api.calibration_audit()[-1]
    assert (subject, actor) == ("dep1", "Insp Adams")
    audited = json.loads(details)
    assert audited["to"] is None and audited["from"]["model"] == "dlib_resnet_v1"
    assert audited["reason"] == "calibrated on another population"
    # Nothing stored: nothing changes, nothing is audited.
    before = api.stored()
    again = await api.withdraw()
    assert again.status == 200 and (await again.json())["changed"] is False
    assert api.stored() == before


async def test_a_withdrawal_without_a_reason_or_by_the_wrong_role_changes_nothing(
    api: Api,
) -> None:
    assert (await api.put(sample_calibration(P))).status == 200
    before = api.stored()
    blank = await problem(await api.withdraw("   "), 422)
    assert [p["name"] for p in blank["invalid_params"]] == ["reason"]
    bare = await api.client.delete("/v1/deployments/dep1/calibration", headers=api.authoriser)
    await problem(bare, 415)  # no body: it must say why
    await problem(await api.withdraw(headers=api.manager), 403)
    await problem(await api.withdraw(deployment="nope"), 404)
    assert "closed" in (await problem(await api.withdraw(deployment="dep-closed"), 409))["detail"]
    assert api.stored() == before


async def test_damaged_entries_are_not_counted_in_the_watchlist_size(api: Api) -> None:
    raw = sqlite3.connect(api.db)
    with raw:
        raw.execute(
            "UPDATE watchlist_entries SET embeddings_sha256 = 'bad' WHERE id IN ('E1', 'E2')"
        )
    raw.close()
    assert (await api.put(sample_calibration(P))).status == 200
    figures = (await api.get())["false_alerts"]
    assert figures["watchlist_size"] == ENTRIES - 2
    assert figures["expected_per_1000"] == expected(ENTRIES - 2, P)


def _broken(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(sample_calibration(P))
    change(body)
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_broken(lambda d: d.update(format="other")), "format"),
        (_broken(lambda d: d.update(version=2)), "version"),
        (_broken(lambda d: d["grid"][3].update(p=0.5)), "grid.3.p"),
        (_broken(lambda d: d["probes"].update(non_mated=2)), "probes.non_mated"),
        (_broken(lambda d: d.update(image_paths=["a.jpg"])), "image_paths"),
        (_broken(lambda d: d["model"].update(dimension=512)), "model.dimension"),
        ([1, 2, 3], "(body)"),
    ],
)
async def test_an_invalid_file_is_422_and_stores_nothing(api: Api, body: Any, field: str) -> None:
    before = api.stored()
    resp = await api.put(body)
    found = await problem(resp, 422)
    assert field in [p["name"] for p in found["invalid_params"]], found
    assert api.stored() == before


async def test_closed_unknown_and_unauthorised_are_refused_storing_nothing(api: Api) -> None:
    before = api.stored()
    closed = await problem(await api.put(sample_calibration(P), "dep-closed"), 409)
    assert "closed" in closed["detail"]
    await problem(await api.put(sample_calibration(P), "nope"), 404)
    await problem(await api.put(sample_calibration(P), headers=api.manager), 403)
    assert api.stored() == before
