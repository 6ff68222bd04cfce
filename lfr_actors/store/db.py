"""The store file's connection: one connection type, the migrations runner, the markers.

A deployment keeps everything it must persist in one SQLite file (``alerts.sqlite3`` in its
data folder): alerts, API tokens, adjudications and the audit log. Several processes open it
(the alert actor, the API, ``lfr tokens``); each goes through :class:`Database`, which sets
the pragmas every connection needs and applies the migrations a writer finds missing.

Schema changes are the numbered migrations of :mod:`lfr_actors.store.migrations`; a
writer that opens the file applies the missing ones in order and in one transaction, and
records each in ``schema_migrations``.

A writer that creates a store leaves a marker beside it (``alerts.sqlite3.created.json``:
when, with which schema and SQLite). A store that later turns up empty or missing while
its marker is there was lost, not new, and :mod:`lfr_actors.store.check` refuses to
start on it instead of silently making a new one.

SQLite safety (decided for issue 8). SQLite 3.7.0 to 3.51.2 can corrupt a WAL database
when a connection runs a checkpoint right after a complete one while a connection in
another thread or process commits at the same moment (the "WAL-reset bug", fixed in
3.51.3). The Python here links SQLite 3.40.1, and the store has writers in two processes
(the alert actor, and the API in the driver). The only wrapper on PyPI that bundles a
fixed SQLite is ``apsw``, whose API is not ``sqlite3``'s; moving every store module to it
is a larger change than the risk needs. So every writer serialises its write transactions
(and the checkpoints that SQLite runs inside a commit), its explicit checkpoints and its
close (the last connection to close checkpoints) behind one OS lock, ``flock`` on
``<store>.lock`` beside the file: two of those can never overlap, in one process or in
several, and the race needs two. Read-only connections cannot checkpoint and take no
lock. The lock is taken whatever the SQLite version (it costs one system call per write),
and :func:`sqlite_safety` reports the library in use and whether it has the fix, for
``lfr store check``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from lfr_actors import logs
from lfr_actors.errors import LfrError
from lfr_actors.fsutil import (
    PRIVATE_FILE_MODE,
    atomic_write,
    open_private_fd,
    private_dir,
    tighten,
)
from lfr_actors.store.migrations import MIGRATIONS

_log = logs.get_logger(__name__)

BUSY_TIMEOUT_S = 10.0
"""How long a connection waits for another process's write lock before it gives up."""

WAL_RESET_FIX = (3, 51, 3)
"""The first SQLite release without the WAL-reset corruption bug (see the module docstring)."""

MARKER_SUFFIX = ".created.json"
"""The marker a writer leaves beside a store it creates: ``alerts.sqlite3.created.json``."""

LOCK_SUFFIX = ".lock"
"""The file beside the store whose ``flock`` serialises writers across processes."""


CAUSE_CHARS = 200
"""The longest cause :func:`store_cause` gives (logs and statuses stay short)."""


class StoreError(LfrError):
    """The store cannot be opened or used as asked."""


