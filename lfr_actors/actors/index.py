"""The index actors: one per shard of the watchlist, and a router in front of them.

Both are plain classes; the kernel makes them Ray actors with ``ray.remote(cls).options(
name=..., namespace=...)``. Every method is ``async`` and exchanges msgpack messages
(:mod:`lfr_actors.messages`), never pickled objects.

Promises, in plain words:

- A message that cannot be decoded is counted, logged (``message_dropped``, with the
  reason and never the payload) and answered with an empty or zero result. The actor
  carries on.
- A search query row that holds NaN or infinite values (or a zero vector under cosine)
  gets no hits; the batch's other rows are searched as usual. It is counted.
- An enrolment whose vectors are invalid (wrong dimension, NaN) raises ``ValueError`` to
  the caller, so the enrolment is reported as failed; nothing stored is touched.
- A shard that starts with a snapshot in its folder loads it before it answers. Snapshots
  are derived from the store: a missing, truncated, corrupt or incompatible one is a
  warning (``snapshot_unusable``, with the cause), the shard starts empty and says so in
  its stats (``snapshot_fault``), and the deployment rebuilds it from the store
  (:mod:`lfr_actors.control.follow`) before it is trusted with searches.
- The router finds shards by name and finds them again after the kernel restarts one.
  A search reaches every shard with ONE call each, all at once; a shard that cannot be
  reached within ``retry_timeout_s`` makes the search fail loudly rather than answer from
  part of the watchlist.
- Embeddings exist only in the request being served; nothing here logs or stores them
  except the watchlist's own templates, in memory and in the deployment's snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ray
import ray.exceptions

from lfr_actors.actors.settings import RouterSettings, ShardSettings
from lfr_actors.errors import LfrError
from lfr_actors.index.merge import Hit, merge_topk, shard_for
from lfr_actors.index.shard import ShardIndex, usable_rows
from lfr_actors.index.snapshot import IndexSnapshotError, destroy_snapshot, has_snapshot
from lfr_actors.kernel.calls import ActorCalls
from lfr_actors.logs import configure as configure_logging
from lfr_actors.logs import get_logger
from lfr_actors.messages import (
    EnrolVectors,
    Message,
    MessageDecodeError,
    RemoveEntry,
    SearchRequest,
    SearchResult,
)
from lfr_actors.percentiles import percentile

_REASON_CHARS = 200

M = TypeVar("M", bound=Message)


def _decode_or_drop(
    message_type: type[M], data: bytes, dropped: Callable[[BaseException], None]
) -> M | None:
    """``data`` decoded as ``message_type``, or None when it does not decode.

    A message that does not decode is handed to ``dropped`` (which counts and logs it)
    and never raised.
    """
    try:
        return message_type.decode(data)
    except MessageDecodeError as exc:
        dropped(exc)
        return None


class ShardUnavailableError(LfrError):
    """An index shard could not be reached within the router's retry time."""


def _reason(exc: BaseException) -> str:
    # Decode errors name types, fields, shapes and sizes, never array contents; capped anyway.
    return f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]


