"""Where a deployment keeps its data, and the one-line errors that stop it from starting.

Everything a deployment writes lies under the topology's ``storage.data_dir``: the alert
store, the index snapshots and the run file. :class:`DeploymentError` is the controller's
one error: a sentence an operator can act on, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lfr_actors.errors import LfrError
from lfr_actors.fsutil import PRIVATE_FILE_MODE, private_dir, tighten_tree
from lfr_actors.logs import get_logger

log = get_logger("lfr.deployment")


class DeploymentError(LfrError):
    """The deployment cannot start: a port in use, a watchlist that fails enrolment, ..."""


@dataclass(frozen=True)
class DeploymentPaths:
    """Where a deployment keeps its data, all under the topology's ``storage.data_dir``."""

    data_dir: Path

    @property
    def alerts_db(self) -> Path:
        """The alert store (SQLite, WAL)."""
        return self.data_dir / "alerts.sqlite3"

    @property
    def index_dir(self) -> Path:
        """Index shard snapshots (watchlist embeddings only)."""
        return self.data_dir / "index"

    @property
    def run_file(self) -> Path:
        """Process id, API address and local admin token of the running ``lfr up``."""
        return self.data_dir / "lfr.run.json"

    @property
    def run_lock(self) -> Path:
        """Locked (``flock``) by the one ``lfr up`` or ``lfr serve`` running from here."""
        return self.data_dir / "lfr.run.lock"

    def hold_run_lock(self) -> int:
        """Take the data folder for this process: the lock's descriptor, held until closed.

        :class:`DeploymentError` (one line) when another ``lfr up`` or ``lfr serve`` runs
        from this folder: two would write one store and revoke each other's tokens. The
        kernel drops the lock when the process ends, however it ends, so a crashed run
        never blocks the next start.
        """
        fd = os.open(self.run_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.running_pid()
            who = f" (process {pid})" if pid is not None else ""
            raise DeploymentError(
                f"another lfr up or lfr serve{who} already runs from {self.data_dir}; stop it "
                "first (lfr down FILE), or give this topology its own storage.data_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def run_lock_held(self) -> bool:
        """Whether a running ``lfr up`` or ``lfr serve`` holds this folder now."""
        try:
            fd = os.open(self.run_lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # a lock taken here goes with the descriptor
        return False

    def running_pid(self) -> int | None:
        """The process id the run file names, or None when it is missing or unreadable."""
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            return int(json.loads(self.run_file.read_text("utf-8"))["pid"])
        return None

    def secure(self) -> None:
        """Make the data folder its owner's only: 0700, and 0600 for every file in it.

        A new folder is created so; an existing one with looser modes (made by hand, by an
        earlier version, or copied with ``cp``) is tightened, with one warning naming how
        many paths changed. Files created later keep these modes themselves
        (:mod:`lfr_actors.fsutil`). :class:`DeploymentError` (one line) when a mode cannot
        be set, e.g. in a folder another user owns.
        """
        try:
            changed = private_dir(self.data_dir) + tighten_tree(self.data_dir)
        except OSError as exc:
            where = exc.filename or self.data_dir
            raise DeploymentError(
                f"cannot make the data folder {self.data_dir} readable by its owner only: "
                f"{where}: {exc.strerror or exc}; run lfr as the user who owns it, or give it "
                "to that user (chown -R), or set storage.data_dir to a folder of your own"
            ) from exc
        if changed:
            log.warning(
                "data_folder_tightened",
                data_dir=str(self.data_dir),
                paths=len(changed),
                modes_were=sorted({f"{mode:04o}" for _, mode in changed}),
            )


@contextlib.contextmanager
def disk_full_is_one_line(folder: Path) -> Iterator[None]:
    """Turn "no space left" (from the OS or SQLite) into one line naming the folder."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "full" not in str(exc).lower():
            raise
        raise DeploymentError(
            f"the disk holding {folder} is full ({exc}); free space there or set "
            "storage.data_dir to a folder on another disk"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DeploymentError(
            f"the disk holding {folder} is full ({exc.strerror}); free space there or set "
            "storage.data_dir to a folder on another disk"
        ) from None
