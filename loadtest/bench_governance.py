"""Governance benchmark: what the figures above the deployment cost a request.

Issue 13 made ``GET /v1/deployments/{id}`` (and its list) answer the expected false alerts
for the watchlist *searched now*: the active entries that are neither damaged (their
templates fail their checksum) nor stale (approved longer ago than
``watchlist_max_age_h``). Counting them reads and checks every active entry's templates,
where the record alone was one row. The report gained the threshold history, the policy,
the test subjects' figures and the demographic breakdown.

For watchlists of each ``--sizes`` (one deployment, two 128-d templates an entry, every
entry approved, half of them older than the 24 h limit), in one real SQLite file:

- **record**: :meth:`Deployments.find`, what a deployment's answer read before (baseline);
- **count**: ``SELECT COUNT(*)`` of the active entries, the cheapest honest size;
- **false_alerts**: :func:`lfr_actors.store.calibrations.false_alerts` with a calibration
  stored, what each deployment in an answer now adds (the damaged entries' ids are kept
  per watchlist revision, and the fresh ones are counted over the covering index
  ``watchlist_entries_searched``: ids and approval times only);
- **false_alerts_new_revision**: the same, the first time after the watchlist changed
  (every active entry's templates read and checked);
- **report**: :meth:`Deployments.report`, every section.

Each is the median of ``--repeats`` calls; the ratios are against **record** (and
**false_alerts** and **false_alerts_new_revision** against **count**). About a minute
for 1,000 and 10,000 entries on 2 cores; everything is in a temporary folder.

    python loadtest/bench_governance.py [--sizes 1000 10000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.calibration import CalibrationFile, calibrate, parse_calibration
from lfr_actors.evaluate import IdentificationScores
from lfr_actors.store import calibrations
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled, Origin
from lfr_actors.testing.declarations import make_deployment, make_entry

DIM = 128
HOUR_S = 3600.0
AUTHORITY = Actor("Supt Bench")


class Clock:
    """A settable clock: entries approved in the past, the report read now."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _calibration() -> CalibrationFile:
    """A calibration from synthetic scores: 200 non-mated probes against 50 identities."""
    rng = np.random.default_rng(7)
    scores = IdentificationScores(
        model="dlib_resnet_v1",
        metric="euclidean",
        identities=[f"id{i}" for i in range(50)],
        templates=50,
        distances=rng.uniform(0.45, 1.1, (200, 50)),
        probe_identities=["unknown"] * 200,
        rejected=[],
        skipped=[],
    )
    document = calibrate(
        scores,
        gallery=Path("gallery"),
        probes=Path("probes"),
        model_version="1.0",
        dimension=DIM,
        configured=0.6,
    )
    return parse_calibration(document)


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm the page cache and the statement cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def _fill(store: Deployments, clock: Clock, deployment_id: str, size: int, now: float) -> None:
    rng = np.random.default_rng(size)
    image = b"\xff\xd8" + b"\0" * 2000 + b"\xff\xd9"  # a photo's size, not a photo
    for i in range(size):
        # Half approved 30 h before now (stale under the 24 h limit), half an hour ago.
        clock.now = now - (30 * HOUR_S if i % 2 else 0.5 * HOUR_S)
        store.add_entry(
            deployment_id,
            make_entry(f"E{i:06d}"),
            Enrolled(
                image=image,
                image_type="image/jpeg",
                embeddings=rng.standard_normal((2, DIM)).astype(np.float32),
                quality={"sharpness": 0.8, "face_px": 112},
            ),
            actor=AUTHORITY,
            origin=Origin.FILE,
            approved_by=AUTHORITY,
        )
    clock.now = now


def _after_a_change(store: Deployments) -> None:
    """The deployment's figures as the first call after its watchlist changed makes them."""
    store._damaged_by_revision.clear()  # what a new revision does: the templates are checked
    calibrations.false_alerts(store, "bench")


def run_size(folder: Path, size: int, repeats: int) -> dict[str, Any]:
    now = time.time()
    clock = Clock(now - 40 * HOUR_S)
    path = folder / f"store-{size}.sqlite3"
    with Database(path) as db:
        store = Deployments(db, clock=clock)
        deployment = make_deployment(
            "bench", now - 48 * HOUR_S, now + 24 * HOUR_S, watchlist_max_age_h=24.0
        )
        store.create(deployment, actor=AUTHORITY)
        started = time.perf_counter()
        _fill(store, clock, "bench", size, now)
        fill_s = time.perf_counter() - started
        calibrations.set_calibration(store, "bench", _calibration(), actor=AUTHORITY)

        def count() -> int:
            with db.snapshot() as conn:
                return int(
                    conn.execute(
                        "SELECT COUNT(*) FROM watchlist_entries "
                        "WHERE deployment_id = ? AND state = 'active'",
                        ("bench",),
                    ).fetchone()[0]
                )

        figures = calibrations.false_alerts(store, "bench")
        assert figures["watchlist_size"] == size // 2, figures  # the stale half is left out
        assert count() == size
        timings = {
            "record_ms": _median_ms(lambda: store.find("bench"), repeats),
            "count_ms": _median_ms(count, repeats),
            "false_alerts_ms": _median_ms(
                lambda: calibrations.false_alerts(store, "bench"), repeats
            ),
            "false_alerts_new_revision_ms": _median_ms(lambda: _after_a_change(store), repeats),
            "report_ms": _median_ms(lambda: store.report("bench"), repeats),
        }
    record = max(timings["record_ms"], 1e-3)
    return {
        "entries": size,
        "searched": figures["watchlist_size"],
        "stale": size - figures["watchlist_size"],
        "fill_s": round(fill_s, 1),
        **timings,
        "false_alerts_over_record": round(timings["false_alerts_ms"] / record, 1),
        "report_over_record": round(timings["report_ms"] / record, 1),
        "false_alerts_over_count": round(
            timings["false_alerts_ms"] / max(timings["count_ms"], 1e-3), 1
        ),
        "new_revision_over_count": round(
            timings["false_alerts_new_revision_ms"] / max(timings["count_ms"], 1e-3), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lfr-bench-governance-") as tmp:
        rows = [run_size(Path(tmp), size, args.repeats) for size in args.sizes]
    print(json.dumps({"machine": machine(), "sizes": rows}, indent=2))


if __name__ == "__main__":
    main()
