"""Topology and watchlist files that unit tests write: a deployment ``site`` with
placeholder texts, and watchlist entries ``e1``, ``e2``... with placeholder fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_watchlist(path: Path, *entries: dict[str, Any]) -> Path:
    """Write a watchlist file at ``path`` holding ``entries``; return ``path``."""
    path.write_text(yaml.safe_dump({"version": 1, "entries": list(entries)}))
    return path


def watchlist_entry(entry_id: str, images: list[str], **fields: Any) -> dict[str, Any]:
    """A watchlist file's entry with placeholder texts (``fields`` add or replace keys)."""
    return {
        "id": entry_id,
        "display_name": "E One",
        "images": images,
        "category": "c",
        "legal_basis": "l",
        "source": "s",
        "image_date": "2020-01-01",
        **fields,
    }


def write_site_topology(folder: Path, **sections: Any) -> Path:
    """Write ``folder/t.yaml``: deployment ``site`` (a day from 2026-11-01, placeholder
    texts), threshold 0.55, watchlist file ``w.yaml``, data in ``data``; ``sections``
    (``cameras`` at least) add or replace top-level sections. Return its path."""
    topology = {
        "version": 1,
        "deployment": {
            "id": "site",
            "authorised_by": "x",
            "purpose": "x",
            "location": "x",
            "start": "2026-11-01T00:00:00Z",
            "end": "2026-11-02T00:00:00Z",
        },
        "alerts": {"threshold": 0.55},
        "watchlist": {"file": "w.yaml"},
        "storage": {"data_dir": "data"},
        **sections,
    }
    path = folder / "t.yaml"
    path.write_text(yaml.safe_dump(topology))
    return path
