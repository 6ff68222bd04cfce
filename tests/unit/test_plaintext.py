"""Plain text: what a reason, a name or a note may hold, in files and request bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lfr_actors.api.adjudication import AdjudicationBody
from lfr_actors.api.test_subjects import TestPassBody
from lfr_actors.calibration import CalibrationFile
from lfr_actors.plaintext import plain
from lfr_actors.topology.issues import TopologyError
from lfr_actors.topology.loader import load_watchlist
from tests.calibration_samples import sample_calibration

REFUSED = ["\x00", "a\x07b", "\x1b[2J", "x\x7f", "\x85", "\ud800", "half \udfff"]
TAKEN = ["", "plain", "two\nlines", "tab\there", "crlf\r\n", "é ñ 中文 😀", "'quoted' \"too\""]


@pytest.mark.parametrize("text", TAKEN)
def test_plain_text_passes_unchanged(text: str) -> None:
    assert plain(text) == text


@pytest.mark.parametrize("text", REFUSED)
def test_control_characters_and_lone_surrogates_are_refused_with_their_position(
    text: str,
) -> None:
    with pytest.raises(ValueError, match="must be plain text") as refused:
        plain(text)
    first = next(i for i, c in enumerate(text) if c not in "\t\n\r" and not c.isprintable())
    assert f"U+{ord(text[first]):04X} at position {first}" in str(refused.value)


def test_notes_of_a_decision_and_a_test_pass_take_only_plain_text() -> None:
    # As the API reads them: JSON, strictly.
    def decision(**body: Any) -> AdjudicationBody:
        return AdjudicationBody.model_validate_json(json.dumps(body))

    assert decision(decision="unsure", note="light poor\nre-check").note == "light poor\nre-check"
    with pytest.raises(ValidationError, match="U\\+0000"):
        decision(decision="unsure", note="\x00")
    with pytest.raises(ValidationError, match="U\\+001B"):
        decision(decision="not_a_match", correction=True, correction_reason="\x1b[31m")
    passed = {"entry_id": "TS-1", "camera_id": "cam0", "passed_at": "2026-12-01T10:00:00Z"}
    assert TestPassBody.model_validate_json(json.dumps({**passed, "note": "ok"})).note == "ok"
    with pytest.raises(ValidationError, match="must be plain text"):
        TestPassBody.model_validate_json(json.dumps({**passed, "note": "bell\x07"}))


def test_a_calibration_needs_an_iso_time_and_version_one_not_true() -> None:
    good = sample_calibration()
    CalibrationFile.model_validate(good)
    for created_at in ("yesterday", "2026-12-01T10:00:00", "\x00"):  # the second has no offset
        with pytest.raises(ValidationError, match="created_at"):
            CalibrationFile.model_validate({**good, "created_at": created_at})
    with pytest.raises(ValidationError, match="version"):
        CalibrationFile.model_validate({**good, "version": True})


def test_a_watchlist_file_with_a_control_character_names_the_field_and_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\n"
        "entries:\n"
        "  - id: E1\n"
        '    display_name: "Jane\\x1b[2J Example"\n'
        "    images: [a.jpg]\n"
        "    category: wanted\n"
        "    legal_basis: PACE s.24\n"
        "    source: custody\n"
        "    image_date: 2020-01-01\n"
    )
    with pytest.raises(TopologyError) as refused:
        load_watchlist(path)
    message = str(refused.value)
    assert "display_name" in message and "must be plain text" in message
    assert f"{path}:4" in message
