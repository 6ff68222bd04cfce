"""The tracking settings: every limit holds at its ends and refuses beyond them."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from lfr_actors.tracking.config import LIMITS, TrackingConfig
from lfr_actors.tracking.tracker import TrackerConfig

NAMES = [item.name for item in fields(TrackingConfig)]
WHOLE = {"max_missed_frames", "min_track_frames", "reembed_every", "no_match_frames", "max_tracks"}


def _valid(name: str, value: float) -> dict[str, float]:
    """Settings with ``name`` at ``value`` and the pair rule (full >= min face) kept."""
    values: dict[str, float] = {name: value}
    if name == "min_face_px":
        values["full_face_px"] = max(value, TrackingConfig.full_face_px)
    if name == "full_face_px":
        values["min_face_px"] = min(value, TrackingConfig.min_face_px)
    return values


def test_every_setting_has_limits_and_the_defaults_are_within_them() -> None:
    assert sorted(LIMITS) == sorted(NAMES)
    default = TrackingConfig()
    for name in NAMES:
        low, high = LIMITS[name]
        assert low <= getattr(default, name) <= high, name


@pytest.mark.parametrize("name", NAMES)
def test_each_end_of_a_range_is_accepted(name: str) -> None:
    for end in LIMITS[name]:
        value = int(end) if name in WHOLE else float(end)
        assert getattr(TrackingConfig(**_valid(name, value)), name) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_beyond_a_range_is_refused_with_the_range(name: str) -> None:
    low, high = LIMITS[name]
    step = 1 if name in WHOLE else 0.01
    for value in (low - step, high + step):
        with pytest.raises(ValueError) as caught:
            TrackingConfig(**{name: value})  # type: ignore[arg-type]
        assert str(caught.value) == (
            f"tracking.{name} must be from {low:g} to {high:g}, got {value!r}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_not_a_number_is_refused(name: str) -> None:
    for bad in (True, "3", None, math.nan, math.inf):
        if name in WHOLE and isinstance(bad, float):
            expected = "must be a whole number"
        elif isinstance(bad, float):
            expected = "must be from"
        else:
            expected = "must be a whole number" if name in WHOLE else "must be a number"
        with pytest.raises(ValueError, match=f"tracking.{name} {expected}"):
            TrackingConfig(**{name: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_whole_number_settings_refuse_fractions(name: str) -> None:
    with pytest.raises(ValueError, match=f"tracking.{name} must be a whole number, got 2.5"):
        TrackingConfig(**{name: 2.5})  # type: ignore[arg-type]


def test_a_number_setting_takes_a_whole_number() -> None:
    assert TrackingConfig(min_iou=0.5, full_face_px=100).full_face_px == 100


def test_full_face_px_may_not_be_below_min_face_px() -> None:
    assert TrackingConfig(min_face_px=40, full_face_px=40).full_face_px == 40
    with pytest.raises(ValueError) as caught:
        TrackingConfig(min_face_px=50, full_face_px=40)
    assert str(caught.value) == "tracking.full_face_px (40) must be at least min_face_px (50)"


def test_the_tracker_part_carries_the_matching_settings() -> None:
    config = TrackingConfig(min_iou=0.3, max_missed_frames=0, high_score=0.8, max_tracks=7)
    assert config.tracker == TrackerConfig(min_iou=0.3, max_missed=0, high_score=0.8, max_tracks=7)
    assert TrackingConfig().tracker == TrackerConfig()


@pytest.mark.parametrize("name", ["min_iou", "max_missed_frames", "high_score", "max_tracks"])
def test_every_tracking_limit_makes_a_valid_tracker(name: str) -> None:
    for end in LIMITS[name]:
        value = int(end) if name in WHOLE else float(end)
        assert isinstance(TrackingConfig(**{name: value}).tracker, TrackerConfig)  # type: ignore[arg-type]
