"""Another local user, and a crashed driver, against a real ``lfr up`` from outside.

A deployment runs as an operator would start it (``lfr up`` in its own process, with the
umask of their shell); while it runs and after it stops, every path under its data folder
must be the owner's only (folders 0700, files 0600: the store, its -wal and -shm, the
index snapshots, the run file, the alerts JSONL). As root, the test also reads the store
as user ``nobody`` and must be refused. Then the driver is killed with SIGKILL: the admin
token it leaves in its run file must be one that expires by itself within
:data:`~lfr_actors.store.tokens.LOCAL_TOKEN_TTL_S`, and the next start (``lfr serve`` on
the same folder) must revoke it before anything else answers with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lfr_actors.models.cache import ModelCache
from lfr_actors.store.db import Database
from lfr_actors.store.tokens import LOCAL_TOKEN_NAME, LOCAL_TOKEN_TTL_S, TokenStore
from tests.conftest import REPO, lfr_test_home
from tests.deployments import write_deployment

pytestmark = [pytest.mark.models, pytest.mark.data]

START_TIMEOUT_S = 240.0


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder any local user may enter (unlike pytest's 0700 tmp_path), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="lfr-permissions-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def modes(root: Path) -> dict[str, str]:
    """Every path under ``root`` (and ``root`` itself) with its mode, octal."""
    found = {".": f"{stat.S_IMODE(root.lstat().st_mode):04o}"}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = f"{stat.S_IMODE(path.lstat().st_mode):04o}"
    return found


def not_private(root: Path) -> dict[str, str]:
    return {
        path: mode
        for path, mode in modes(root).items()
        if mode != ("0700" if Path(root, path).is_dir() else "0600")
    }


def start_up(topology: Path, *args: str, umask: int) -> subprocess.Popen[str]:
    env = {**os.environ, "LFR_LOG_LEVEL": "WARNING", "LFR_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "lfr_actors.cli", *args, str(topology),
         "--home", str(lfr_test_home())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        umask=umask, start_new_session=True,
    )  # fmt: skip


def wait_for(what: str, check: object, proc: subprocess.Popen[str], timeout: float) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"lfr exited {proc.returncode} before {what}: {err[-3000:]}")
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def kill_session(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the driver and every process of its session (its Ray), as a crash would."""
    with_session = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == proc.pid:
                    with_session.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    for pid in with_session:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def lfr_down(topology: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "down", str(topology)],
        capture_output=True, text=True, timeout=180, cwd=REPO, check=False,
    )  # fmt: skip


