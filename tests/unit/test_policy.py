"""The store's threshold policy on a real store file: default, setting, enforcement, history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.store.audit import Action, Actor, AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.policy import (
    PolicyBreachError,
    PolicyError,
    ThresholdPolicies,
    threshold_history,
)
from lfr_actors.store.records import Enrolled, Origin
from lfr_actors.testing.declarations import make_deployment, make_entry

T0 = 1_800_000_000.0
HOUR = 3600.0
ADMIN = Actor("Ch Supt Admin", "tok-admin")
AUTHORISER = Actor("Supt Clarke", "tok-supt")
MANAGER = Actor("PC Brown", "tok-pc")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with Database(tmp_path / "alerts.sqlite3") as db:
        yield db


@pytest.fixture
def store(database: Database, clock: Clock) -> Deployments:
    return Deployments(database, clock=clock)


@pytest.fixture
def policies(database: Database, clock: Clock) -> ThresholdPolicies:
    return ThresholdPolicies(database, clock=clock)


def enrolled() -> Enrolled:
    vectors = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
    return Enrolled(image=b"\xff\xd8fake", image_type="image/jpeg", embeddings=vectors, quality={})


def create(store: Deployments, deployment_id: str, threshold: float = 0.5, **window: float) -> None:
    starts, ends = window.get("starts_at", T0 - HOUR), window.get("ends_at", T0 + HOUR)
    store.create(make_deployment(deployment_id, starts, ends, threshold), actor=AUTHORISER)


def audit_count(database: Database) -> int:
    return len(AuditLog(database).page(limit=1000).entries)


def settings_rows(database: Database) -> list[tuple[str, str]]:
    with database.lock:
        return [tuple(r) for r in database.conn.execute("SELECT name, value FROM store_settings")]


def test_until_set_the_policy_is_the_default_models_declared_threshold(
    policies: ThresholdPolicies, database: Database
) -> None:
    policy = policies.get()
    assert DEFAULT_EMBEDDER_SPEC.name == "dlib_resnet_v1"
    assert (policy.deployment_max, policy.entry_max) == (0.6, 0.6)
    assert policy.deployment_max == DEFAULT_EMBEDDER_SPEC.default_threshold
    assert policy.is_default and policy.set_by is None
    assert "the default model's declared threshold (dlib_resnet_v1: 0.6)" in policy.origin()
    assert settings_rows(database) == []  # reading stores nothing


def test_an_admin_sets_it_in_one_audited_transaction(
    policies: ThresholdPolicies, database: Database, clock: Clock
) -> None:
    before = audit_count(database)
    policy, changed = policies.set(0.55, 0.5, actor=ADMIN, reason="NPL calibration at 0.55")
    assert changed
    assert (policy.deployment_max, policy.entry_max) == (0.55, 0.5)
    assert policy.origin() == (
        "set by Ch Supt Admin at 2027-01-15T08:00:00Z because NPL calibration at 0.55"
    )
    assert settings_rows(database) == [
        ("threshold_policy", '{"deployment_max":0.55,"entry_max":0.5}')
    ]
    entries = AuditLog(database).page(limit=1000, action=str(Action.POLICY_CHANGE)).entries
    assert audit_count(database) == before + 1 and len(entries) == 1
    entry = entries[0]
    assert (entry.actor, entry.actor_token, entry.at) == ("Ch Supt Admin", "tok-admin", T0)
    assert entry.details_map() == {
        "from": {"deployment_max": 0.6, "entry_max": 0.6, "default": True},
        "to": {"deployment_max": 0.55, "entry_max": 0.5},
        "reason": "NPL calibration at 0.55",
    }
    # A second change records the first as its old value; the same values write nothing.
    clock.now += 60
    policies.set(0.5, 0.5, actor=ADMIN, reason="tighter after review")
    again, changed = policies.set(0.5, 0.5, actor=ADMIN, reason="once more")
    assert not changed and again.reason == "tighter after review"
    entries = AuditLog(database).page(limit=1000, action=str(Action.POLICY_CHANGE)).entries
    assert [e.details_map()["from"] for e in entries][1] == {
        "deployment_max": 0.55,
        "entry_max": 0.5,
        "default": False,
    }
    assert len(entries) == 2


@pytest.mark.parametrize(
    ("deployment_max", "entry_max", "refusal"),
    [
        (0.0, 0.0, "deployment_max: got 0.0; a threshold is a distance between 0 and 2"),
        (2.0, 0.5, "deployment_max: got 2.0"),
        (0.5, -0.1, "entry_max: got -0.1"),
        (float("nan"), 0.5, "deployment_max: got nan"),
        (0.5, 0.6, "entry_max: got 0.6; an entry may not be looser than any deployment"),
    ],
)
def test_bad_values_are_refused_and_nothing_is_stored(
    policies: ThresholdPolicies,
    database: Database,
    deployment_max: float,
    entry_max: float,
    refusal: str,
) -> None:
    before = audit_count(database)
    with pytest.raises(ValueError, match="^" + refusal.replace("(", r"\(").replace(")", r"\)")):
        policies.set(deployment_max, entry_max, actor=ADMIN, reason="r")
    assert settings_rows(database) == [] and audit_count(database) == before


def test_a_reason_is_required(policies: ThresholdPolicies, database: Database) -> None:
    with pytest.raises(ValueError, match="reason"):
        policies.set(0.5, 0.5, actor=ADMIN, reason="   ")
    assert settings_rows(database) == []


def test_looser_deployments_and_entries_are_refused_with_the_policys_value(
    store: Deployments, policies: ThresholdPolicies, database: Database
) -> None:
    with pytest.raises(PolicyError) as refused:
        create(store, "loose", 0.65)
    exc = refused.value
    assert (exc.value, exc.policy_max, exc.policy_field) == (0.65, 0.6, "deployment_max")
    assert str(exc).startswith(
        "threshold 0.65 is looser than the store's threshold policy allows: deployment_max "
        "0.6 (the default model's declared threshold"
    )
    assert "`lfr policy set --deployment-max X --reason TEXT`" in str(exc)
    assert store.find("loose") is None
    audited = audit_count(database)

    create(store, "dep1", 0.6)  # at the cap is allowed
    audited += 1
    policies.set(0.6, 0.5, actor=ADMIN, reason="entries stricter")
    audited += 1
    with pytest.raises(PolicyError, match=r"threshold 0\.7 is looser .* deployment_max 0\.6"):
        store.change_threshold("dep1", 0.7, actor=AUTHORISER, reason="more alerts")
    assert store.get("dep1").threshold == 0.6
    with pytest.raises(PolicyError, match=r"entry's own threshold 0\.55 .* entry_max 0\.5") as e:
        store.add_entry("dep1", make_entry("E-1", threshold=0.55), enrolled(), actor=MANAGER)
    assert e.value.policy_max == 0.5
    with pytest.raises(PolicyError):
        store.check_entry_threshold(0.55)
    assert store.entry_ids("dep1") == set()
    assert audit_count(database) == audited  # refusals audit nothing
    # Within the policy all is well, an entry without a threshold included.
    store.add_entry("dep1", make_entry("E-2", threshold=0.5), enrolled(), actor=MANAGER)
    store.add_entry("dep1", make_entry("E-3"), enrolled(), actor=MANAGER)
    store.check_entry_threshold(None)
    record, changed = store.change_threshold("dep1", 0.45, actor=AUTHORISER, reason="tighter")
    assert changed and record.threshold == 0.45


def test_file_declared_deployments_are_held_to_the_policy_too(store: Deployments) -> None:
    with pytest.raises(PolicyError):
        store.create(
            make_deployment("f", T0, T0 + HOUR, 0.61),
            actor=Actor("topology file"),
            origin=Origin.FILE,
        )


def test_a_policy_that_open_deployments_break_is_refused_naming_them(
    store: Deployments, policies: ThresholdPolicies, database: Database, clock: Clock
) -> None:
    create(store, "active", 0.6)
    create(store, "scheduled", 0.55, starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR)
    create(store, "strict", 0.4)
    store.add_entry("strict", make_entry("E-9", threshold=0.4), enrolled(), actor=MANAGER)
    create(store, "closed", 0.6)
    store.close("closed", actor=AUTHORISER, reason="done")
    create(store, "ended", 0.6, starts_at=T0 - 2 * HOUR, ends_at=T0 - HOUR)
    before = audit_count(database)
    with pytest.raises(PolicyBreachError) as refused:
        policies.set(0.5, 0.35, actor=ADMIN, reason="tighter")
    message = str(refused.value)
    assert message == (
        "the policy is broken by 3 deployments not closed: active threshold 0.6 "
        "(> deployment_max 0.5); scheduled threshold 0.55 (> deployment_max 0.5); strict "
        "entry E-9 threshold 0.4 (> entry_max 0.35); tighten their thresholds (or delete "
        "the entries, or close the deployments) first"
    )
    assert refused.value.breaches[0].as_dict() == {
        "deployment_id": "active",
        "entry_id": None,
        "threshold": 0.6,
        "policy_field": "deployment_max",
        "policy_max": 0.5,
    }
    # The closed deployment and the one whose window ended do not block it.
    assert {b.deployment_id for b in refused.value.breaches} == {"active", "scheduled", "strict"}
    assert policies.get().is_default
    assert settings_rows(database) == [] and audit_count(database) == before
    # Once they are tightened, closed or their entry deleted, the same policy goes through.
    store.change_threshold("active", 0.5, actor=AUTHORISER, reason="policy")
    store.close("scheduled", actor=AUTHORISER, reason="not needed")
    store.delete_entry("strict", "E-9", actor=MANAGER, reason="policy")
    policy, changed = policies.set(0.5, 0.35, actor=ADMIN, reason="tighter")
    assert changed and policy.deployment_max == 0.5


def test_the_threshold_history_comes_from_the_audit_log(
    store: Deployments, policies: ThresholdPolicies, database: Database, clock: Clock
) -> None:
    create(store, "dep1", 0.55)
    clock.now += 600
    store.change_threshold("dep1", 0.5, actor=AUTHORISER, reason="near misses")
    clock.now += 600
    store.change_threshold("dep1", 0.5, actor=AUTHORISER, reason="same again")  # no change
    store.change_threshold("dep1", 0.45, actor=Actor("Supt Cole"), reason="night shift")
    with database.snapshot() as conn:
        history = threshold_history(conn, "dep1")
    assert history == [
        {"at": T0, "change": "created", "from": None, "to": 0.55, "by": "Supt Clarke",
         "reason": None},
        {"at": T0 + 600, "change": "changed", "from": 0.55, "to": 0.5, "by": "Supt Clarke",
         "reason": "near misses"},
        {"at": T0 + 1200, "change": "changed", "from": 0.5, "to": 0.45, "by": "Supt Cole",
         "reason": "night shift"},
    ]  # fmt: skip
    policies.set(0.5, 0.5, actor=ADMIN, reason="review")
    report = store.report("dep1")
    assert report["threshold_history"] == history
    assert report["threshold_policy"]["deployment_max"] == 0.5
    assert report["threshold_policy"]["set_by"] == "Ch Supt Admin"
    assert report["threshold_policy"]["reason"] == "review"
    assert json.dumps(report)  # JSON-ready
