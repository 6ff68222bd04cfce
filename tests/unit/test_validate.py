"""``lfr validate``'s start-up checks that need no models: the window, the record, the port.

These run through the command itself (``main``) with ``--offline-only``, so the photos are
not enrolled; the store, the sockets and the files are real. The enrolment of the photos
with the real models is tested in tests/integration/test_validate_honest.py.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from lfr_actors.cli.main import main
from lfr_actors.control import registration
from lfr_actors.control.preflight import port_problem
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.topology.loader import load_topology
from tests.deployments import write_deployment
from tests.disks import fill, small_tmpfs
from tests.unit.test_deployment_store import add_active


def _edit(path: Path, section: str, **values: Any) -> None:
    data = yaml.safe_load(path.read_text())
    data[section].update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _validate(path: Path, capfd: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["validate", *extra, str(path)])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def test_offline_only_checks_the_rest_and_says_the_photos_were_not_enrolled(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))  # no face: not looked at
    watchlist = tmp_path / "watchlist.yaml"
    data = yaml.safe_load(watchlist.read_text())
    data["entries"][0]["images"] = [str(blank)]
    watchlist.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, err) == (0, "")
    assert "photos not enrolled: --offline-only (1 entry, 1 photo)" in out
    assert "window       open now" in out
    assert "no stored record yet" in out
    assert "port         0: lfr up picks a free one" in out
    assert out.rstrip().endswith(f"{path}: valid")


def test_an_ended_window_is_refused_and_a_future_one_is_not(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    now = time.time()
    _edit(path, "deployment", start=_stamp(now - 7200), end=_stamp(now - 3600))
    code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}: deployment 'itest''s authorised window ended ")
    assert lines[0].endswith("; cameras run only inside it")
    assert lines[-1] == f"{path}: 1 problem; nothing was started."

    # lfr up starts before the window opens (the cameras wait for it): valid, and said.
    _edit(path, "deployment", start=_stamp(now + 3600), end=_stamp(now + 7200))
    code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, err) == (0, "")
    assert "the cameras wait until then" in out


def test_a_stored_record_that_differs_is_refused_naming_lfr_deployments(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    store = tmp_path / "data" / "alerts.sqlite3"
    store.parent.mkdir()
    with Database(store) as db:
        registration.register_deployment(Deployments(db), load_topology(path))
    code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, err) == (0, "")
    assert f"matches the stored record in {store}" in out

    _edit(path, "deployment", location="somewhere else")
    before = store.stat().st_mtime_ns
    code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, out) == (2, "")
    assert "deployment location: the store has 'ci', the file 'somewhere else'" in err
    assert f"`lfr deployments topology itest --db {store}`" in err
    assert err.splitlines()[-1] == f"{path}: 1 problem; nothing was started."
    assert store.stat().st_mtime_ns == before  # read only


def test_no_data_folder_is_no_record_and_nothing_is_created(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    code, out, _ = _validate(path, capfd, "--offline-only")
    assert code == 0
    assert "no stored record yet" in out
    assert not (tmp_path / "data").exists()


def test_a_port_in_use_is_refused_and_every_problem_is_listed(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        _edit(path, "api", port=port)
        now = time.time()
        _edit(path, "deployment", start=_stamp(now - 7200), end=_stamp(now - 3600))
        code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert "authorised window ended" in lines[0]
    assert lines[1] == (
        f"{path}: api.port {port} on 127.0.0.1 is already in use; stop what uses it or set "
        "api.port in the topology (0 picks a free port)"
    )
    assert lines[2] == f"{path}: 2 problems; nothing was started."


def test_a_free_port_passes_and_is_free_again_afterwards() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None
    with socket.socket() as again:  # the check let the port go
        again.bind(("127.0.0.1", port))
    assert port_problem("no-such-host.invalid", port) is not None


def store_with_entry(path: Path, entry_id: str) -> Path:
    """The store of the topology at ``path`` (in its folder's ``data``) with its deployment
    recorded and ``entry_id`` stored, as an earlier ``lfr up`` left them."""
    store = path.parent / "data" / "alerts.sqlite3"
    store.parent.mkdir()
    with Database(store) as db:
        registration.register_deployment(Deployments(db), load_topology(path))
        add_active(Deployments(db), "itest", entry_id)
    return store


def test_entries_already_stored_are_not_enrolled_again(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama", "biden"])
    store_with_entry(path, "obama")
    code, out, _ = _validate(path, capfd, "--offline-only")
    assert code == 0
    assert "(2 entries, 2 photos); 1 already stored, not enrolled again" in out


def _files(folder: Path) -> dict[str, int]:
    """The data folder's files and their times, but SQLite's -wal and -shm: a read-only
    connection to a WAL store makes them (empty) to read it; they hold no data."""
    return {
        p.name: p.stat().st_mtime_ns
        for p in sorted(folder.iterdir())
        if not p.name.endswith(("-wal", "-shm"))
    }


def test_the_data_folder_is_checked_as_lfr_up_checks_it_writing_nothing(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    code, out, _ = _validate(path, capfd, "--offline-only")
    assert code == 0
    assert f"data         {tmp_path / 'data'}: writable, room on its disk" in out

    store = store_with_entry(path, "obama")
    marker = store.parent / "alerts.sqlite3.created.json"
    marker.unlink()  # as a store made before markers: lfr up would write one, validate not
    before = _files(store.parent)
    code, out, _ = _validate(path, capfd, "--offline-only")
    assert code == 0
    assert f"data         {store.parent}: room on its disk, store checks out" in out
    lines = out.splitlines()
    data = lines.index(f"  data         {store.parent}: room on its disk, store checks out")
    assert lines[data + 1] == f"  record       matches the stored record in {store}"
    assert _files(store.parent) == before
    assert not marker.exists()


def test_a_damaged_store_is_refused_as_lfr_up_refuses_it(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    store = store_with_entry(path, "obama")
    with store.open("r+b") as raw:  # the header survives, the first table page does not
        raw.seek(4096)
        raw.write(b"\x5a" * 4096)
    before = _files(store.parent)
    code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, out) == (2, "")
    [line, summary] = err.splitlines()
    assert line.startswith(f"{path}: {store}: ")
    assert f"See `lfr store check {store}`" in line and "Nothing was changed" in line
    assert summary == f"{path}: 1 problem; nothing was started."
    assert _files(store.parent) == before


def test_a_store_missing_where_one_was_made_is_refused(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    store = store_with_entry(path, "obama")
    assert (store.parent / "alerts.sqlite3.created.json").is_file()  # says a store was made
    store.unlink()
    code, out, err = _validate(path, capfd, "--offline-only")
    assert (code, out) == (2, "")
    assert str(store) in err.splitlines()[0]
    assert not store.exists()


def test_a_full_disk_under_the_data_folder_is_refused(
    tmp_path: Path, shared_data: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, shared_data, ["obama"])
    with small_tmpfs(tmp_path / "small-disk", "2m") as disk:
        fill(disk / "filler")
        _edit(path, "storage", data_dir=str(disk / "data"))
        code, out, err = _validate(path, capfd, "--offline-only")
        assert not (disk / "data").exists()
    assert (code, out) == (2, "")
    assert f"the disk holding {disk / 'data'} is full" in err.splitlines()[0]
