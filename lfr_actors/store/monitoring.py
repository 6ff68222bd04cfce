"""Equality monitoring of adjudicated alerts: the store's category lists and the breakdown.

A force monitors who its false alerts fall on with broad categories of its own choosing
(perceived sex, age band, ethnicity group, ...). The lists are one store-wide setting,
``store_settings`` row :data:`SETTING`, changed by an admin only and audited with the old
value, the new one, who and why (:class:`MonitoringCategories`). Until it is set no
category is configured, and an adjudication that records one is refused.

An officer may record a value for each category when deciding an alert ``not_a_match`` or
``match_confirmed`` (never ``unsure``, and never for a face that raised no alert: nothing
else in the product takes these values). Every category is optional; :data:`NOT_RECORDED`
is always allowed and is what an omitted category counts as. The values are checked
against the lists inside the decision's transaction (:func:`demographics_problems`) and
stored with it (``adjudications.demographics``), so a correction that changes them is a new
row like any other correction.

:func:`demographics_breakdown` counts, for the decision in force on each alert of a
deployment, the false and the confirmed alerts by category and value, for the report.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lfr_actors.store.audit import Action, Actor, append_entry
from lfr_actors.store.db import Database
from lfr_actors.store.settings import read_setting, write_setting

SETTING = "monitoring_categories"
"""The ``store_settings`` row that holds the category lists."""

NOT_RECORDED = "not recorded"
"""Allowed for every category without being listed; an omitted category counts as it."""

MAX_CATEGORIES = 8
MAX_VALUES = 40
MAX_NAME_CHARS = 40
MAX_VALUE_CHARS = 60
MAX_REASON_CHARS = 500

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
"""A category's name: a short identifier (lower case, digits, underscores)."""

HOW_TO_SET = (
    "an admin sets them with PUT /v1/policy/monitoring-categories or "
    "`lfr monitoring set --file FILE.yaml --reason ...`"
)

Categories = dict[str, list[str]]
"""Category name -> its allowed values, in the order the admin gave them."""


@dataclass(frozen=True)
class CategorySetting:
    """The category lists in force and who set them (``set_by`` None: never set)."""

    categories: Categories
    set_by: str | None
    set_at: float | None

    @property
    def configured(self) -> bool:
        """Whether any category is configured."""
        return bool(self.categories)


UNSET = CategorySetting({}, None, None)


