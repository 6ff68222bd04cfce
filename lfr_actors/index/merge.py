"""Pure helpers of the sharded index: which shard owns an entry, and merging shard answers.

Both are plain functions with no state, so the router actor, the in-process benchmark and
the tests share one definition of "where does entry X live" and "what is the top k".
"""

from __future__ import annotations

import hashlib

Hit = tuple[str, float]
"""One search hit: ``(entry_id, distance)``; lower distance is more alike."""


def shard_for(entry_id: str, shards: int) -> int:
    """The shard (``0 .. shards-1``) that owns ``entry_id``.

    A BLAKE2b digest of the UTF-8 id, so the answer is the same in every process and after
    every restart (Python's ``hash()`` of a string is salted per process and would scatter
    an entry over different shards after a restart).
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    if not isinstance(entry_id, str):
        raise ValueError(f"entry_id must be a string, got {type(entry_id).__name__}")
    digest = hashlib.blake2b(entry_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def merge_topk(per_shard: list[list[list[Hit]]], k: int) -> list[list[Hit]]:
    """Merge each shard's per-query hits into the overall ``k`` nearest distinct entries.

    ``per_shard[s][q]`` is shard ``s``'s hits for query ``q``. Every shard must answer the
    same number of queries. An entry reported by several shards (it should live on one
    only, but a re-sharding could briefly leave a copy) keeps its smallest distance. Ties
    are broken by entry id so the answer does not depend on shard order.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not per_shard:
        return []
    queries = len(per_shard[0])
    counts = [len(shard) for shard in per_shard]
    if any(count != queries for count in counts):
        raise ValueError(f"every shard must answer the same number of queries, got {counts}")
    merged: list[list[Hit]] = []
    for q in range(queries):
        best: dict[str, float] = {}
        for shard in per_shard:
            for entry_id, distance in shard[q]:
                previous = best.get(entry_id)
                if previous is None or distance < previous:
                    best[entry_id] = distance
        ranked = sorted(best.items(), key=lambda hit: (hit[1], hit[0]))
        merged.append([(entry_id, float(distance)) for entry_id, distance in ranked[:k]])
    return merged
