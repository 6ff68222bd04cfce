"""Persistence: the alert store (SQLite in WAL mode, one writer, many readers)."""

from __future__ import annotations

from lfr_actors.store.alerts import MIGRATIONS, AlertPage, AlertStore, Migration, StoreError

__all__ = ["MIGRATIONS", "AlertPage", "AlertStore", "Migration", "StoreError"]