def store_cause(exc: BaseException) -> str:
    """A short cause for a failed store write: ``disk full`` for SQLite's SQLITE_FULL."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_FULL" or "disk is full" in str(exc):
            return "disk full"
        return str(exc)[:CAUSE_CHARS] or name or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:CAUSE_CHARS]
    return f"{type(exc).__name__}: {exc}"[:CAUSE_CHARS]


class Closing:
    """``with`` support for an object of the store: leaving the block calls ``close()``."""

    def close(self) -> None:
        """Release what the object holds; safe to call twice (each subclass says how)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Database(Closing):
    """One connection to the store file, its schema current, serialised by a lock.

    ``Database(path)`` is a writer: it creates the file, switches it to WAL and applies the
    missing migrations. ``Database(path, readonly=True)`` only reads, and refuses a file
    whose schema is older or newer than this build. Several processes may each hold a
    writer: :meth:`transaction` takes SQLite's write lock up front and waits up to
    :data:`BUSY_TIMEOUT_S` for it. Rows come back as :class:`sqlite3.Row`, read by column
    name.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.lock = threading.RLock()
        self._lock_fd: int | None = None
        self._lock_depth = 0
        if readonly:
            if not self.path.is_file():
                raise StoreError(
                    f"no alert store at {self.path}; it is created when the alert actor or "
                    "API first opens it for writing"
                )
            self.conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_S,
            )
            self.conn.execute("PRAGMA query_only = ON")
        else:
            _refuse_lost_store(self.path)
            _create_private(self.path)
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                self.conn.close()
                raise StoreError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode!r})")
            # An acknowledged write (an alert, a decision, an audit entry) must survive a
            # power cut; with WAL, NORMAL could roll back the last commits.
            self.conn.execute("PRAGMA synchronous = FULL")
            # Overwrite deleted and replaced content (a superseded best crop) with zeros
            # instead of leaving it in free pages of the file.
            self.conn.execute("PRAGMA secure_delete = ON")
        # Rows read by column name (``row["id"]``); they still index and unpack as tuples.
        self.conn.row_factory = sqlite3.Row
        self.closed = False
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    @classmethod
    def is_current(cls, path: Path) -> bool:
        """Whether ``path`` holds a store whose schema this build reads as it is."""
        if not Path(path).is_file():
            return False
        try:
            with cls(path, readonly=True):
                return True
        except StoreError:
            return False

    def close(self) -> None:
        """Close the connection; safe to call twice.

        A writer closes under the cross-process write lock: the last connection to close
        checkpoints the WAL.
        """
        with self.lock:
            if not self.closed:
                self.closed = True
                if self.readonly:
                    self.conn.close()
                    return
                try:
                    with self._write_lock():
                        self.conn.close()
                except sqlite3.OperationalError:
                    self.conn.close()  # the lock did not come in time: close regardless
                finally:
                    if self._lock_fd is not None:
                        os.close(self._lock_fd)
                        self._lock_fd = None

    def schema_version(self) -> int:
        """The highest migration applied to this file (0 for none)."""
        with self.lock:
            return max(applied_versions(self.conn), default=0)

    def require_writer(self, what: str = "open a writer to change it") -> None:
        """Raise :class:`StoreError` if this connection is read-only."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only; {what}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        It runs under the cross-process write lock (see the module docstring), so the
        checkpoint SQLite may run inside the commit never overlaps another writer's.
        """
        with self.lock, self._write_lock():
            self.require_writer()
            conn = self.conn
            # IMMEDIATE takes the write lock up front, so a transaction never fails half-way
            # because another connection began writing first.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run ``PRAGMA wal_checkpoint(mode)`` under the write lock; SQLite's three figures.

        ``mode`` is PASSIVE, FULL, RESTART or TRUNCATE.
        """
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"unknown checkpoint mode {mode!r}")
        with self.lock, self._write_lock():
            self.require_writer("open a writer to checkpoint it")
            row = self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold ``flock`` on ``<store>.lock``: one writer at a time, across processes.

        Re-entrant within this connection. Waits up to :data:`BUSY_TIMEOUT_S`, then raises
        ``sqlite3.OperationalError`` as SQLite itself does when its lock does not come.
        """
        if self.readonly:
            yield
            return
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        if self._lock_fd is None:
            self._lock_fd = open_private_fd(lock_path(self.path), os.O_RDWR)
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.0005
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError(
                        f"database is locked: {lock_path(self.path)} held by another writer "
                        f"for over {BUSY_TIMEOUT_S:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        self._lock_depth = 1
        try:
            yield
        finally:
            self._lock_depth = 0
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in the block sees the same state of the file."""
        with self.lock:
            conn = self.conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _migrate(self) -> None:
        current = applied_versions(self.conn)
        if current >= {m.version for m in MIGRATIONS}:
            self._check_not_newer()
            return
        if not current and not self.readonly and read_marker(self.path) is not None:
            raise _lost(self.path)
        if self.readonly and not current and _holds_nothing(self.conn):
            raise StoreError(
                f"{self.path} holds no tables yet: a writer (lfr up, the API) is creating "
                "it now, or was stopped before it made the schema. Try again once the "
                "writer runs; an interrupted creation is completed by the next writer."
            )
        if self.readonly:
            raise StoreError(
                f"{self.path} has schema version {self.schema_version()}; this build "
                f"needs {MIGRATIONS[-1].version}. Open it for writing once to migrate it."
            )
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                "applied_at REAL NOT NULL)"
            )
            applied = applied_versions(conn)
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                if migration.backfill is not None:
                    migration.backfill(conn)
                conn.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, time.time()),
                )
        self._check_not_newer()
        if not applied:
            write_marker(self.path, self.schema_version())

    def _check_not_newer(self) -> None:
        newest = self.schema_version()
        if newest > MIGRATIONS[-1].version:
            raise StoreError(
                f"{self.path} has schema version {newest}, newer than this build "
                f"({MIGRATIONS[-1].version}); upgrade lfr_actors to read it"
            )


