"""The ``resources`` fields that place actors on a Ray cluster: read, checked and planned."""

from __future__ import annotations

from pathlib import Path

from lfr_actors.control import Deployment
from lfr_actors.topology import load_topology
from tests.unit.test_topology import BASE, by_path, line_of, topology_issues, write

PLACED = BASE.replace(
    "    fps: 10\n",
    "    fps: 10\n    resources: {camera_node: 1}\n",
).replace(
    "alerts:\n  threshold: 0.6\n",
    "embedder:\n  resources: {camera_node: 0.5}\n"
    "index:\n  resources: {store_node: 0.01}\n"
    "alerts:\n  threshold: 0.6\n  resources: {store_node: 0.01}\n",
)


def test_each_actor_gets_the_resources_its_section_names(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, PLACED))
    plan = Deployment(topology, None, home=tmp_path).plan()
    by_id = {s.actor_id: s for stage in plan.values() for s in stage}
    assert by_id["cam_a"].resources == {"camera_node": 1.0}
    assert by_id["cam_b"].resources == {}
    assert by_id["embedder"].resources == {"camera_node": 0.5}
    assert not by_id["embedder"].on_driver_node
    for actor_id in ("alerts", "index", "index-0"):
        assert by_id[actor_id].resources == {"store_node": 0.01}
        assert by_id[actor_id].on_driver_node  # the store's node, whatever it asks for


def test_bad_resources_are_named_with_their_line_and_fix(tmp_path: Path) -> None:
    text = (
        PLACED.replace("{camera_node: 1}", "{CPU: 1}")
        .replace("{camera_node: 0.5}", "{camera_node: 0}")
        .replace("  resources: {store_node: 0.01}\nalerts:", "  resources: {'a b': 1}\nalerts:")
    )
    issues = by_path(topology_issues(write(tmp_path, text)))
    cpu = issues["cameras[0].resources.CPU"]
    assert cpu.line == line_of(text, "{CPU: 1}")
    assert "one of Ray's own resources" in cpu.message and "cpus_per_replica" in cpu.fix
    zero = issues["embedder.resources.camera_node"]
    assert "must be more than 0" in zero.message and zero.line == line_of(text, "camera_node: 0}")
    name = issues["index.resources.a b"]
    assert "resource name 'a b'" in name.message and "ray start --resources" in name.fix
    assert len(issues) == 3
