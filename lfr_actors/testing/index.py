"""An in-memory watchlist index with :class:`~lfr_actors.index.ShardIndex`'s interface.

Plain numpy brute force in float64, for unit tests of the parts that consult an index
(the alert logic, the enrolment API) without Ray, an HNSW graph or snapshot files. It
validates inputs with the real shard's checks and answers with the same distance
conventions, so a test written against it holds for :class:`~lfr_actors.index.ShardIndex`.
"""

from __future__ import annotations

import numpy as np

from lfr_actors.index.config import Metric
from lfr_actors.index.merge import Hit
from lfr_actors.index.shard import check_vectors


class InMemoryIndex:
    """Entries with one or more template vectors each, searched exhaustively."""

    def __init__(self, dimension: int, metric: Metric = "euclidean") -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
        self.dimension = dimension
        self.metric: Metric = metric
        self._templates: dict[str, np.ndarray] = {}

    def add(self, entry_id: str, vectors: np.ndarray) -> int:
        """Store ``vectors`` ``[M, D]`` float32 as the entry's templates (replacing any)."""
        _check_entry_id(entry_id)
        vectors = check_vectors(
            vectors, self.dimension, self.metric, what=f"templates of entry {entry_id!r}"
        )
        self._templates[entry_id] = vectors.astype(np.float64)
        return int(vectors.shape[0])

    def remove(self, entry_id: str) -> int:
        """Drop an entry; returns how many vectors it had (0 if unknown)."""
        _check_entry_id(entry_id)
        removed = self._templates.pop(entry_id, None)
        return 0 if removed is None else int(removed.shape[0])

    def search(
        self, vectors: np.ndarray, k: int = 1, max_distance: float | None = None
    ) -> list[list[Hit]]:
        """Per query, up to ``k`` distinct entries nearest first, as ShardIndex answers."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if max_distance is not None and not max_distance >= 0:
            raise ValueError(f"max_distance must be a number >= 0 or None, got {max_distance!r}")
        queries = check_vectors(
            vectors, self.dimension, self.metric, what="query vectors", allow_empty=True
        ).astype(np.float64)
        out: list[list[Hit]] = []
        for query in queries:
            hits = [(entry_id, self._distance(query, t)) for entry_id, t in self._templates.items()]
            if max_distance is not None:
                hits = [hit for hit in hits if hit[1] <= max_distance]
            hits.sort(key=lambda hit: (hit[1], hit[0]))
            out.append(hits[:k])
        return out

    def _distance(self, query: np.ndarray, templates: np.ndarray) -> float:
        if self.metric == "cosine":
            unit = templates / np.linalg.norm(templates, axis=1, keepdims=True)
            similarity = unit @ (query / np.linalg.norm(query))
            return float(np.clip(1.0 - similarity.max(), 0.0, 2.0))
        return float(np.sqrt(((templates - query) ** 2).sum(axis=1)).min())

    def __len__(self) -> int:
        """The number of stored vectors."""
        return sum(t.shape[0] for t in self._templates.values())

    @property
    def entry_count(self) -> int:
        """The number of stored entries."""
        return len(self._templates)

    def entries(self) -> list[str]:
        """The stored entry ids, sorted."""
        return sorted(self._templates)

    def __contains__(self, entry_id: object) -> bool:
        """Whether an entry is stored."""
        return entry_id in self._templates

    def clear(self) -> None:
        """Drop everything."""
        self._templates.clear()


def _check_entry_id(entry_id: object) -> None:
    if not isinstance(entry_id, str) or not entry_id:
        raise ValueError(f"entry_id must be a non-empty string, got {entry_id!r}")
