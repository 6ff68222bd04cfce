"""The one time-formatting module and the one percentile rule write what the copies did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lfr_actors.percentiles import percentile
from lfr_actors.timefmt import iso_utc, iso_z, parse_time

# 2025-01-31T12:00:00Z plus 250.6 ms: cut, never rounded, at every precision.
MOMENT = 1738324800.2506


def test_iso_utc_writes_each_precision_with_z() -> None:
    assert iso_utc(MOMENT) == "2025-01-31T12:00:00.250Z"
    assert iso_utc(MOMENT, "seconds") == "2025-01-31T12:00:00Z"
    assert iso_utc(MOMENT, "minutes") == "2025-01-31T12:00Z"
    assert iso_utc(MOMENT, "auto") == "2025-01-31T12:00:00.250600Z"
    assert iso_utc(1738324800.0, "auto") == "2025-01-31T12:00:00Z"


def test_iso_utc_matches_the_slices_the_commands_printed() -> None:
    # `lfr tokens list` printed iso_utc(t)[:19] + "Z"; `lfr deployments list` [:16] + "Z".
    for t in (0.0, MOMENT, 1738324859.9999, 4102444799.5):
        assert iso_utc(t, "seconds") == iso_utc(t)[:19] + "Z"
        assert iso_utc(t, "minutes") == iso_utc(t)[:16] + "Z"


def test_iso_z_keeps_other_offsets() -> None:
    at = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert iso_z(at) == "2025-01-31T12:00:00Z"
    assert iso_z(at, "minutes") == "2025-01-31T12:00Z"
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert iso_z(paris) == "2025-01-31T13:00:00+01:00"


def test_parse_time_reads_iso_and_unix_seconds() -> None:
    assert parse_time("2025-01-31T12:00:00Z") == 1738324800.0
    assert parse_time("2025-01-31T12:00:00") == 1738324800.0  # no offset: UTC
    assert parse_time("2025-01-31T13:00:00+01:00") == 1738324800.0
    assert parse_time("1738324800.25") == 1738324800.25
    assert parse_time(iso_utc(MOMENT)) == pytest.approx(1738324800.25)
    with pytest.raises(ValueError, match=r"'yesterday' is not an ISO 8601 time"):
        parse_time("yesterday")


def test_percentile_is_a_measured_sample_at_int_fraction_n() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(samples, 0.5) == 51.0
    assert percentile(samples, 0.95) == 96.0
    assert percentile(samples, 0.99) == 100.0
    assert percentile(samples, 1.0) == 100.0  # clamped to the last sample
    assert percentile(samples, 0.0) == 1.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
