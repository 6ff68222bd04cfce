"""The sighting path's bookkeeping: run epochs, the frame's one resend, the store's cause on
the camera, the embedder's buffer of unstored sightings, and camera totals over restarts.
(The alert followers' last read at a drain: ``test_control_jsonl_sink.py``.)

No Ray and no models: the camera runs against scripted embedders (test doubles).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lfr_actors.actors.camera import COUNTERS, CameraActor
from lfr_actors.actors.embedder import UnstoredSightings
from lfr_actors.control.totals import CameraTotals
from lfr_actors.messages import Frame, FrameResult
from lfr_actors.testing.doubles import END, FakeSource
from tests.camera_runs import fast_camera, run_to_end

IMG = np.zeros((36, 64, 3), np.uint8)


@dataclass
class ScriptedEmbedder:
    """Records every frame it is sent; fails the first try of the seqs in ``fail_once``."""

    fail_once: set[int] = field(default_factory=set)
    fail_always: set[int] = field(default_factory=set)
    store_error_for: set[int] = field(default_factory=set)
    received: list[bytes] = field(default_factory=list)

    async def process(self, data: bytes) -> bytes:
        frame = Frame.decode(data)
        self.received.append(data)
        if frame.seq in self.fail_always:
            raise ConnectionError("embedder died")
        if frame.seq in self.fail_once:
            self.fail_once.discard(frame.seq)
            raise ConnectionError("embedder died")
        error = "alert store unavailable: disk full" if frame.seq in self.store_error_for else None
        return FrameResult(
            frame.camera_id, frame.seq, frame.captured_at, 1, 1, 1, time.time(), store_error=error
        ).encode()


def _camera(embedder: ScriptedEmbedder, frames: int, **config: Any) -> CameraActor:
    return fast_camera(FakeSource([IMG] * frames + [END], fps=10), embedder, **config)


async def test_every_camera_run_has_its_own_epoch_in_every_frame() -> None:
    first, second = ScriptedEmbedder(), ScriptedEmbedder()
    stats_1 = await run_to_end(_camera(first, 5))
    stats_2 = await run_to_end(_camera(second, 5))  # the same camera, started again
    frames_1 = [Frame.decode(d) for d in first.received]
    frames_2 = [Frame.decode(d) for d in second.received]
    assert [f.seq for f in frames_1] == [f.seq for f in frames_2] == [1, 2, 3, 4, 5]
    assert {f.epoch for f in frames_1} == {stats_1["epoch"]}
    assert {f.epoch for f in frames_2} == {stats_2["epoch"]}
    assert stats_1["epoch"] != stats_2["epoch"]
    ids_1 = {(f.camera_id, f.epoch, f.seq) for f in frames_1}
    assert not ids_1 & {(f.camera_id, f.epoch, f.seq) for f in frames_2}


async def test_a_frame_whose_embedder_dies_is_sent_once_more_with_the_same_bytes() -> None:
    embedder = ScriptedEmbedder(fail_once={3})
    stats = await run_to_end(_camera(embedder, 6))
    assert (stats["frames_processed"], stats["frames_failed"], stats["frames_retried"]) == (6, 0, 1)
    tries = [d for d in embedder.received if Frame.decode(d).seq == 3]
    assert len(tries) == 2 and tries[0] == tries[1]  # same epoch and seq: same sighting ids
    assert stats["last_error"] is None  # the resend worked; no stale "embedder unavailable"


async def test_a_frame_that_fails_twice_is_counted_failed_not_sent_a_third_time() -> None:
    embedder = ScriptedEmbedder(fail_always={2})
    stats = await run_to_end(_camera(embedder, 4))
    assert (stats["frames_processed"], stats["frames_failed"], stats["frames_retried"]) == (3, 1, 1)
    assert sum(1 for d in embedder.received if Frame.decode(d).seq == 2) == 2


async def test_the_camera_shows_the_store_as_the_cause_until_it_is_back() -> None:
    embedder = ScriptedEmbedder(store_error_for={1, 2, 3})
    camera = _camera(embedder, 3)
    stats = await run_to_end(camera)
    assert stats["last_error"] == "alert store unavailable: disk full"
    assert stats["frames_processed"] == 3  # answered: the embedder holds the sightings
    embedder_ok = ScriptedEmbedder()
    later = _camera(embedder_ok, 2)
    later.last_error = "alert store unavailable: disk full"
    assert (await run_to_end(later))["last_error"] is None


def test_unstored_sightings_are_kept_in_order_and_bounded() -> None:
    held = UnstoredSightings(limit=5)
    assert held.oldest() is None and len(held) == 0
    assert held.add(b"a", 2) == 0
    assert held.add(b"b", 2) == 0
    held.refused()  # a and b had to wait
    assert held.add(b"c", 2) == 2  # 6 > 5: the oldest batch goes, counted as lost
    assert (len(held), held.lost, held.oldest()) == (4, 2, b"b")
    assert held.acknowledged() == (2, True)
    assert held.acknowledged() == (2, False)  # c was added after the refusal
    assert held.oldest() is None and len(held) == 0 and held.lost == 2


def _stats(epoch: str | None, **counters: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"role": "camera", "state": "running", **counters}
    if epoch is not None:
        figures["epoch"] = epoch
    return figures


def test_camera_totals_keep_the_counts_of_earlier_runs() -> None:
    totals = CameraTotals()
    name = "camera/cam"
    first = totals.observe(name, _stats("r1", frames_processed=10, faces=4))
    assert (first["frames_processed"], first["faces"], first["runs"]) == (10, 4, 1)
    assert (
        totals.observe(name, _stats("r1", frames_processed=25, faces=9))["frames_processed"] == 25
    )
    # The actor died: its stats cannot be read, the totals stay.
    down = totals.observe(name, {"unavailable": "RayActorError", "role": "camera"})
    assert (down["frames_processed"], down["faces"], down["unavailable"]) == (
        25,
        9,
        "RayActorError",
    )
    # The restarted actor counts from zero; the totals add its counts to the earlier run's.
    after = totals.observe(name, _stats("r2", frames_processed=3, faces=1))
    assert (after["frames_processed"], after["faces"], after["runs"]) == (28, 10, 2)
    assert totals.observe(name, _stats("r2", frames_processed=7, faces=2))["frames_processed"] == 32
    # A late answer of the first run counts nothing twice.
    late = totals.observe(name, _stats("r1", frames_processed=26, faces=9))
    assert (late["frames_processed"], late["runs"]) == (32, 2)
    assert set(COUNTERS) <= set(after)
    # Another camera is totalled on its own.
    assert totals.observe("camera/other", _stats("x", frames_processed=1))["frames_processed"] == 1
