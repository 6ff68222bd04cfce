"""Store-wide settings: one row each in ``store_settings``, its value JSON text.

The threshold policy (:mod:`lfr_actors.store.policy`) and the equality-monitoring
categories (:mod:`lfr_actors.store.monitoring`) are such settings. Each module says what its
value means and audits its changes; this one reads and writes the rows, so that a row that
cannot be read (its JSON or its fields changed on disk) is one clear error naming the
setting, wherever it is read, rather than a traceback.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lfr_actors.store.audit import Actor
from lfr_actors.store.db import StoreError

_T = TypeVar("_T")


class SettingError(StoreError):
    """A store-wide setting's row cannot be read; an admin sets it again."""


@dataclass(frozen=True)
class Setting(Generic[_T]):
    """A setting's value as its module reads it, and who set it when."""

    value: _T
    set_by: str
    set_at: float


def read_setting(
    conn: sqlite3.Connection, name: str, parse: Callable[[Any], _T]
) -> Setting[_T] | None:
    """The setting ``name`` as ``conn`` sees it (None when never set).

    ``parse`` turns the stored JSON into the module's value; a row whose JSON or fields it
    cannot read raises :class:`SettingError` naming the setting.
    """
    row = conn.execute(
        "SELECT value, set_by, set_at FROM store_settings WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        return None
    try:
        return Setting(parse(json.loads(row[0])), str(row[1]), float(row[2]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SettingError(
            f"the store's {name} setting cannot be read ({type(exc).__name__}: {exc}); "
            "an admin sets it again"
        ) from exc


def write_setting(
    conn: sqlite3.Connection, name: str, text: str, *, actor: Actor, now: float
) -> None:
    """Store ``text`` (the value's JSON) as the setting ``name``, in the caller's transaction.

    The caller writes the audit entry in the same transaction.
    """
    conn.execute(
        "INSERT INTO store_settings (name, value, set_by, set_by_token, set_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
        "set_by = excluded.set_by, set_by_token = excluded.set_by_token, "
        "set_at = excluded.set_at",
        (name, text, actor.name, actor.token_id, now),
    )
