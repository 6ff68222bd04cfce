"""The files of a data folder that a real ``lfr up`` wrote, corrupted from outside.

One real run (``lfr up --until-eof`` on the stage clip, Lin-Manuel Miranda and Obama on
the watchlist, three index shards) writes a data folder; each test works on a copy of it
and breaks one file the way disks and people break them:

- the store: truncated to 0 bytes, deleted, its header overwritten, pages in the middle
  overwritten. ``lfr up`` (and ``lfr serve``) must refuse in ONE line, exit 1, name the
  file and the ``lfr store`` command, and change nothing in the folder; after
  ``lfr store restore`` from a backup it starts again with every earlier alert.
- the index snapshots (one truncated, one garbage, one with the wrong dimension) and a
  watchlist template changed on disk: ``lfr up`` must start, rebuild the index from the
  store, leave the tampered entry out of it (damaged, logged once) and still alert.

  Then every shard is killed (kill -9) after its new snapshot went bad: each restarts
  empty and the deployment refills it from the store.

The figures asserted: the refusal comes before any model or Ray start (seconds), nothing
stored changes, and no alert is lost (the restored store holds every alert of the first
run) or duplicated (the second run updates the same alert id).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lfr_actors.index.shard import ShardIndex
from lfr_actors.models.cache import ModelCache
from lfr_actors.store.audit import AuditLog
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from tests.conftest import REPO, lfr_test_home
from tests.deployments import write_deployment
from tests.disks import fill, small_tmpfs
from tests.lfr_up import lfr_up

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

REFUSAL_S = 60.0
"""Generous bound for a refusal: it comes before models load or Ray starts (~2 s here)."""


def lfr(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def up_until_eof(topology: Path) -> subprocess.CompletedProcess[str]:
    return lfr("up", str(topology), "--until-eof", "--home", str(lfr_test_home()))


def alerts_in(store: Path) -> dict[str, int]:
    """Alert id -> sightings, read from the store file."""
    with sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, sightings FROM alerts").fetchall()
    conn.close()
    return {str(a): int(n) for a, n in rows}


def folder_state(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a digest of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def first_run(
    model_cache: ModelCache, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The folder (topology, watchlist, data) of one finished real run, with a backup."""
    folder = tmp_path_factory.mktemp("store-files") / "site"
    # The longest fusion window the schema allows: a later run's sightings of Miranda fuse
    # into the first run's alert however long the tests before it took (a slow CI machine
    # once took longer than 60 s, and a new alert was rightly raised).
    topology = write_deployment(
        folder, shared_data, ["lin_manuel_miranda", "obama"], shards=3, fusion_window_s=3600
    )
    result = up_until_eof(topology)
    assert result.returncode == 0, result.stderr[-3000:]
    store = folder / "data" / "alerts.sqlite3"
    assert len(alerts_in(store)) == 1
    backup = folder / "alerts.backup.sqlite3"
    made = lfr("store", "backup", str(store), str(backup))
    assert made.returncode == 0, made.stderr
    return folder


@pytest.fixture
def site(first_run: Path, tmp_path: Path) -> Path:
    """A copy of the first run's folder to break (topology paths are relative to it)."""
    copy = tmp_path / "site"
    shutil.copytree(first_run, copy)
    return copy


def _shards(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in status["index"].items() if v.get("role") == "index_shard"}


def _zero_bytes(store: Path) -> None:
    store.write_bytes(b"")


def _deleted(store: Path) -> None:
    store.unlink()


def _damaged_header(store: Path) -> None:
    with store.open("r+b") as handle:
        handle.write(b"\x00" * 64)


