"""One shard of the watchlist index: entries' template vectors in a usearch index.

A watchlist entry may have several template vectors (several enrolment photos). Each vector
gets its own usearch key, never reused, and the shard keeps the two maps between keys and
entry ids, so a search answers with *distinct entries*, each at the distance of its
closest template.

Two search modes, chosen per search:

* ``exact``: brute force over every stored vector (a BLAS matrix product, then the chosen
  candidates' distances recomputed in float64, so near-zero Euclidean distances do not
  suffer the cancellation of ``|q|^2 - 2 q.x + |x|^2``). Right for watchlists of up to
  some tens of thousands of vectors, where it is as fast as a graph and never misses.
* ``hnsw``: usearch's approximate graph search, for large watchlists.
* ``auto``: exact while the shard holds fewer than ``exact_below`` entries, HNSW beyond.

Vectors always go into the usearch index (which builds its graph as they arrive), so the
switch from exact to HNSW costs nothing at search time; the dense matrix exact search
reads is a cache rebuilt from the index after a change.

Distances follow the package's convention: ``euclidean`` is the true L2 distance (usearch's
``l2sq`` is squared, so its answers are square-rooted) and ``cosine`` is
``1 - cosine similarity``.

usearch only marks a removed vector as deleted: its bytes stay in memory and in a saved
file until a later add reuses the slot. A watchlist entry that is removed (or re-enrolled)
must leave no biometric trace in a snapshot, so :meth:`ShardIndex.save` first rebuilds the
usearch index from the live vectors whenever anything was removed since the last rebuild
(a batch add on every core; seconds for 100k vectors).

:meth:`ShardIndex.save` and :meth:`ShardIndex.load` write and read a snapshot: its files,
manifest and checks are :mod:`lfr_actors.index.snapshot`; the settings are
:class:`~lfr_actors.index.config.ShardConfig`.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

# Once usearch is imported, a later `import onnxruntime` kills the process with a segfault
# in ONNX Runtime's module initialisation (usearch 2.26, onnxruntime 1.32); the other order
# works. So ONNX Runtime goes first wherever it is installed (it costs ~70 ms).
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401

from usearch.index import Index

from lfr_actors.index.config import DType, Metric, Mode, ShardConfig
from lfr_actors.index.merge import Hit
from lfr_actors.index.snapshot import read_snapshot, write_snapshot

_USEARCH_METRIC = {"euclidean": "l2sq", "cosine": "cos"}


class VectorIndex(Protocol):
    """What the rest of the package may rely on from an index (real or test double)."""

    def add(self, entry_id: str, vectors: np.ndarray) -> int:
        """Store an entry's template vectors, replacing any it had; returns how many."""
        ...

    def remove(self, entry_id: str) -> int:
        """Drop every vector of an entry; returns how many (0 for an unknown entry)."""
        ...

    def search(
        self, vectors: np.ndarray, k: int = 1, max_distance: float | None = None
    ) -> list[list[Hit]]:
        """Per query, up to ``k`` distinct entries nearest first."""
        ...

    def __len__(self) -> int:
        """The number of stored vectors."""
        ...

    @property
    def entry_count(self) -> int:
        """The number of stored entries."""
        ...

    def entries(self) -> list[str]:
        """The stored entry ids, sorted."""
        ...

    def clear(self) -> None:
        """Drop every entry and vector."""
        ...