class InvalidCategoriesError(ValueError):
    """The category lists break the rules; ``problems`` lists each as (path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))
        self.problems = problems


def category_problems(raw: Any, *, path: str = "categories") -> list[tuple[str, str]]:
    """Every rule the category lists in ``raw`` break, as (path, reason); empty if none.

    ``raw`` maps category names to lists of values. Names are short identifiers; each list
    has 1..:data:`MAX_VALUES` distinct, non-blank values of at most :data:`MAX_VALUE_CHARS`
    characters (distinct ignoring case and outer spaces); :data:`NOT_RECORDED` is implied
    and may not be listed. An empty map configures no category (monitoring off).
    """
    if not isinstance(raw, Mapping):
        return [(path, "must be a map of category name to its list of values")]
    found: list[tuple[str, str]] = []
    if len(raw) > MAX_CATEGORIES:
        found.append((path, f"at most {MAX_CATEGORIES} categories; {len(raw)} given"))
    for name, values in raw.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not (
            len(name) <= MAX_NAME_CHARS and NAME_PATTERN.fullmatch(name)
        ):
            found.append(
                (
                    where,
                    f"a category's name is a short identifier (a-z, 0-9, _; starting with a "
                    f"letter; at most {MAX_NAME_CHARS} characters), e.g. age_band",
                )
            )
        if not isinstance(values, list):
            found.append((where, "must be a list of values"))
            continue
        if not values:
            found.append((where, "list at least one value"))
        if len(values) > MAX_VALUES:
            found.append((where, f"at most {MAX_VALUES} values; {len(values)} given"))
        seen: dict[str, int] = {}
        for i, value in enumerate(values):
            at = f"{where}.{i}"
            if not isinstance(value, str) or not value.strip():
                found.append((at, "a value is non-blank text"))
                continue
            text = value.strip()
            if len(text) > MAX_VALUE_CHARS:
                found.append((at, f"at most {MAX_VALUE_CHARS} characters"))
            key = text.casefold()
            if key == NOT_RECORDED:
                found.append((at, f"{NOT_RECORDED!r} is always allowed; do not list it"))
            elif key in seen:
                found.append((at, f"{text!r} repeats item {seen[key]}"))
            else:
                seen[key] = i
    return found


def clean_categories(raw: Any) -> Categories:
    """The category lists with outer spaces trimmed; :class:`InvalidCategoriesError` if bad."""
    problems = category_problems(raw)
    if problems:
        raise InvalidCategoriesError(problems)
    return {name: [v.strip() for v in values] for name, values in raw.items()}


def demographics_problems(
    given: Mapping[str, str], categories: Categories, *, path: str = "demographics"
) -> list[tuple[str, str]]:
    """Every category or value in ``given`` that the configured lists do not allow."""
    found = []
    for name, value in given.items():
        where = f"{path}.{name[:80]}"
        if not categories:
            found.append((where, f"no monitoring categories are configured; {HOW_TO_SET}"))
            continue
        allowed = categories.get(name)
        if allowed is None:
            found.append(
                (where, f"not a configured category; the categories are: {', '.join(categories)}")
            )
        elif value != NOT_RECORDED and value not in allowed:
            shown = ", ".join(repr(v) for v in [*allowed, NOT_RECORDED])
            found.append((where, f"{value[:80]!r} is not allowed; the values are: {shown}"))
    return found


def recorded_only(given: Mapping[str, str] | None) -> dict[str, str] | None:
    """What is stored of ``given``: the categories recorded (not "not recorded"), or None."""
    kept = {k: v for k, v in (given or {}).items() if v != NOT_RECORDED}
    return dict(sorted(kept.items())) or None


def read_categories(conn: sqlite3.Connection) -> CategorySetting:
    """The category lists in force, read on ``conn`` (inside the caller's transaction)."""
    setting = read_setting(conn, SETTING, _stored_lists)
    if setting is None:
        return UNSET
    return CategorySetting(setting.value, setting.set_by, setting.set_at)


def _stored_lists(value: Any) -> Categories:
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise TypeError("not a map of category name to its list of values")
    return value


def _encode(categories: Categories) -> str:
    # Key order is kept (not sorted): it is the order the admin listed them in.
    return json.dumps(categories, ensure_ascii=False, separators=(",", ":"))


class MonitoringCategories:
    """The store's monitoring category lists (a writer :class:`Database` to change them)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def get(self) -> CategorySetting:
        """The lists in force (:data:`UNSET`, with no category, until an admin sets them)."""
        with self.db.lock:
            return read_categories(self.db.conn)

    def set(self, categories: Any, *, actor: Actor, reason: str) -> tuple[CategorySetting, bool]:
        """Replace the lists (audited with the old and new lists, who and why).

        Returns the setting in force and whether it changed: the same lists again write
        nothing. Raises :class:`InvalidCategoriesError` for lists that break the rules and
        ValueError for a blank or over-long reason; nothing is written when it raises.
        """
        cleaned = clean_categories(categories)
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON_CHARS:
            raise ValueError(f"a reason is 1..{MAX_REASON_CHARS} characters")
        with self.db.transaction() as conn:
            before = read_categories(conn)
            # The order counts: it is the order the console and the report list them in.
            if before.set_by is not None and list(before.categories.items()) == list(
                cleaned.items()
            ):
                return before, False
            now = self.clock()
            write_setting(conn, SETTING, _encode(cleaned), actor=actor, now=now)
            append_entry(
                conn,
                actor,
                Action.CATEGORIES_CHANGE,
                SETTING,
                {
                    "from": before.categories if before.set_by is not None else None,
                    "to": cleaned,
                    "reason": reason,
                },
                at=now,
            )
        return CategorySetting(cleaned, actor.name, now), True


def demographics_breakdown(conn: sqlite3.Connection, deployment_id: str) -> dict[str, Any]:
    """False and confirmed alerts of a deployment by category and value (decision in force).

    Every configured category is listed with every value (0 where none), then
    :data:`NOT_RECORDED` (the alerts where the officer recorded none for it); a category or
    value recorded under earlier lists is still counted. Suspects' alerts only, like the
    published alert figures beside it (a test subject's alerts are counted apart, in the
    report's ``test_subjects``). Run inside the report's snapshot.
    """
    categories = read_categories(conn).categories
    rows = conn.execute(
        "SELECT j.decision, j.demographics FROM alerts a JOIN adjudications j "
        "ON j.id = (SELECT MAX(id) FROM adjudications WHERE alert_id = a.id) "
        "WHERE a.deployment_id = ? AND a.test_subject = 0 "
        "AND j.decision IN ('not_a_match', 'match_confirmed')",
        (deployment_id,),
    ).fetchall()
    out: dict[str, Any] = {}
    for decision, key in (("not_a_match", "false"), ("match_confirmed", "confirmed")):
        recorded = [json.loads(r[1]) if r[1] else {} for r in rows if r[0] == decision]
        names = list(categories) + sorted(
            {n for found in recorded for n in found} - set(categories)
        )
        table: dict[str, dict[str, int]] = {}
        for name in names:
            counts = dict.fromkeys(categories.get(name, []), 0)
            for found in recorded:
                value = found.get(name)
                if value is not None:
                    counts[value] = counts.get(value, 0) + 1
            counts[NOT_RECORDED] = counts.get(NOT_RECORDED, 0) + sum(
                1 for found in recorded if name not in found
            )
            table[name] = counts
        out[key] = {"alerts": len(recorded), "by_category": table}
    return out
