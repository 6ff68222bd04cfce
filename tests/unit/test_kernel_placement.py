"""Where the kernel may place an actor, and what it says about a lost node (no Ray needed).

The figures are shaped like ``ray.nodes()``: a head without custom resources and a worker
node with ``camera_node``.
"""

from __future__ import annotations

from typing import Any

import ray

from lfr_actors.kernel.kernel import ActorSpec, Kernel, node_lost, placement_problem
from lfr_actors.kernel.registry import Registry

HEAD = {"NodeID": "a" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.1",
        "Resources": {"CPU": 2.0, "memory": 1e9}}  # fmt: skip
WORKER = {"NodeID": "b" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.2",
          "Resources": {"CPU": 2.0, "camera_node": 4.0}}  # fmt: skip


def dead(node: dict[str, Any]) -> dict[str, Any]:
    return {**node, "Alive": False}


def camera(**resources: float) -> ActorSpec:
    return ActorSpec("cam", "camera", resources=resources)


def test_an_actor_goes_where_its_resource_is() -> None:
    assert placement_problem(camera(camera_node=1), [HEAD, WORKER], HEAD["NodeID"]) is None
    assert placement_problem(camera(), [HEAD], HEAD["NodeID"]) is None


def test_no_live_node_with_the_resource_is_named() -> None:
    problem = placement_problem(camera(camera_node=1), [HEAD, dead(WORKER)], HEAD["NodeID"])
    assert problem == "no node has resource camera_node (needs 1)"
    # more than a node has is as good as none
    problem = placement_problem(camera(camera_node=5), [HEAD, WORKER], HEAD["NodeID"])
    assert problem == "no node has resource camera_node (needs 5)"


def test_resources_on_different_nodes_do_not_add_up() -> None:
    spec = ActorSpec("e", "embedder", num_gpus=1, resources={"camera_node": 1})
    gpu_head = {**HEAD, "Resources": {"CPU": 2.0, "GPU": 1.0}}
    problem = placement_problem(spec, [gpu_head, WORKER], HEAD["NodeID"])
    assert problem == "no node has all of GPU 1, camera_node 1 together"


def test_driver_node_actors_only_look_at_the_driver_node() -> None:
    spec = ActorSpec("alerts", "alerts", on_driver_node=True, resources={"camera_node": 1})
    problem = placement_problem(spec, [HEAD, WORKER], HEAD["NodeID"])
    assert problem == "the driver's node lacks resource camera_node (needs 1)"
    assert placement_problem(spec, [HEAD, WORKER], WORKER["NodeID"]) is None


def test_a_dead_or_departed_node_is_reported_as_lost() -> None:
    assert node_lost(WORKER["NodeID"], [HEAD, WORKER]) is None
    lost = node_lost(WORKER["NodeID"], [HEAD, dead(WORKER)])
    assert lost == "node lost: node bbbbbbbbbbbb (10.0.0.2) is dead"
    left = node_lost(WORKER["NodeID"], [HEAD])
    assert left == "node lost: node bbbbbbbbbbbb has left the cluster"
    # nothing known: nothing claimed
    assert node_lost(None, [HEAD]) is None and node_lost(WORKER["NodeID"], None) is None


def test_reading_the_nodes_before_ray_runs_starts_no_ray() -> None:
    """A status read before `lfr up` started Ray (or after it stopped) must not start one."""
    assert not ray.is_initialized()
    kernel = Kernel("ns", Registry("role"))
    assert kernel.node_summary() == {}
    assert not ray.is_initialized()
