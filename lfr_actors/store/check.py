"""The store file checked, backed up and restored: ``lfr store check|backup|restore``.

The store (``alerts.sqlite3``) holds what cannot be made again: alerts, adjudications,
the audit chain and the watchlist. So it is never trusted blindly:

- :func:`inspect_store` reads a store without changing it (a read-only connection) and
  says what is wrong: no file or an empty one where a store was created before (its
  creation marker, :func:`lfr_actors.store.db.marker_path`, or an index snapshot says
  so), a damaged header, damaged pages (``PRAGMA quick_check`` or ``integrity_check``),
  a schema this build does not know, a broken audit chain, watchlist templates that fail
  their checksum.
- :func:`check_before_start` runs the quick form before ``lfr up`` and ``lfr serve``
  touch anything, and turns any fault into ONE line (:class:`StoreCheckError`) that names
  the file and the ``lfr store`` command that deals with it. Nothing is written by a
  refused start; a store that passes and has no marker yet (made before markers
  existed) is given one.
- :func:`backup_store` copies a store with SQLite's online backup API, safe while a
  deployment writes to it, into a new file that is checked before it is kept.
- :func:`restore_store` checks a backup, refuses while a deployment runs on the target
  (its run file names a live process, or another process holds SQLite's lock on the
  store's shared memory),
  sets the target (and its WAL) aside under a ``.replaced-<time>`` name rather than
  deleting it, and puts a checked copy of the backup in its place.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfr_actors.errors import LfrError
from lfr_actors.fsutil import open_private_fd
from lfr_actors.store.audit import _COLUMNS as AUDIT_COLUMNS
from lfr_actors.store.audit import ChainCheck, check_chain
from lfr_actors.store.audit import _entry as audit_entry
from lfr_actors.store.db import (
    BUSY_TIMEOUT_S,
    marker_path,
    read_marker,
    sqlite_safety,
    write_marker,
    writer_lock,
)
from lfr_actors.store.migrations import MIGRATIONS, template_problem
from lfr_actors.timefmt import iso_utc

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

MAX_PROBLEMS = 20
"""How many lines of ``integrity_check`` output a report keeps."""

RUN_FILE = "lfr.run.json"
"""The run file ``lfr up`` keeps beside the store while it runs (``DeploymentPaths``)."""


MIN_FREE_BYTES = 8 * 1024 * 1024
"""Free space a deployment's data folder needs before ``lfr up`` or ``lfr serve`` starts."""


class StoreCheckError(LfrError):
    """The store is damaged, lost or unknown; the message is one line with what to do."""


class StoreBusyError(LfrError):
    """A deployment runs on the store, so it cannot be replaced now."""


