"""The shipped example as a demo (``lfr demo --topology``): it starts on any date.

`topology/demo.yaml` has a fixed authorised window, as every deployment must; run as a
demo its window is set from now and its data folder is fresh, and nothing else changes.
The real run of it is tests/integration/test_examples.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from lfr_actors.demo import EXAMPLE_WINDOW, as_demo
from lfr_actors.topology.loader import load_topology
from tests.conftest import REPO

EXAMPLE = REPO / "topology" / "demo.yaml"


def test_as_a_demo_the_example_has_a_window_from_now_and_a_fresh_store(tmp_path: Path) -> None:
    example = load_topology(EXAMPLE)
    stale = tmp_path / "demo" / "demo-hamilton-data"
    stale.mkdir(parents=True)
    (stale / "alerts.sqlite3").write_bytes(b"an earlier run's store, window long past")
    before = time.time()
    demo = as_demo(example, tmp_path, api_port=0)
    start, end = demo.deployment.start.timestamp(), demo.deployment.end.timestamp()
    assert before - 120 < start <= before < end
    assert end - start == EXAMPLE_WINDOW.total_seconds() + 60
    assert demo.storage.data_dir == stale and list(stale.iterdir()) == []
    assert demo.api.port == 0
    # Everything else is the file's: the authority, cameras, models, rules and watchlist.
    keep = {"deployment": {"start", "end"}, "storage": {"data_dir"}, "api": {"port"}}
    assert demo.model_dump(exclude=keep) == example.model_dump(exclude=keep)
    assert example.deployment.start != demo.deployment.start  # the file's model is untouched
