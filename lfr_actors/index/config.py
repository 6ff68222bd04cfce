"""A shard's settings: the metric, the search mode, the stored type and the graph's knobs.

:class:`ShardConfig` checks every value when it is made, so a shard (and a snapshot read
back) never holds settings usearch would refuse or answer wrongly with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

Metric = Literal["euclidean", "cosine"]
Mode = Literal["exact", "hnsw", "auto"]
DType = Literal["f32", "f16", "i8"]


#####CONFIG
@dataclass(frozen=True)
class ShardConfig:
    """A shard's settings; the keyword arguments of :class:`ShardIndex`."""

    dimension: int
    metric: Metric
    mode: Mode = "auto"
    dtype: DType = "f32"
    exact_below: int = 20000
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64

    def __post_init__(self) -> None:
        _check_choice("metric", self.metric, Metric)
        _check_choice("mode", self.mode, Mode)
        _check_choice("dtype", self.dtype, DType)
        _check_int("dimension", self.dimension, 1)
        _check_int("exact_below", self.exact_below, 0)
        _check_int("connectivity", self.connectivity, 2)
        _check_int("expansion_add", self.expansion_add, 1)
        _check_int("expansion_search", self.expansion_search, 1)
        if self.dtype == "i8" and self.metric != "cosine":
            # usearch scales i8 as unit-length vectors; Euclidean distances would be wrong.
            raise ValueError("dtype 'i8' needs metric 'cosine'; use 'f32' or 'f16' for euclidean")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> ShardConfig:
        """Build from a plain mapping, naming unknown keys and the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"unknown index setting(s) {unknown}; known settings: {known}")
        missing = [name for name in ("dimension", "metric") if name not in config]
        if missing:
            raise ValueError(f"index settings need {missing}")
        return cls(**dict(config))


def _check_choice(name: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