def check_vectors(
    vectors: object, dimension: int, metric: Metric, *, what: str, allow_empty: bool = False
) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous ``[N, dimension]`` float32 array, or raise.

    Raises :class:`ValueError` naming the problem: not an array, not float32, not 2-d, the
    wrong dimension, no rows, NaN or infinite values, or (for cosine) a zero vector.
    """
    if not isinstance(vectors, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(vectors).__name__}")
    if vectors.dtype != np.float32:
        raise ValueError(f"{what} must be float32, got {vectors.dtype}")
    if vectors.ndim != 2:
        raise ValueError(
            f"{what} must be 2-d [N, {dimension}], got shape {vectors.shape}; "
            "pass one vector as vector[None, :]"
        )
    if vectors.shape[1] != dimension:
        raise ValueError(
            f"{what} have dimension {vectors.shape[1]}, this index holds {dimension}-d vectors"
        )
    if vectors.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{what} must hold at least one vector")
    bad = ~usable_rows(vectors, metric)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        reason = "NaN or infinite values" if metric == "euclidean" else "NaN, infinite or zero"
        raise ValueError(f"{what} rows {rows} hold {reason} values")
    return np.ascontiguousarray(vectors)


def usable_rows(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Boolean mask of the rows that can be searched: finite, and non-zero for cosine."""
    ok: np.ndarray = np.isfinite(vectors).all(axis=1)
    if metric == "cosine":
        ok &= np.abs(vectors).max(axis=1, initial=0.0) > 0
    return ok


@dataclass
class _Dense:
    """The stored vectors grouped by entry, for exact search; rebuilt after a change."""

    entry_ids: list[str]
    starts: np.ndarray  # first row of each entry in ``matrix``
    lengths: np.ndarray  # template count of each entry
    entry_of_row: np.ndarray  # [V] the entry (position in ``entry_ids``) of each row
    matrix: np.ndarray  # [V, D] float32, rows grouped by entry
    scoring: np.ndarray  # [V, D] float32: ``matrix`` (euclidean) or its unit rows (cosine)
    sq_norms: np.ndarray  # [V] float32, euclidean only


