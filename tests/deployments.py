"""The deployment the Ray, fault and CLI tests run: the Hamilton clip as one camera and a
watchlist of the shared photos, written as files; and the alerts it stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from lfr_actors.store.alerts import AlertStore

PEOPLE = {
    "lin_manuel_miranda": "lin_manuel_miranda/lin_manuel_miranda1.png",
    "alex_lacamoire": "alex_lacamoire/alex_lacamoire1.jpg",
    "obama": "obama/obama.jpg",
    "biden": "biden/biden.jpg",
    "kit_harington": "kit_harington/john1.jpeg",
    "rose_leslie": "rose_leslie/img1.jpg",
}
EVERY_PHOTO = {
    "lin_manuel_miranda": ["lin_manuel_miranda/lin_manuel_miranda1.png"],
    "alex_lacamoire": [f"alex_lacamoire/alex_lacamoire{n}" for n in ("1.jpg", "2.jpg", "3.png")],
    "obama": [f"obama/obama{n}.jpg" for n in ("", "1", "2", "3")],
    "biden": ["biden/biden.jpg", "biden/biden2.jpg"],
}
"""Each person's every shared photo: an entry enrolled from several photos, as a force would."""


def write_deployment(
    folder: Path,
    shared_data: Path,
    entries: list[str],
    *,
    at_end: str = "stop",
    pace: str = "asap",
    min_sightings: int = 2,
    shards: int = 2,
    fusion_window_s: float = 60,
    photos: dict[str, list[str]] | None = None,
    reembed_every: int | None = None,
) -> Path:
    """A watchlist and a topology of the Hamilton clip as one camera, in ``folder``.

    ``reembed_every`` sets how often a decided track is embedded and sent again (the
    product's default, 10 frames, when None); the restart tests ask for more often, so
    that sightings after a restart arrive within seconds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    people = shared_data / "faces" / "people"
    watchlist = {
        "version": 1,
        "entries": [
            {
                "id": name,
                "display_name": name.replace("_", " ").title(),
                "images": [
                    str(people / photo) for photo in (photos or {}).get(name, [PEOPLE[name]])
                ],
                "category": "test",
                "legal_basis": "test",
                "source": "shared test data",
                "image_date": "2020-01-01",
            }
            for name in entries
        ],
    }
    (folder / "watchlist.yaml").write_text(yaml.safe_dump(watchlist, sort_keys=False))
    now = time.time()
    topology = {
        "version": 1,
        "deployment": {
            "id": "itest",
            "authorised_by": "test",
            "purpose": "integration test",
            "location": "ci",
            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
        },
        "cameras": [
            {
                "id": "cam_stage",
                "fps": 10,
                "at_end": at_end,
                "pace": pace,
                "source": {
                    "type": "file",
                    "path": str(shared_data / "video" / "short_hamilton_clip.mp4"),
                },
            }
        ],
        "embedder": {
            "max_batch": 4,
            "detector": {"min_face_px": 20},
            **({"tracking": {"reembed_every": reembed_every}} if reembed_every else {}),
        },
        "index": {"shards": shards},
        "alerts": {
            "threshold": 0.6,
            "fusion_window_s": fusion_window_s,
            "min_sightings": min_sightings,
        },
        "watchlist": {"file": "watchlist.yaml"},
        "api": {"host": "127.0.0.1", "port": 0},
        "storage": {"data_dir": "data"},
        "logging": {"level": "INFO", "format": "json"},
    }
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    return path


def stored_alerts(data_dir: Path) -> list[dict[str, Any]]:
    store = AlertStore.open_readonly(data_dir / "alerts.sqlite3")
    try:
        return store.list_alerts(limit=500).alerts
    finally:
        store.close()
