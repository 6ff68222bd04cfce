"""Percentiles of measured samples (latencies, fan-out times), on the ground floor.

:func:`percentile` is the one rule the figures in stats and summaries use: the sample at
rank ``int(fraction * n)`` of the sorted samples (clamped to the last), so it is always a
value that was measured, never an interpolation, and ``None`` when there is none. It
imports nothing from the project.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The sample at ``fraction`` (0..1) of the already sorted ``ordered``; None if empty.

    ``percentile(xs, 0.95)`` of 100 samples is ``xs[95]``: 95 samples come before it.
    """
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(fraction * len(ordered))))]
