"""``lfr evaluate video``'s truth file and scoring, without the models."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfr_actors.evaluate_video import (
    Alert,
    Appearance,
    VideoEvaluationError,
    _fused,
    _scores,
    read_truth,
)

ENTRIES = ["miranda", "lacamoire"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "truth.csv"
    path.write_text(text)
    return path


def test_a_truth_file_reads_its_appearances(tmp_path: Path) -> None:
    path = write(tmp_path, "entry,first_frame,last_frame\nmiranda,0,19\n\nlacamoire, 20 ,81\n")
    assert read_truth(path, ENTRIES) == [
        Appearance(2, "miranda", 0, 19),
        Appearance(4, "lacamoire", 20, 81),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"truth.csv:1: the file is empty"),
        ("entry,first\nmiranda,0\n", r"truth.csv:1: missing column\(s\) first_frame, last_frame"),
        ("entry,first_frame,last_frame\nbiden,0,1\n", r"truth.csv:2: entry 'biden' is not on"),
        ("entry,first_frame,last_frame\nmiranda,a,1\n", r"truth.csv:2: .* whole numbers"),
        ("entry,first_frame,last_frame\nmiranda,5,1\n", r"truth.csv:2: frames 5 to 1"),
        ("entry,first_frame,last_frame\nmiranda,0\n", r"truth.csv:2: expected 3 columns"),
    ],
)
def test_a_bad_truth_file_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(VideoEvaluationError, match=message):
        read_truth(write(tmp_path, text), ENTRIES)


def test_every_bad_line_is_named_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "entry,first_frame,last_frame\nnobody,0,1\nmiranda,3,2\nmiranda,0,4\n")
    with pytest.raises(VideoEvaluationError) as caught:
        read_truth(path, ENTRIES)
    assert [line.split(":")[1] for line in str(caught.value).splitlines()] == ["2", "3"]


def test_a_missing_truth_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VideoEvaluationError, match="cannot be read"):
        read_truth(tmp_path / "none.csv", ENTRIES)


def test_matches_fuse_per_entry_within_the_window_and_are_scored() -> None:
    times = {i: i / 10 for i in range(2000)}  # 10 frames a second
    truth = [Appearance(2, "miranda", 0, 100), Appearance(3, "lacamoire", 500, 600)]
    alerts = _fused(
        [
            ("miranda", 10, 20, 40.0),
            ("miranda", 90, 95, 30.0),  # 8 s later: the same alert
            ("lacamoire", 50, 60, 25.0),  # not in view then: a false alert
            ("miranda", 1500, 1510, 50.0),  # 149 s later: a new alert, not in view
        ],
        times,
        30.0,
        truth,
    )
    assert alerts == [
        Alert("miranda", 10, 95, 30.0, True),
        Alert("lacamoire", 50, 60, 25.0, False),
        Alert("miranda", 1500, 1510, 50.0, False),
    ]
    scores = _scores(alerts, truth, ENTRIES)
    assert (scores["true_alerts"], scores["false_alerts"]) == (1, 2)
    assert scores["smallest_face_alerted_px"] == 30.0
    assert scores["entries"]["miranda"] == {
        "appearances": 1,
        "alerted": 1,
        "recall": 1.0,
        "false_alerts": 1,
    }
    assert scores["entries"]["lacamoire"]["recall"] == 0.0
