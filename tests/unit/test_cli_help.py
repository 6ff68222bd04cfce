"""Every ``--help`` text reads as plain prose on a terminal: no reST markup leaks in."""

from __future__ import annotations

import argparse

from lfr_actors.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser, name: str = "lfr") -> list[tuple[str, str]]:
    found = [(name, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def test_no_help_text_shows_rest_markup() -> None:
    helps = _parsers(build_parser())
    assert len(helps) > 20  # every command and kind is walked
    leaking = [name for name, text in helps if "``" in text or ":func:" in text]
    assert leaking == []