def jsonl_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_everything_a_deployment_writes_is_the_owners_only(
    model_cache: ModelCache, open_folder: Path, shared_data: Path, umask: int
) -> None:
    topology = write_deployment(open_folder, shared_data, ["lin_manuel_miranda"], at_end="loop")
    data = open_folder / "data"
    if umask == 0o000:
        # A folder made by hand, world-writable, with a file from an earlier version in it,
        # and the JSONL outside the data folder: all must end up owner-only.
        (data / "index").mkdir(parents=True)
        (data / "old-notes.txt").write_text("left by an earlier version")
        for path in (data, data / "index", data / "old-notes.txt"):
            os.chmod(path, 0o777 if path.is_dir() else 0o666)
        jsonl = open_folder / "alerts.jsonl"
    else:
        jsonl = data / "alerts.jsonl"
    up = start_up(topology, "up", "--alerts-jsonl", str(jsonl), umask=umask)
    try:
        wait_for("the first alert in the JSONL", lambda: jsonl_lines(jsonl) >= 1, up,
                 START_TIMEOUT_S)  # fmt: skip
        written = modes(data)
        for expected in ("alerts.sqlite3", "alerts.sqlite3-wal", "alerts.sqlite3-shm",
                         "lfr.run.json", "index"):  # fmt: skip
            assert expected in written, sorted(written)
        snapshots = [p for p in written if p.startswith("index/") and "/" in p[6:]]
        assert snapshots, sorted(written)  # each shard's manifest and index file
        assert not_private(data) == {}
        assert f"{stat.S_IMODE(jsonl.stat().st_mode):04o}" == "0600"
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody").pw_uid
            control = subprocess.run(["cat", str(topology)], user=nobody,
                                     capture_output=True, check=False)  # fmt: skip
            assert control.returncode == 0  # nobody can reach the folder: the test is real
            for target in (data / "alerts.sqlite3", data / "alerts.sqlite3-wal", jsonl):
                read = subprocess.run(["cat", str(target)], user=nobody,
                                      capture_output=True, text=True, check=False)  # fmt: skip
                assert read.returncode != 0 and "Permission denied" in read.stderr, target
            listing = subprocess.run(["ls", str(data)], user=nobody,
                                     capture_output=True, text=True, check=False)  # fmt: skip
            assert listing.returncode != 0 and "Permission denied" in listing.stderr
        lfr_down(topology)
        _, err = up.communicate(timeout=180)
        assert up.returncode == 0, err[-3000:]
    finally:
        if up.poll() is None:
            kill_session(up)
    assert not_private(data) == {}
    assert f"{stat.S_IMODE(jsonl.stat().st_mode):04o}" == "0600"
    tightened = [json.loads(line) for line in err.splitlines() if "data_folder_tightened" in line]
    if umask == 0o000:
        assert len(tightened) == 1, err[-3000:]
        assert tightened[0]["modes_were"] == ["0666", "0777"]
    else:
        assert tightened == []


def test_a_crashed_drivers_token_expires_and_the_next_start_revokes_it(
    model_cache: ModelCache, open_folder: Path, shared_data: Path
) -> None:
    topology = write_deployment(open_folder, shared_data, ["lin_manuel_miranda"], at_end="loop")
    data = open_folder / "data"
    run_file = data / "lfr.run.json"
    up = start_up(topology, "up", umask=0o022)
    try:
        wait_for("the run file", run_file.exists, up, START_TIMEOUT_S)
        info = json.loads(run_file.read_text())
        headers = {"Authorization": f"Bearer {info['token']}"}
        assert requests.get(f"{info['api']}/v1/status", headers=headers, timeout=30).ok
    finally:
        kill_session(up)  # kill -9: nothing revokes the token or removes the run file
    crashed_at = time.time()
    assert json.loads(run_file.read_text())["token"] == info["token"]
    with Database(data / "alerts.sqlite3", readonly=True) as db:
        left = TokenStore(db).lookup(info["token"])
    assert left is not None and left.name == LOCAL_TOKEN_NAME and not left.revoked
    # It dies by itself: its expiry is at most one TTL after the crash (the driver renewed
    # it at most a TTL before), whatever happens next.
    assert left.expires_at is not None
    assert left.expires_at <= crashed_at + LOCAL_TOKEN_TTL_S
    assert left.expired(crashed_at + LOCAL_TOKEN_TTL_S)

    # The next start on the folder revokes it before its API answers anyone.
    serve = start_up(topology, "serve", umask=0o022)
    lines: list[str] = []

    def read_stdout() -> None:
        for line in serve.stdout or []:
            lines.append(line)

    threading.Thread(target=read_stdout, daemon=True).start()
    try:
        wait_for("lfr serve's API", lambda: any("serving the API" in ln for ln in lines),
                 serve, START_TIMEOUT_S)  # fmt: skip
        url = next(ln for ln in lines if "serving the API" in ln).split(" at ")[1].split()[0]
        refused = requests.get(f"{url}/v1/status", headers=headers, timeout=30)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "The token was revoked."
        with Database(data / "alerts.sqlite3", readonly=True) as db:
            record = TokenStore(db).lookup(info["token"])
        assert record is not None and record.revoked_by == "system"
        assert not_private(data) == {}
    finally:
        kill_session(serve)
