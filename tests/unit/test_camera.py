"""The camera actor's policies, with a scripted source and a fake embedder (no Ray)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import cv2
import numpy as np
import pytest

from lfr_actors.actors.camera import CameraActor, build_source
from lfr_actors.testing.doubles import (
    ABORT,
    CORRUPT,
    END,
    FakeEmbedderActor,
    FakeSource,
    LocalHandle,
)

IMG = np.zeros((36, 64, 3), np.uint8)


def _camera(
    source: FakeSource,
    embedder: FakeEmbedderActor,
    *,
    deployment: dict[str, Any] | None = None,
    **config: Any,
) -> CameraActor:
    settings = {"fps": 10, "queue_size": 4, "max_in_flight": 1, "pace": "asap"}
    settings.update(config)
    settings.setdefault("reconnect", {"initial_backoff_s": 0.01, "max_backoff_s": 0.05})
    return CameraActor(
        "cam_test",
        deployment or {"id": "dep"},
        settings,
        ["embedder/embedder"],
        "dep",
        source=source,
        resolve=lambda name: LocalHandle(embedder),
    )


async def _run(camera: CameraActor, timeout_s: float = 10.0) -> dict[str, Any]:
    await camera.start()
    deadline = time.monotonic() + timeout_s
    while not await camera.ended():
        assert time.monotonic() < deadline, await camera.stats()
        await asyncio.sleep(0.01)
    return await camera.stats()


async def test_samples_a_30fps_file_down_to_10fps() -> None:
    embedder = FakeEmbedderActor()
    stats = await _run(_camera(FakeSource([IMG] * 90 + [END], fps=30), embedder))
    assert stats["frames_read"] == 90
    assert stats["frames_sampled"] == 30
    assert stats["frames_processed"] == 30 and stats["frames_dropped"] == 0
    assert [seq for _, seq in embedder.seen] == list(range(1, 31))
    assert stats["state"] == "ended"


async def test_asap_pacing_loses_nothing_behind_a_slow_embedder() -> None:
    embedder = FakeEmbedderActor(delay_s=0.01)
    stats = await _run(_camera(FakeSource([IMG] * 20 + [END], fps=10), embedder))
    assert stats["frames_processed"] == 20 and stats["frames_dropped"] == 0


async def test_live_camera_drops_oldest_and_never_blocks() -> None:
    embedder = FakeEmbedderActor(delay_s=0.05)
    source = FakeSource([IMG] * 60 + [END], fps=50, live=True, read_delay_s=0.02)
    camera = _camera(source, embedder, fps=60, queue_size=2, pace="realtime")
    stats = await _run(camera)
    assert stats["frames_read"] == 60  # capture kept going while the embedder was slow
    assert stats["frames_dropped"] > 0
    assert stats["frames_processed"] + stats["frames_dropped"] == stats["frames_sampled"]
    seqs = [seq for _, seq in embedder.seen]
    assert seqs == sorted(seqs) and seqs[-1] == stats["frames_sampled"]  # the newest survive


async def test_realtime_pacing_follows_the_media_clock() -> None:
    embedder = FakeEmbedderActor()
    start = time.monotonic()
    stats = await _run(_camera(FakeSource([IMG] * 6 + [END], fps=10), embedder, pace="realtime"))
    assert stats["frames_processed"] == 6
    assert time.monotonic() - start >= 0.45  # six frames at 10 fps span half a second


async def test_corrupt_frames_are_counted_and_skipped() -> None:
    embedder = FakeEmbedderActor()
    source = FakeSource([IMG, CORRUPT, IMG, CORRUPT, IMG, END], fps=10)
    stats = await _run(_camera(source, embedder))
    assert stats["corrupt_frames"] == 2 and stats["frames_processed"] == 3


async def test_unreachable_stream_reconnects_with_backoff_then_runs() -> None:
    embedder = FakeEmbedderActor()
    source = FakeSource([IMG, IMG, ABORT, IMG, END], fps=10, fail_opens=2)
    camera = _camera(source, embedder)
    stats = await _run(camera)
    assert stats["reconnects"] == 3  # two failed opens, one failed stream
    assert source.opens == 4
    assert stats["frames_processed"] >= 3 and stats["state"] == "ended"


async def test_gives_up_after_max_attempts_and_reports_failed() -> None:
    source = FakeSource([IMG], fps=10, fail_opens=100)
    camera = _camera(
        source, FakeEmbedderActor(),
        reconnect={"initial_backoff_s": 0.01, "max_backoff_s": 0.02, "max_attempts": 3},
    )  # fmt: skip
    stats = await _run(camera)
    assert stats["state"] == "failed" and "unreachable" in stats["last_error"]
    assert (await camera.health())["ok"] is False


async def test_loop_at_end_restarts_the_file() -> None:
    embedder = FakeEmbedderActor()
    camera = _camera(FakeSource([IMG] * 3 + [END], fps=10), embedder, at_end="loop")
    await camera.start()
    while (await camera.stats())["frames_processed"] < 9:
        await asyncio.sleep(0.01)
    stats = await camera.stop()
    assert stats["state"] == "stopped" and stats["frames_read"] >= 9


async def test_refuses_to_run_outside_the_deployment_window() -> None:
    past = {"id": "dep", "start": time.time() - 7200, "end": time.time() - 3600}
    embedder = FakeEmbedderActor()
    stats = await _run(_camera(FakeSource([IMG, END]), embedder, deployment=past))
    assert stats["state"] == "window_ended" and stats["frames_read"] == 0
    assert embedder.seen == []


async def test_waits_for_the_window_to_open() -> None:
    soon = {"id": "dep", "start": time.time() + 0.3, "end": time.time() + 3600}
    embedder = FakeEmbedderActor()
    camera = _camera(FakeSource([IMG, END]), embedder, deployment=soon)
    await camera.start()
    await asyncio.sleep(0.1)
    assert (await camera.health())["state"] == "waiting_for_window"
    stats = await _run(camera)
    assert stats["frames_processed"] == 1


async def test_embedder_failure_is_counted_not_fatal() -> None:
    embedder = FakeEmbedderActor(fail=True)
    stats = await _run(_camera(FakeSource([IMG] * 3 + [END], fps=10), embedder))
    assert stats["frames_failed"] == 3 and stats["frames_processed"] == 0
    assert "embedder unavailable" in stats["last_error"]


async def test_latency_is_measured_from_capture() -> None:
    embedder = FakeEmbedderActor(delay_s=0.02)
    stats = await _run(_camera(FakeSource([IMG] * 5 + [END], fps=10), embedder))
    assert stats["latency_ms_p50"] >= 20


def test_build_source_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown camera source type 'ftp'"):
        build_source({"type": "ftp"}, fps=10, name="c")


def test_synthetic_source_moves_sprites(tmp_path: Any) -> None:
    sprite = np.full((40, 30, 3), 255, np.uint8)
    cv2.imwrite(str(tmp_path / "s.png"), sprite)
    source = build_source(
        {
            "type": "synthetic", "width": 200, "height": 100, "frames": 3, "seed": 1,
            "sprites": [{"image": str(tmp_path / "s.png"), "start": [0.0, 0.1],
                         "velocity": [0.5, 0.0], "height": 0.5}],
        },
        fps=10,
        name="syn",
    )  # fmt: skip
    source.open()
    frames = [source.read() for _ in range(4)]
    assert frames[3] is None
    xs = [int(np.argmax(f.image[30, :, 0] == 255)) for f in frames[:3] if f is not None]
    assert xs == [0, 10, 20]  # 0.5 of 200 px per second, 10 frames per second
