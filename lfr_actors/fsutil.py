"""Small file-system helpers shared by every floor.

A deployment's data folder holds biometric data (watchlist photos and embeddings, alert
crops), so what the product writes there is readable by its own user only: folders
:data:`PRIVATE_DIR_MODE` (0700) and files :data:`PRIVATE_FILE_MODE` (0600), whatever the
process umask. The modes are set explicitly (``os.open`` with the mode, then ``fchmod``),
because a umask can only take permission bits away: 0o000 would leave a file created with
the default 0666 readable by everyone, and an odd one (0o277, say) could leave the owner
unable to write. SQLite creates a store's ``-wal`` and ``-shm`` files itself with the main
file's mode, so the main file is created 0600 before SQLite opens it
(:func:`ensure_private_file`).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from lfr_actors.errors import LfrError

PRIVATE_DIR_MODE = 0o700
"""The mode of every folder the product creates for a deployment's data."""
PRIVATE_FILE_MODE = 0o600
"""The mode of every file the product writes into a deployment's data folder."""


def atomic_write(target: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Write ``data`` to ``target`` through a temporary file in the same folder.

    A reader sees either the old file or the whole new one, never half of it, even if this
    process dies mid-write. The file has ``mode`` (0600 unless asked otherwise) whatever the
    umask.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> list[tuple[Path, int]]:
    """Make ``path`` a folder only its owner can enter: create it, or tighten it.

    Folders created here (``path`` and any missing parent) get :data:`PRIVATE_DIR_MODE`.
    An existing ``path`` with any other mode is set to it; existing parents are left alone
    (``/srv`` is not ours to change). Returns the folders changed, each with the mode it
    had, so the caller can log them. Raises :class:`OSError` (``PermissionError`` when
    another user owns the folder) if a mode cannot be set.
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by another process; the leaf is checked below
        # mkdir's mode passes through the umask; set it outright.
        os.chmod(folder, PRIVATE_DIR_MODE)
    was = stat.S_IMODE(path.stat().st_mode)
    if was == PRIVATE_DIR_MODE:
        return []
    os.chmod(path, PRIVATE_DIR_MODE)
    return [(path, was)]


def ensure_private_file(path: Path) -> int | None:
    """Create ``path`` empty with :data:`PRIVATE_FILE_MODE` if missing, else tighten it.

    Returns the mode the file had when it was tightened, None when nothing changed. Only
    regular files are touched: a FIFO or a device named here (``/dev/stdout``) keeps its
    mode.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        return _tighten_fd(fd)
    finally:
        os.close(fd)


def open_private_fd(path: Path, flags: int) -> int:
    """``os.open(path, flags | O_CREAT | O_CLOEXEC)``, the file 0600 whatever the umask."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        _tighten_fd(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private_append(path: Path) -> BinaryIO:
    """Open ``path`` for appending, created or tightened to :data:`PRIVATE_FILE_MODE`."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        _tighten_fd(fd)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def tighten_tree(root: Path) -> list[tuple[Path, int]]:
    """Tighten every folder under ``root`` to 0700 and every regular file to 0600.

    For data folders written by an earlier version (or copied in with ``cp``): returns
    what was changed, each path with the mode it had. Symbolic links are not followed.
    """
    changed: list[tuple[Path, int]] = []
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            changed.extend(tighten(Path(folder, name), PRIVATE_DIR_MODE))
        for name in files:
            changed.extend(tighten(Path(folder, name), PRIVATE_FILE_MODE))
    return changed


def tighten(path: Path, mode: int) -> list[tuple[Path, int]]:
    """Set ``path`` (a folder or regular file, if it exists) to ``mode``.

    Returns ``[(path, mode it had)]`` when it changed, else ``[]``. A missing path, a
    symbolic link or a special file is left alone.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return []  # removed meanwhile (a snapshot replaced, a -shm file closed)
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return []
    was = stat.S_IMODE(info.st_mode)
    if was == mode:
        return []
    os.chmod(path, mode, follow_symlinks=False)
    return [(path, was)]


def _tighten_fd(fd: int) -> int | None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        return None
    was = stat.S_IMODE(info.st_mode)
    if was == PRIVATE_FILE_MODE:
        return None
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return was


def expand_user(path: str | Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded.

    A user this machine does not know is a :class:`~lfr_actors.errors.LfrError` naming
    them (``Path.expanduser`` raises a bare RuntimeError).
    """
    try:
        return Path(path).expanduser()
    except RuntimeError:
        user = str(path)[1:].split("/", 1)[0]
        raise LfrError(
            f"{path}: no home folder is known for user {user!r} (the path's ~{user}); "
            "write the folder out in full"
        ) from None