class IndexShardActor:
    """One shard of the watchlist index, holding the entries :func:`shard_for` gives it."""

    def __init__(self, settings: ShardSettings) -> None:
        configure_logging()
        self.shard_id = settings.shard_id
        self.log = get_logger("lfr.index.shard").bind(actor=self.shard_id)
        self.snapshot_dir = Path(settings.snapshot_dir) if settings.snapshot_dir else None
        config = settings.index_config()
        self.counters = {
            "searches": 0,
            "queries": 0,
            "invalid_queries": 0,
            "enrolled": 0,
            "removed": 0,
            "decode_errors": 0,
            "rejected": 0,
            "snapshots": 0,
        }
        started = time.perf_counter()
        self.snapshot_fault: str | None = None
        if self.snapshot_dir is not None and has_snapshot(self.snapshot_dir):
            try:
                self.index = ShardIndex.load(self.snapshot_dir, config=config)
            except (IndexSnapshotError, OSError, ValueError, RuntimeError) as exc:
                # Derived data: the deployment rebuilds the shard from the store.
                self.snapshot_fault = _reason(exc)
                self.log.warning(
                    "snapshot_unusable",
                    reason=self.snapshot_fault,
                    action="starting empty; the index is rebuilt from the store",
                )
                self.index = ShardIndex.from_config(config)
            else:
                self.log.info(
                    "snapshot_loaded",
                    vectors=len(self.index),
                    entries=self.index.entry_count,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
        else:
            self.index = ShardIndex.from_config(config)

    def _dropped(self, kind: str, exc: BaseException) -> None:
        self.counters[kind] += 1
        self.log.warning("message_dropped", actor=self.shard_id, reason=_reason(exc))

    def _undecodable(self, exc: BaseException) -> None:
        self._dropped("decode_errors", exc)

    async def enrol(self, data: bytes) -> int:
        """Store an :class:`EnrolVectors` entry (replacing its old templates); vectors stored."""
        message = _decode_or_drop(EnrolVectors, data, self._undecodable)
        if message is None:
            return 0
        try:
            count = self.index.add(message.entry_id, message.vectors)
        except ValueError as exc:
            self.counters["rejected"] += 1
            self.log.warning("enrolment_rejected", reason=_reason(exc))
            raise
        self.counters["enrolled"] += 1
        return count

    async def remove(self, data: bytes) -> int:
        """Remove a :class:`RemoveEntry`'s entry; returns the vectors removed (0 if unknown)."""
        message = _decode_or_drop(RemoveEntry, data, self._undecodable)
        if message is None:
            return 0
        removed = self.index.remove(message.entry_id)
        if removed:
            self.counters["removed"] += 1
        return removed

    async def enrol_many(self, messages: list[bytes]) -> int:
        """:meth:`enrol` for many :class:`EnrolVectors` in one call; vectors stored.

        A message that does not decode is counted and skipped; one the index refuses (a
        wrong dimension) is counted, logged and skipped, and the rest are still stored.
        """
        stored = 0
        for data in messages:
            with contextlib.suppress(ValueError):
                stored += await self.enrol(data)
        return stored

    async def remove_many(self, messages: list[bytes]) -> int:
        """:meth:`remove` for many :class:`RemoveEntry` in one call; vectors removed."""
        removed = 0
        for data in messages:
            removed += await self.remove(data)
        return removed

    async def search(self, data: bytes) -> bytes:
        """Answer a :class:`SearchRequest` with a :class:`SearchResult` (one list per row)."""
        request = _decode_or_drop(SearchRequest, data, self._undecodable)
        if request is None:
            return SearchResult(hits=[]).encode()
        rows = request.vectors.shape[0]
        self.counters["searches"] += 1
        self.counters["queries"] += rows
        try:
            hits = self._search(request)
        except ValueError as exc:  # wrong dimension, negative max_distance
            self._dropped("rejected", exc)
            hits = [[] for _ in range(rows)]
        return SearchResult(hits=hits).encode()

    def _search(self, request: SearchRequest) -> list[list[Hit]]:
        vectors = request.vectors
        if vectors.shape[1] == self.index.dimension:
            usable = usable_rows(vectors, self.index.metric)
            if not usable.all():
                bad = int((~usable).sum())
                self.counters["invalid_queries"] += bad
                self.log.warning("queries_skipped", rows=bad, reason="non-finite or zero vector")
                found = self.index.search(vectors[usable], request.k, request.max_distance)
                hits: list[list[Hit]] = [[] for _ in range(vectors.shape[0])]
                for row, row_hits in zip(np.flatnonzero(usable).tolist(), found, strict=True):
                    hits[row] = row_hits
                return hits
        return self.index.search(vectors, request.k, request.max_distance)

    async def snapshot(self) -> str:
        """Save the shard to its snapshot folder (atomically); returns the folder."""
        if self.snapshot_dir is None:
            raise LfrError(
                f"index shard {self.shard_id} has no snapshot folder; give the deployment a "
                "data folder so its index can be saved"
            )
        started = time.perf_counter()
        self.index.save(self.snapshot_dir)
        self.counters["snapshots"] += 1
        self.log.info(
            "snapshot_saved",
            vectors=len(self.index),
            entries=self.index.entry_count,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return str(self.snapshot_dir)

    async def destroy(self) -> None:
        """Forget every entry and delete the snapshot: the deployment has ended."""
        self.index.clear()
        if self.snapshot_dir is not None:
            destroy_snapshot(self.snapshot_dir)
        self.log.debug("shard_destroyed")

    async def health(self) -> dict[str, Any]:
        """Liveness and size."""
        return {
            "ok": True,
            "shard_id": self.shard_id,
            "vectors": len(self.index),
            "entries": self.index.entry_count,
            "mode": self.index.mode_in_use,
        }

    async def stats(self) -> dict[str, Any]:
        """Counters since start, and the current size."""
        return {
            **self.counters,
            "vectors": len(self.index),
            "entries": self.index.entry_count,
            "mode": self.index.mode_in_use,
            "snapshot_fault": self.snapshot_fault,
            "pid": os.getpid(),
        }


class IndexRouterActor:
    """The index's front door: routes enrolments to shards, fans searches out, merges."""

    def __init__(self, settings: RouterSettings) -> None:
        configure_logging()
        shard_names = list(settings.shard_names)
        if not shard_names:
            raise ValueError(f"index router {settings.router_id} needs at least one shard name")
        duplicates = sorted({n for n in shard_names if shard_names.count(n) > 1})
        if duplicates:
            raise ValueError(f"index router {settings.router_id}: shard names repeat: {duplicates}")
        self.router_id = settings.router_id
        self.shard_names = shard_names
        self.namespace = settings.namespace
        self.retry_timeout_s = settings.retry_timeout_s
        self.health_timeout_s = settings.health_timeout_s
        self.log = get_logger("lfr.index.router").bind(actor=self.router_id)
        self._calls = ActorCalls(self.namespace)
        self._fanout_ms: deque[float] = deque(maxlen=settings.latency_window)
        self.counters = {
            "searches": 0,
            "queries": 0,
            "enrolled": 0,
            "removed": 0,
            "decode_errors": 0,
            "shard_errors": 0,
        }

    def _shard_retry(self, name: str, error: BaseException, attempt: int) -> None:
        self.counters["shard_errors"] += 1
        self.log.warning("shard_retry", shard=name, reason=type(error).__name__)

    async def _call(self, shard: int, method: str, *args: Any) -> Any:
        """Call one shard, finding it again (on the kernel's retry policy) if it was replaced."""
        name = self.shard_names[shard]
        try:
            return await self._calls.call(
                name, method, *args, deadline_s=self.retry_timeout_s, retried=self._shard_retry
            )
        except (ValueError, ray.exceptions.RayActorError) as error:
            if isinstance(error, ray.exceptions.RayTaskError):
                raise  # the shard's own error (it refused the request), not a lost shard
            self.counters["shard_errors"] += 1
            self.log.error("shard_unavailable", shard=name, reason=type(error).__name__)
            raise ShardUnavailableError(
                f"index shard {name} (namespace {self.namespace}) did not answer within "
                f"{self.retry_timeout_s:g} s: {type(error).__name__}; check its status"
            ) from error

    def _dropped(self, exc: BaseException) -> None:
        self.counters["decode_errors"] += 1
        self.log.warning("message_dropped", actor=self.router_id, reason=_reason(exc))

    async def _to_owner(
        self, message_type: type[EnrolVectors] | type[RemoveEntry], method: str, data: bytes
    ) -> int | None:
        """Call ``method`` with ``data`` on the shard that owns its entry.

        None (the message counted and dropped) when ``data`` does not decode as
        ``message_type``.
        """
        message = _decode_or_drop(message_type, data, self._dropped)
        if message is None:
            return None
        answer: int = await self._call(
            shard_for(message.entry_id, len(self.shard_names)), method, data
        )
        return answer

    async def enrol(self, data: bytes) -> int:
        """Send an :class:`EnrolVectors` message to the shard that owns its entry."""
        count = await self._to_owner(EnrolVectors, "enrol", data)
        if count is None:
            return 0
        self.counters["enrolled"] += 1
        return count

    async def remove(self, data: bytes) -> int:
        """Send a :class:`RemoveEntry` message to the shard that owns its entry."""
        removed = await self._to_owner(RemoveEntry, "remove", data)
        if removed:
            self.counters["removed"] += 1
        return removed or 0

    async def enrol_many(self, messages: list[bytes]) -> int:
        """Send many :class:`EnrolVectors` messages, one call per shard; vectors stored.

        Loading a large watchlist this way costs a call per shard per batch rather than a
        call per entry (Ray sustains only a few thousand calls a second on a small node).
        """
        return await self._fan_out("enrol", EnrolVectors, messages, "enrolled")

    async def remove_many(self, messages: list[bytes]) -> int:
        """Send many :class:`RemoveEntry` messages, one call per shard; vectors removed."""
        return await self._fan_out("remove", RemoveEntry, messages, "removed")

    async def _fan_out(
        self,
        method: str,
        kind: type[EnrolVectors] | type[RemoveEntry],
        messages: list[bytes],
        counter: str,
    ) -> int:
        by_shard: dict[int, list[bytes]] = {}
        for data in messages:
            message = _decode_or_drop(kind, data, self._dropped)
            if message is None:
                continue
            by_shard.setdefault(shard_for(message.entry_id, len(self.shard_names)), []).append(data)
        counts = await asyncio.gather(
            *(self._call(shard, f"{method}_many", batch) for shard, batch in by_shard.items())
        )
        self.counters[counter] += sum(len(batch) for batch in by_shard.values())
        return int(sum(counts))

    async def search(self, data: bytes) -> bytes:
        """Search every shard with the same request at once; merge to the overall top k."""
        request = _decode_or_drop(SearchRequest, data, self._dropped)
        if request is None:
            return SearchResult(hits=[]).encode()
        rows = request.vectors.shape[0]
        self.counters["searches"] += 1
        self.counters["queries"] += rows
        if rows == 0:
            return SearchResult(hits=[]).encode()
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(self._call(shard, "search", data) for shard in range(len(self.shard_names)))
        )
        self._fanout_ms.append((time.perf_counter() - started) * 1000)
        per_shard: list[list[list[Hit]]] = []
        for shard, reply in enumerate(replies):
            result = _decode_or_drop(SearchResult, reply, self._dropped)
            hits = [] if result is None else result.hits
            if len(hits) != rows:  # the shard dropped the request; it has logged why
                self.log.warning("shard_answer_empty", shard=self.shard_names[shard])
                hits = [[] for _ in range(rows)]
            per_shard.append(hits)
        return SearchResult(hits=merge_topk(per_shard, request.k)).encode()

    async def snapshot(self) -> list[str]:
        """Snapshot every shard; returns their folders."""
        folders = await asyncio.gather(
            *(self._call(shard, "snapshot") for shard in range(len(self.shard_names)))
        )
        return [str(folder) for folder in folders]

    async def destroy(self) -> None:
        """Destroy every shard's entries and snapshot (the deployment has ended)."""
        await asyncio.gather(
            *(self._call(shard, "destroy") for shard in range(len(self.shard_names)))
        )
        # DEBUG: every start clears the index before loading the store's entries; an
        # operator reading "destroyed" there would think something was lost.
        self.log.debug("index_destroyed", shards=len(self.shard_names))

    async def _shard_health(self, shard: int) -> dict[str, Any]:
        name = self.shard_names[shard]
        try:
            handle = await asyncio.wait_for(self._calls.handle(name), self.health_timeout_s)
            answer: dict[str, Any] = await asyncio.wait_for(
                _awaited(handle.health.remote()), self.health_timeout_s
            )
        except Exception as exc:
            self._calls.forget(name)
            return {"ok": False, "shard_id": name, "error": _reason(exc)}
        return answer

    async def health(self) -> dict[str, Any]:
        """The router is alive; ``ok`` says whether every shard answered too."""
        shards = await asyncio.gather(
            *(self._shard_health(shard) for shard in range(len(self.shard_names)))
        )
        return {
            "ok": all(s.get("ok") for s in shards),
            "router_id": self.router_id,
            "shards": {name: s for name, s in zip(self.shard_names, shards, strict=True)},
            "vectors": sum(int(s.get("vectors", 0)) for s in shards),
            "entries": sum(int(s.get("entries", 0)) for s in shards),
        }

    async def stats(self) -> dict[str, Any]:
        """Counters since start and the fan-out latency over the recent searches."""
        window = sorted(self._fanout_ms)
        return {
            **self.counters,
            "resolves": self._calls.resolves,
            "shards": len(self.shard_names),
            "fanout_ms_p50": _rounded(percentile(window, 0.50)),
            "fanout_ms_p95": _rounded(percentile(window, 0.95)),
            "fanout_window": len(window),
        }


async def _awaited(ref: Any) -> Any:
    return await ref


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
