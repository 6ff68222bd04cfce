"""A camera actor run to its end without Ray: the fast settings camera unit tests share."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lfr_actors.actors.camera import CameraActor
from lfr_actors.testing.doubles import LocalHandle
from lfr_actors.video import FrameSource
from tests.actor_settings import camera_settings


def fast_camera(
    source: FrameSource,
    embedder: Any,
    *,
    deployment: dict[str, Any] | None = None,
    **config: Any,
) -> CameraActor:
    """A camera reading ``source`` as fast as it can (10 fps sampling, a queue of 4, one
    frame in flight, 10-50 ms reconnect backoffs unless ``config`` says otherwise), sending
    every frame to ``embedder`` in this process."""
    settings = {"fps": 10, "queue_size": 4, "max_in_flight": 1, "pace": "asap"}
    settings.update(config)
    settings.setdefault("reconnect", {"initial_backoff_s": 0.01, "max_backoff_s": 0.05})
    return CameraActor(
        camera_settings(deployment=deployment, **settings),
        source=source,
        resolve=lambda name: LocalHandle(embedder),
    )


async def run_to_end(camera: CameraActor, timeout_s: float = 10.0) -> dict[str, Any]:
    """Start ``camera``, wait until it has ended (failing after ``timeout_s`` with its
    stats), and return its final stats."""
    await camera.start()
    deadline = time.monotonic() + timeout_s
    while not await camera.ended():
        assert time.monotonic() < deadline, await camera.stats()
        await asyncio.sleep(0.01)
    return await camera.stats()
