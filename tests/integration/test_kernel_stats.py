"""The kernel's figures on real Ray: one hung actor does not hide the others, and the
supervisor's error is gone once a restarted actor is healthy again."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from lfr_actors.kernel.kernel import ActorSpec, Kernel
from lfr_actors.kernel.registry import Registry
from tests.ray_session import local_ray

NAMESPACE = "lfr-test-kernel-stats"


class Probe:
    """A minimal actor: healthy, with figures; ``hang`` makes ``stats`` never answer."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang

    async def health(self) -> dict[str, Any]:
        return {"ok": True}

    async def stats(self) -> dict[str, Any]:
        if self.hang:
            await asyncio.sleep(3600)
        return {"answered": 1, "pid": os.getpid()}


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    # The probe class lives in this test module, which Ray's workers cannot import by
    # name: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with local_ray(NAMESPACE):
        yield


def kernel() -> Kernel:
    roles: Registry[type] = Registry("actor role")
    roles.register("probe", Probe)
    return Kernel(NAMESPACE, roles, unhealthy_after=1, initial_backoff_s=0.0, health_timeout_s=5)


def test_hung_actors_show_unavailable_and_the_others_answer(ray_session: None) -> None:
    k = kernel()

    async def go() -> dict[str, Any]:
        await k.start(
            [
                ActorSpec("ok", "probe"),
                ActorSpec("stuck-1", "probe", kwargs={"hang": True}),
                ActorSpec("stuck-2", "probe", kwargs={"hang": True}),
            ]
        )
        return await k.stats(timeout_s=1.0)

    try:
        figures = asyncio.run(go())
    finally:
        k.kill_all()
    assert figures["probe/ok"]["answered"] == 1
    for name in ("probe/stuck-1", "probe/stuck-2"):
        assert figures[name]["unavailable"].startswith(("GetTimeoutError", "TimeoutError"))
        assert figures[name]["role"] == "probe" and figures[name]["restarts"] == 0


def test_supervisor_error_is_cleared_by_a_good_restart(ray_session: None) -> None:
    k = kernel()

    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        await k.start([ActorSpec("victim", "probe")])
        first = await k.stats()
        ray.kill(k.handle("victim"), no_restart=True)
        for _ in range(50):  # the supervisor notices, and restarts it in the same round
            await k.check_once()
            if k.actors["probe/victim"].restarts:
                break
            await asyncio.sleep(0.2)
        after_restart = await k.stats()
        await k.check_once()  # healthy again
        return first, after_restart, await k.stats()

    try:
        first, after_restart, later = asyncio.run(go())
    finally:
        k.kill_all()
    assert first["probe/victim"]["supervisor_error"] is None
    assert after_restart["probe/victim"]["restarts"] == 1
    assert after_restart["probe/victim"]["answered"] == 1
    assert after_restart["probe/victim"]["pid"] != first["probe/victim"]["pid"]
    assert after_restart["probe/victim"]["supervisor_error"] is None  # not the dead one's
    assert later["probe/victim"]["supervisor_error"] is None
