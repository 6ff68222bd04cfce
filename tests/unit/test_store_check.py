"""The store checked before a start, ``lfr store check|backup|restore``, template checksums.

Real SQLite files in a temporary folder; each fault is made the way it happens on disk
(a file truncated to 0 bytes, bytes overwritten in the header or in a page, a row's
templates changed behind the store's back) and the test asserts both the one-line
refusal and that nothing stored was changed by it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lfr_actors.control.paths import DeploymentError, disk_full_is_one_line
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM, Action, Actor, AuditLog
from lfr_actors.store.check import (
    StoreBusyError,
    StoreCheckError,
    backup_store,
    check_before_start,
    inspect_store,
    require_free_space,
    restore_store,
    store_in_use,
)
from lfr_actors.store.db import (
    WAL_RESET_FIX,
    Database,
    StoreError,
    lock_path,
    marker_path,
    read_marker,
    sqlite_safety,
)
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.migrations import MIGRATIONS, template_checksum
from lfr_actors.store.records import Enrolled, Origin
from lfr_actors.testing.declarations import make_deployment, make_entry
from tests.conftest import REPO

DIM = 8
MARKER_NAME = "alerts.sqlite3.created.json"
AUTHORITY = Actor("Supt. Example")
LOADER = Actor("watchlist file")


def make_store(path: Path, entries: int = 3, filler: int = 0) -> None:
    """A store with a deployment, active entries, audit entries and ``filler`` audit rows."""
    with Database(path) as db:
        deployments = Deployments(db)
        now = time.time()
        deployments.create(
            make_deployment(
                "dep1",
                now - 60,
                now + 3600,
                authorised_by="Supt. Example",
                purpose="test",
                location="ci",
            ),
            actor=AUTHORITY,
            origin=Origin.FILE,
        )
        rng = np.random.default_rng(1)
        for i in range(entries):
            deployments.add_entry(
                "dep1",
                make_entry(
                    f"E{i}", display_name=f"Person {i}", legal_basis="warrant", source="record"
                ),
                Enrolled(
                    image=b"\xff\xd8fake" + bytes([i]),
                    image_type="image/jpeg",
                    embeddings=rng.standard_normal((2, DIM)).astype(np.float32),
                    quality={},
                ),
                actor=LOADER,
                origin=Origin.FILE,
                approved_by=AUTHORITY,
            )
        log = AuditLog(db)
        for i in range(filler):
            log.append(SYSTEM, Action.DEPLOYMENT_CREATE, f"filler-{i}", {"pad": "x" * 200})
        db.checkpoint("TRUNCATE")


def digest(*paths: Path) -> dict[str, str | None]:
    """What is on disk at each path (None where nothing is)."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths
    }