@dataclass
class StoreReport:
    """What :func:`inspect_store` found. ``fault`` is None for a usable store."""

    path: Path
    size: int | None
    created: dict[str, Any] | None
    schema_version: int | None = None
    integrity: list[str] = field(default_factory=list)
    audit: ChainCheck | None = None
    damaged_entries: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    new: bool = False
    check: str = "quick_check"

    @property
    def damaged(self) -> bool:
        """Whether the store cannot be used as it is (or a deployment would lose data)."""
        return self.fault is not None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (no stored values beyond ids and counts)."""
        return {
            "path": str(self.path),
            "size_bytes": self.size,
            "created": self.created,
            "new": self.new,
            "schema_version": self.schema_version,
            "schema_known": MIGRATIONS[-1].version,
            self.check: self.integrity or ["ok"],
            "audit": None if self.audit is None else self.audit.as_dict(),
            "damaged_entries": self.damaged_entries,
            "fault": self.fault,
            **sqlite_safety(),
        }

    def lines(self) -> list[str]:
        """The report for a person, one fact a line."""
        safety = sqlite_safety()
        out = [f"store {self.path}"]
        out.append(f"  size: {'missing' if self.size is None else f'{self.size} bytes'}")
        if self.created is not None:
            when = self.created.get("created_at")
            shown = iso_utc(when, "seconds") if isinstance(when, int | float) else "unknown time"
            out.append(f"  created: {shown} (marker {marker_path(self.path).name})")
        out.append(
            f"  schema: version {self.schema_version if self.schema_version is not None else '?'}"
            f" (this build knows up to {MIGRATIONS[-1].version})"
        )
        out.append(f"  {self.check}: {'; '.join(self.integrity) if self.integrity else 'ok'}")
        if self.audit is not None:
            out.append(f"  audit: {self.audit.summary()}")
        for entry, why in sorted(self.damaged_entries.items()):
            out.append(f"  damaged entry {entry}: {why}")
        out.append(
            f"  sqlite: {safety['sqlite_version']} "
            f"({'has' if safety['wal_reset_fix'] else 'predates'} the WAL-reset fix; "
            f"{safety['writers']})"
        )
        out.append(f"  verdict: {'DAMAGED: ' + self.fault if self.fault else 'ok'}")
        return out


def _connect_readonly(path: Path, *, immutable_if_clean: bool = True) -> sqlite3.Connection:
    # With no WAL beside the file (a clean stop), ``immutable`` reads it without creating
    # the -wal and -shm files a WAL reader otherwise leaves behind; with a WAL, that WAL
    # holds committed writes and must be read through.
    wal = path.with_name(path.name + "-wal")
    immutable = "&immutable=1" if immutable_if_clean and not wal.exists() else ""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro{immutable}",
        uri=True,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_S,
    )
    conn.execute("PRAGMA query_only = ON")
    conn.row_factory = sqlite3.Row  # as Database has it: the audit rows are read by name
    return conn


def inspect_store(
    path: Path, *, full: bool = False, evidence: Iterable[Path] = (), deep: bool = True
) -> StoreReport:
    """Check the store at ``path`` without changing it.

    ``full`` runs ``integrity_check`` instead of the faster ``quick_check``. ``evidence``
    names other files whose presence says a store existed (index snapshots). ``deep``
    also recomputes the audit chain and the templates' checksums.
    """
    path = Path(path)
    created = read_marker(path)
    existed = created is not None or any(Path(p).exists() for p in evidence)
    report = StoreReport(path, None, created, check="integrity_check" if full else "quick_check")
    try:
        report.size = path.stat().st_size
    except FileNotFoundError:
        report.size = None
    except OSError as exc:
        report.fault = f"cannot read it: {exc.strerror or exc}"
        return report
    if not report.size:
        if existed:
            what = "missing" if report.size is None else "empty (0 bytes)"
            since = (
                f" a store was created here {iso_utc(created['created_at'], 'seconds')}"
                if created is not None and isinstance(created.get("created_at"), int | float)
                else " a store existed here before"
            )
            report.fault = f"{what}, but{since}: its alerts, adjudications and audit log are lost"
        else:
            report.new = True
        return report
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        report.fault = f"cannot read it: {exc.strerror or exc}"
        return report
    if header != SQLITE_HEADER:
        report.fault = "the file header is not SQLite's: the start of the file is damaged"
        return report
    try:
        conn = _connect_readonly(path)
    except sqlite3.Error as exc:
        report.fault = f"SQLite cannot open it: {exc}"
        return report
    try:
        _inspect_open(conn, report, full=full, deep=deep)
    except sqlite3.DatabaseError as exc:
        report.fault = f"SQLite cannot read it: {exc}"
    finally:
        conn.close()
    return report


def _inspect_open(conn: sqlite3.Connection, report: StoreReport, *, full: bool, deep: bool) -> None:
    pragma = "integrity_check" if full else "quick_check"
    rows = conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})").fetchall()
    # One row may hold several lines; "*** in database main ***" only heads them.
    problems = [
        line.strip()
        for r in rows
        for line in str(r[0]).splitlines()
        if line.strip() and line.strip() != "ok" and not line.startswith("***")
    ][:MAX_PROBLEMS]
    report.integrity = problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        report.fault = f"{pragma} found damaged pages: {problems[0]}{more}"
        return
    tables = {
        str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if "schema_migrations" not in tables:
        if tables:
            report.fault = "it has tables but no schema_migrations: not an lfr store"
        elif report.created is not None:
            report.fault = (
                "it holds no tables, but a store was created here: its alerts, "
                "adjudications and audit log are lost"
            )
        else:
            report.new = True  # an empty SQLite file: a new store
            report.schema_version = 0
        return
    applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
    report.schema_version = max(applied, default=0)
    known = {m.version for m in MIGRATIONS}
    if report.schema_version > MIGRATIONS[-1].version:
        report.fault = (
            f"schema version {report.schema_version} is newer than this build's "
            f"({MIGRATIONS[-1].version}); upgrade lfr_actors to read it"
        )
        return
    # Every migration this build has, up to the newest applied: no more, none missing.
    if applied != {version for version in known if version <= report.schema_version}:
        report.fault = f"schema versions {sorted(applied)} are not a sequence this build made"
        return
    if not deep:
        return
    if "audit_log" in tables:
        issued = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'").fetchone()
        entries = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq")
        report.audit = check_chain(
            (audit_entry(r) for r in entries), int(issued[0]) if issued else 0
        )
    if report.schema_version >= 7:
        for dep, entry, blob, dim, checksum in conn.execute(
            "SELECT deployment_id, id, embeddings, dimension, embeddings_sha256 "
            "FROM watchlist_entries WHERE state = 'active'"
        ):
            problem = template_problem(
                None if blob is None else bytes(blob), None if dim is None else int(dim), checksum
            )
            if problem is not None:
                report.damaged_entries[f"{dep}/{entry}"] = problem
    if report.audit is not None and not report.audit.intact:
        report.fault = report.audit.summary()


def check_before_start(
    path: Path, *, evidence: Iterable[Path] = (), mark: bool = True
) -> StoreReport:
    """Refuse (:class:`StoreCheckError`, one line) a store a deployment must not start on.

    Runs ``quick_check`` and the schema check; the audit chain and templates are checked
    by ``lfr store check`` and, for templates, at every index load. A store that passes
    and has no creation marker yet is given one, unless ``mark`` is False (``lfr
    validate``, which writes nothing). Nothing else is written.
    """
    path = Path(path)
    report = inspect_store(path, evidence=evidence, deep=False)
    if report.fault is not None:
        raise StoreCheckError(
            f"{path}: {report.fault}. Nothing was changed. See `lfr store check {path}`; "
            f"put a backup in place with `lfr store restore BACKUP {path}`, or move {path.name} "
            f"and {marker_path(path).name} aside to start a new store"
        )
    if mark and not report.new and report.created is None:
        write_marker(path, report.schema_version or 0)
    return report


def require_free_space(folder: Path, need: int = MIN_FREE_BYTES) -> None:
    """Refuse (:class:`StoreCheckError`, one line naming the folder) a disk that is full.

    ``folder`` need not exist yet: its nearest existing parent's file system is measured.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    free = stats.f_bavail * stats.f_frsize
    if free < need:
        raise StoreCheckError(
            f"the disk holding {folder} is full ({free // 1024} KiB free, a deployment needs "
            f"at least {need // (1024 * 1024)} MiB); free space there or set storage.data_dir "
            "to a folder on another disk"
        )


