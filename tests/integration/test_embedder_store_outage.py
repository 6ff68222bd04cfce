"""The real embedder (real models, no Ray) while the alert store cannot take sightings.

Only the embedder's two downstream calls are scripted: the index search answers a hit for
every track, and the alert actor's ``submit`` refuses as a full store does
(:class:`~lfr_actors.actors.alerts.StoreUnavailableError`) until space comes back. The
embedder decides its one face track on the first face and embeds it again on every frame
(``min_track_frames: 1``, ``reembed_every: 1``), so every frame yields one sighting, as
the buffering under test needs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_actors.actors.alerts import StoreUnavailableError
from lfr_actors.actors.embedder import EmbedderActor
from lfr_actors.messages import (
    Frame,
    FrameResult,
    SearchRequest,
    SearchResult,
    SightingBatch,
)
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.images import load_image
from tests.actor_settings import embedder_settings
from tests.conftest import lfr_test_home

pytestmark = [pytest.mark.models, pytest.mark.data]

FULL = "alert store unavailable: disk full"


class Downstream:
    """The index (a hit for every face) and an alert actor whose store may be full."""

    def __init__(self) -> None:
        self.full = False
        self.stored: list[str] = []
        self.refused = 0

    async def call(self, name: str, method: str, data: bytes) -> Any:
        if method == "search":
            request = SearchRequest.decode(data)
            return SearchResult([[["lin_manuel_miranda", 0.3]]] * len(request.vectors)).encode()
        assert method == "submit"
        if self.full:
            self.refused += 1
            raise StoreUnavailableError(FULL)
        self.stored += [s.sighting_id for s in SightingBatch.decode(data).items()]
        return {"accepted": 1}


@pytest.fixture(scope="module")
def face(shared_data: Path) -> np.ndarray:
    image = load_image(
        shared_data / "faces" / "people" / "lin_manuel_miranda" / "lin_manuel_miranda1.png"
    )
    return np.ascontiguousarray(image)


def _embedder(downstream: Downstream) -> EmbedderActor:
    actor = EmbedderActor(
        embedder_settings(
            {
                "max_batch": 1,
                "max_wait_ms": 1,
                "detector": {"min_face_px": 20},
                "tracking": {"min_track_frames": 1, "reembed_every": 1},
            },
            models_home=str(lfr_test_home()),
        )
    )
    actor._call = downstream.call  # type: ignore[method-assign]
    return actor


async def _send(actor: EmbedderActor, face: np.ndarray, seq: int) -> FrameResult:
    frame = Frame("cam", seq, time.time(), face, epoch="run1")
    return FrameResult.decode(await actor.process(frame.encode()))


async def test_sightings_are_held_while_the_store_is_full_and_resent_in_order(
    model_cache: ModelCache, face: np.ndarray
) -> None:
    downstream = Downstream()
    actor = _embedder(downstream)
    first = await _send(actor, face, 1)
    assert first.candidates == 1 and first.store_error is None
    downstream.full = True
    held = [await _send(actor, face, seq) for seq in (2, 3, 4)]
    assert [r.store_error for r in held] == [FULL] * 3  # the camera will show the real cause
    assert [r.candidates for r in held] == [1, 1, 1]
    stats = await actor.stats()
    assert (stats["sightings_unstored"], stats["sightings_lost"]) == (3, 0)
    assert stats["store_error"] == FULL
    # Space comes back: the buffer is resent by itself (no new frame needed), oldest first.
    downstream.full = False
    deadline = time.monotonic() + 10
    while (await actor.stats())["sightings_unstored"]:
        assert time.monotonic() < deadline, await actor.stats()
        await asyncio.sleep(0.1)
    assert downstream.stored == [f"cam:run1:{seq}:0:lin_manuel_miranda" for seq in (1, 2, 3, 4)]
    stats = await actor.stats()
    assert (stats["sightings_resent"], stats["store_error"]) == (3, None)
    assert (await _send(actor, face, 5)).store_error is None


async def test_sightings_beyond_the_bound_are_counted_lost(
    model_cache: ModelCache, face: np.ndarray
) -> None:
    downstream = Downstream()
    downstream.full = True
    actor = _embedder(downstream)
    actor._unstored.limit = 2
    for seq in (1, 2, 3, 4):
        assert (await _send(actor, face, seq)).store_error == FULL
    stats = await actor.stats()
    assert (stats["sightings_unstored"], stats["sightings_lost"]) == (2, 2)
    downstream.full = False
    assert await actor.flush() == 0  # what a drain does
    # The two newest were kept; the oldest two are the ones counted lost.
    assert downstream.stored == [f"cam:run1:{seq}:0:lin_manuel_miranda" for seq in (3, 4)]


async def test_sightings_wait_out_an_alert_actor_that_cannot_be_reached(
    model_cache: ModelCache, face: np.ndarray
) -> None:
    """What ``_call`` raises once its retries are spent (the alert actor restarting)."""
    downstream = Downstream()
    real = downstream.call
    down = True

    async def call(name: str, method: str, data: bytes) -> Any:
        if method == "submit" and down:
            raise RuntimeError("alerts did not answer after 5 attempts")
        return await real(name, method, data)

    actor = _embedder(downstream)
    actor._call = call  # type: ignore[method-assign]
    result = await _send(actor, face, 1)
    assert result.store_error == "alert actor unavailable: RuntimeError"
    down = False
    assert await actor.flush() == 0
    assert downstream.stored == ["cam:run1:1:0:lin_manuel_miranda"]
    assert (await actor.stats())["store_error"] is None
