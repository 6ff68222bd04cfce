"""The YAML reader of operator files: its scalar rules, its guards and its lines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lfr_actors.topology import TopologyError
from lfr_actors.topology.yaml import MAX_NODES, parse


def read(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "f.yaml"
    path.write_text(text, "utf-8")
    return parse(path, "topology")


SCALARS = [
    ("012", 12),
    ("+5", 5),
    ("-0", 0),
    ("0o12", "0o12"),
    ("0x1F", "0x1F"),
    ("1_000", "1_000"),
    ("1:30", "1:30"),
    ("yes", "yes"),
    ("no", "no"),
    ("on", "on"),
    ("NO", "NO"),
    ("True", True),
    ("FALSE", False),
    ("1e3", 1000.0),
    ("1.", 1.0),
    (".5", 0.5),
    ("1e", "1e"),
    (".inf", math.inf),
    ("-.inf", -math.inf),
    ("2026-11-20T08:00:00Z", "2026-11-20T08:00:00Z"),
    ("2025-03-14", "2025-03-14"),
    ("!!timestamp 2025-03-14", "2025-03-14"),
    ("!!str 3", "3"),
    ("!!float 3", 3.0),
    ("~", None),
    ("", None),
    ("|\n  two\n  lines\n", "two\nlines\n"),
]


@pytest.mark.parametrize(("written", "read_as"), SCALARS)
def test_scalars_read_as_this_project_always_has(
    tmp_path: Path, written: str, read_as: object
) -> None:
    value = read(tmp_path, f"a: {written}").data["a"]
    assert value == read_as
    assert type(value) is type(read_as)  # plain Python types, not ruamel's subclasses


def test_not_a_number_is_a_float(tmp_path: Path) -> None:
    assert math.isnan(read(tmp_path, "a: .nan").data["a"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!int abc", "invalid YAML: cannot read 'abc' as a whole number"),
        ("a: !thing x", "invalid YAML: could not determine a constructor for the tag '!thing'"),
        ("a: 1\n---\nb: 2", "invalid YAML: but found another document"),
    ],
)
def test_tags_and_documents_it_cannot_read_are_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(TopologyError) as caught:
        read(tmp_path, text)
    (issue,) = caught.value.issues
    assert issue.message.startswith(message)
    assert issue.line is not None


def test_an_alias_bomb_is_refused_in_one_line(tmp_path: Path) -> None:
    rows = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):  # 10**9 values once expanded, a few hundred bytes written
        rows.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]")
    with pytest.raises(TopologyError) as caught:
        read(tmp_path, "\n".join(rows) + "\n")
    (issue,) = caught.value.issues
    assert issue.message == "the topology nests too deeply or expands to too many values"
    assert "aliases" in issue.fix


def test_aliases_within_the_bound_are_read(tmp_path: Path) -> None:
    text = "base: &b [1, 2, 3]\nuse: [*b, *b]\n"
    assert read(tmp_path, text).data["use"] == [[1, 2, 3], [1, 2, 3]]
    assert MAX_NODES >= 1000


@pytest.mark.parametrize("text", ["a: &a [1, *a]\n", "a: &a {b: *a}\n"])
def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(TopologyError, match="expands to too many values"):
        read(tmp_path, text)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="nests too deeply"):
        read(tmp_path, "a: " + "[" * 100 + "]" * 100)


def test_every_repeated_key_is_named_and_the_last_value_kept(tmp_path: Path) -> None:
    parsed = read(tmp_path, "a: 1\nb: 2\na: 3\nb: 4\na: 5\n")
    assert parsed.data == {"a": 5, "b": 4}
    assert [(i.path, i.line, i.message) for i in parsed.issues] == [
        ("a", 3, "'a' is written twice, at lines 1 and 3"),
        ("b", 4, "'b' is written twice, at lines 2 and 4"),
        ("a", 5, "'a' is written twice, at lines 1 and 5"),
    ]
    assert parsed.lines[("a",)] == (5, 5)
    flow = read(tmp_path, "{a: 1, a: 2}")
    assert flow.issues[0].message == "'a' is written twice, on this line"


def test_merge_keys_may_be_overridden_and_keep_their_lines(tmp_path: Path) -> None:
    text = "base: &b\n  p: 1\n  q: 2\nuse:\n  <<: *b\n  p: 3\n"
    parsed = read(tmp_path, text)
    assert parsed.issues == []
    assert parsed.data["use"] == {"p": 3, "q": 2}
    assert parsed.lines[("use", "p")] == (6, 6)
    assert parsed.lines[("use", "q")] == (3, 3)  # where the anchored mapping has it


def test_lines_of_keys_values_and_items(tmp_path: Path) -> None:
    text = "# a comment\nroot:\n  list:\n    - one\n    - {k: v}\n  key:\n    deep\n"
    parsed = read(tmp_path, text)
    assert parsed.lines[()] == (None, 2)
    assert parsed.lines[("root", "list")] == (3, 4)
    assert parsed.lines[("root", "list", 1)] == (None, 5)
    assert parsed.lines[("root", "list", 1, "k")] == (5, 5)
    assert parsed.lines[("root", "key")] == (6, 7)


def test_a_key_that_is_a_list_is_an_error(tmp_path: Path) -> None:
    parsed = read(tmp_path, "ok: 1\n? [a, b]\n: 2\n")
    assert parsed.data == {"ok": 1}
    (issue,) = parsed.issues
    assert (issue.line, issue.message) == (2, "a key must be a plain name, not a list or mapping")
