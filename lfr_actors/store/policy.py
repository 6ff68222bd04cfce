"""The store-wide threshold policy: the loosest distance a deployment or an entry may use.

A threshold is a distance: lower is stricter, higher is looser. Loosening it lets more
faces match, and with them more false alerts (and, as the National Physical Laboratory
found, a demographic imbalance that appears only at looser settings). So the loosest value
is governed above the deployment, by an ``admin``, in one place per store:

- ``deployment_max``: the loosest threshold any deployment may be created with or changed
  to (through the API, or by ``lfr up`` from a topology's ``alerts.threshold``);
- ``entry_max``: the loosest threshold a watchlist entry's own threshold may be. It may not
  be looser than ``deployment_max``: an entry looser than any deployment may go would be a
  loosening by the back door.

Until an admin sets a policy, the policy in force is the default embedding model's
declared threshold (:data:`~lfr_actors.models.spec.DEFAULT_EMBEDDER_SPEC`, 0.6 for
``dlib_resnet_v1``) for both, so loosening beyond the model's calibration is never silent.
A store that runs an operator's own model with another scale sets its policy explicitly.

The policy is the ``threshold_policy`` row of ``store_settings`` (its value the JSON
``{"deployment_max": ..., "entry_max": ...}``); each change is one transaction with its
``policy.threshold`` audit entry (old value, new value, who, why), and the reason shown
with the policy is read back from that entry. A new policy that a deployment not yet
closed (scheduled or active) already breaks, by its own threshold or by an entry's, is
refused naming them: tighten those first. Refusals store and audit nothing.

This module also reads a deployment's threshold over time back from the audit log
(:func:`threshold_history`), for the report.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.store.audit import Action, Actor, append_entry
from lfr_actors.store.db import Database, StoreError
from lfr_actors.store.settings import read_setting, write_setting
from lfr_actors.timefmt import iso_utc

POLICY_SETTING = "threshold_policy"
"""The policy's row in ``store_settings``."""

MAX_BREACHES_NAMED = 20
"""How many breaking deployments and entries a refusal's message names (all are counted)."""

SET_HINT = "an admin may change the policy with `lfr policy set --deployment-max X --reason TEXT`"
"""How the policy changes, as every refusal says it."""


class PolicyError(StoreError):
    """A threshold looser than the store's policy allows.

    ``field`` names what was refused (``threshold`` for a deployment, ``entry threshold``
    for an entry), ``value`` its value, ``policy_max`` the cap it broke and ``policy_field``
    which of the policy's two caps that is.
    """

    def __init__(
        self, message: str, *, field: str, value: float, policy_max: float, policy_field: str
    ) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.policy_max = policy_max
        self.policy_field = policy_field