class ShardIndex:
    """One shard: watchlist entries with one or more template vectors each.

    Not thread-safe: an actor calls it from one thread at a time.
    """

    def __init__(
        self,
        dimension: int,
        metric: Metric,
        *,
        mode: Mode = "auto",
        dtype: DType = "f32",
        exact_below: int = 20000,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
    ) -> None:
        self._config = ShardConfig(
            dimension=dimension,
            metric=metric,
            mode=mode,
            dtype=dtype,
            exact_below=exact_below,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        self._index = self._new_usearch()
        self._keys: dict[str, np.ndarray] = {}
        self._entry_of: dict[int, str] = {}
        self._next_key = 0
        self._dense: _Dense | None = None
        # How many entries have each template count: the largest bounds HNSW over-fetching.
        self._template_counts: Counter[int] = Counter()
        self._tombstones = 0  # vectors usearch has marked removed but still holds

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ShardIndex:
        """Build from a settings mapping (as a topology gives it), naming unknown keys."""
        return cls(**asdict(ShardConfig.from_mapping(config)))

    def _new_usearch(self) -> Index:
        c = self._config
        return Index(
            ndim=c.dimension,
            metric=_USEARCH_METRIC[c.metric],
            dtype=c.dtype,
            connectivity=c.connectivity,
            expansion_add=c.expansion_add,
            expansion_search=c.expansion_search,
        )

    @property
    def config(self) -> dict[str, Any]:
        """The settings, as keyword arguments of this class."""
        return asdict(self._config)

    @property
    def dimension(self) -> int:
        """The length of every vector."""
        return self._config.dimension

    @property
    def metric(self) -> Metric:
        """``euclidean`` or ``cosine``."""
        return self._config.metric

    @property
    def mode_in_use(self) -> Literal["exact", "hnsw"]:
        """How the next search runs: ``auto`` resolved against the current entry count."""
        mode = self._config.mode
        if mode == "auto":
            return "exact" if self.entry_count < self._config.exact_below else "hnsw"
        return mode

    def __len__(self) -> int:
        """The number of stored vectors."""
        return len(self._entry_of)

    @property
    def entry_count(self) -> int:
        """The number of stored entries."""
        return len(self._keys)

    def entries(self) -> list[str]:
        """The stored entry ids, sorted."""
        return sorted(self._keys)

    def __contains__(self, entry_id: object) -> bool:
        """Whether an entry is stored."""
        return entry_id in self._keys

    def add(self, entry_id: str, vectors: np.ndarray) -> int:
        """Store ``vectors`` ``[M, D]`` float32 as the templates of ``entry_id``.

        An entry that exists has its old templates replaced, not extended. Returns ``M``.
        """
        return self.add_many([(entry_id, vectors)])

    def add_many(self, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store several entries at once (one usearch batch, built on every core).

        Each item is ``(entry_id, vectors [M, D] float32)`` with :meth:`add`'s meaning. Every
        item is checked before anything is stored, so a bad one changes nothing; an id may
        appear once. Returns the number of vectors stored.
        """
        checked: list[tuple[str, np.ndarray]] = []
        seen: set[str] = set()
        for entry_id, vectors in items:
            _check_entry_id(entry_id)
            if entry_id in seen:
                raise ValueError(f"entry {entry_id!r} appears twice in one batch")
            seen.add(entry_id)
            what = f"templates of entry {entry_id!r}"
            checked.append(
                (entry_id, check_vectors(vectors, self.dimension, self.metric, what=what))
            )
        if not checked:
            return 0
        counts = [vectors.shape[0] for _, vectors in checked]
        total = sum(counts)
        keys = np.arange(self._next_key, self._next_key + total, dtype=np.uint64)
        stacked = checked[0][1] if len(checked) == 1 else np.vstack([v for _, v in checked])
        # New vectors go in before old ones leave, so a failed add changes nothing.
        self._index.add(keys, stacked)
        self._next_key += total
        offset = 0
        for (entry_id, _), count in zip(checked, counts, strict=True):
            entry_keys = keys[offset : offset + count]
            offset += count
            old = self._keys.get(entry_id)
            if old is not None:
                self._forget(old)
            self._keys[entry_id] = entry_keys
            self._template_counts[count] += 1
            for key in entry_keys.tolist():
                self._entry_of[key] = entry_id
        self._dense = None
        return total

    def remove(self, entry_id: str) -> int:
        """Drop every template of ``entry_id``; returns how many (0 for an unknown entry)."""
        _check_entry_id(entry_id)
        keys = self._keys.pop(entry_id, None)
        if keys is None:
            return 0
        self._forget(keys)
        self._dense = None
        return len(keys)

    def _forget(self, keys: np.ndarray) -> None:
        self._index.remove(keys)
        for key in keys.tolist():
            del self._entry_of[key]
        self._template_counts[len(keys)] -= 1
        if not self._template_counts[len(keys)]:
            del self._template_counts[len(keys)]
        self._tombstones += len(keys)

    def _purge_removed(self) -> None:
        """Rebuild the usearch index from the live vectors, leaving no removed one in it."""
        if not self._tombstones:
            return
        fresh = self._new_usearch()
        if self._keys:
            keys = np.concatenate(list(self._keys.values()))
            # The stored representation (f32, f16 or i8) copies over byte for byte.
            rows = self._index.get(keys, dtype=self._config.dtype)
            fresh.add(keys, np.vstack(cast(tuple[np.ndarray, ...], rows)))
        self._index = fresh
        self._tombstones = 0

    @property
    def _max_templates(self) -> int:
        return max(self._template_counts, default=0)

    def clear(self) -> None:
        """Drop every entry and vector from memory (snapshots on disk are untouched)."""
        self._index = self._new_usearch()
        self._keys = {}
        self._entry_of = {}
        self._next_key = 0
        self._dense = None
        self._template_counts = Counter()
        self._tombstones = 0

    def search(
        self, vectors: np.ndarray, k: int = 1, max_distance: float | None = None
    ) -> list[list[Hit]]:
        """Per query row of ``vectors`` ``[N, D]`` float32, up to ``k`` distinct entries.

        Each entry's distance is that of its closest template; hits are nearest first (ties
        by entry id) and, when ``max_distance`` is given, only those at or within it.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if max_distance is not None and (
            isinstance(max_distance, bool)
            or not isinstance(max_distance, int | float)
            or not max_distance >= 0
        ):
            raise ValueError(f"max_distance must be a number >= 0 or None, got {max_distance!r}")
        queries = check_vectors(
            vectors, self.dimension, self.metric, what="query vectors", allow_empty=True
        )
        if queries.shape[0] == 0:
            return []
        if not self._keys:
            return [[] for _ in range(queries.shape[0])]
        if self.mode_in_use == "exact":
            hits = self._search_exact(queries, k)
        else:
            hits = self._search_hnsw(queries, k)
        if max_distance is not None:
            hits = [[hit for hit in row if hit[1] <= max_distance] for row in hits]
        return hits

    def _dense_cache(self) -> _Dense:
        if self._dense is None:
            entry_ids = list(self._keys)
            key_arrays = [self._keys[e] for e in entry_ids]
            lengths = np.array([len(k) for k in key_arrays], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            rows = self._index.get(np.concatenate(key_arrays), dtype="f32")
            matrix = np.ascontiguousarray(np.vstack(cast(tuple[np.ndarray, ...], rows)))
            if self.metric == "cosine":
                scoring = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
                sq_norms = np.empty(0, dtype=np.float32)
            else:
                scoring = matrix
                sq_norms = np.einsum("ij,ij->i", matrix, matrix)
            entry_of_row = np.repeat(np.arange(len(entry_ids)), lengths)
            self._dense = _Dense(
                entry_ids, starts, lengths, entry_of_row, matrix, scoring, sq_norms
            )
        return self._dense

    def _search_exact(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        dense = self._dense_cache()
        if self.metric == "cosine":
            unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
            approx = -(unit @ dense.scoring.T)  # order-equivalent to 1 - cos
        else:
            approx = dense.sq_norms[None, :] - 2.0 * (queries @ dense.scoring.T)
        chosen = self._nearest_entries(approx, dense.entry_of_row, k)
        distances = self._exact_distances(queries, dense, np.ascontiguousarray(chosen))
        out: list[list[Hit]] = []
        for row_entries, row_distances in zip(chosen.tolist(), distances.tolist(), strict=True):
            hits = [
                (dense.entry_ids[e], d) for e, d in zip(row_entries, row_distances, strict=True)
            ]
            hits.sort(key=lambda hit: (hit[1], hit[0]))
            out.append(hits)
        return out

    def _nearest_entries(self, approx: np.ndarray, entry_of_row: np.ndarray, k: int) -> np.ndarray:
        """Per query row of ``approx`` [N, V], the ``min(k, E)`` entries with the nearest rows.

        Only the ``count`` nearest rows are ranked: they are sure to span that many distinct
        entries (one row each for single-template watchlists, where ``k=1`` is an argmin).
        """
        n_rows, vectors = approx.shape
        entries = self.entry_count
        take = min(k, entries)
        count = min(vectors, k + (vectors - entries), (k - 1) * self._max_templates + 1)
        if count == 1:
            nearest = approx.argmin(axis=1)[:, None]
        else:
            if count < vectors:
                nearest = np.argpartition(approx, count - 1, axis=1)[:, :count]
            else:
                nearest = np.broadcast_to(np.arange(vectors), approx.shape)
            order = np.argsort(np.take_along_axis(approx, nearest, axis=1), axis=1)
            nearest = np.take_along_axis(nearest, order, axis=1)
        by_entry = entry_of_row[nearest]
        if count == take:  # every row is a different entry already
            return np.ascontiguousarray(by_entry)
        chosen = np.empty((n_rows, take), dtype=np.int64)
        for row, candidates in enumerate(by_entry.tolist()):
            chosen[row] = list(dict.fromkeys(candidates))[:take]
        return chosen

    def _exact_distances(
        self, queries: np.ndarray, dense: _Dense, chosen: np.ndarray
    ) -> np.ndarray:
        """Float64 distances from each query to each chosen entry's closest template."""
        n, take = chosen.shape
        flat = chosen.ravel()
        lengths = dense.lengths[flat]
        total = int(lengths.sum())
        pair_start = np.cumsum(lengths) - lengths
        rows = np.repeat(dense.starts[flat], lengths) + (
            np.arange(total) - np.repeat(pair_start, lengths)
        )
        query_of = np.repeat(np.repeat(np.arange(n), take), lengths)
        templates = dense.matrix[rows].astype(np.float64)
        probes = queries[query_of].astype(np.float64)
        if self.metric == "cosine":
            templates /= np.linalg.norm(templates, axis=1, keepdims=True)
            probes /= np.linalg.norm(probes, axis=1, keepdims=True)
            values = np.clip(1.0 - np.einsum("ij,ij->i", templates, probes), 0.0, 2.0)
        else:
            diff = templates - probes
            values = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        best: np.ndarray = np.minimum.reduceat(values, pair_start).reshape(n, take)
        return best

    def _search_hnsw(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        vectors = len(self)
        # The nearest `count` vectors are sure to span k distinct entries (or all of them).
        duplicates = vectors - self.entry_count
        count = min(vectors, k + duplicates, (k - 1) * self._max_templates + 1)
        matches = self._index.search(queries, count)
        if hasattr(matches, "counts"):
            keys, raw, counts = matches.keys, matches.distances, matches.counts
        else:  # usearch answers a single query with a 1-d Matches
            keys, raw, counts = matches.keys[None, :], matches.distances[None, :], [len(matches)]
        euclidean = self.metric == "euclidean"
        out: list[list[Hit]] = []
        for row_keys, row_raw, found in zip(keys.tolist(), raw.tolist(), counts, strict=True):
            hits: list[Hit] = []
            seen: set[str] = set()
            for key, value in zip(row_keys[:found], row_raw[:found], strict=True):
                entry_id = self._entry_of.get(key)
                if entry_id is None or entry_id in seen:
                    continue
                seen.add(entry_id)
                distance = max(value, 0.0)  # rounding can leave a hair below zero
                hits.append((entry_id, math.sqrt(distance) if euclidean else distance))
                if len(hits) == k:
                    break
            hits.sort(key=lambda hit: (hit[1], hit[0]))
            out.append(hits)
        return out

    def save(self, directory: Path) -> None:
        """Write a snapshot into ``directory`` atomically (:mod:`lfr_actors.index.snapshot`).

        Removed templates are purged from the usearch index first, so none reaches the file.
        """
        self._purge_removed()
        write_snapshot(
            Path(directory),
            self._index,
            config=self.config,
            next_key=self._next_key,
            keys=self._entry_of,
            entries=self.entry_count,
        )

    @classmethod
    def load(cls, directory: Path, config: Mapping[str, Any] | None = None) -> ShardIndex:
        """Read the snapshot in ``directory``.

        With ``config``, its storage settings (dimension, metric, dtype, connectivity) must
        equal the snapshot's, else :class:`~lfr_actors.index.snapshot.IndexSnapshotError`;
        its search settings (mode, exact_below, expansions) replace the snapshot's.
        """
        snapshot = read_snapshot(directory, config)
        shard = cls(**asdict(snapshot.config))
        snapshot.load_into(shard._index)
        key_map = snapshot.keys
        grouped: dict[str, list[int]] = {}
        for key in sorted(key_map):
            grouped.setdefault(key_map[key], []).append(key)
        shard._keys = {entry: np.array(ks, dtype=np.uint64) for entry, ks in grouped.items()}
        shard._entry_of = key_map
        shard._next_key = max(snapshot.next_key, max(key_map, default=-1) + 1)
        shard._template_counts = Counter(len(k) for k in shard._keys.values())
        return shard


def _check_entry_id(entry_id: object) -> None:
    if not isinstance(entry_id, str) or not entry_id:
        raise ValueError(f"entry_id must be a non-empty string, got {entry_id!r}")