def _damaged_pages(store: Path) -> None:
    page = 4096
    pages = store.stat().st_size // page
    with store.open("r+b") as handle:
        handle.seek((pages // 3) * page)
        handle.write(os.urandom((pages // 3) * page))


@pytest.mark.parametrize(
    ("corrupt", "cause"),
    [
        (_zero_bytes, "empty (0 bytes), but a store was created here"),
        (_deleted, "missing, but a store was created here"),
        (_damaged_header, "the file header is not SQLite's"),
        (_damaged_pages, "damaged"),
    ],
    ids=["zero-bytes", "deleted", "damaged-header", "damaged-pages"],
)
@pytest.mark.parametrize("command", ["up", "serve"])
def test_a_broken_store_is_a_one_line_refusal_that_changes_nothing(
    site: Path, corrupt: object, cause: str, command: str
) -> None:
    store = site / "data" / "alerts.sqlite3"
    assert callable(corrupt)
    corrupt(store)
    before = folder_state(site)
    started = time.monotonic()
    result = lfr(command, str(site / "topology.yaml"), "--home", str(lfr_test_home()))
    took = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and cause in lines[0]
    assert str(store) in lines[0] and "lfr store restore" in lines[0]
    assert "lfr store check" in lines[0]
    assert folder_state(site) == before  # nothing stored changed, no new store made
    assert took < REFUSAL_S
    print(f"\n{command} refused a {cause!r} store in {took:.1f} s")


def test_a_lost_store_is_restored_and_the_deployment_runs_on_with_its_alerts(
    site: Path,
) -> None:
    store = site / "data" / "alerts.sqlite3"
    alerts_before = alerts_in(store)
    store.write_bytes(b"")
    refused = up_until_eof(site / "topology.yaml")
    assert refused.returncode == 1
    checked = lfr("store", "check", str(store))
    assert checked.returncode == 1 and "DAMAGED: empty (0 bytes)" in checked.stdout
    started = time.monotonic()
    restored = lfr("store", "restore", str(site / "alerts.backup.sqlite3"), str(store))
    assert restored.returncode == 0, restored.stderr
    assert "kept as" in restored.stdout  # the empty file was set aside, not deleted
    assert lfr("store", "check", str(store)).returncode == 0
    result = up_until_eof(site / "topology.yaml")
    recovered = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    after = alerts_in(store)
    # No alert lost (the first run's is there) and none duplicated: Miranda, in the clip
    # again, is the same alert within the fusion window.
    assert set(alerts_before) <= set(after) and len(after) == 1
    assert all(after[a] >= n for a, n in alerts_before.items())
    with Database(store, readonly=True) as db:
        assert AuditLog(db).verify().intact
    print(f"\nrestore + a whole run again: {recovered:.1f} s, alerts {alerts_before} -> {after}")


def test_corrupt_snapshots_and_a_tampered_template_start_and_rebuild(site: Path) -> None:
    """Derived data never stops a start, nor a restart: three corrupt snapshots and a
    tampered template at start; then kill -9 of every shard after its new snapshot went
    bad, and each restarts empty and is refilled from the store."""
    data = site / "data"
    shards = sorted((data / "index").iterdir())
    assert len(shards) == 3

    def index_file(shard: Path) -> Path:
        return next(p for p in shard.iterdir() if p.suffix == ".usearch")

    truncated = index_file(shards[0])
    truncated.write_bytes(truncated.read_bytes()[: max(1, truncated.stat().st_size // 2)])
    garbage = index_file(shards[1])
    garbage.write_bytes(os.urandom(garbage.stat().st_size))
    manifest = json.loads((shards[2] / "snapshot.json").read_text())
    manifest["config"]["dimension"] = 7
    (shards[2] / "snapshot.json").write_text(json.dumps(manifest))
    # Obama's template changed on disk, behind the store's back.
    with sqlite3.connect(data / "alerts.sqlite3") as conn:
        blob = bytearray(
            conn.execute("SELECT embeddings FROM watchlist_entries WHERE id = 'obama'").fetchone()[
                0
            ]
        )
        blob[10] ^= 0x40
        conn.execute("UPDATE watchlist_entries SET embeddings = ? WHERE id = 'obama'", (blob,))
    conn.close()
    alerts_before = alerts_in(data / "alerts.sqlite3")

    topology = site / "topology.yaml"
    started = time.monotonic()
    up = lfr_up(topology, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 300
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            time.sleep(1.0)
            assert up.poll() is None, up.communicate()[1][-3000:]
            shown = lfr("status", str(topology), "--json", timeout=60)
            if shown.returncode == 0:
                status = json.loads(shown.stdout)
                break
        else:
            pytest.fail("the deployment did not start")
        took = time.monotonic() - started
        # Never "indexed": the status counts and lists the entry as damaged, with why.
        assert status["deployment"]["watchlist_entries"] == 1
        assert status["deployment"]["damaged_entries"] == 1
        assert [d["entry_id"] for d in status["deployment"]["damaged"]] == ["obama"]
        human = lfr("status", str(topology), timeout=60)
        assert "DAMAGED entry obama (not indexed): its templates do not match" in human.stdout

        # Phase 2: the new snapshots go bad and every shard is killed (kill -9).
        before = _shards(status)
        assert len(before) == 3 and sum(int(s["entries"]) for s in before.values()) == 1
        for shard in sorted((data / "index").iterdir()):
            index = index_file(shard)
            index.write_bytes(os.urandom(index.stat().st_size))
        killed_at = time.monotonic()
        for figures in before.values():
            os.kill(int(figures["pid"]), 9)
        refilled_s = None
        while time.monotonic() < killed_at + 180:
            time.sleep(1.0)
            shown = lfr("status", str(topology), "--json", timeout=60)
            if shown.returncode != 0:
                continue
            status = json.loads(shown.stdout)
            now = _shards(status)
            restarted = all(int(s.get("restarts") or 0) >= 1 for s in now.values())
            if restarted and sum(int(s.get("entries") or 0) for s in now.values()) == 1:
                refilled_s = time.monotonic() - killed_at
                break
        assert refilled_s is not None, f"the shards were not refilled: {status}"
        assert all(s["snapshot_fault"] for s in _shards(status).values())  # each said why
        assert status["deployment"]["damaged_entries"] == 1  # still damaged, still not indexed
        down = lfr("down", str(topology), timeout=180)
        assert down.returncode == 0, down.stderr
        out, err = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, err[-3000:]
    logs = out + err
    assert logs.count("snapshot_unusable") >= 3  # each shard said why (worker logs)
    assert logs.count("index_shard_rebuilt") >= 1
    damaged_lines = [line for line in logs.splitlines() if "watchlist_entry_damaged" in line]
    assert len(damaged_lines) == 1 and "obama" in damaged_lines[0]  # logged once
    assert "do not match their stored checksum" in damaged_lines[0]

    # The index was rebuilt from the store: whole, valid snapshots, without the damaged entry.
    indexed: set[str] = set()
    for shard in sorted((data / "index").iterdir()):
        loaded = ShardIndex.load(shard)
        indexed |= set(loaded.entries())
    assert indexed == {"lin_manuel_miranda"}
    # No alert lost or duplicated: Miranda's alert is the same one. (Whether this replay of
    # the same file adds sightings to it is the sighting-identity fix of issue 8 item 1.)
    after = alerts_in(data / "alerts.sqlite3")
    assert set(after) == set(alerts_before)
    assert all(after[a] >= n for a, n in alerts_before.items())
    with Database(data / "alerts.sqlite3", readonly=True) as db:
        report = Deployments(db).report("itest")
    assert report["watchlist"]["damaged"] == 1
    assert report["watchlist"]["damaged_entries"] == ["obama"]
    print(
        f"\nthree corrupt snapshots + a tampered template: started in {took:.1f} s; "
        f"three shards killed on corrupt snapshots: refilled in {refilled_s:.1f} s"
    )


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, mounted for the test (root only; skips with the reason elsewhere)."""
    with small_tmpfs(tmp_path / "small-disk", "16m") as mount:
        yield mount


@pytest.mark.parametrize("command", ["up", "serve"])
def test_starting_on_a_full_disk_is_one_line_naming_the_folder(
    site: Path, full_disk: Path, command: str
) -> None:
    data = full_disk / "data"
    shutil.copytree(site / "data", data)
    topology = site / "topology.yaml"
    text = topology.read_text()
    assert "data_dir: data" in text
    topology.write_text(text.replace("data_dir: data", f"data_dir: {data}"))
    fill(full_disk / "filler")
    before = folder_state(data)
    result = lfr(command, str(topology), "--home", str(lfr_test_home()))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"the disk holding {data} is full" in lines[0]
    assert folder_state(data) == before
