"""The deployment's actor plan from a topology: names, wiring, resources, placement."""

from __future__ import annotations

from pathlib import Path

from lfr_actors.actors.settings import EmbedderSettings, RouterSettings
from lfr_actors.control import Deployment
from lfr_actors.topology.loader import load_topology, load_watchlist
from tests.topology_files import watchlist_entry, write_site_topology, write_watchlist


def _files(tmp_path: Path, **embedder: object) -> Deployment:
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_watchlist(tmp_path / "w.yaml", watchlist_entry("e1", ["a.jpg"], threshold=0.5))
    cameras = [
        {
            "id": f"cam{i}",
            "source": {"type": "url", "url": f"rtsp://127.0.0.1/{i}"},
            **({"resources": {"camera_ingest": 0.1}} if i == 0 else {}),
        }
        for i in range(3)
    ]
    t = load_topology(
        write_site_topology(
            tmp_path,
            cameras=cameras,
            embedder={"replicas": 2, **embedder},
            index={"shards": 3},
        )
    )
    return Deployment(t, load_watchlist(tmp_path / "w.yaml"), home=tmp_path)


def test_plan_wires_actors_by_topology_ids(tmp_path: Path) -> None:
    stages = _files(tmp_path).plan()
    names = {stage: [s.name for s in specs] for stage, specs in stages.items()}
    assert names == {
        "index": ["index_shard/index-0", "index_shard/index-1", "index_shard/index-2",
                  "index_router/index"],
        "alerts": ["alerts/alerts"],
        "embedders": ["embedder/embedder-0", "embedder/embedder-1"],
        "cameras": ["camera/cam0", "camera/cam1", "camera/cam2"],
    }  # fmt: skip
    router = stages["index"][-1].args[0]
    assert isinstance(router, RouterSettings) and stages["index"][-1].args == (router,)
    assert list(router.shard_names) == names["index"][:3]
    embedder = stages["embedders"][0].args[0]
    assert isinstance(embedder, EmbedderSettings)
    assert embedder.router == "index_router/index" and embedder.alerts == "alerts/alerts"
    assert embedder.threshold == 0.55  # the loosest of deployment and entry thresholds
    fusion = stages["alerts"][0].args[0].fusion
    assert fusion.entry_thresholds == {"e1": 0.5}
    # cameras spread over the replicas, each failing over to the others
    orders = [c.args[0].embedder_names for c in stages["cameras"]]
    assert [o[0] for o in orders] == ["embedder/embedder-0", "embedder/embedder-1",
                                      "embedder/embedder-0"]  # fmt: skip
    assert all(sorted(o) == sorted(names["embedders"]) for o in orders)
    assert stages["cameras"][0].resources == {"camera_ingest": 0.1}
    assert all(c.start_method == "start" for c in stages["cameras"])


def test_stateful_actors_stay_on_the_driver_node(tmp_path: Path) -> None:
    stages = _files(tmp_path).plan()
    pinned = {s.name for specs in stages.values() for s in specs if s.on_driver_node}
    assert pinned == {"index_shard/index-0", "index_shard/index-1", "index_shard/index-2",
                      "index_router/index", "alerts/alerts"}  # fmt: skip


def test_gpu_resources_follow_the_device(tmp_path: Path) -> None:
    cpu = _files(tmp_path / "a").plan(cluster_gpus=8)
    assert all(e.num_gpus == 0 for e in cpu["embedders"])
    gpu = _files(tmp_path / "b", device="gpu", gpus_per_replica=0.5).plan()
    assert [e.num_gpus for e in gpu["embedders"]] == [0.5, 0.5]
    auto_with = _files(tmp_path / "c", device="auto").plan(cluster_gpus=2)
    assert [e.num_gpus for e in auto_with["embedders"]] == [1.0, 1.0]
    auto_without = _files(tmp_path / "d", device="auto").plan(cluster_gpus=1)
    assert [e.num_gpus for e in auto_without["embedders"]] == [0.0, 0.0]