def backup_store(path: Path, dest: Path) -> StoreReport:
    """Copy the store at ``path`` to the new file ``dest`` with SQLite's online backup API.

    Safe while a deployment writes to the store: the copy is one consistent state of it.
    The copy is checked (``integrity_check``) before it is kept; ``dest`` must not exist.
    Returns the copy's report.
    """
    path, dest = Path(path), Path(dest)
    if dest.exists():
        raise LfrError(f"{dest} already exists; give the backup a new file name")
    source = inspect_store(path, deep=False)
    if source.fault is not None or source.new:
        raise StoreCheckError(
            f"{path}: {source.fault or 'no store to back up'}; nothing was written. "
            f"See `lfr store check {path}`"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        _copy(path, temporary)
        copy = inspect_store(temporary, full=True)
        if copy.fault is not None:
            raise StoreCheckError(f"the backup of {path} failed its check: {copy.fault}")
        os.replace(temporary, dest)
    finally:
        temporary.unlink(missing_ok=True)
    copy.path = dest
    return copy


def _copy(source: Path, target: Path, *, live: bool = True) -> None:
    """SQLite's backup API from ``source`` into a new file ``target`` (0600), fsynced.

    ``live``: ``source`` is a store a deployment may be writing, else a backup file.
    """
    fd = open_private_fd(target, os.O_WRONLY | os.O_EXCL)
    os.close(fd)
    if live:
        # A read-write connection that writes nothing (query_only): a read-only one would
        # leave -wal and -shm files behind, where this one, when it is the last to close,
        # removes them. Closing may checkpoint, so it closes under the writers' lock. Never
        # immutable: a writer may start while the copy runs, and the copy must be one
        # consistent read under SQLite's locks.
        src = sqlite3.connect(source, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        src.execute("PRAGMA query_only = ON")
    else:
        src = _connect_readonly(source, immutable_if_clean=False)
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(dst)
            # One self-contained file: no WAL beside it until it is opened for writing.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        if live:
            with writer_lock(source):
                src.close()
        else:
            src.close()
    with target.open("rb") as handle:
        os.fsync(handle.fileno())


_SHM_DMS_OFFSET = 128
"""SQLite's "dead man switch" byte in a WAL store's -shm file (``UNIX_SHM_DMS`` in
os_unix.c): every open connection holds a shared POSIX lock on it for as long as it is
open."""


def store_in_use(path: Path) -> bool:
    """Whether a connection in another process has the store open, by SQLite's -shm lock.

    That is ``lfr up``, ``lfr serve``, an API or the alert actor. A connection of this
    process is not seen (POSIX locks are per process).
    """
    shm = Path(path).with_name(Path(path).name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except OSError:
        return False  # no shared memory: no connection in WAL mode has it open
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_OFFSET)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_OFFSET)
        return False
    finally:
        os.close(fd)


def deployment_running_on(path: Path) -> int | None:
    """The pid of a live ``lfr up`` whose run file sits beside the store, else None."""
    run_file = Path(path).with_name(RUN_FILE)
    try:
        pid = int(json.loads(run_file.read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    return pid


def restore_store(backup: Path, path: Path) -> tuple[StoreReport, list[Path]]:
    """Put a checked copy of ``backup`` in place of the store at ``path``.

    Refuses (:class:`StoreBusyError`) while a deployment runs on ``path``, and
    (:class:`StoreCheckError`) a backup that fails ``integrity_check``. The store it
    replaces, and its WAL and shared-memory files, are renamed ``<name>.replaced-<time>``,
    never deleted. Returns the restored store's report and the files set aside.
    """
    backup, path = Path(backup), Path(path)
    pid = deployment_running_on(path)
    if pid is not None:
        raise StoreBusyError(
            f"a deployment (process {pid}) runs on {path}; stop it with `lfr down FILE` "
            "before restoring"
        )
    if store_in_use(path):
        raise StoreBusyError(
            f"another process has {path} open (`lfr up`, `lfr serve` or an API); stop it "
            "(`lfr down FILE`, or Ctrl-C) before restoring"
        )
    checked = inspect_store(backup, full=True)
    if checked.fault is not None or checked.new:
        raise StoreCheckError(f"{backup}: {checked.fault or 'not a store'}; {path} was not changed")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.restore.{os.getpid()}.tmp")
    aside: list[Path] = []
    try:
        _copy(backup, temporary, live=False)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for suffix in ("", "-wal", "-shm"):
            old = path.with_name(path.name + suffix)
            if old.exists():
                moved = old.with_name(f"{old.name}.replaced-{stamp}")
                os.replace(old, moved)
                aside.append(moved)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    write_marker(path, checked.schema_version or 0)
    restored = inspect_store(path, full=True)
    return restored, aside
