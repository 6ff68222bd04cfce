"""Every ``lfr`` command, given a path that is wrong in every usual way: one line, no trace.

An operator types paths by hand: a file that is not there, a folder where a file goes, a
file where a folder goes, a binary file, an empty one, text that is not UTF-8, a path
running through a file. DESIGN.md §4 asks for a clear error each time. Each command runs
in this process (``lfr_actors.cli.main.main``) so a hundred cases take seconds; each must
end with exit 0, 1 or 2 and no traceback, and when it fails, name the path it refused
(in ``lfr: error: ...``, argparse's usage line or the command's own report). Nothing
here starts Ray or downloads anything: the model home is the test home, prepared already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lfr_actors.cli.main import main
from lfr_actors.models.cache import ModelCache
from lfr_actors.store.db import Database

BAD_KINDS = ("missing", "folder", "binary", "empty", "not_utf8", "through_a_file", "unknown_user")


def bad_path(tmp: Path, kind: str, suffix: str) -> Path:
    """A path of ``kind`` ending in ``suffix`` (``.yaml``, ``.sqlite3``, ...)."""
    path = tmp / f"{kind}{suffix}"
    if kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_utf8":
        path.write_bytes(b"version: 1\nname: caf\xe9\n\xff\xfe\n")
    elif kind == "unknown_user":  # ~user of a user this machine does not know
        path = Path("~no_such_user_for_lfr_tests") / f"x{suffix}"
    elif kind == "through_a_file":
        (tmp / "plain-file").write_text("x")
        path = tmp / "plain-file" / f"inside{suffix}"
    return path


# Each command with {bad} where the bad path goes; {db} is a real, empty store and
# {tmp} the test's folder. (lfr demo and lfr models prepare are left out: given a
# missing folder they would rightly build one, minutes of work.)
COMMANDS: list[tuple[str, str]] = [
    ("validate {bad}", ".yaml"),
    ("up {bad}", ".yaml"),
    ("serve {bad}", ".yaml"),
    ("status {bad}", ".yaml"),
    ("down {bad}", ".yaml"),
    ("tokens list --db {bad}", ".sqlite3"),
    ("tokens list --topology {bad}", ".yaml"),
    ("tokens create --name x --role viewer --db {bad}", ".sqlite3"),
    ("tokens revoke 1 --db {bad}", ".sqlite3"),
    ("policy show --db {bad}", ".sqlite3"),
    ("policy show --topology {bad}", ".yaml"),
    ("policy set --deployment-max 0.5 --reason r --db {bad}", ".sqlite3"),
    ("deployments list --db {bad}", ".sqlite3"),
    ("deployments topology d --db {bad}", ".sqlite3"),
    ("audit verify --db {bad}", ".sqlite3"),
    ("audit verify --topology {bad}", ".yaml"),
    ("retention purge --db {bad}", ".sqlite3"),
    ("monitoring show --db {bad}", ".sqlite3"),
    ("monitoring set --file {bad} --reason r --db {db}", ".yaml"),
    ("test-subjects passes --deployment d --db {bad}", ".sqlite3"),
    ("test-subjects pass --deployment d --entry e --camera cam0 --db {bad}", ".sqlite3"),
    ("store check {bad}", ".sqlite3"),
    ("store backup {bad} {tmp}/copy.sqlite3", ".sqlite3"),
    ("store backup {db} {bad}", ".sqlite3"),
    ("store restore {bad} {tmp}/restored.sqlite3", ".sqlite3"),
    ("evaluate pairs {bad} --root {tmp}", ".txt"),
    ("evaluate identify --gallery {bad} --probes {bad}", ""),
    ("evaluate calibrate --gallery {bad} --probes {bad} --out {tmp}/c.json", ""),
    ("evaluate video {tmp}/clip.mp4 --watchlist {bad}", ".yaml"),
    ("evaluate detect {bad}", ".xml"),
    ("models list --home {bad}", ""),
]


@pytest.fixture
def run_lfr(
    tmp_path: Path,
    model_cache: ModelCache,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[list[str]], tuple[int, str]]]:
    monkeypatch.setenv("LFR_HOME", str(model_cache.root.parent))
    monkeypatch.chdir(tmp_path)  # a path taken literally lands in the test's folder

    def run(argv: list[str]) -> tuple[int, str]:
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
        out, err = capfd.readouterr()
        return code, err + out

    yield run


def test_every_command_answers_a_bad_path_in_one_line(
    tmp_path: Path, run_lfr: Callable[[list[str]], tuple[int, str]]
) -> None:
    db = tmp_path / "real.sqlite3"
    Database(db).close()
    wrong: list[str] = []
    cases = 0
    for template, suffix in COMMANDS:
        for kind in BAD_KINDS:
            folder = tmp_path / f"case{cases}"
            folder.mkdir()
            bad = bad_path(folder, kind, suffix)
            (folder / "clip.mp4").write_bytes(b"\x00" * 64)  # read only after the watchlist
            line = template.format(bad=bad, db=db, tmp=folder)
            cases += 1
            try:
                code, said = run_lfr(line.split())
            except BaseException as exc:
                wrong.append(f"lfr {line}  [{kind}]: raised {type(exc).__name__}: {exc}")
                continue
            if code not in (0, 1, 2):
                wrong.append(f"lfr {line}  [{kind}]: exit {code}")
            elif "Traceback" in said:
                wrong.append(f"lfr {line}  [{kind}]: a traceback\n{said[-600:]}")
            elif code != 0 and str(bad) not in said and str(bad.parent) not in said:
                # A refusal names what it refused, or the file in its way (lfr validate
                # lists it with its problem, lfr store check reports on it).
                wrong.append(
                    f"lfr {line}  [{kind}]: exit {code} without naming {bad}: {said!r:.300}"
                )
    assert cases == len(COMMANDS) * len(BAD_KINDS)
    assert not wrong, f"{len(wrong)} of {cases} cases:\n" + "\n".join(wrong)
