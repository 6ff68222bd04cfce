"""The governance benchmark (loadtest/bench_governance.py): one small run.

The run builds a real store with a stale half of its watchlist; the report must count the
searched entries (the fresh half), give every timing and its ratios, and agree with the
store's own answer of the watchlist searched.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"


def _bench() -> ModuleType:
    """The benchmark script as a module (it imports ``machine`` from beside itself)."""
    if str(LOADTEST) not in sys.path:
        sys.path.insert(0, str(LOADTEST))
    return importlib.import_module("bench_governance")


def test_a_small_run_counts_the_searched_half_and_gives_every_ratio(tmp_path: Path) -> None:
    row = _bench().run_size(tmp_path, 40, repeats=2)
    assert (row["entries"], row["searched"], row["stale"]) == (40, 20, 20)
    for key in ("record_ms", "count_ms", "false_alerts_ms", "report_ms"):
        assert row[key] > 0, key
    assert row["false_alerts_over_record"] == round(row["false_alerts_ms"] / row["record_ms"], 1)
    assert row["report_over_record"] == round(row["report_ms"] / row["record_ms"], 1)
