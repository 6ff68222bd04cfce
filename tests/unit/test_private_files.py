"""Owner-only data: every folder 0700 and file 0600 the product writes, whatever the umask."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.control import paths as paths_module
from lfr_actors.control.jsonl_sink import JsonlSink
from lfr_actors.control.paths import DeploymentError, DeploymentPaths
from lfr_actors.fsutil import (
    atomic_write,
    ensure_private_file,
    open_private_append,
    private_dir,
    tighten_tree,
)
from lfr_actors.index.shard import ShardIndex
from lfr_actors.logs import get_logger
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.db import Database, StoreError, _create_private
from lfr_actors.testing.doubles import make_sighting

UMASKS = [0o022, 0o000, 0o002, 0o277]
"""The usual one, none at all (everything would be 0666/0777), group-writable, and one
that would leave the owner unable to write."""


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Every path under ``root`` (and ``root``) with its mode."""
    found = {".": mode(root)}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = mode(path)
    return found


def assert_private(root: Path) -> None:
    modes = modes_under(root)
    wrong = {
        p: f"{m:04o}" for p, m in modes.items() if m != (0o700 if Path(root, p).is_dir() else 0o600)
    }
    assert not wrong, f"not owner-only: {wrong}"


def test_atomic_write_and_private_dir_ignore_the_umask(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "data"
    assert private_dir(data / "a" / "b") == []
    atomic_write(data / "a" / "b" / "f.json", b"{}")
    ensure_private_file(data / "a" / "empty")
    with open_private_append(data / "a" / "log.jsonl") as out:
        out.write(b"line\n")
    assert_private(data)
    assert (data / "a" / "log.jsonl").read_bytes() == b"line\n"


def test_the_store_and_its_wal_and_shm_are_0600(tmp_path: Path, umask: int) -> None:
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    event = fuser.observe(make_sighting(1))
    assert event is not None
    data = tmp_path / "data"
    with AlertStore(data / "alerts.sqlite3") as store:
        store.apply(event)
        with AlertStore.open_readonly(data / "alerts.sqlite3") as reader:
            assert reader.counts()["alerts"] == 1
            names = {p.name for p in data.iterdir()}
            # SQLite made these itself, with the main file's mode.
            assert {"alerts.sqlite3-wal", "alerts.sqlite3-shm"} <= names
            assert_private(data)
    assert_private(data)


def test_an_index_snapshot_is_0600(tmp_path: Path, umask: int) -> None:
    shard = ShardIndex(4, "cosine", mode="exact")
    shard.add("E1", np.eye(4, dtype=np.float32)[:1])
    target = tmp_path / "data" / "index" / "shard-0"
    shard.save(target)
    assert len(list(target.iterdir())) == 2  # the index file and its manifest
    assert_private(tmp_path / "data")
    assert len(ShardIndex.load(target)) == 1


def test_the_jsonl_sink_writes_0600_even_outside_the_data_folder(
    tmp_path: Path, umask: int
) -> None:
    fuser = Fuser("dep1", FusionConfig(threshold=0.5))
    event = fuser.observe(make_sighting(1))
    assert event is not None
    with AlertStore(tmp_path / "data" / "alerts.sqlite3") as store:
        store.apply(event)
    out = tmp_path / "elsewhere" / "alerts.jsonl"
    out.parent.mkdir()
    out.touch(mode=0o644)
    os.chmod(out, 0o644)  # an operator's file, world-readable before the sink touches it
    with AlertStore.open_readonly(tmp_path / "data" / "alerts.sqlite3") as reader:
        events = reader.events_after(0)
    sink = JsonlSink(out)
    assert sink.write(events) == 1
    assert mode(out) == 0o600
    assert json.loads(out.read_text().splitlines()[0])["entry_id"] == event.alert.entry_id


def test_a_looser_data_folder_is_tightened_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh logger: the module's own may already be bound (structlog caches a logger on
    # first use), and capture_logs sees only loggers bound while it is active.
    monkeypatch.setattr(paths_module, "log", get_logger("lfr.deployment"))
    data = tmp_path / "data"
    (data / "index" / "s0").mkdir(parents=True)
    for folder in (data, data / "index", data / "index" / "s0"):
        os.chmod(folder, 0o755)
    (data / "index" / "s0" / "manifest.json").write_text("{}")
    os.chmod(data / "index" / "s0" / "manifest.json", 0o644)
    with Database(data / "alerts.sqlite3"):
        pass
    os.chmod(data / "alerts.sqlite3", 0o644)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    (data / "link").symlink_to(outside)  # links are not followed, nor changed
    with capture_logs() as logs:
        DeploymentPaths(data).secure()
        DeploymentPaths(data).secure()  # already tight: nothing said the second time
    modes = modes_under(data)
    del modes["link"]
    assert set(modes.values()) <= {0o700, 0o600}, modes
    assert mode(outside) == 0o644
    warnings = [e for e in logs if e["event"] == "data_folder_tightened"]
    assert len(warnings) == 1
    assert warnings[0]["paths"] == 5
    assert warnings[0]["modes_were"] == ["0644", "0755"]


def test_a_looser_store_file_is_tightened_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "alerts.sqlite3"
    with Database(db):
        pass
    os.chmod(db, 0o644)
    with capture_logs() as logs, Database(db):
        assert mode(db) == 0o600
    assert [e["mode_was"] for e in logs if e["event"] == "store_file_tightened"] == ["0644"]


def test_tighten_tree_leaves_special_files_alone(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo", 0o644)
    os.chmod(tmp_path / "fifo", 0o644)
    assert tighten_tree(tmp_path) == []
    assert mode(tmp_path / "fifo") == 0o644


def test_a_folder_whose_mode_cannot_be_set_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)

    def refuse(path: object, mode: int, **_: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr("lfr_actors.fsutil.os.chmod", refuse)  # as for another user's folder
    with pytest.raises(DeploymentError) as caught:
        DeploymentPaths(data).secure()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot make the data folder {data} readable by its owner only")
    assert "Operation not permitted" in message and "chown" in message


def test_a_store_whose_mode_cannot_be_set_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "alerts.sqlite3"
    db.touch()
    os.chmod(db, 0o644)

    def refuse(path: object, mode: int, **_: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    # An existing store is changed by path (never opened: that would drop SQLite's locks).
    monkeypatch.setattr("lfr_actors.fsutil.os.chmod", refuse)
    with pytest.raises(StoreError, match="cannot create the store readable by its owner only"):
        Database(db)


def test_creating_a_store_keeps_the_locks_of_open_ones(tmp_path: Path) -> None:
    """Opening the store again in a process must not drop that process's SQLite locks.

    Closing any descriptor of a database file drops every POSIX lock the process holds on
    it. A second process then believes it holds the last connection, checkpoints and
    deletes the WAL on closing, under the feet of the first: the store is corrupted. The
    WAL file surviving the second process's close shows the first one's lock held.
    """
    path = tmp_path / "alerts.sqlite3"
    first = sqlite3.connect(path, isolation_level=None)
    try:
        first.execute("PRAGMA journal_mode=WAL")
        first.execute("CREATE TABLE t (x INTEGER)")
        first.execute("INSERT INTO t VALUES (1)")
        first.execute("SELECT * FROM t").fetchall()
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        _create_private(path)  # what every new Database in this process does first
        other = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT * FROM t').fetchall(); c.close()"
        )
        subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=60)
        assert wal.exists(), "another process took this one's connection for closed"
        assert first.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        first.close()
