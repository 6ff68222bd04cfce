"""The sharded index on real Ray: shard actors behind a router, against one plain shard.

Actors are made the way the kernel makes them (``ray.remote(cls).options(name=...,
namespace=...)``), so a shard can be killed and started again under its name.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from lfr_actors.actors.index import IndexRouterActor, IndexShardActor
from lfr_actors.actors.settings import RouterSettings, ShardSettings
from lfr_actors.index import ShardConfig, ShardIndex
from lfr_actors.messages import EnrolVectors, RemoveEntry, SearchRequest, SearchResult
from tests.ray_session import local_ray

NAMESPACE = "lfr-test-index"
DIM = 32
CONFIG: dict[str, Any] = {"dimension": DIM, "metric": "euclidean", "mode": "auto"}


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    with local_ray(NAMESPACE):
        yield


def start_actor(cls: type, name: str, *args: Any) -> Any:
    """Create an actor as the kernel does; retry while a killed namesake is released."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return (
                ray.remote(cls)
                .options(
                    name=name,
                    namespace=NAMESPACE,
                    num_cpus=0,
                    max_restarts=0,
                    max_concurrency=1000,
                )
                .remote(*args)
            )
        except ValueError:  # "the name is already taken" until Ray forgets the dead one
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Deployed:
    """Three shards and a router, under names unique to one test."""

    def __init__(self, folder: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.folder = folder
        self.shard_names = [f"shard_{i}_{tag}" for i in range(3)]
        self.shards = [self.start_shard(i) for i in range(3)]
        self.router = start_actor(
            IndexRouterActor,
            f"router_{tag}",
            RouterSettings(f"router_{tag}", tuple(self.shard_names), NAMESPACE),
        )
        ray.get([a.health.remote() for a in [*self.shards, self.router]])

    def start_shard(self, i: int) -> Any:
        name = self.shard_names[i]
        settings = ShardSettings(name, ShardConfig.from_mapping(CONFIG), str(self.folder / name))
        return start_actor(IndexShardActor, name, settings)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        reply = ray.get(self.router.search.remote(SearchRequest(queries, k=k).encode()))
        return [[(e, d) for e, d in row] for row in SearchResult.decode(reply).hits]

    def stop(self) -> None:
        for actor in [*self.shards, self.router]:
            ray.kill(actor, no_restart=True)


@pytest.fixture
def deployed(ray_session: None, tmp_path: Path) -> Iterator[Deployed]:
    index = Deployed(tmp_path)
    yield index
    index.stop()


def assert_same(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]]) -> None:
    assert [[e for e, _ in row] for row in got] == [[e for e, _ in row] for row in want]
    for got_row, want_row in zip(got, want, strict=True):
        assert [d for _, d in got_row] == pytest.approx([d for _, d in want_row], abs=1e-5)


def test_sharded_index_answers_like_one_index_and_survives_a_shard_restart(
    deployed: Deployed,
) -> None:
    rng = np.random.default_rng(11)
    plain = ShardIndex(DIM, "euclidean", mode="exact")
    calls = []
    for i in range(300):
        vectors = rng.standard_normal((1 + i % 3, DIM)).astype(np.float32)
        plain.add(f"person-{i}", vectors)
        calls.append(deployed.router.enrol.remote(EnrolVectors(f"person-{i}", vectors).encode()))
    assert sum(ray.get(calls)) == len(plain)
    per_shard = [ray.get(s.health.remote())["entries"] for s in deployed.shards]
    assert sum(per_shard) == 300 and min(per_shard) > 50  # every shard holds its share

    queries = rng.standard_normal((40, DIM)).astype(np.float32)
    assert_same(deployed.search(queries, k=5), plain.search(queries, k=5))

    removed = [f"person-{i}" for i in range(0, 300, 7)]
    counts = ray.get([deployed.router.remove.remote(RemoveEntry(e).encode()) for e in removed])
    assert counts == [plain.remove(e) for e in removed]
    before = deployed.search(queries, k=5)
    assert_same(before, plain.search(queries, k=5))

    folders = ray.get(deployed.router.snapshot.remote())
    assert sorted(Path(f).name for f in folders) == sorted(deployed.shard_names)
    ray.kill(deployed.shards[1], no_restart=True)
    deployed.shards[1] = deployed.start_shard(1)  # the kernel's restart: same name, same args
    assert_same(deployed.search(queries, k=5), before)
    stats = ray.get(deployed.router.stats.remote())
    assert stats["shard_errors"] >= 1 and stats["resolves"] >= 4
    assert stats["searches"] == 3 and stats["fanout_ms_p50"] > 0
    health = ray.get(deployed.router.health.remote())
    assert health["ok"] and health["entries"] == plain.entry_count

    ray.get(deployed.router.destroy.remote())
    assert all(not Path(f).exists() for f in folders)
    assert deployed.search(queries[:2], k=1) == [[], []]


def test_garbage_messages_are_counted_and_harm_nothing(deployed: Deployed) -> None:
    vectors = np.ones((1, DIM), np.float32)
    ray.get(deployed.router.enrol.remote(EnrolVectors("kept", vectors).encode()))
    assert SearchResult.decode(ray.get(deployed.router.search.remote(b"\x93garbage"))).hits == []
    assert ray.get(deployed.router.enrol.remote(b"not msgpack \xc1")) == 0
    shard = deployed.shards[0]
    assert SearchResult.decode(ray.get(shard.search.remote(b"\x00"))).hits == []

    assert ray.get(deployed.router.stats.remote())["decode_errors"] == 2
    assert ray.get(shard.stats.remote())["decode_errors"] == 1
    assert ray.get(shard.health.remote())["ok"]
    assert deployed.search(vectors, k=1) == [[("kept", 0.0)]]


def test_batches_enrol_and_remove_like_single_messages(deployed: Deployed) -> None:
    rng = np.random.default_rng(23)
    ray.get(deployed.router.destroy.remote())
    plain = ShardIndex(DIM, "euclidean", mode="exact")
    messages = []
    for i in range(500):
        vectors = rng.standard_normal((1 + i % 2, DIM)).astype(np.float32)
        plain.add(f"batch-{i}", vectors)
        messages.append(EnrolVectors(f"batch-{i}", vectors).encode())
    # A message that does not decode and one the index refuses are skipped, not fatal.
    wrong_dimension = EnrolVectors("bad", np.ones((1, DIM + 1), np.float32)).encode()
    stored = ray.get(deployed.router.enrol_many.remote([*messages, b"\xc1", wrong_dimension]))
    assert stored == len(plain)
    per_shard = [ray.get(s.health.remote())["entries"] for s in deployed.shards]
    assert sum(per_shard) == 500 and min(per_shard) > 100

    queries = rng.standard_normal((30, DIM)).astype(np.float32)
    assert_same(deployed.search(queries, k=3), plain.search(queries, k=3))
    gone = [f"batch-{i}" for i in range(0, 500, 3)]
    removed = ray.get(deployed.router.remove_many.remote([RemoveEntry(e).encode() for e in gone]))
    assert removed == sum(plain.remove(e) for e in gone)
    assert_same(deployed.search(queries, k=3), plain.search(queries, k=3))
    ray.get(deployed.router.destroy.remote())
