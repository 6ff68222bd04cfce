"""The watchlist index without Ray: ShardIndex, snapshots, merge_topk, shard_for, the
in-memory double, and the shard actor class driven directly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from structlog.testing import capture_logs

from lfr_actors.actors.index import IndexShardActor
from lfr_actors.actors.settings import ShardSettings
from lfr_actors.index import (
    IndexSnapshotError,
    ShardConfig,
    ShardIndex,
    destroy_snapshot,
    has_snapshot,
    merge_topk,
    shard_for,
)
from lfr_actors.messages import EnrolVectors, RemoveEntry, SearchRequest, SearchResult
from lfr_actors.testing.index import InMemoryIndex

DIM = 16


def _shard(shard_id: str, config: dict[str, Any], snapshot_dir: str | None) -> ShardSettings:
    """A shard actor's settings from the index's plain settings mapping."""
    return ShardSettings(shard_id, ShardConfig.from_mapping(config), snapshot_dir)


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(
    templates: dict[str, np.ndarray], queries: np.ndarray, metric: Any, k: int
) -> list[list[tuple[str, float]]]:
    out = []
    for q in queries.astype(np.float64):
        scores = []
        for entry_id, t in templates.items():
            t64 = t.astype(np.float64)
            if metric == "euclidean":
                d = float(np.sqrt(((t64 - q) ** 2).sum(axis=1)).min())
            else:
                sims = (t64 / np.linalg.norm(t64, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
                d = float(1.0 - sims.max())
            scores.append((entry_id, d))
        scores.sort(key=lambda h: (h[1], h[0]))
        out.append(scores[:k])
    return out


def ids(hits: list[list[tuple[str, float]]]) -> list[list[str]]:
    return [[entry_id for entry_id, _ in row] for row in hits]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def watchlist(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """60 entries with 1 to 3 templates each, as enrolment photos give them."""
    return {f"e{i:03d}": unit_rows(rng, 1 + i % 3) for i in range(60)}


def filled(templates: dict[str, np.ndarray], **kwargs: Any) -> ShardIndex:
    index = ShardIndex(DIM, kwargs.pop("metric", "euclidean"), **kwargs)
    for entry_id, vectors in templates.items():
        index.add(entry_id, vectors)
    return index


# -- ShardIndex ----------------------------------------------------------------------------


def test_known_vectors_give_known_distances() -> None:
    index = ShardIndex(2, "euclidean", mode="exact")
    index.add("a", np.array([[0.0, 0.0]], np.float32))
    index.add("b", np.array([[3.0, 4.0]], np.float32))
    hits = index.search(np.array([[0.0, 0.0], [3.0, 3.0]], np.float32), k=2)
    assert hits == [[("a", 0.0), ("b", 5.0)], [("b", 1.0), ("a", pytest.approx(18**0.5))]]


@pytest.mark.parametrize("k", [1, 3, 100])
@pytest.mark.parametrize("mode", ["exact", "hnsw"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_search_matches_brute_force(
    watchlist: dict[str, np.ndarray], rng: np.random.Generator, mode: Any, metric: Any, k: int
) -> None:
    index = filled(watchlist, metric=metric, mode=mode)
    queries = np.vstack([v[:1] for v in watchlist.values()][::4])
    queries = (queries + 0.05 * rng.standard_normal(queries.shape)).astype(np.float32)
    got = index.search(queries, k=k)
    want = brute_force(watchlist, queries, metric, k)
    assert all(len(row) == min(k, len(watchlist)) for row in got)
    assert ids(got) == ids(want)
    for got_row, want_row in zip(got, want, strict=True):
        assert [d for _, d in got_row] == pytest.approx([d for _, d in want_row], abs=1e-5)


def test_euclidean_distances_equal_numpy_even_near_zero(rng: np.random.Generator) -> None:
    # Large-norm vectors are where |q|^2 - 2q.x + |x|^2 in float32 would lose the answer.
    vectors = (100 * rng.standard_normal((50, DIM))).astype(np.float32)
    index = ShardIndex(DIM, "euclidean", mode="exact")
    for i, v in enumerate(vectors):
        index.add(f"e{i}", v[None, :])
    queries = vectors[:5] + np.float32(1e-3)
    hits = index.search(queries, k=1)
    expected = np.linalg.norm(queries.astype(np.float64) - vectors[:5].astype(np.float64), axis=1)
    assert ids(hits) == [[f"e{i}"] for i in range(5)]
    assert [row[0][1] for row in hits] == pytest.approx(expected.tolist(), rel=1e-6)


def test_cosine_distance_is_one_minus_similarity() -> None:
    index = ShardIndex(2, "cosine", mode="exact")
    index.add("x", np.array([[2.0, 0.0]], np.float32))
    index.add("y", np.array([[0.0, 5.0]], np.float32))
    hits = index.search(np.array([[1.0, 1.0]], np.float32), k=2)
    assert [e for e, _ in hits[0]] == ["x", "y"]
    assert [d for _, d in hits[0]] == pytest.approx([1 - 2**-0.5, 1 - 2**-0.5])
    assert index.search(np.array([[-3.0, 0.0]], np.float32), k=2) == [[("y", 1.0), ("x", 2.0)]]


@pytest.mark.parametrize("mode", ["exact", "hnsw"])
def test_k_distinct_entries_at_their_closest_template(mode: Any) -> None:
    index = ShardIndex(2, "euclidean", mode=mode)
    # "near" has three templates all closer than "far"'s only one.
    index.add("near", np.array([[1.0, 0.0], [1.1, 0.0], [1.2, 0.0]], np.float32))
    index.add("far", np.array([[5.0, 0.0]], np.float32))
    index.add("farther", np.array([[9.0, 0.0]], np.float32))
    hits = index.search(np.array([[0.0, 0.0]], np.float32), k=2)
    assert hits == [[("near", 1.0), ("far", 5.0)]]
    assert index.search(np.array([[0.0, 0.0]], np.float32), k=10)[0][-1] == ("farther", 9.0)


@pytest.mark.parametrize("mode", ["exact", "hnsw"])
def test_max_distance_keeps_only_close_hits(mode: Any) -> None:
    index = ShardIndex(1, "euclidean", mode=mode)
    for i in range(5):
        index.add(f"e{i}", np.array([[float(i)]], np.float32))
    hits = index.search(np.array([[0.0], [10.0]], np.float32), k=5, max_distance=2.0)
    assert hits == [[("e0", 0.0), ("e1", 1.0), ("e2", 2.0)], []]


def test_add_replaces_and_remove_forgets(rng: np.random.Generator) -> None:
    index = ShardIndex(DIM, "euclidean", mode="exact")
    first, second = unit_rows(rng, 3), unit_rows(rng, 1)
    assert index.add("p", first) == 3
    assert (len(index), index.entry_count) == (3, 1)
    assert index.add("p", second) == 1
    assert (len(index), index.entry_count) == (1, 1)
    assert index.search(first[:1], k=1)[0][0][1] == pytest.approx(
        float(np.linalg.norm(first[0] - second[0])), rel=1e-6
    )
    index.add("q", first)
    assert index.entries() == ["p", "q"]
    assert index.remove("p") == 1
    assert index.remove("p") == 0
    assert index.remove("never") == 0
    assert index.entries() == ["q"]
    assert ids(index.search(second, k=5)) == [["q"]]


def test_add_many_equals_one_by_one_and_is_all_or_nothing(
    watchlist: dict[str, np.ndarray], rng: np.random.Generator
) -> None:
    # Exact mode: HNSW graphs built by a batch (on several threads) and one insert at a
    # time differ, so only exact search can show that both hold the same vectors.
    one_by_one = filled(watchlist, mode="exact")
    batched = ShardIndex(DIM, "euclidean", mode="exact")
    batched.add("e000", unit_rows(rng, 2))  # replaced by the batch below
    assert batched.add_many(watchlist.items()) == sum(len(v) for v in watchlist.values())
    queries = unit_rows(rng, 10)
    assert ids(batched.search(queries, k=3)) == ids(one_by_one.search(queries, k=3))
    assert (len(batched), batched.entry_count) == (len(one_by_one), one_by_one.entry_count)

    before = len(batched)
    good, bad = ("new", unit_rows(rng, 1)), ("broken", np.ones((1, DIM), np.float64))
    with pytest.raises(ValueError, match="templates of entry 'broken' must be float32"):
        batched.add_many([good, bad])
    with pytest.raises(ValueError, match="entry 'new' appears twice"):
        batched.add_many([good, good])
    assert len(batched) == before and "new" not in batched
    assert batched.add_many([]) == 0


def test_empty_index_and_empty_query() -> None:
    index = ShardIndex(DIM, "cosine")
    assert index.search(np.ones((2, DIM), np.float32), k=3) == [[], []]
    assert index.search(np.zeros((0, DIM), np.float32)) == []


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_and_hnsw_agree_on_random_data(metric: Any) -> None:
    rng = np.random.default_rng(3)
    data = unit_rows(rng, 2000, 32)
    queries = (data[::20] + 0.02 * rng.standard_normal((100, 32))).astype(np.float32)
    exact = ShardIndex(32, metric, mode="exact")
    hnsw = ShardIndex(32, metric, mode="hnsw")
    for i, v in enumerate(data):
        exact.add(f"e{i}", v[None, :])
        hnsw.add(f"e{i}", v[None, :])
    truth = [row[0][0] for row in exact.search(queries, k=1)]
    approx = [row[0][0] for row in hnsw.search(queries, k=1)]
    assert truth == [f"e{i}" for i in range(0, 2000, 20)]
    assert np.mean([a == b for a, b in zip(truth, approx, strict=True)]) >= 0.99


def test_auto_switches_from_exact_to_hnsw(rng: np.random.Generator) -> None:
    index = ShardIndex(DIM, "euclidean", mode="auto", exact_below=5)
    templates = {f"e{i}": unit_rows(rng, 2) for i in range(4)}
    for entry_id, vectors in templates.items():
        index.add(entry_id, vectors)
    assert index.mode_in_use == "exact"
    templates["e4"] = unit_rows(rng, 1)
    index.add("e4", templates["e4"])
    assert index.mode_in_use == "hnsw"
    probe = unit_rows(rng, 3)
    assert ids(index.search(probe, k=5)) == ids(brute_force(templates, probe, "euclidean", 5))
    index.remove("e4")
    assert index.mode_in_use == "exact"


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_save_load_round_trip(
    tmp_path: Path, watchlist: dict[str, np.ndarray], rng: np.random.Generator, dtype: Any
) -> None:
    index = filled(watchlist, mode="hnsw", dtype=dtype)
    index.remove("e001")
    index.add("e002", unit_rows(rng, 2))
    queries = unit_rows(rng, 20)
    index.save(tmp_path / "shard")
    index.save(tmp_path / "shard")  # a second save leaves one index file, not two
    # Compared after saving: a save after a removal rebuilds the HNSW graph (with several
    # threads, so not node for node the same), and the snapshot holds the rebuilt graph.
    before = index.search(queries, k=3)
    files = sorted(p.name for p in (tmp_path / "shard").iterdir())
    assert len(files) == 2 and "snapshot.json" in files
    loaded = ShardIndex.load(tmp_path / "shard")
    assert loaded.search(queries, k=3) == before
    assert (len(loaded), loaded.entries(), loaded.config) == (
        len(index),
        index.entries(),
        index.config,
    )
    # New keys after a load never collide with stored ones.
    loaded.add("new", unit_rows(rng, 2))
    assert loaded.search(queries, k=3) != [] and "new" in loaded.entries()
    assert len(loaded) == len(index) + 2


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_removed_and_replaced_templates_leave_no_trace_in_a_snapshot(
    tmp_path: Path, dtype: Any
) -> None:
    np_dtype = np.float32 if dtype == "f32" else np.float16
    removed = np.full((1, DIM), 1234.5, np.float32)
    replaced = np.full((1, DIM), -777.25, np.float32)
    kept = np.full((1, DIM), 3.0, np.float32)
    index = ShardIndex(DIM, "euclidean", mode="hnsw", dtype=dtype)
    index.add("gone", removed)
    index.add("changed", replaced)
    index.add("kept", kept)
    index.remove("gone")
    index.add("changed", kept + 1)
    index.save(tmp_path)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert kept.astype(np_dtype).tobytes() in stored  # the check can see vectors at all
    assert removed.astype(np_dtype).tobytes() not in stored
    assert replaced.astype(np_dtype).tobytes() not in stored
    loaded = ShardIndex.load(tmp_path)
    assert loaded.entries() == ["changed", "kept"]
    assert ids(loaded.search(kept, k=2)) == [["kept", "changed"]]


def test_manifest_maps_integer_keys_to_entries(tmp_path: Path) -> None:
    index = ShardIndex(2, "euclidean")
    index.add("a", np.ones((2, 2), np.float32))
    index.save(tmp_path)
    manifest = json.loads((tmp_path / "snapshot.json").read_text())
    assert manifest["keys"] == {"0": "a", "1": "a"}
    assert manifest["config"]["dimension"] == 2


def test_load_with_config_checks_storage_and_takes_search_settings(
    tmp_path: Path, watchlist: dict[str, np.ndarray]
) -> None:
    filled(watchlist).save(tmp_path)
    loaded = ShardIndex.load(
        tmp_path, config={"dimension": DIM, "metric": "euclidean", "mode": "hnsw"}
    )
    assert loaded.mode_in_use == "hnsw"
    with pytest.raises(IndexSnapshotError, match=r"dimension: snapshot 16, configured 8"):
        ShardIndex.load(tmp_path, config={"dimension": 8, "metric": "euclidean"})
    with pytest.raises(IndexSnapshotError, match=r"metric: snapshot 'euclidean'"):
        ShardIndex.load(tmp_path, config={"dimension": DIM, "metric": "cosine"})


def test_corrupt_or_missing_snapshot_is_a_clear_error(
    tmp_path: Path, watchlist: dict[str, np.ndarray]
) -> None:
    with pytest.raises(IndexSnapshotError, match=r"snapshot\.json is missing"):
        ShardIndex.load(tmp_path / "nothing")
    filled(watchlist).save(tmp_path)
    index_file = next(tmp_path.glob("index-*.usearch"))
    data = bytearray(index_file.read_bytes())
    data[-1] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(IndexSnapshotError, match="SHA-256 does not match"):
        ShardIndex.load(tmp_path)
    (tmp_path / "snapshot.json").write_text("{not json")
    with pytest.raises(IndexSnapshotError, match="unreadable snapshot manifest"):
        ShardIndex.load(tmp_path)


def test_clear_and_destroy_snapshot(tmp_path: Path, watchlist: dict[str, np.ndarray]) -> None:
    index = filled(watchlist)
    folder = tmp_path / "deployment" / "index" / "shard_0"
    index.save(folder)
    assert has_snapshot(folder)
    (folder / ".index-stale.usearch.tmp").write_bytes(b"half written")
    index.clear()
    assert (len(index), index.entry_count, index.entries()) == (0, 0, [])
    assert index.search(unit_rows(np.random.default_rng(0), 1)) == [[]]
    destroy_snapshot(folder)
    assert not folder.exists()
    destroy_snapshot(folder)  # nothing left: still fine


def test_destroy_snapshot_leaves_files_it_does_not_own(tmp_path: Path) -> None:
    index = ShardIndex(2, "euclidean")
    index.add("a", np.ones((1, 2), np.float32))
    index.save(tmp_path)
    (tmp_path / "README").write_text("someone else's")
    destroy_snapshot(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.ones((1, DIM), np.float64), "must be float32, got float64"),
        (np.ones(DIM, np.float32), "must be 2-d"),
        (np.ones((1, DIM + 1), np.float32), f"dimension {DIM + 1}, this index holds {DIM}-d"),
        (np.full((2, DIM), np.nan, np.float32), r"rows \[0, 1\] hold NaN"),
        (np.zeros((0, DIM), np.float32), "at least one vector"),
        ([[0.0] * DIM], "must be a numpy array, got list"),
    ],
)
def test_bad_templates_are_rejected_and_change_nothing(vectors: Any, message: str) -> None:
    index = ShardIndex(DIM, "euclidean")
    index.add("kept", np.ones((1, DIM), np.float32))
    with pytest.raises(ValueError, match=message):
        index.add("kept", vectors)
    assert (len(index), index.entries()) == (1, ["kept"])


def test_bad_queries_and_settings_are_rejected() -> None:
    index = ShardIndex(DIM, "cosine")
    with pytest.raises(ValueError, match="NaN, infinite or zero"):
        index.search(np.zeros((1, DIM), np.float32))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.ones((1, DIM), np.float32), k=0)
    with pytest.raises(ValueError, match="max_distance must be"):
        index.search(np.ones((1, DIM), np.float32), max_distance=-1.0)
    with pytest.raises(ValueError, match="entry_id must be a non-empty string"):
        index.add("", np.ones((1, DIM), np.float32))
    with pytest.raises(ValueError, match="metric must be one of"):
        ShardIndex(DIM, "manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype 'i8' needs metric 'cosine'"):
        ShardIndex(DIM, "euclidean", dtype="i8")
    with pytest.raises(ValueError, match=r"unknown index setting\(s\) \['shards'\]"):
        ShardIndex.from_config({"dimension": DIM, "metric": "cosine", "shards": 2})


def test_i8_cosine_keeps_the_ranking(watchlist: dict[str, np.ndarray]) -> None:
    exact = filled(watchlist, metric="cosine", mode="exact")
    small = filled(watchlist, metric="cosine", mode="exact", dtype="i8")
    probes = np.vstack([v[:1] for v in watchlist.values()])
    assert ids(small.search(probes, k=1)) == ids(exact.search(probes, k=1))


# -- merge_topk and shard_for --------------------------------------------------------------


def test_merge_topk_merges_sorts_and_dedupes() -> None:
    shard_a = [[("a", 0.5), ("b", 0.9)], []]
    shard_b = [[("c", 0.1), ("b", 0.7)], [("d", 0.3)]]
    assert merge_topk([shard_a, shard_b], k=2) == [[("c", 0.1), ("a", 0.5)], [("d", 0.3)]]
    assert merge_topk([shard_a, shard_b], k=5)[0] == [("c", 0.1), ("a", 0.5), ("b", 0.7)]
    # Ties break by entry id, whatever the shard order.
    assert merge_topk([[[("z", 1.0)]], [[("y", 1.0)]]], k=2) == [[("y", 1.0), ("z", 1.0)]]
    assert merge_topk([], k=1) == []


def test_merge_topk_rejects_mismatched_shards_and_bad_k() -> None:
    with pytest.raises(ValueError, match=r"same number of queries, got \[1, 2\]"):
        merge_topk([[[]], [[], []]], k=1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        merge_topk([[[]]], k=0)


def test_shard_for_is_stable_and_spread() -> None:
    assert [shard_for("alice", n) for n in (1, 2, 3, 4, 16)] == [0, 1, 1, 1, 9]
    assert [shard_for("entry-0001", n) for n in (1, 2, 3, 4, 16)] == [0, 0, 1, 0, 12]
    assert shard_for("Zoë", 16) == 10
    counts = np.bincount([shard_for(f"e{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900
    with pytest.raises(ValueError, match="shards must be a positive integer"):
        shard_for("alice", 0)


def test_shard_for_ignores_the_process_hash_seed() -> None:
    code = "from lfr_actors.index.merge import shard_for; print(shard_for('alice', 16))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "9"


# -- the in-memory double ------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_in_memory_index_answers_like_the_real_one(
    watchlist: dict[str, np.ndarray], rng: np.random.Generator, metric: Any
) -> None:
    real = filled(watchlist, metric=metric, mode="exact")
    double = InMemoryIndex(DIM, metric)
    for entry_id, vectors in watchlist.items():
        double.add(entry_id, vectors)
    real.remove("e005")
    assert double.remove("e005") == len(watchlist["e005"])
    queries = unit_rows(rng, 10)
    got, want = double.search(queries, k=4, max_distance=1.2), real.search(queries, 4, 1.2)
    assert ids(got) == ids(want)
    assert (len(double), double.entry_count, double.entries()) == (
        len(real),
        real.entry_count,
        real.entries(),
    )
    with pytest.raises(ValueError, match="must be float32"):
        double.add("x", np.ones((1, DIM)))
    double.clear()
    assert double.search(queries[:1]) == [[]]


# -- the shard actor class, without Ray ----------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_shard_actor_enrols_searches_and_survives_garbage(tmp_path: Path) -> None:
    actor = IndexShardActor(
        _shard("shard_0", {"dimension": 2, "metric": "euclidean"}, str(tmp_path))
    )
    enrol = EnrolVectors("p1", np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)).encode()
    assert run(actor.enrol(enrol)) == 2
    request = SearchRequest(np.array([[0.9, 0.0], [np.nan, 0.0]], np.float32), k=1)
    hits = SearchResult.decode(run(actor.search(request.encode()))).hits
    assert hits[0][0][0] == "p1" and hits[0][0][1] == pytest.approx(0.1, rel=1e-6)
    assert hits[1] == []  # the NaN row is skipped, the other still answered

    secret = np.full((1, 2), 0.123456, np.float32)
    garbage = [b"\x00garbage", msgpack.packb({"t": "search", "v": 1, "b": {"vectors": 1}})]
    wrong_dim = SearchRequest(np.ones((1, 3), np.float32)).encode()
    with capture_logs() as logs:
        assert SearchResult.decode(run(actor.search(garbage[0]))).hits == []
        assert SearchResult.decode(run(actor.search(garbage[1]))).hits == []
        assert run(actor.enrol(b"\xc1")) == 0
        assert SearchResult.decode(run(actor.search(wrong_dim))).hits == [[]]
        mixed = np.vstack([secret, np.array([[np.inf, 0.0]], np.float32)])
        run(actor.search(SearchRequest(mixed).encode()))
    dropped = [e for e in logs if e["event"] == "message_dropped"]
    assert len(dropped) == 4
    assert all(e["actor"] == "shard_0" and e["log_level"] == "warning" for e in dropped)
    assert "0.123456" not in repr(logs)
    stats = run(actor.stats())
    assert (stats["decode_errors"], stats["rejected"], stats["invalid_queries"]) == (3, 1, 2)

    assert run(actor.remove(RemoveEntry("p1").encode())) == 2
    assert run(actor.health())["entries"] == 0


def test_shard_actor_reloads_its_snapshot_and_destroy_deletes_it(tmp_path: Path) -> None:
    config = {"dimension": 2, "metric": "cosine", "mode": "exact"}
    folder = tmp_path / "shard_1"
    actor = IndexShardActor(_shard("shard_1", config, str(folder)))
    run(actor.enrol(EnrolVectors("p", np.array([[1.0, 1.0]], np.float32)).encode()))
    assert run(actor.snapshot()) == str(folder)
    again = IndexShardActor(_shard("shard_1", config, str(folder)))
    assert run(again.health()) == {
        "ok": True,
        "shard_id": "shard_1",
        "vectors": 1,
        "entries": 1,
        "mode": "exact",
    }
    run(again.destroy())
    assert not folder.exists()
    assert run(again.health())["entries"] == 0
    run(actor.snapshot())
    # An incompatible snapshot is derived data gone stale: the shard starts empty and says
    # why, and the deployment rebuilds it from the store.
    rebuilt = IndexShardActor(_shard("shard_1", {**config, "dimension": 3}, str(folder)))
    assert run(rebuilt.health())["entries"] == 0
    assert "dimension: snapshot 2, configured 3" in run(rebuilt.stats())["snapshot_fault"]


def _truncate(folder: Path) -> None:
    index_file = next(p for p in folder.iterdir() if p.name != "snapshot.json")
    index_file.write_bytes(index_file.read_bytes()[: index_file.stat().st_size // 2])


def _garbage(folder: Path) -> None:
    index_file = next(p for p in folder.iterdir() if p.name != "snapshot.json")
    index_file.write_bytes(os.urandom(index_file.stat().st_size))


def _wrong_dimension(folder: Path) -> None:
    manifest = json.loads((folder / "snapshot.json").read_text())
    manifest["config"]["dimension"] = 3
    (folder / "snapshot.json").write_text(json.dumps(manifest))


def _truncated_manifest(folder: Path) -> None:
    text = (folder / "snapshot.json").read_text()
    (folder / "snapshot.json").write_text(text[: len(text) // 2])


@pytest.mark.parametrize(
    ("corrupt", "cause"),
    [
        (_truncate, "SHA-256 does not match"),
        (_garbage, "SHA-256 does not match"),
        (_wrong_dimension, "dimension: snapshot 3, configured 2"),
        (_truncated_manifest, "unreadable snapshot manifest"),
    ],
    ids=["truncated", "garbage", "wrong-dimension", "truncated-manifest"],
)
def test_a_corrupt_snapshot_is_a_warning_with_its_cause_and_an_empty_shard(
    tmp_path: Path,
    corrupt: Callable[[Path], None],
    cause: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = {"dimension": 2, "metric": "cosine", "mode": "exact"}
    folder = tmp_path / "shard_0"
    actor = IndexShardActor(_shard("shard_0", config, str(folder)))
    run(actor.enrol(EnrolVectors("p", np.array([[1.0, 1.0]], np.float32)).encode()))
    run(actor.snapshot())
    corrupt(folder)
    capsys.readouterr()
    again = IndexShardActor(_shard("shard_0", config, str(folder)))  # starts: never refuses
    stats = run(again.stats())
    assert stats["entries"] == 0 and cause in stats["snapshot_fault"]
    # The actor configures its own (JSON) logging, as it does in a Ray worker.
    output = capsys.readouterr()
    logged = [
        json.loads(line)
        for line in (output.out + output.err).splitlines()
        if line.startswith("{") and "snapshot_unusable" in line
    ]
    assert len(logged) == 1 and logged[0]["level"] == "warning"
    assert cause in logged[0]["reason"]
    # Filled again (as the deployment does from the store) and saved, it loads cleanly.
    run(again.enrol(EnrolVectors("p", np.array([[1.0, 1.0]], np.float32)).encode()))
    run(again.snapshot())
    third = IndexShardActor(_shard("shard_0", config, str(folder)))
    assert run(third.stats())["snapshot_fault"] is None
    assert run(third.health())["entries"] == 1


def test_shard_actor_rejects_bad_enrolment_loudly() -> None:
    actor = IndexShardActor(_shard("s", {"dimension": 2, "metric": "euclidean"}, None))
    with pytest.raises(ValueError, match="dimension 3, this index holds 2-d"):
        run(actor.enrol(EnrolVectors("p", np.ones((1, 3), np.float32)).encode()))
    with pytest.raises(Exception, match="has no snapshot folder"):
        run(actor.snapshot())
