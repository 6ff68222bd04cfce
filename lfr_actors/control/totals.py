"""Each camera's counters summed over its runs (a restarted camera counts from zero)."""

from __future__ import annotations

from typing import Any

from lfr_actors.actors.camera import COUNTERS as CAMERA_COUNTERS


class CameraTotals:
    """Each camera's counters summed over its runs, told apart by their ``epoch``.

    Give it every ``stats()`` read of a camera (:meth:`observe`); it answers the same
    figures with the counters replaced by their totals over every run seen so far. The
    last figures read from a run that then died are kept; what it counted after that
    read is lost, so read often (the driver reads every second). A late answer of an
    earlier run (read before a newer run was seen) changes nothing.
    """

    def __init__(self) -> None:
        self._epoch: dict[str, str] = {}
        self._ended: dict[str, set[str]] = {}
        self._current: dict[str, dict[str, int]] = {}
        self._earlier: dict[str, dict[str, int]] = {}
        self._runs: dict[str, int] = {}

    def observe(self, name: str, stats: dict[str, Any]) -> dict[str, Any]:
        """``stats`` of camera ``name`` with its counters totalled over its runs."""
        epoch = stats.get("epoch")
        earlier = self._earlier.setdefault(name, dict.fromkeys(CAMERA_COUNTERS, 0))
        ended = self._ended.setdefault(name, set())
        if isinstance(epoch, str) and epoch not in ended:
            if self._epoch.get(name) != epoch:
                if name in self._epoch:
                    ended.add(self._epoch[name])
                    for key, value in self._current.get(name, {}).items():
                        earlier[key] += value
                self._epoch[name] = epoch
                self._runs[name] = self._runs.get(name, 0) + 1
            self._current[name] = {key: int(stats.get(key) or 0) for key in CAMERA_COUNTERS}
        current = self._current.get(name, {})
        totals = {key: earlier[key] + current.get(key, 0) for key in CAMERA_COUNTERS}
        return {**stats, **totals, "runs": self._runs.get(name, 0)}

    def observe_all(self, cameras: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """:meth:`observe` for every camera of a ``Kernel.stats`` answer."""
        return {name: self.observe(name, stats) for name, stats in cameras.items()}