def _create_private(path: Path) -> None:
    """Create the store file 0600 (and a missing folder 0700) before SQLite opens it.

    SQLite gives the ``-wal`` and ``-shm`` files it creates the main file's mode, so this
    one mode keeps all three from other local users whatever the umask. A looser file left
    by an earlier version is tightened, with a warning.

    An existing store is never opened here, only changed by path: closing any descriptor of
    a database file drops every POSIX lock this process holds on it, including those of
    another connection in the same process, and a writer in another process could then
    corrupt the file (SQLite's "How To Corrupt" page, section 2.2). The test that found it
    is ``tests/unit/test_private_files.py::test_creating_a_store_keeps_the_locks_of_open_ones``.
    """
    loose = []
    try:
        if not path.parent.exists():
            private_dir(path.parent)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            loose.extend(tighten(path, PRIVATE_FILE_MODE))  # a umask that took a bit away
            loose.clear()  # a new file: nothing was loose
        except FileExistsError:
            loose.extend(tighten(path, PRIVATE_FILE_MODE))
        for suffix in ("-wal", "-shm"):
            loose.extend(tighten(path.with_name(path.name + suffix), PRIVATE_FILE_MODE))
    except OSError as exc:
        raise StoreError(
            f"{exc.filename or path}: cannot create the store readable by its owner only "
            f"({exc.strerror or exc}); run as the user who owns the data folder"
        ) from exc
    for member, mode in loose:
        _log.warning("store_file_tightened", path=str(member), mode_was=f"{mode:04o}")


def _lost(store: Path) -> StoreError:
    return StoreError(
        f"{store} is missing or empty, but a store was created here "
        f"({marker_path(store).name}); see `lfr store check {store}` and put a backup in "
        f"place with `lfr store restore BACKUP {store}`"
    )


def _refuse_lost_store(store: Path) -> None:
    """A writer never makes a new store where its marker says one was lost.

    Every alert, adjudication and the audit chain would silently start afresh.
    """
    try:
        empty = store.stat().st_size == 0
    except FileNotFoundError:
        empty = True
    if empty and read_marker(store) is not None:
        raise _lost(store)


def marker_path(store: Path) -> Path:
    """Where the creation marker of the store ``store`` lives."""
    store = Path(store)
    return store.with_name(store.name + MARKER_SUFFIX)


def lock_path(store: Path) -> Path:
    """The lock file that serialises the writers of ``store``."""
    store = Path(store)
    return store.with_name(store.name + LOCK_SUFFIX)


@contextmanager
def writer_lock(store: Path) -> Iterator[None]:
    """Hold the cross-process writer lock of ``store`` (for a connection not a :class:`Database`).

    Blocks until the lock is free; for short steps only, such as closing a connection.
    """
    fd = open_private_fd(lock_path(store), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_marker(store: Path, schema_version: int) -> None:
    """Record beside ``store`` that a store was created there (mode 0600, atomically)."""
    info = {
        "store": Path(store).name,
        "created_at": time.time(),
        "schema_version": schema_version,
        "sqlite_version": sqlite3.sqlite_version,
    }
    atomic_write(marker_path(store), json.dumps(info, sort_keys=True).encode())


def read_marker(store: Path) -> dict[str, Any] | None:
    """The creation marker of ``store``, or None when there is none.

    A marker that cannot be read still says a store was made here: ``{"unreadable": why}``.
    """
    path = marker_path(store)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{type(exc).__name__}: {exc}"}
    return info if isinstance(info, dict) else {"unreadable": "not a JSON object"}


def sqlite_safety() -> dict[str, Any]:
    """The SQLite library in use, whether it has the WAL-reset fix, and how writes are kept safe."""
    fixed = sqlite3.sqlite_version_info >= WAL_RESET_FIX
    return {
        "sqlite_version": sqlite3.sqlite_version,
        "wal_reset_fix": fixed,
        "writers": "serialised across processes by flock on <store>.lock",
    }


def _holds_nothing(conn: sqlite3.Connection) -> bool:
    """Whether the file behind ``conn`` has no schema objects at all (a store being made)."""
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    """The migration versions recorded in the file behind ``conn``."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if has_table is None:
        return set()
    return {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
