"""Webhooks through a real ``lfr up`` on the stage clip: every alert event reaches a real
receiver on loopback, signed, in order, as the same documents as ``--alerts-jsonl``.

Needs ../shared/data and the default models.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from lfr_actors.alerts.webhooks import verify
from lfr_actors.models.cache import ModelCache
from tests.conftest import REPO, lfr_test_home
from tests.deployments import write_deployment

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

SECRET = "an-integration-test-secret-0123456789"


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signed = verify(SECRET.encode(), self.headers["X-LFR-Signature"], body, time.time())
        self.server.received.append(  # type: ignore[attr-defined]
            {"signed": signed, "id": self.headers["X-LFR-Event-Id"], "doc": json.loads(body)}
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_lfr_up_posts_every_alert_event_to_the_webhook_signed_and_in_order(
    model_cache: ModelCache, shared_data: Path, tmp_path: Path, receiver: ThreadingHTTPServer
) -> None:
    topology = write_deployment(
        tmp_path, shared_data, ["lin_manuel_miranda", "alex_lacamoire"], min_sightings=1
    )
    spec = yaml.safe_load(topology.read_text())
    port = receiver.server_address[1]
    spec["alerts"]["webhooks"] = [
        {
            "name": "control_room",
            "url": f"http://user:pw@127.0.0.1:{port}/lfr?token=abc",
            "secret_env": "LFR_ITEST_WEBHOOK_SECRET",
        }
    ]
    topology.write_text(yaml.safe_dump(spec, sort_keys=False))
    jsonl = tmp_path / "alerts.jsonl"
    env = {**os.environ, "LFR_ITEST_WEBHOOK_SECRET": SECRET}
    result = subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "up", str(topology), "--until-eof",
         "--home", str(lfr_test_home()), "--alerts-jsonl", str(jsonl)],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines, "the clip raised no alert"
    received = receiver.received  # type: ignore[attr-defined]
    # Every event, once, in order, as the same document as its JSONL line, signed.
    assert [r["doc"] for r in received] == lines
    assert [int(r["id"]) for r in received] == [x["event_id"] for x in lines]
    assert all(r["signed"] for r in received)
    # The store keeps the position a restart would resume from; no URL, no secret in it.
    with sqlite3.connect(tmp_path / "data" / "alerts.sqlite3") as conn:
        rows = conn.execute("SELECT name, event_id, delivered FROM webhook_positions").fetchall()
    assert rows == [("control_room", lines[-1]["event_id"], len(lines))]
    for text in (result.stdout, result.stderr):
        assert SECRET not in text and "pw@" not in text and "token=abc" not in text
