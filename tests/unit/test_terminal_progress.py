"""Progress on long steps: the notice before models are built, and a download's bytes."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog

from lfr_actors.models import cache as cache_mod
from lfr_actors.models import sources as sources_mod
from lfr_actors.models.cache import PREPARING_NOTICE, BuiltModel, ModelCache, prepare
from lfr_actors.models.sources import SourceFetcher


@pytest.fixture(autouse=True)
def quiet_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare's log line kept out of stderr (and out of structlog's cache of loggers)."""
    monkeypatch.setattr(cache_mod, "log", structlog.testing.CapturingLogger())


def _build(fetcher: SourceFetcher) -> BuiltModel:
    return BuiltModel(
        version="1", kind="embedder", files={"m.onnx": b"x"}, sources=[], conventions={}
    )


def test_the_notice_shows_once_when_models_are_built_and_not_when_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cache_mod, "BUILDERS", {"one": _build, "two": _build})
    cache = ModelCache(tmp_path / "models")
    fetcher = SourceFetcher(tmp_path / "src", offline=True)
    prepare(cache, fetcher, progress=False)
    first = capsys.readouterr()
    assert first.err.splitlines().count(PREPARING_NOTICE) == 1
    assert first.out == ""
    prepare(cache, fetcher, progress=False)
    assert PREPARING_NOTICE not in capsys.readouterr().err


def test_prepare_hands_its_progress_switch_to_the_fetcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def build(fetcher: SourceFetcher) -> BuiltModel:
        seen.append(fetcher.progress)
        return _build(fetcher)

    monkeypatch.setattr(cache_mod, "BUILDERS", {"one": build})
    fetcher = SourceFetcher(tmp_path / "src", offline=True)
    prepare(ModelCache(tmp_path / "models"), fetcher, progress=True, force=True)
    prepare(ModelCache(tmp_path / "models"), fetcher, progress=False, force=True)
    assert seen == [True, False]


def test_download_bytes_counts_files_written_under_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sources_mod._DownloadBytes(tmp_path, "pkg.whl", enabled=True) as env:
        assert env is not None and env["TMPDIR"] == str(tmp_path / ".tmp")
        (tmp_path / ".tmp" / "part").write_bytes(b"\0" * 300_000)
        time.sleep(0.6)  # the watcher looks every 0.25 s
    err = capsys.readouterr().err
    assert "downloading pkg.whl" in err and "300k" in err
    assert sources_mod._bytes_under(tmp_path) == 300_000


def test_download_bytes_off_leaves_pips_environment_alone(tmp_path: Path) -> None:
    before = threading.active_count()
    with sources_mod._DownloadBytes(tmp_path, "pkg.whl", enabled=False) as env:
        assert env is None
        assert threading.active_count() == before
    assert not (tmp_path / ".tmp").exists()
    assert os.environ.get("TMPDIR") != str(tmp_path / ".tmp")
    assert sys.stderr is not None
