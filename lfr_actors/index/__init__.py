"""The watchlist vector index: usearch shards, shard routing and top-k merging.

:class:`ShardIndex` is one shard (plain Python, no Ray), with its settings in
:mod:`~lfr_actors.index.config` and its snapshot files in :mod:`~lfr_actors.index.snapshot`;
:func:`shard_for` says which shard owns an entry and :func:`merge_topk` merges the shards'
answers. The Ray actors that wrap them live in :mod:`lfr_actors.actors.index`.
"""

from lfr_actors.index.config import ShardConfig
from lfr_actors.index.merge import Hit, merge_topk, shard_for
from lfr_actors.index.shard import ShardIndex, VectorIndex, check_vectors, usable_rows
from lfr_actors.index.snapshot import IndexSnapshotError, destroy_snapshot, has_snapshot

__all__ = [
    "Hit",
    "IndexSnapshotError",
    "ShardConfig",
    "ShardIndex",
    "VectorIndex",
    "check_vectors",
    "destroy_snapshot",
    "has_snapshot",
    "merge_topk",
    "shard_for",
    "usable_rows",
]
