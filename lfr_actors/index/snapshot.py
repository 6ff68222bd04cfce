"""A shard's snapshot on disk: one usearch file and its manifest, written and read whole.

A snapshot is a folder holding one usearch file and ``snapshot.json`` (configuration, the
key -> entry id map and the usearch file's SHA-256). The usearch file is written under a
fresh name first and ``snapshot.json`` is replaced atomically last, so a reader sees the old
snapshot or the new one, never a mix, even if the process dies mid-save.

Reading checks everything before a shard uses it: the manifest's format and fields, the
storage settings against the configured ones, the usearch file's presence and SHA-256, and
that the file holds exactly the keys the manifest maps. Every failure is an
:class:`IndexSnapshotError` that names the file and what to do.
:meth:`lfr_actors.index.shard.ShardIndex.save` and ``load`` are the shard's side of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lfr_actors.errors import LfrError
from lfr_actors.fsutil import (
    PRIVATE_FILE_MODE,
    atomic_write,
    ensure_private_file,
    private_dir,
    tighten,
)
from lfr_actors.index.config import ShardConfig

if TYPE_CHECKING:
    from usearch.index import Index

SNAPSHOT_MANIFEST = "snapshot.json"
SNAPSHOT_FORMAT = 1
_INDEX_PREFIX = "index-"
_INDEX_SUFFIX = ".usearch"
# Settings baked into the stored vectors and graph; the others may change between runs.
_STORAGE_FIELDS = ("dimension", "metric", "dtype", "connectivity")


class IndexSnapshotError(LfrError):
    """An index snapshot is missing, corrupt, or was made with an incompatible configuration."""


@dataclass(frozen=True)
class Snapshot:
    """A snapshot's checked manifest: the settings to build the shard with and its key map."""

    directory: Path
    config: ShardConfig
    """The stored settings, with the configured search settings in place of the stored."""
    keys: dict[int, str]
    """Each usearch key's entry id."""
    next_key: int
    index_file: Path

    def load_into(self, index: Index) -> None:
        """Read the usearch file into ``index`` and check it holds exactly :attr:`keys`.

        usearch keeps the constructor's expansion settings, so the configured ones win.
        """
        try:
            index.load(str(self.index_file))
        except Exception as exc:  # usearch raises RuntimeError/ValueError on bad files
            raise IndexSnapshotError(f"{self.index_file}: usearch cannot read it: {exc}") from exc
        keys = np.fromiter(self.keys, dtype=np.uint64, count=len(self.keys))
        if len(index) != len(self.keys) or (len(keys) and not np.all(index.contains(keys))):
            raise IndexSnapshotError(
                f"{self.directory}: the index file holds {len(index)} vectors but the manifest "
                f"maps {len(self.keys)} keys; the snapshot is corrupt, re-enrol the watchlist"
            )


def write_snapshot(
    directory: Path,
    index: Index,
    *,
    config: Mapping[str, Any],
    next_key: int,
    keys: Mapping[int, str],
    entries: int,
) -> None:
    """Write ``index`` and its manifest into ``directory`` atomically (see the module docstring).

    ``keys`` maps each usearch key to its entry id; ``entries`` is the number of entries.
    """
    directory = Path(directory)
    private_dir(directory)
    name = f"{_INDEX_PREFIX}{uuid.uuid4().hex}{_INDEX_SUFFIX}"
    temporary = directory / f".{name}.tmp"
    try:
        # usearch creates its file with the umask's mode; made 0600 first, it keeps it.
        ensure_private_file(temporary)
        index.save(str(temporary))
        tighten(temporary, PRIVATE_FILE_MODE)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "config": dict(config),
        "next_key": next_key,
        "index_file": name,
        "index_sha256": _sha256(directory / name),
        "vectors": len(keys),
        "entries": entries,
        "keys": {str(key): entry_id for key, entry_id in keys.items()},
    }
    try:
        atomic_write(directory / SNAPSHOT_MANIFEST, json.dumps(manifest).encode("utf-8"))
    except BaseException:
        (directory / name).unlink(missing_ok=True)
        raise
    for stale in _owned_files(directory):
        if stale.name not in (name, SNAPSHOT_MANIFEST):
            stale.unlink(missing_ok=True)