def folder_state(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


# -- the creation marker ------------------------------------------------------------


def test_a_new_store_leaves_a_marker_beside_it(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store, entries=0)
    marker = read_marker(store)
    assert marker is not None and marker["schema_version"] == MIGRATIONS[-1].version
    assert marker["store"] == "alerts.sqlite3" and marker["created_at"] <= time.time()
    assert stat.S_IMODE(marker_path(store).stat().st_mode) == 0o600
    assert stat.S_IMODE(lock_path(store).stat().st_mode) == 0o600


def test_a_new_folder_passes_the_start_check_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "data" / "alerts.sqlite3"
    report = check_before_start(store)
    assert report.new and not report.damaged
    assert not (tmp_path / "data").exists()


# -- refusals at start: one line, nothing changed -------------------------------------


def _refused(store: Path, *, evidence: tuple[Path, ...] = ()) -> str:
    before = folder_state(store.parent)
    with pytest.raises(StoreCheckError) as caught:
        check_before_start(store, evidence=evidence)
    message = str(caught.value)
    assert "\n" not in message
    assert str(store) in message and f"lfr store restore BACKUP {store}" in message
    assert f"lfr store check {store}" in message
    assert folder_state(store.parent) == before  # nothing written or removed
    return message


def test_a_zero_byte_store_where_one_was_created_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    store.write_bytes(b"")
    message = _refused(store)
    assert "empty (0 bytes)" in message and "a store was created here" in message
    assert store.stat().st_size == 0  # not silently made a new store


def test_a_missing_store_where_one_was_created_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    store.unlink()
    assert "missing" in _refused(store)
    assert not store.exists()


def test_an_index_snapshot_is_evidence_that_a_store_existed(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    manifest = tmp_path / "index" / "idx-0" / "snapshot.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    store.write_bytes(b"")
    assert "a store existed here before" in _refused(store, evidence=(manifest,))


def test_a_damaged_header_is_refused_not_a_traceback(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with store.open("r+b") as handle:
        handle.write(b"\x00" * 100)
    assert "file header is not SQLite's" in _refused(store)


def test_damaged_pages_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store, filler=400)
    page = 4096
    size = store.stat().st_size
    assert size > 20 * page
    with store.open("r+b") as handle:  # garbage over pages in the middle of the audit table
        handle.seek((size // page // 2) * page)
        handle.write(os.urandom(3 * page))
    message = _refused(store)
    assert "quick_check found damaged pages" in message or "cannot read it" in message
    report = inspect_store(store, full=True)
    assert report.damaged and (report.integrity or "malformed" in str(report.fault))


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with sqlite3.connect(store) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    raw.close()
    assert "schema version 99 is newer than this build's" in _refused(store)


def test_a_store_from_before_markers_is_given_one_at_start(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    marker_path(store).unlink()
    report = check_before_start(store)
    assert not report.damaged and read_marker(store) is not None


# -- lfr store check ------------------------------------------------------------------


def lfr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip


def test_store_check_reports_a_healthy_store(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    result = lfr("store", "check", str(store), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["integrity_check"] == ["ok"] and report["fault"] is None
    assert report["schema_version"] == MIGRATIONS[-1].version
    assert report["audit"]["intact"] is True and report["audit"]["entries"] > 0
    assert report["sqlite_version"] == sqlite3.sqlite_version
    assert report["damaged_entries"] == {}


def test_store_check_names_what_is_damaged_and_exits_1(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with sqlite3.connect(store) as raw:  # a template changed on disk, behind the store's back
        blob = bytearray(raw.execute("SELECT embeddings FROM watchlist_entries WHERE id='E1'")
                         .fetchone()[0])  # fmt: skip
        blob[0] ^= 0xFF
        raw.execute("UPDATE watchlist_entries SET embeddings = ? WHERE id = 'E1'", (bytes(blob),))
    raw.close()
    before = digest(store)
    result = lfr("store", "check", str(store))
    assert digest(store) == before
    assert result.returncode == 0  # a damaged template alone leaves the store usable
    assert "damaged entry dep1/E1: its templates do not match their stored checksum" in (
        result.stdout
    )
    store.write_bytes(b"")
    result = lfr("store", "check", str(store))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "verdict: DAMAGED: empty (0 bytes)" in result.stdout
    assert store.stat().st_size == 0  # the check itself wrote nothing


def test_store_check_reports_a_broken_audit_chain(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with sqlite3.connect(store) as raw:
        raw.execute("DROP TRIGGER audit_log_no_update")
        raw.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = 2")
    raw.close()
    result = lfr("store", "check", str(store))
    assert result.returncode == 1
    assert "audit chain broken at seq 2" in result.stdout


# -- backup and restore ---------------------------------------------------------------


def test_backup_is_online_consistent_and_checked(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store, filler=50)
    stop = threading.Event()

    def keep_writing() -> None:
        with Database(store) as db:
            log = AuditLog(db)
            while not stop.is_set():
                log.append(SYSTEM, Action.DEPLOYMENT_CREATE, "busy", {"pad": "y" * 500})

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        time.sleep(0.2)
        copy = backup_store(store, tmp_path / "backup" / "b1.sqlite3")
    finally:
        stop.set()
        writer.join()
    assert not copy.damaged and copy.integrity == [] and copy.audit is not None
    assert copy.audit.intact and copy.audit.entries > 50
    assert stat.S_IMODE(copy.path.stat().st_mode) == 0o600
    with pytest.raises(Exception, match="already exists"):
        backup_store(store, copy.path)


def test_restore_puts_a_checked_backup_in_place_and_keeps_the_old(tmp_path: Path) -> None:
    store = tmp_path / "data" / "alerts.sqlite3"
    store.parent.mkdir()
    make_store(store)
    backup = backup_store(store, tmp_path / "b.sqlite3").path
    store.write_bytes(b"")  # the store lost
    restored, aside = restore_store(backup, store)
    assert not restored.damaged
    assert [p.name.split(".replaced-")[0] for p in aside] == ["alerts.sqlite3"]
    assert aside[0].stat().st_size == 0  # the lost file kept, not deleted
    check_before_start(store)  # starts again
    with Database(store, readonly=True) as db:
        assert {e.id for e in Deployments(db).entries("dep1")} == {"E0", "E1", "E2"}
        assert AuditLog(db).verify().intact


def test_restore_refuses_a_damaged_backup_and_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    before = folder_state(tmp_path)
    with pytest.raises(StoreCheckError, match="was not changed"):
        restore_store(bad, store)
    assert folder_state(tmp_path) == before


def test_restore_refuses_while_a_deployment_runs_on_the_store(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    backup = backup_store(store, tmp_path / "b.sqlite3").path
    (tmp_path / "lfr.run.json").write_text(json.dumps({"pid": os.getpid(), "api": "x"}))
    before = folder_state(tmp_path)
    result = lfr("store", "restore", str(backup), str(store))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "lfr down" in result.stderr
    with pytest.raises(StoreBusyError):
        restore_store(backup, store)
    assert folder_state(tmp_path) == before


# -- template checksums -----------------------------------------------------------------


def _tamper(store: Path, entry: str, blob: bytes) -> None:
    with sqlite3.connect(store) as raw:
        raw.execute("UPDATE watchlist_entries SET embeddings = ? WHERE id = ?", (blob, entry))
    raw.close()


def test_a_changed_or_nan_template_makes_the_entry_damaged_never_indexed(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with Database(store, readonly=True) as db:
        original = bytes(
            db.conn.execute("SELECT embeddings FROM watchlist_entries WHERE id='E2'").fetchone()[0]
        )
    changed = bytearray(original)
    changed[5] ^= 0x01
    _tamper(store, "E1", bytes(changed))
    nan = np.frombuffer(original, dtype=np.float32).copy()
    nan[3] = np.nan
    # A NaN written with a matching checksum (as a bug elsewhere could) is caught as well.
    with sqlite3.connect(store) as raw:
        raw.execute(
            "UPDATE watchlist_entries SET embeddings = ?, embeddings_sha256 = ? WHERE id = 'E2'",
            (nan.tobytes(), template_checksum(DIM, nan.tobytes())),
        )
    raw.close()
    with Database(store) as db:
        deployments = Deployments(db)
        loaded = deployments.load_templates("dep1")
        assert set(loaded.templates) == {"E0"}
        assert "stored checksum" in loaded.damaged["E1"]
        assert "not finite" in loaded.damaged["E2"]
        assert set(deployments.active_templates("dep1")[1]) == {"E0"}
        report = deployments.report("dep1")["watchlist"]
        assert report["damaged"] == 2 and report["damaged_entries"] == ["E1", "E2"]
        assert report["active"] == 3  # still active in the store: restorable, not deleted
        # The reasons name the fault, never the values.
        assert "nan" not in loaded.damaged["E2"].lower().replace("(nan or", "")


def test_migration_7_gives_existing_templates_their_checksum(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with sqlite3.connect(store) as raw:  # the store as version 6 left it
        raw.execute("ALTER TABLE watchlist_entries DROP COLUMN embeddings_sha256")
        raw.execute("DELETE FROM schema_migrations WHERE version = 7")
    raw.close()
    with Database(store) as db:
        assert db.schema_version() == MIGRATIONS[-1].version  # 7 applied again; later ones kept
        loaded = Deployments(db).load_templates("dep1")
    assert set(loaded.templates) == {"E0", "E1", "E2"} and loaded.damaged == {}


def test_a_deleted_entry_loses_its_checksum_with_its_templates(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with Database(store) as db:
        Deployments(db).delete_entry("dep1", "E0", actor=AUTHORITY, reason="test")
        row = db.conn.execute(
            "SELECT embeddings, embeddings_sha256 FROM watchlist_entries WHERE id = 'E0'"
        ).fetchone()
    assert tuple(row) == (None, None)


# -- SQLite safety ----------------------------------------------------------------------


def test_the_store_reports_its_sqlite_and_how_writers_are_kept_safe() -> None:
    safety = sqlite_safety()
    assert safety["sqlite_version"] == sqlite3.sqlite_version
    assert safety["wal_reset_fix"] == (sqlite3.sqlite_version_info >= WAL_RESET_FIX)
    assert "flock" in safety["writers"]


_HOLDER = """
import sys, time
from pathlib import Path
from lfr_actors.store.db import Database
with Database(Path(sys.argv[1])) as db, db.transaction() as conn:
    conn.execute("INSERT INTO audit_log_probe VALUES (1)")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_write_transaction_holds_the_cross_process_lock(tmp_path: Path) -> None:
    """While one process writes, another's write (or checkpoint) waits for it to finish."""
    store = tmp_path / "alerts.sqlite3"
    make_store(store, entries=0)
    with sqlite3.connect(store) as raw:
        raw.execute("CREATE TABLE audit_log_probe (x INTEGER)")
    raw.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store), "1.5"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        probe = os.open(lock_path(store), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
        with Database(store) as db:
            started = time.monotonic()
            # SQLite itself never waits in a PASSIVE checkpoint: only the writers' lock does.
            db.checkpoint("PASSIVE")
            waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert waited > 0.5  # it waited for the other process's transaction (1.5 s) to end


_HAMMER = """
import sys
from pathlib import Path
from lfr_actors.store.alerts import AlertStore
from lfr_actors.store.audit import SYSTEM, Action, AuditLog
from lfr_actors.store.db import Database
path, rounds, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with Database(path) as db:
    log = AuditLog(db)
    for i in range(rounds):
        log.append(SYSTEM, Action.DEPLOYMENT_CREATE, f"{tag}-{i}", {"pad": "z" * 3000})
        if i % 3 == 0:
            db.checkpoint("TRUNCATE" if i % 2 else "RESTART")
        if i % 7 == 0:
            db.checkpoint("PASSIVE")
print("done", tag, flush=True)
"""


def test_two_processes_writing_and_checkpointing_hard_leave_a_sound_store(
    tmp_path: Path,
) -> None:
    """The WAL-reset race needs a checkpoint and a commit at once: two processes try hard."""
    store = tmp_path / "alerts.sqlite3"
    make_store(store, entries=0)
    rounds = 300
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, str(store), str(rounds), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for tag in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    report = inspect_store(store, full=True)
    assert report.integrity == [] and not report.damaged
    assert report.audit is not None and report.audit.intact
    with AlertStore.open_readonly(store, create=False) as alerts:
        count = alerts._conn.execute(
            "SELECT COUNT(*) FROM audit_log WHERE subject LIKE 'a-%' OR subject LIKE 'b-%'"
        ).fetchone()[0]
    assert count == 2 * rounds


# -- a full disk ------------------------------------------------------------------------


def test_a_full_disk_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "not-yet"
    with pytest.raises(StoreCheckError) as caught:
        require_free_space(folder, need=1 << 62)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message and "is full" in message
    require_free_space(folder, need=1)
    assert not folder.exists()


def test_no_writer_makes_a_new_store_where_one_was_lost(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    store.write_bytes(b"")
    with pytest.raises(StoreError, match="missing or empty, but a store was created here"):
        Database(store)
    result = lfr("tokens", "create", "--name", "x", "--role", "viewer", "--db", str(store))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "lfr store restore" in result.stderr
    assert store.stat().st_size == 0  # still the lost file, not a fresh store
    assert not store.with_name("alerts.sqlite3-wal").exists()


def test_a_damaged_store_under_another_command_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    with store.open("r+b") as handle:
        handle.write(b"\x00" * 100)
    result = lfr("audit", "verify", "--db", str(store))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "lfr store check" in result.stderr


_OPENER = """
import sys, time
from pathlib import Path
from lfr_actors.store.db import Database
with Database(Path(sys.argv[1])) as db:
    db.conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()
    print("open", flush=True)
    sys.stdin.readline()
"""


def test_restore_refuses_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    """``lfr serve`` writes no run file; SQLite's own lock on the -shm file tells."""
    store = tmp_path / "alerts.sqlite3"
    make_store(store)
    backup = backup_store(store, tmp_path / "b.sqlite3").path
    assert not store_in_use(store)
    opener = subprocess.Popen(
        [sys.executable, "-c", _OPENER, str(store)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert opener.stdout is not None and opener.stdout.readline().strip() == "open"
        assert store_in_use(store)
        before = digest(store)
        with pytest.raises(StoreBusyError, match="another process has"):
            restore_store(backup, store)
        assert digest(store) == before
    finally:
        assert opener.stdin is not None
        opener.stdin.write("\n")
        opener.stdin.flush()
        opener.wait(timeout=30)
    assert not store_in_use(store)
    restored, _ = restore_store(backup, store)
    assert not restored.damaged


def test_a_store_left_by_a_crash_is_read_through_its_wal(tmp_path: Path) -> None:
    """A killed writer leaves committed rows only in the -wal file: the check sees them."""
    store = tmp_path / "live" / "alerts.sqlite3"
    store.parent.mkdir()
    make_store(store)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with Database(store) as db:
        AuditLog(db).append(SYSTEM, Action.DEPLOYMENT_CREATE, "after-the-checkpoint", {})
        # The files as a crash (kill -9) leaves them: the WAL not checkpointed into the file.
        for name in ("alerts.sqlite3", "alerts.sqlite3-wal", MARKER_NAME):
            shutil.copy(store.parent / name, crashed / name)
    copy = crashed / "alerts.sqlite3"
    assert (crashed / "alerts.sqlite3-wal").stat().st_size > 0
    report = check_before_start(copy)
    assert not report.damaged and report.schema_version == MIGRATIONS[-1].version
    full = inspect_store(copy, full=True)
    assert full.audit is not None and full.audit.intact
    assert full.audit.entries == inspect_store(store, full=True).audit.entries  # type: ignore[union-attr]


def test_a_disk_that_fills_during_the_start_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    for failure in (
        sqlite3.OperationalError("database or disk is full"),
        OSError(errno.ENOSPC, "No space left on device"),
    ):
        with pytest.raises(DeploymentError) as caught, disk_full_is_one_line(folder):
            raise failure
        message = str(caught.value)
        assert "\n" not in message and f"the disk holding {folder} is full" in message
    with pytest.raises(sqlite3.OperationalError, match="locked"), disk_full_is_one_line(folder):
        raise sqlite3.OperationalError("database is locked")  # other faults pass through
