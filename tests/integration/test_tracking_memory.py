"""The tracking stage on a real clip played in a loop: memory stays bounded, ended tracks
hold nothing.

``short_hamilton_clip.mp4`` four times over (a looping source, as ``at_end: loop`` plays
it), every third frame, through the production face pipeline and the tracking stage with
the embedder's own steps. People come and go with every pass; the live tracks stay bounded
by the people in view, every ended track has dropped its embeddings and crop, and the
memory the stage holds after the fourth pass is no more than after the first. Needs
../shared/data and the default models.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr_actors.models.cache import ModelCache
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.tracking.config import TrackingConfig
from lfr_actors.tracking.evidence import TrackEvidence
from lfr_actors.tracking.stage import FrameInfo, Tracking

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

PASSES = 4


def _frames(clip: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(clip))
    frames = []
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index % 3 == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames


def test_a_looping_clip_keeps_the_tracking_stage_bounded(
    model_cache: ModelCache, shared_data: Path
) -> None:
    pipeline = FacePipeline.build(RuntimeConfig(), cache=model_cache)
    spec = pipeline.embedder.spec
    tracking = Tracking(
        TrackingConfig(), metric=spec.metric, normalise=spec.l2_normalise, threshold=0.6
    )
    frames = _frames(shared_data / "video" / "short_hamilton_clip.mp4")
    # The faces are found once; every pass feeds them again, as a looping file does.
    found = [pipeline.find(image) for image in frames]
    tracemalloc.start()
    held_after_pass = []
    seq = 0
    try:
        for _ in range(PASSES):
            for image, analysed in zip(frames, found, strict=True):
                seq += 1
                info = FrameInfo("cam_loop", "e1", seq, float(seq), seq - 1, seq / 10)
                plan = tracking.observe([info], [analysed])
                embeddings = pipeline.embed_chips(plan.chips)
                tracking.absorb(plan, embeddings, [info], [image], [analysed])
                assert tracking.live <= 8  # the clip shows at most six people at once
            gc.collect()
            held_after_pass.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    counters = tracking.counters
    assert counters["tracks_started"] >= PASSES * 4  # each pass brings its people again
    assert counters["tracks_ended"] >= counters["tracks_started"] - tracking.live
    holding = [o for o in gc.get_objects() if isinstance(o, TrackEvidence) and o.total is not None]
    assert len(holding) <= tracking.live
    assert all(
        o.best_crop == b""
        for o in gc.get_objects()
        if isinstance(o, TrackEvidence) and o.total is None
    )
    # No growth from pass to pass (a few kB of allocator noise allowed).
    assert held_after_pass[-1] <= held_after_pass[0] + 256 * 1024, held_after_pass
    live = tracking.live
    assert tracking.end_all() == live and tracking.live == 0