def read_snapshot(directory: Path, config: Mapping[str, Any] | None = None) -> Snapshot:
    """Read and check the manifest of the snapshot in ``directory`` and find its usearch file.

    With ``config``, its storage settings (dimension, metric, dtype, connectivity) must
    equal the snapshot's, else :class:`IndexSnapshotError`; its search settings (mode,
    exact_below, expansions) replace the snapshot's.
    """
    directory = Path(directory)
    manifest_path = directory / SNAPSHOT_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexSnapshotError(
            f"no index snapshot in {directory}: {manifest_path.name} is missing"
        ) from None
    except (OSError, ValueError) as exc:
        raise IndexSnapshotError(f"{manifest_path}: unreadable snapshot manifest: {exc}") from exc
    try:
        if manifest["format"] != SNAPSHOT_FORMAT:
            raise IndexSnapshotError(
                f"{manifest_path}: snapshot format {manifest['format']!r}; "
                f"this build reads format {SNAPSHOT_FORMAT}"
            )
        stored = ShardConfig.from_mapping(manifest["config"])
        key_map = {int(key): str(entry) for key, entry in manifest["keys"].items()}
        next_key = int(manifest["next_key"])
        index_file = directory / str(manifest["index_file"])
        expected_sha = str(manifest["index_sha256"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexSnapshotError(f"{manifest_path}: malformed snapshot manifest: {exc!r}") from exc
    if config is not None:
        wanted = ShardConfig.from_mapping(config)
        clashes = {
            name: (getattr(stored, name), getattr(wanted, name))
            for name in _STORAGE_FIELDS
            if getattr(stored, name) != getattr(wanted, name)
        }
        if clashes:
            detail = ", ".join(
                f"{n}: snapshot {s!r}, configured {w!r}" for n, (s, w) in clashes.items()
            )
            raise IndexSnapshotError(
                f"{directory}: the snapshot was made with other settings ({detail}); "
                "re-enrol the watchlist or restore the settings it was made with"
            )
        stored = replace(
            stored,
            mode=wanted.mode,
            exact_below=wanted.exact_below,
            expansion_add=wanted.expansion_add,
            expansion_search=wanted.expansion_search,
        )
    if not index_file.is_file():
        raise IndexSnapshotError(f"{directory}: the index file {index_file.name} is missing")
    if _sha256(index_file) != expected_sha:
        raise IndexSnapshotError(
            f"{index_file}: SHA-256 does not match {manifest_path.name}; the snapshot is "
            "corrupt, re-enrol the watchlist"
        )
    return Snapshot(directory, stored, key_map, next_key, index_file)


def has_snapshot(directory: Path) -> bool:
    """Whether ``directory`` holds a snapshot manifest."""
    return (Path(directory) / SNAPSHOT_MANIFEST).is_file()


def destroy_snapshot(directory: Path) -> None:
    """Delete a shard's snapshot files (the manifest first, so it can never half-load).

    Only files this module writes are deleted; the folder goes too once it is empty.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    (directory / SNAPSHOT_MANIFEST).unlink(missing_ok=True)
    for path in _owned_files(directory):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else lives there; not ours to delete
        directory.rmdir()


def _owned_files(directory: Path) -> list[Path]:
    owned = []
    for path in directory.iterdir():
        name = path.name.lstrip(".")
        if path.is_file() and (
            path.name == SNAPSHOT_MANIFEST
            or (name.startswith(_INDEX_PREFIX) and (name.endswith((_INDEX_SUFFIX, ".tmp"))))
            or (name.startswith(SNAPSHOT_MANIFEST) and name.endswith(".tmp"))
        ):
            owned.append(path)
    return owned


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
