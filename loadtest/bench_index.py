"""Index benchmark: query latency and recall@1 of the sharded index, one plain usearch index
and exact search, for 10k and 100k enrolled vectors (1M with ``--sizes ... 1000000``).

Every figure is printed with its ratio against the baseline measured in the same run on the
same machine: exact brute force in numpy (a float32 matrix product per batch), which is
also the ground truth for recall@1. Configurations:

- ``exact_numpy``             the baseline and ground truth
- ``exact_usearch``           one usearch index, ``search(..., exact=True)``
- ``hnsw_usearch``            one plain usearch HNSW index, in-process, expansion_search
                              64 (the default); ``hnsw_usearch_efN`` the same with N
- ``sharded_hnsw_inprocess``  N :class:`ShardIndex` (HNSW) + ``merge_topk``, no Ray
- ``sharded_exact_inprocess`` the same shards searched in exact mode, no Ray
- ``sharded_hnsw_ray``        N shard actors + the router on a local Ray, one request at
                              a time (latency), then 4 in flight (throughput)
- ``sharded_exact_ray``       the same actors' code with the shards in exact mode

Vectors are 128-d float32 Gaussian scaled to about unit length, one per entry, Euclidean.
Queries come in batches of ``--batch`` (one frame batch's faces, one SearchRequest): 75% are
enrolled vectors plus noise (distance ~0.35 from their source, like a live face against its
enrolment photo), 25% are fresh vectors of people not enrolled. ``recall_at_1`` is the share
of queries whose nearest entry equals the exact one; ``source_hit_rate`` is, over the
enrolled queries, the share whose nearest entry is the one they were made from. Structureless
Gaussian data is the hardest case for a graph index, so HNSW recall here is a floor: real
face embeddings cluster by identity and are easier to navigate.

The in-process shards are filled with ``ShardIndex.add_many`` (one batch per shard); the
Ray shards load their snapshots, as a restarted deployment would;
enrolment through the router is timed separately on extra entries (``enrol_via_router``): one
message per call, then batches of 1000 (``enrol_many``, as a deployment loads its watchlist),
with the ratio of the two.

    python loadtest/bench_index.py [--sizes 10000 100000] [--queries 2048] [--batch 16]
                                   [--shards 4] [--ef 256 512] [--blas-threads 1] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import usearch
from machine import cpu_model  # loadtest/machine.py, beside this script
from usearch.index import Index

from lfr_actors.actors.index import IndexRouterActor, IndexShardActor
from lfr_actors.actors.settings import RouterSettings, ShardSettings
from lfr_actors.index import ShardConfig, ShardIndex, merge_topk, shard_for
from lfr_actors.logs import configure as configure_logging
from lfr_actors.messages import EnrolVectors, RemoveEntry, SearchRequest, SearchResult

DIM = 128
NOISE_DISTANCE = 0.35
ENROLLED_SHARE = 0.75
WARMUP_BATCHES = 10
REPEATS = 3
DEFAULT_EF = 64  # the topology's default expansion_search
NAMESPACE = "lfr-bench-index"


def machine() -> dict[str, Any]:
    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    probe = Index(ndim=DIM, metric="l2sq")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "usearch": usearch.__version__,
        "usearch_simd": probe.hardware_acceleration,
        "ray": ray.__version__,
    }


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(float(values.mean()), 3),
    }


def timed_batches(
    batches: list[np.ndarray], search: Callable[[np.ndarray], list[int]]
) -> tuple[list[float], list[int]]:
    """Per-batch ms and top-1 indices of ``search`` over every batch, after a warm-up.

    The batches run ``REPEATS`` times and the round with the lowest median is kept: on a
    small shared machine one round can be slowed by other processes.
    """
    for batch in batches[:WARMUP_BATCHES]:
        search(batch)
    best: list[float] | None = None
    top1: list[int] = []
    for _ in range(REPEATS):
        latencies: list[float] = []
        top1 = []
        for batch in batches:
            started = time.perf_counter()
            found = search(batch)
            latencies.append((time.perf_counter() - started) * 1000)
            top1.extend(found)
        if best is None or np.median(latencies) < np.median(best):
            best = latencies
    assert best is not None
    return best, top1


def make_data(
    size: int, queries: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = (rng.standard_normal((size, DIM)) / np.sqrt(DIM)).astype(np.float32)
    enrolled = int(queries * ENROLLED_SHARE)
    source = rng.choice(size, enrolled, replace=False)
    noise = rng.standard_normal((enrolled, DIM)) * (NOISE_DISTANCE / np.sqrt(DIM))
    strangers = rng.standard_normal((queries - enrolled, DIM)) / np.sqrt(DIM)
    probe = np.vstack([data[source] + noise, strangers]).astype(np.float32)
    sources = np.concatenate([source, np.full(queries - enrolled, -1)])
    order = rng.permutation(queries)
    return data, probe[order], sources[order]


def entry_id(i: int) -> str:
    return f"w{i:07d}"


def entry_index(name: str) -> int:
    return int(name[1:])


def summarise(
    name: str,
    latencies: list[float],
    top1: list[int],
    truth: np.ndarray,
    sources: np.ndarray,
    batch: int,
    **extra: Any,
) -> dict[str, Any]:
    found = np.asarray(top1)
    enrolled = sources >= 0
    total_s = sum(latencies) / 1000
    return {
        "config": name,
        **percentiles(latencies),
        "queries_per_s": round(len(found) / total_s, 1),
        "recall_at_1": round(float(np.mean(found == truth)), 4),
        "source_hit_rate": round(float(np.mean(found[enrolled] == sources[enrolled])), 4),
        "batch": batch,
        **extra,
    }


def bench_plain_usearch(
    data: np.ndarray,
    batches: list[np.ndarray],
    truth: np.ndarray,
    sources: np.ndarray,
    batch: int,
    expansions: list[int],
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    plain = Index(
        ndim=DIM, metric="l2sq", dtype="f32", connectivity=16, expansion_add=128,
        expansion_search=DEFAULT_EF,
    )  # fmt: skip
    plain.add(np.arange(len(data), dtype=np.uint64), data)
    build_s = round(time.perf_counter() - started, 2)

    def usearch_search(exact: bool) -> Callable[[np.ndarray], list[int]]:
        def run(queries: np.ndarray) -> list[int]:
            matches = plain.search(queries, 1, exact=exact)
            keys = matches.keys.reshape(len(queries), -1)[:, 0]
            found: list[int] = keys.astype(np.int64).tolist()
            return found

        return run

    latencies, top1 = timed_batches(batches, usearch_search(exact=True))
    results = [summarise("exact_usearch", latencies, top1, truth, sources, batch)]
    for ef in expansions:
        plain.expansion_search = ef  # type: ignore[misc]  # usearch has the setter; stubs lack it
        latencies, top1 = timed_batches(batches, usearch_search(exact=False))
        name = "hnsw_usearch" if ef == DEFAULT_EF else f"hnsw_usearch_ef{ef}"
        results.append(
            summarise(
                name, latencies, top1, truth, sources, batch, expansion_search=ef,
                build_s=build_s,
            )
        )  # fmt: skip
    return results


def bench_size(
    size: int, args: argparse.Namespace, rng: np.random.Generator, out: dict[str, Any]
) -> None:
    """Fill ``out`` (already in the report, so a failure keeps what was measured)."""
    out.update({"enrolled_vectors": size, "results": []})
    data, queries, sources = make_data(size, args.queries, rng)
    batches = [queries[i : i + args.batch] for i in range(0, len(queries), args.batch)]
    results: list[dict[str, Any]] = out["results"]

    def log(message: str) -> None:
        print(f"[{size}] {message}", file=sys.stderr, flush=True)

    # (a) exact numpy: the baseline, and the ground truth for recall.
    sq_norms = np.einsum("ij,ij->i", data, data)

    def exact_numpy(batch: np.ndarray) -> list[int]:
        scores = sq_norms[None, :] - 2.0 * (batch @ data.T)
        found: list[int] = scores.argmin(axis=1).tolist()
        return found

    latencies, top1 = timed_batches(batches, exact_numpy)
    truth = np.asarray(top1)
    results.append(summarise("exact_numpy", latencies, top1, truth, sources, args.batch))
    log("exact numpy done")

    # (b) one plain usearch index: exact and HNSW search.
    expansions = sorted({DEFAULT_EF, *args.ef})
    results.extend(bench_plain_usearch(data, batches, truth, sources, args.batch, expansions))
    log("plain usearch done")

    # (c) the sharded index, in-process first (same code as the shard actors, no Ray).
    config = {"dimension": DIM, "metric": "euclidean", "mode": "hnsw"}
    started = time.perf_counter()
    shards = [ShardIndex.from_config(config) for _ in range(args.shards)]
    owned: list[list[tuple[str, np.ndarray]]] = [[] for _ in range(args.shards)]
    for i in range(size):
        owned[shard_for(entry_id(i), args.shards)].append((entry_id(i), data[i : i + 1]))
    for shard, items in zip(shards, owned, strict=True):
        shard.add_many(items)
    shard_build_s = round(time.perf_counter() - started, 2)
    log(f"{args.shards} shards built in {shard_build_s} s (add_many)")

    def sharded(group: list[ShardIndex]) -> Callable[[np.ndarray], list[int]]:
        def run(batch: np.ndarray) -> list[int]:
            merged = merge_topk([shard.search(batch, 1) for shard in group], 1)
            return [entry_index(row[0][0]) if row else -1 for row in merged]

        return run

    latencies, top1 = timed_batches(batches, sharded(shards))
    results.append(
        summarise(
            "sharded_hnsw_inprocess", latencies, top1, truth, sources, args.batch,
            shards=args.shards, build_s=shard_build_s,
        )
    )  # fmt: skip

    workdir = Path(tempfile.mkdtemp(prefix="lfr-bench-index-"))
    try:
        folders = [workdir / f"shard_{i}" for i in range(args.shards)]
        started = time.perf_counter()
        for shard, folder in zip(shards, folders, strict=True):
            shard.save(folder)
        out["snapshot_save_s"] = round(time.perf_counter() - started, 2)
        del shards
        exact_config = {**config, "mode": "exact"}
        exact_shards = [ShardIndex.load(folder, config=exact_config) for folder in folders]
        latencies, top1 = timed_batches(batches, sharded(exact_shards))
        results.append(
            summarise(
                "sharded_exact_inprocess", latencies, top1, truth, sources, args.batch,
                shards=args.shards,
            )
        )  # fmt: skip
        del exact_shards
        log("in-process shards done")
        if not args.no_ray:
            for mode in ("hnsw", "exact"):
                ray_config = {**config, "mode": mode}
                results.extend(
                    bench_ray(size, args, ray_config, folders, batches, truth, sources, out)
                )
                log(f"ray shards ({mode}) done")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    add_ratios(results)


def add_ratios(results: list[dict[str, Any]]) -> None:
    baseline = results[0]
    for result in results:
        if "p50_ms" in result:
            result["p50_ratio_vs_exact_numpy"] = round(result["p50_ms"] / baseline["p50_ms"], 3)
        result["qps_ratio_vs_exact_numpy"] = round(
            result["queries_per_s"] / baseline["queries_per_s"], 3
        )


def start_actor(cls: type, name: str, *args: Any) -> Any:
    options = {
        "name": name,
        "namespace": NAMESPACE,
        "num_cpus": 0,
        "max_restarts": 0,
        "max_concurrency": 1000,
    }
    return ray.remote(cls).options(**options).remote(*args)


def bench_ray(
    size: int,
    args: argparse.Namespace,
    config: dict[str, Any],
    folders: list[Path],
    batches: list[np.ndarray],
    truth: np.ndarray,
    sources: np.ndarray,
    out: dict[str, Any],
) -> list[dict[str, Any]]:
    if not ray.is_initialized():
        # Started on first use: Ray's start-up work would slow the in-process figures.
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            namespace=NAMESPACE,
            runtime_env={"env_vars": {"LFR_LOG_LEVEL": "WARNING"}},
        )
    mode = config["mode"]
    tag = f"{size}_{mode}"
    names = [f"shard_{i}_{tag}" for i in range(args.shards)]
    started = time.perf_counter()
    actors = [
        start_actor(
            IndexShardActor,
            name,
            ShardSettings(name, ShardConfig.from_mapping(config), str(folder)),
        )
        for name, folder in zip(names, folders, strict=True)
    ]
    router = start_actor(
        IndexRouterActor, f"router_{tag}", RouterSettings(f"router_{tag}", tuple(names), NAMESPACE)
    )
    # Shards answer once their snapshot is loaded (minutes for 1M vectors on 2 cores).
    ray.get([actor.health.remote() for actor in actors], timeout=1800)
    health = ray.get(router.health.remote(), timeout=60)
    assert health["ok"] and health["entries"] == size, health
    out[f"ray_{mode}_start_and_snapshot_load_s"] = round(time.perf_counter() - started, 2)
    results = []
    try:

        def via_router(batch: np.ndarray) -> list[int]:
            reply = ray.get(router.search.remote(SearchRequest(batch, k=1).encode()))
            hits = SearchResult.decode(reply).hits
            return [entry_index(row[0][0]) if row else -1 for row in hits]

        latencies, top1 = timed_batches(batches, via_router)
        stats = ray.get(router.stats.remote())
        results.append(
            summarise(
                f"sharded_{mode}_ray", latencies, top1, truth, sources, args.batch,
                shards=args.shards, router_fanout_ms_p50=stats["fanout_ms_p50"],
                router_fanout_ms_p95=stats["fanout_ms_p95"],
            )
        )  # fmt: skip

        # Throughput with several requests in flight, as several embedders would send them.
        in_flight = 4
        requests = [SearchRequest(batch, k=1).encode() for batch in batches]
        started = time.perf_counter()
        pending: list[Any] = []
        for request in requests:
            pending.append(router.search.remote(request))
            if len(pending) >= in_flight:
                ray.get(pending.pop(0))
        ray.get(pending)
        elapsed = time.perf_counter() - started
        results.append(
            {
                "config": f"sharded_{mode}_ray_{in_flight}_in_flight",
                "queries_per_s": round(sum(len(b) for b in batches) / elapsed, 1),
                "batch": args.batch,
                "shards": args.shards,
            }
        )

        if mode != "hnsw":
            return results
        # Enrolment through the router: extra entries, all sent at once, then removed.
        extra = min(args.enrol, size)
        rng = np.random.default_rng(size)
        vectors = (rng.standard_normal((extra, DIM)) / np.sqrt(DIM)).astype(np.float32)
        messages = [EnrolVectors(f"x{i}", vectors[i : i + 1]).encode() for i in range(extra)]
        started = time.perf_counter()
        ray.get([router.enrol.remote(m) for m in messages])
        enrol_s = time.perf_counter() - started
        started = time.perf_counter()
        ray.get([router.remove.remote(RemoveEntry(f"x{i}").encode()) for i in range(extra)])
        remove_s = time.perf_counter() - started
        # The same entries in batches of 1000 (as a deployment loads its watchlist).
        batch = 1000
        started = time.perf_counter()
        ray.get([router.enrol_many.remote(messages[i : i + batch]) for i in range(0, extra, batch)])
        enrol_many_s = time.perf_counter() - started
        removals = [RemoveEntry(f"x{i}").encode() for i in range(extra)]
        started = time.perf_counter()
        ray.get(
            [router.remove_many.remote(removals[i : i + batch]) for i in range(0, extra, batch)]
        )
        remove_many_s = time.perf_counter() - started
        out["enrol_via_router"] = {
            "entries": extra,
            "enrol_per_s": round(extra / enrol_s, 1),
            "remove_per_s": round(extra / remove_s, 1),
            "enrol_many_per_s": round(extra / enrol_many_s, 1),
            "remove_many_per_s": round(extra / remove_many_s, 1),
            "enrol_many_vs_one_by_one": round(enrol_s / enrol_many_s, 2),
        }
    finally:
        for actor in [*actors, router]:
            ray.kill(actor, no_restart=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=2048, help="queries per size")
    parser.add_argument("--batch", type=int, default=16, help="queries per search request")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--enrol", type=int, default=2000, help="entries enrolled via Ray")
    parser.add_argument(
        "--ef",
        type=int,
        nargs="+",
        default=[256, 512],
        help="extra expansion_search values for the plain HNSW index (64 always runs)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray actor runs")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for numpy (exact search); Ray gives actors 1 unless told otherwise",
    )
    args = parser.parse_args()
    threads = str(args.blas_threads)
    if os.environ.get("OMP_NUM_THREADS") != threads:
        # BLAS reads its thread count when numpy loads, so start again with it set. One
        # thread is what Ray actors get (OMP_NUM_THREADS=1), so in-process and actor figures
        # compare; and on a busy 2-core machine a 2-thread BLAS call for 16 queries waits a
        # scheduler tick (~16 ms) for its second thread.
        os.environ["OMP_NUM_THREADS"] = threads
        os.environ["OPENBLAS_NUM_THREADS"] = threads
        os.execv(sys.executable, [sys.executable, *sys.argv])

    configure_logging(level="WARNING")
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "benchmark": "index",
        "machine": machine(),
        "settings": {
            "dimension": DIM,
            "metric": "euclidean",
            "queries": args.queries,
            "batch": args.batch,
            "shards": args.shards,
            "enrolled_query_share": ENROLLED_SHARE,
            "noise_distance": NOISE_DISTANCE,
            "hnsw": {"connectivity": 16, "expansion_add": 128, "expansion_search": DEFAULT_EF},
            "baseline": "exact_numpy",
            "blas_threads": args.blas_threads,
            "latency_rounds": f"best of {REPEATS} by median, after {WARMUP_BATCHES} warm-up",
        },
        "sizes": [],
    }
    failed = False
    try:
        for size in args.sizes:
            out: dict[str, Any] = {}
            report["sizes"].append(out)
            bench_size(size, args, rng, out)
    except Exception as exc:
        failed = True
        report["error"] = f"{type(exc).__name__}: {exc}"
        for out in report["sizes"]:
            if out.get("results") and "p50_ratio_vs_exact_numpy" not in out["results"][0]:
                add_ratios(out["results"])
    finally:
        if ray.is_initialized():
            ray.shutdown()
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