@dataclass(frozen=True)
class Breach:
    """A deployment not yet closed, or one of its entries, whose threshold a policy breaks."""

    deployment_id: str
    entry_id: str | None
    threshold: float
    policy_field: str
    policy_max: float

    def __str__(self) -> str:
        what = (
            self.deployment_id
            if self.entry_id is None
            else (f"{self.deployment_id} entry {self.entry_id}")
        )
        return f"{what} threshold {self.threshold:g} (> {self.policy_field} {self.policy_max:g})"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map."""
        return {
            "deployment_id": self.deployment_id,
            "entry_id": self.entry_id,
            "threshold": self.threshold,
            "policy_field": self.policy_field,
            "policy_max": self.policy_max,
        }


class PolicyBreachError(StoreError):
    """A new policy that deployments not yet closed (or their entries) already break."""

    def __init__(self, message: str, breaches: list[Breach]) -> None:
        super().__init__(message)
        self.breaches = breaches


@dataclass(frozen=True)
class ThresholdPolicy:
    """The policy in force and where it came from (``set_by`` None: the model's default)."""

    deployment_max: float
    entry_max: float
    set_by: str | None = None
    set_at: float | None = None
    reason: str | None = None

    @property
    def is_default(self) -> bool:
        """Whether no admin has set a policy (the model's declared threshold is in force)."""
        return self.set_by is None

    def origin(self) -> str:
        """Where the policy came from, in one line for a person."""
        if self.set_by is None or self.set_at is None:
            return (
                f"the default model's declared threshold ({DEFAULT_EMBEDDER_SPEC.name}: "
                f"{DEFAULT_EMBEDDER_SPEC.default_threshold:g}); no admin has set a policy"
            )
        because = f" because {self.reason}" if self.reason else ""
        return f"set by {self.set_by} at {iso_utc(self.set_at, 'seconds')}{because}"

    def summary(self) -> str:
        """``deployment_max 0.6, entry_max 0.6 (origin)``: what a refusal quotes."""
        return (
            f"deployment_max {self.deployment_max:g}, entry_max {self.entry_max:g} "
            f"({self.origin()})"
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (times as Unix seconds)."""
        return {
            "deployment_max": self.deployment_max,
            "entry_max": self.entry_max,
            "default": self.is_default,
            "set_by": self.set_by,
            "set_at": self.set_at,
            "reason": self.reason,
            "origin": self.origin(),
        }


def default_policy() -> ThresholdPolicy:
    """The policy in force until an admin sets one: the default model's declared threshold."""
    value = DEFAULT_EMBEDDER_SPEC.default_threshold
    return ThresholdPolicy(value, value)


def value_problems(deployment_max: float, entry_max: float) -> list[tuple[str, str]]:
    """What is wrong with a policy's two values, as (field, reason); empty when nothing.

    Each is a distance strictly between 0 and 2, and ``entry_max`` may not be looser than
    ``deployment_max``.
    """
    problems = []
    for name, value in (("deployment_max", deployment_max), ("entry_max", entry_max)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 2:
            problems.append((name, f"got {value!r}; a threshold is a distance between 0 and 2"))
    if not problems and entry_max > deployment_max:
        problems.append(
            (
                "entry_max",
                f"got {entry_max:g}; an entry may not be looser than any deployment may be "
                f"(deployment_max {deployment_max:g})",
            )
        )
    return problems


def _caps(value: Any) -> tuple[float, float]:
    return float(value["deployment_max"]), float(value["entry_max"])


def read_policy(conn: sqlite3.Connection) -> ThresholdPolicy:
    """The policy in force as ``conn`` sees it (inside the caller's transaction, if any)."""
    setting = read_setting(conn, POLICY_SETTING, _caps)
    if setting is None:
        return default_policy()
    reason = None
    entry = conn.execute(
        "SELECT details FROM audit_log WHERE action = ? ORDER BY seq DESC LIMIT 1",
        (str(Action.POLICY_CHANGE),),
    ).fetchone()
    if entry is not None:
        reason = json.loads(entry[0]).get("reason")
    deployment_max, entry_max = setting.value
    return ThresholdPolicy(
        deployment_max, entry_max, set_by=setting.set_by, set_at=setting.set_at, reason=reason
    )


def looser_message(what: str, value: float, policy: ThresholdPolicy, policy_field: str) -> str:
    """The one-line refusal of a threshold looser than ``policy`` allows."""
    cap = policy.deployment_max if policy_field == "deployment_max" else policy.entry_max
    return (
        f"{what} {value:g} is looser than the store's threshold policy allows: "
        f"{policy_field} {cap:g} ({policy.origin()}); use {cap:g} or lower, or {SET_HINT}"
    )


def deployment_refusal(
    policy: ThresholdPolicy, threshold: float, *, what: str = "threshold"
) -> PolicyError | None:
    """The error for a deployment threshold looser than ``policy``, or None when allowed."""
    if threshold <= policy.deployment_max:
        return None
    return PolicyError(
        looser_message(what, threshold, policy, "deployment_max"),
        field="threshold",
        value=threshold,
        policy_max=policy.deployment_max,
        policy_field="deployment_max",
    )


def entry_refusal(
    policy: ThresholdPolicy, threshold: float | None, *, what: str = "the entry's own threshold"
) -> PolicyError | None:
    """The error for an entry's own threshold looser than ``policy``, or None when allowed."""
    if threshold is None or threshold <= policy.entry_max:
        return None
    return PolicyError(
        looser_message(what, threshold, policy, "entry_max"),
        field="threshold",
        value=threshold,
        policy_max=policy.entry_max,
        policy_field="entry_max",
    )


def require_deployment_threshold(conn: sqlite3.Connection, threshold: float) -> None:
    """Raise :class:`PolicyError` if a deployment's ``threshold`` is looser than the policy."""
    refusal = deployment_refusal(read_policy(conn), threshold)
    if refusal is not None:
        raise refusal


def require_entry_threshold(conn: sqlite3.Connection, threshold: float | None) -> None:
    """Raise :class:`PolicyError` if an entry's own ``threshold`` is looser than the policy."""
    refusal = entry_refusal(read_policy(conn), threshold)
    if refusal is not None:
        raise refusal


def breaches(
    conn: sqlite3.Connection, deployment_max: float, entry_max: float, *, now: float
) -> list[Breach]:
    """What a policy with these caps would break: every threshold looser than them.

    Deployments not closed whose window has not ended, and their pending or active entries'
    own thresholds.
    """
    found = [
        Breach(str(row[0]), None, float(row[1]), "deployment_max", deployment_max)
        for row in conn.execute(
            "SELECT id, threshold FROM deployments WHERE closed_at IS NULL AND ends_at > ? "
            "AND threshold > ? ORDER BY id",
            (now, deployment_max),
        )
    ]
    found += [
        Breach(str(row[0]), str(row[1]), float(row[2]), "entry_max", entry_max)
        for row in conn.execute(
            "SELECT e.deployment_id, e.id, e.threshold FROM watchlist_entries e "
            "JOIN deployments d ON d.id = e.deployment_id "
            "WHERE d.closed_at IS NULL AND d.ends_at > ? AND e.state IN (?, ?) "
            "AND e.threshold IS NOT NULL AND e.threshold > ? ORDER BY e.deployment_id, e.id",
            (now, "pending_approval", "active", entry_max),
        )
    ]
    return found


def breach_message(found: list[Breach]) -> str:
    """The one-line refusal of a policy that ``found`` already break."""
    named = "; ".join(str(b) for b in found[:MAX_BREACHES_NAMED])
    more = (
        f"; and {len(found) - MAX_BREACHES_NAMED} more" if len(found) > MAX_BREACHES_NAMED else ""
    )
    count = len({b.deployment_id for b in found})
    deployments = "1 deployment" if count == 1 else f"{count} deployments"
    return (
        f"the policy is broken by {deployments} not closed: {named}{more}; "
        "tighten their thresholds (or delete the entries, or close the deployments) first"
    )


class ThresholdPolicies:
    """The store's threshold policy: read it, and set it (a writer :class:`Database`)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def get(self) -> ThresholdPolicy:
        """The policy in force now, and where it came from."""
        with self.db.snapshot() as conn:
            return read_policy(conn)

    def set(
        self, deployment_max: float, entry_max: float, *, actor: Actor, reason: str
    ) -> tuple[ThresholdPolicy, bool]:
        """Set the policy (audited as ``policy.threshold`` with the old and new values, why).

        Returns the policy in force and whether it changed (the same values again write
        nothing). Raises ``ValueError`` for values out of range or ``entry_max`` looser than
        ``deployment_max`` (:func:`value_problems`), and :class:`PolicyBreachError` naming
        the deployments not closed, and entries, that the new policy would break.
        """
        problems = value_problems(deployment_max, entry_max)
        if problems:
            raise ValueError("; ".join(f"{name}: {why}" for name, why in problems))
        reason = reason.strip()
        if not reason:
            raise ValueError("reason: say why the policy changes (it is kept in the audit log)")
        with self.db.transaction() as conn:
            old = read_policy(conn)
            if (
                not old.is_default
                and old.deployment_max == deployment_max
                and old.entry_max == entry_max
            ):
                return old, False
            now = self.clock()
            found = breaches(conn, deployment_max, entry_max, now=now)
            if found:
                raise PolicyBreachError(breach_message(found), found)
            value = json.dumps(
                {"deployment_max": float(deployment_max), "entry_max": float(entry_max)},
                sort_keys=True,
                separators=(",", ":"),
            )
            write_setting(conn, POLICY_SETTING, value, actor=actor, now=now)
            append_entry(
                conn,
                actor,
                Action.POLICY_CHANGE,
                POLICY_SETTING,
                {
                    "from": {
                        "deployment_max": old.deployment_max,
                        "entry_max": old.entry_max,
                        "default": old.is_default,
                    },
                    "to": {"deployment_max": float(deployment_max), "entry_max": float(entry_max)},
                    "reason": reason,
                },
                at=now,
            )
            return read_policy(conn), True


def threshold_history(conn: sqlite3.Connection, deployment_id: str) -> list[dict[str, Any]]:
    """The deployment's threshold over time, from the audit log, oldest first.

    The value it was created with, then each ``deployment.threshold`` change: when
    (``at``, Unix seconds), ``from``, ``to``, who (``by``) and why (``reason``).
    """
    rows = conn.execute(
        "SELECT at, actor, action, details FROM audit_log WHERE subject = ? "
        "AND action IN (?, ?) ORDER BY seq",
        (deployment_id, str(Action.DEPLOYMENT_CREATE), str(Action.THRESHOLD_CHANGE)),
    ).fetchall()
    history = []
    for at, actor, action, details in rows:
        fields = json.loads(details)
        created = action == str(Action.DEPLOYMENT_CREATE)
        history.append(
            {
                "at": float(at),
                "change": "created" if created else "changed",
                "from": None if created else fields.get("from"),
                "to": fields.get("threshold") if created else fields.get("to"),
                "by": str(actor),
                "reason": None if created else fields.get("reason"),
            }
        )
    return history
