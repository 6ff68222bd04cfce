"""Store safety benchmark: the writers' lock, the start check and the online backup.

Three figures, each with a baseline measured in the same run on the same machine:

- **Writers' lock.** Two processes append audit entries (one transaction each, with a
  checkpoint every few rounds, as the alert actor and the API do) to one WAL store through
  :class:`lfr_actors.store.db.Database`, whose transactions, checkpoints and close run
  under ``flock`` on ``<store>.lock`` (the guard against SQLite's WAL-reset bug, see
  :mod:`lfr_actors.store.db`). Baseline: the same rows written the same way with plain
  ``sqlite3`` connections and no ``flock``. Ratio = guarded commits/s / plain commits/s.
  After each run ``integrity_check`` must be ``ok`` and every row present.
- **Start check.** :func:`lfr_actors.store.check.check_before_start` (``quick_check`` and
  the schema) on a store of ``--mb`` MiB. Baseline: reading the file once from the page
  cache. Ratio = check time / read time.
- **Backup.** :func:`lfr_actors.store.check.backup_store` (SQLite's backup API, then
  ``integrity_check`` of the copy) of the same store. Baseline: ``shutil.copyfile``.

Everything happens in a temporary folder, removed at the end. About a minute on 2 cores.

    python loadtest/bench_store.py [--rounds 2000] [--mb 50]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from lfr_actors.store.audit import SYSTEM, Action, AuditLog, append_entry
from lfr_actors.store.check import backup_store, check_before_start, inspect_store
from lfr_actors.store.db import Database, sqlite_safety

PAD = "p" * 1500


def _guarded(path: str, rounds: int, tag: str) -> None:
    with Database(Path(path)) as db:
        log = AuditLog(db)
        for i in range(rounds):
            log.append(SYSTEM, Action.DEPLOYMENT_CREATE, f"{tag}-{i}", {"pad": PAD})
            if i % 5 == 0:
                db.checkpoint("PASSIVE" if i % 2 else "TRUNCATE")


def _plain(path: str, rounds: int, tag: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("PRAGMA synchronous = FULL")
    for i in range(rounds):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO plain (tag, pad) VALUES (?, ?)", (f"{tag}-{i}", PAD))
        conn.execute("COMMIT")
        if i % 5 == 0:
            conn.execute(f"PRAGMA wal_checkpoint({'PASSIVE' if i % 2 else 'TRUNCATE'})")
    conn.close()


def _two_writers(target: object, path: Path, rounds: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=target, args=(str(path), rounds, tag))  # type: ignore[arg-type]
        for tag in ("a", "b")
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(600)
        if proc.exitcode != 0:
            raise SystemExit(f"a writer failed (exit {proc.exitcode})")
    return time.perf_counter() - started


def bench_lock(folder: Path, rounds: int) -> dict[str, object]:
    guarded = folder / "guarded.sqlite3"
    Database(guarded).close()
    guarded_s = _two_writers(_guarded, guarded, rounds)
    report = inspect_store(guarded, full=True)
    with sqlite3.connect(guarded) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM audit_log WHERE actor = 'system'").fetchone()[0]
    conn.close()
    plain = folder / "plain.sqlite3"
    with sqlite3.connect(plain) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE plain (tag TEXT, pad TEXT)")
    conn.close()
    plain_s = _two_writers(_plain, plain, rounds)
    with sqlite3.connect(plain) as conn:
        plain_ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        plain_rows = conn.execute("SELECT COUNT(*) FROM plain").fetchone()[0]
    conn.close()
    commits = 2 * rounds
    return {
        "commits": commits,
        "guarded_commits_per_s": round(commits / guarded_s, 1),
        "plain_commits_per_s": round(commits / plain_s, 1),
        "ratio": round(plain_s / guarded_s, 3),
        "guarded_integrity": report.integrity or ["ok"],
        "guarded_rows": rows,
        "plain_integrity": plain_ok,
        "plain_rows": plain_rows,
    }


def bench_check_and_backup(folder: Path, mb: int) -> dict[str, object]:
    store = folder / "big" / "alerts.sqlite3"
    store.parent.mkdir()
    with Database(store) as db:
        log = AuditLog(db)
        with db.transaction() as conn:
            for i in range(mb * 1024 * 1024 // 1700):
                append_entry(
                    conn,
                    SYSTEM,
                    Action.DEPLOYMENT_CREATE,
                    f"fill-{i}",
                    {"pad": PAD},
                    at=time.time(),
                )
        assert log.verify().intact
        db.checkpoint("TRUNCATE")
    size = store.stat().st_size
    started = time.perf_counter()
    store.read_bytes()
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    check_before_start(store)
    check_s = time.perf_counter() - started
    started = time.perf_counter()
    shutil.copyfile(store, folder / "plain-copy.sqlite3")
    copy_s = time.perf_counter() - started
    started = time.perf_counter()
    backup = backup_store(store, folder / "backup.sqlite3")
    backup_s = time.perf_counter() - started
    return {
        "store_mib": round(size / (1 << 20), 1),
        "start_check_s": round(check_s, 3),
        "read_file_s": round(read_s, 3),
        "start_check_ratio": round(check_s / read_s, 2),
        "backup_s": round(backup_s, 3),
        "copyfile_s": round(copy_s, 3),
        "backup_ratio": round(backup_s / copy_s, 2),
        "backup_checked": not backup.damaged,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="commits per writer")
    parser.add_argument("--mb", type=int, default=50, help="size of the store to check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lfr-bench-store-") as tmp:
        folder = Path(tmp)
        out = {
            "sqlite": sqlite_safety(),
            "writers_lock": bench_lock(folder, args.rounds),
            "check_and_backup": bench_check_and_backup(folder, args.mb),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
