"""Health from outside: a running ``lfr up`` whose every camera is down, and a flood.

One real deployment (``lfr up`` in its own process, Ray, the default models) with a
single camera pointed at a port nothing serves, so it never connects. From outside:

- ``/readyz`` is 503 and names the camera and its state (every camera disconnected is
  not ready), with no error text in the public body;
- a flood of anonymous ``/readyz`` and authenticated ``/v1/status`` requests makes no
  status gather of its own: ``lfr_status_gathers_total`` grows with time (one a second),
  not with requests;
- ``lfr status`` shows the camera's state and why, never a bare ``?``.

No figure here is a timing: the gather bound allows for the flood taking as long as the
machine needs (gathers <= seconds elapsed / interval + a few).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import yaml

from lfr_actors.models.cache import ModelCache
from tests.deployments import write_deployment
from tests.integration.test_cli_up import lfr
from tests.lfr_up import lfr_up

pytestmark = [pytest.mark.models, pytest.mark.data]

READYZ_FLOOD = 1000
STATUS_FLOOD = 200
GATHER_INTERVAL_S = 1.0


def gathers(api: str, token: str) -> int:
    text = requests.get(
        f"{api}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).text
    for line in text.splitlines():
        if line.startswith("lfr_status_gathers_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no lfr_status_gathers_total in /metrics")


async def flood(url: str, count: int, token: str | None, concurrency: int = 16) -> list[int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    codes: list[int] = []
    left = iter(range(count))
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            for _ in left:
                async with session.get(url) as resp:
                    await resp.read()
                    codes.append(resp.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return codes


SETTLED = {
    "cameras: none running (cam_gate reconnecting)",
    "cameras: none running (cam_gate connecting)",
}
"""What /readyz says once the unreachable camera is past its start."""


def test_every_camera_down_is_not_ready_and_a_flood_makes_no_gather(
    model_cache: ModelCache, tmp_path: Path, shared_data: Path
) -> None:
    topology = write_deployment(tmp_path, shared_data, ["obama"])
    data = yaml.safe_load(topology.read_text())
    data["cameras"] = [
        {
            "id": "cam_gate",
            "fps": 5,
            "source": {"type": "url", "url": "rtsp://127.0.0.1:9/stream"},
            "reconnect": {"initial_backoff_s": 0.2, "max_backoff_s": 1.0},
        }
    ]
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    run_file = tmp_path / "data" / "lfr.run.json"
    up = lfr_up(topology)
    try:
        deadline = time.monotonic() + 240
        while not run_file.exists():
            assert up.poll() is None, up.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "lfr up did not start"
            time.sleep(0.5)
        info: dict[str, Any] = json.loads(run_file.read_text())
        api, token = info["api"], info["token"]

        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            resp = requests.get(f"{api}/readyz", timeout=30)
            body = resp.json()
            # The status may still be one gathered while the camera was being started
            # (`starting`, `created`: up to a second old when the run file appears); wait
            # for the state an unreachable camera settles in.
            if resp.status_code == 503 and any(r in SETTLED for r in body.get("not_ready", [])):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"/readyz never said that no camera runs: {body}")
        reason = next(r for r in body["not_ready"] if r.startswith("cameras:"))
        assert reason in SETTLED, reason
        assert "cannot open" not in json.dumps(body)  # the camera's error text stays private

        before = gathers(api, token)
        started = time.monotonic()
        anonymous = asyncio.run(flood(f"{api}/readyz", READYZ_FLOOD, None))
        authenticated = asyncio.run(flood(f"{api}/v1/status", STATUS_FLOOD, token))
        elapsed = time.monotonic() - started
        after = gathers(api, token)
        assert sorted(set(anonymous)) == [503] and len(anonymous) == READYZ_FLOOD
        assert sorted(set(authenticated)) == [200] and len(authenticated) == STATUS_FLOOD
        # Gathers follow the clock, not the requests: 1,200 requests, a handful of gathers.
        assert after - before <= elapsed / GATHER_INTERVAL_S + 3, (after - before, elapsed)
        assert after - before < (READYZ_FLOOD + STATUS_FLOOD) / 10

        human = lfr("status", str(topology), timeout=60)
        assert human.returncode == 0, human.stderr
        gate = next(line for line in human.stdout.splitlines() if "cam_gate" in line)
        assert "?" not in gate and ("reconnecting" in gate or "connecting" in gate), gate
        assert "cannot open" in gate  # the operator sees why

        down = lfr("down", str(topology), timeout=180)
        assert down.returncode == 0, down.stderr
        _, err = up.communicate(timeout=120)
        assert up.returncode == 0, err[-3000:]
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGKILL)
            up.wait()
