"""Topology and watchlist files, each the shipped example with one part spoiled at random.

An operator edits these files by hand. Whatever they turn a value into (a list where a
number goes, a number where a name goes, NaN, a huge integer, a nested mapping, nothing),
delete or misname, loading must either succeed or raise :class:`TopologyError` whose every
line is ``file:line: ...``: never another exception, never a line without its place. The
examples are derived from the test's own code (``derandomize``), so CI runs the same ones;
``LFR_MUTATIONS=N`` runs N random ones. Run so (4,000 a file), it found an image path
holding NUL (a ValueError from the OS) and ``~nobody/w.yaml`` (a RuntimeError from
``expanduser``); both are now a line of the file's problems.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lfr_actors.topology.issues import TopologyError
from lfr_actors.topology.loader import load_topology, load_watchlist

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [REPO / "topology" / name for name in ("demo.yaml", "site-gpu.yaml", "cluster.yaml")]
WATCHLIST = REPO / "topology" / "watchlists" / "stadium.yaml"
RANDOM_RUNS = int(os.environ.get("LFR_MUTATIONS", "0"))
LINE = re.compile(r"^.+:\d+: ")

Path_ = tuple[str | int, ...]

ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "0", "-1", "1e999", "nan", "yes", "~", "\x00", "../..", "x" * 600]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.dates(),
)


def leaves_and_nodes(data: Any, at: Path_ = ()) -> list[Path_]:
    """Every path into ``data`` (mappings and lists), the root excluded."""
    found: list[Path_] = []
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        found.append((*at, key))
        found += leaves_and_nodes(value, (*at, key))
    return found


def spoiled(data: Any, path: Path_, how: str, value: Any) -> Any:
    """A copy of ``data`` with the item at ``path`` replaced, removed or renamed."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        copy = dict(data)
        if rest:
            copy[head] = spoiled(copy[head], rest, how, value)
        elif how == "remove":
            del copy[head]
        elif how == "rename":
            copy[f"{head}x"] = copy.pop(head)
        else:
            copy[head] = value
        return copy
    copy_list = list(data)
    if rest:
        copy_list[head] = spoiled(copy_list[head], rest, how, value)  # type: ignore[index]
    elif how == "remove":
        del copy_list[head]  # type: ignore[arg-type]
    else:
        copy_list[head] = value  # type: ignore[index]
    return copy_list


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def mutations(draw: st.DrawFn, document: Any) -> tuple[Path_, str, Any]:
    paths = leaves_and_nodes(document)
    path = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(["replace", "replace", "replace", "remove", "rename"]))
    return path, how, draw(ODD)


def check_load(loader: Any, source: Path, tmp: Path, mutation: tuple[Path_, str, Any]) -> None:
    path, how, value = mutation
    document = yaml.safe_load(source.read_text())
    changed = spoiled(document, path, how, value)
    target = tmp / source.name
    try:
        target.write_text(_dump(changed), encoding="utf-8")
    except (UnicodeEncodeError, yaml.YAMLError):
        return  # text YAML itself cannot hold (a lone surrogate): no file to load
    try:
        loader(target)
    except TopologyError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        placed = [line for line in lines if LINE.match(line)]
        assert placed, f"{path} {how} {value!r}: no line names its place:\n{exc}"
    except Exception as exc:
        raise AssertionError(
            f"{source.name}: {'.'.join(map(str, path))} {how} {value!r:.80} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc


SETTINGS = settings(
    max_examples=RANDOM_RUNS or 150,
    derandomize=not RANDOM_RUNS,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


FILES = [(load_topology, path) for path in EXAMPLES] + [(load_watchlist, WATCHLIST)]


@pytest.mark.parametrize(("loader", "source"), FILES, ids=[p.name for _, p in FILES])
def test_a_spoiled_file_loads_or_names_its_line(loader: Any, source: Path, tmp_path: Path) -> None:
    document = yaml.safe_load(source.read_text())

    @SETTINGS
    @given(mutation=mutations(document))
    def run(mutation: tuple[Path_, str, Any]) -> None:
        check_load(loader, source, tmp_path, mutation)

    run()


@pytest.mark.parametrize(
    ("image", "said"),
    [
        ("a\x00b.jpg", "a file path must be plain text: U+0000 at position 1"),
        ("~no_such_user_here/a.jpg", "no home folder is known for user 'no_such_user_here'"),
    ],
)
def test_the_paths_random_spoiling_found_are_a_line_of_the_file(
    image: str, said: str, tmp_path: Path
) -> None:
    document = yaml.safe_load(WATCHLIST.read_text())
    document["entries"][0]["images"] = [image]
    target = tmp_path / "w.yaml"
    target.write_text(_dump(document), encoding="utf-8")
    with pytest.raises(TopologyError) as refused:
        load_watchlist(target)
    assert said in str(refused.value)
    assert any(LINE.match(line) and said in line for line in str(refused.value).splitlines())
