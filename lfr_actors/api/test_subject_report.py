"""The report page's test-subject section: passes recorded and alerted, and how soon."""

from __future__ import annotations

import html
from typing import Any


def test_subjects_section(report: dict[str, Any]) -> str:
    """The ``<h2>`` and table of the report's ``test_subjects`` figures (JSON form).

    Empty for a report without them (one made before test subjects existed).
    """
    figures = report.get("test_subjects")
    if figures is None:
        return ""
    rate = figures["true_positive_rate"]
    delays = figures["seconds_to_alert"]
    tolerance = figures["tolerance_s"]

    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    rows = [
        ("Test subjects", f"{figures['entries']:,}"),
        ("Passes recorded", f"{figures['passes_recorded']:,}"),
        ("Passes alerted", f"{figures['passes_alerted']:,}"),
        (
            "Live true-positive rate",
            "n/a (no passes recorded)" if rate is None else f"{rate:.1%}",
        ),
        ("Pass to alert, median", seconds(delays["median"])),
        ("Pass to alert, longest", seconds(delays["max"])),
        ("Test-subject alerts", f"{figures['alerts']:,} (not counted in the alerts above)"),
        (
            "Counted as alerted",
            f"a sighting of the entry on that camera from {tolerance['before']:g} s before "
            f"to {tolerance['after']:g} s after the pass",
        ),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<h2>Test subjects</h2>\n<table id="test-subjects">{table}</table>\n'
