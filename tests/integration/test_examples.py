"""The shipped example starts for real, on any date: `lfr demo --topology topology/demo.yaml`.

The Hamilton clip from ../shared/data against the example's four-person watchlist, with
the example's own models, detector and alert rules: it prints where it serves, serves
the console there, raises an alert for Lin-Manuel Miranda (who is in the clip) and none
for the two people who are not, and stops when the clip ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO, lfr_test_home

pytestmark = [pytest.mark.models, pytest.mark.data]

EXAMPLE = REPO / "topology" / "demo.yaml"


def test_the_demo_example_serves_alerts_and_stops(
    model_cache: ModelCache, shared_data: Path
) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "lfr_actors.cli", "demo", "--topology", str(EXAMPLE),
         "--home", str(lfr_test_home()), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "LFR_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("lfr: deployment "):
                break
        serving = lines[-1] if lines else ""
        assert serving.startswith("lfr: deployment demo-hamilton is running; API http://"), "".join(
            lines
        ) + (demo.stderr.read() if demo.poll() is not None else "")
        console = serving.split(" console ", 1)[1].split(";", 1)[0]
        api = console.removesuffix("/console")
        assert not api.endswith(":8080") and not api.endswith(":0")  # --port 0: the chosen one
        page = requests.get(console, timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        assert requests.get(f"{api}/healthz", timeout=10).status_code == 200
        out, err = demo.communicate(timeout=600)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, err[-3000:]
    alerts = [line.split() for line in out.splitlines() if " alert " in line]
    raised = {words[3] for words in alerts if words[2] == "raised"}
    assert "demo-lin-manuel-miranda" in raised, out
    assert not raised & {"demo-obama", "demo-biden"}, out  # not in the clip
    summary = json.loads(out[out.index("{\n") :])
    assert summary["frames"] > 0 and "ground_truth" not in summary
