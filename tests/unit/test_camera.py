"""The camera actor's policies, with a scripted source and a fake embedder (no Ray)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from lfr_actors.actors import camera as camera_module
from lfr_actors.actors.camera import BACKOFF_JITTER, CameraActor
from lfr_actors.api.metrics import CAMERA_STATES
from lfr_actors.testing.doubles import (
    ABORT,
    CORRUPT,
    END,
    HANG,
    FakeEmbedderActor,
    FakeSource,
)
from lfr_actors.topology.schema import Source
from lfr_actors.video import CaptureSource, SourceError, build_source
from tests.camera_runs import fast_camera, run_to_end

IMG = np.zeros((36, 64, 3), np.uint8)


async def test_samples_a_30fps_file_down_to_10fps() -> None:
    embedder = FakeEmbedderActor()
    stats = await run_to_end(fast_camera(FakeSource([IMG] * 90 + [END], fps=30), embedder))
    assert stats["frames_read"] == 90
    assert stats["frames_sampled"] == 30
    assert stats["frames_processed"] == 30 and stats["frames_dropped"] == 0
    assert [seq for _, seq in embedder.seen] == list(range(1, 31))
    assert stats["state"] == "ended"


async def test_asap_pacing_loses_nothing_behind_a_slow_embedder() -> None:
    embedder = FakeEmbedderActor(delay_s=0.01)
    stats = await run_to_end(fast_camera(FakeSource([IMG] * 20 + [END], fps=10), embedder))
    assert stats["frames_processed"] == 20 and stats["frames_dropped"] == 0


async def test_live_camera_drops_oldest_and_never_blocks() -> None:
    embedder = FakeEmbedderActor(delay_s=0.05)
    source = FakeSource([IMG] * 60 + [END], fps=50, live=True, read_delay_s=0.02)
    camera = fast_camera(source, embedder, fps=60, queue_size=2, pace="realtime")
    stats = await run_to_end(camera)
    assert stats["frames_read"] == 60  # capture kept going while the embedder was slow
    assert stats["frames_dropped"] > 0
    assert stats["frames_processed"] + stats["frames_dropped"] == stats["frames_sampled"]
    seqs = [seq for _, seq in embedder.seen]
    assert seqs == sorted(seqs) and seqs[-1] == stats["frames_sampled"]  # the newest survive


async def test_realtime_pacing_follows_the_media_clock() -> None:
    embedder = FakeEmbedderActor()
    start = time.monotonic()
    stats = await run_to_end(
        fast_camera(FakeSource([IMG] * 6 + [END], fps=10), embedder, pace="realtime")
    )
    assert stats["frames_processed"] == 6
    assert time.monotonic() - start >= 0.45  # six frames at 10 fps span half a second


async def test_corrupt_frames_are_counted_and_skipped() -> None:
    embedder = FakeEmbedderActor()
    source = FakeSource([IMG, CORRUPT, IMG, CORRUPT, IMG, END], fps=10)
    stats = await run_to_end(fast_camera(source, embedder))
    assert stats["corrupt_frames"] == 2 and stats["frames_processed"] == 3


async def test_unreachable_stream_reconnects_with_backoff_then_runs() -> None:
    embedder = FakeEmbedderActor()
    source = FakeSource([IMG, IMG, ABORT, IMG, END], fps=10, fail_opens=2)
    camera = fast_camera(source, embedder)
    stats = await run_to_end(camera)
    assert stats["reconnects"] == 3  # two failed opens, one failed stream
    assert source.opens == 4
    assert stats["frames_processed"] >= 3 and stats["state"] == "ended"


async def test_gives_up_after_max_attempts_and_reports_failed() -> None:
    source = FakeSource([IMG], fps=10, fail_opens=100)
    camera = fast_camera(
        source, FakeEmbedderActor(),
        reconnect={"initial_backoff_s": 0.01, "max_backoff_s": 0.02, "max_attempts": 3},
    )  # fmt: skip
    stats = await run_to_end(camera)
    assert stats["state"] == "failed" and "unreachable" in stats["last_error"]
    assert (await camera.health())["ok"] is False


async def test_loop_at_end_restarts_the_file() -> None:
    embedder = FakeEmbedderActor()
    camera = fast_camera(FakeSource([IMG] * 3 + [END], fps=10), embedder, at_end="loop")
    await camera.start()
    while (await camera.stats())["frames_processed"] < 9:
        await asyncio.sleep(0.01)
    stats = await camera.stop()
    assert stats["state"] == "stopped" and stats["frames_read"] >= 9


async def test_refuses_to_run_outside_the_deployment_window() -> None:
    past = {"id": "dep", "start": time.time() - 7200, "end": time.time() - 3600}
    embedder = FakeEmbedderActor()
    stats = await run_to_end(fast_camera(FakeSource([IMG, END]), embedder, deployment=past))
    assert stats["state"] == "window_ended" and stats["frames_read"] == 0
    assert embedder.seen == []


async def test_waits_for_the_window_to_open() -> None:
    soon = {"id": "dep", "start": time.time() + 0.3, "end": time.time() + 3600}
    embedder = FakeEmbedderActor()
    camera = fast_camera(FakeSource([IMG, END]), embedder, deployment=soon)
    await camera.start()
    await asyncio.sleep(0.1)
    assert (await camera.health())["state"] == "waiting_for_window"
    stats = await run_to_end(camera)
    assert stats["frames_processed"] == 1


async def test_an_unreachable_camera_stops_retrying_when_the_window_ends() -> None:
    closing = {"id": "dep", "start": time.time() - 60, "end": time.time() + 0.4}
    source = FakeSource([IMG, END], fail_opens=10_000)
    camera = fast_camera(source, FakeEmbedderActor(), deployment=closing)
    stats = await run_to_end(camera, timeout_s=5)
    assert stats["state"] == "window_ended" and stats["reconnects"] >= 2
    opens = source.opens
    await asyncio.sleep(0.2)
    assert source.opens == opens  # no attempt after the window


async def test_embedder_failure_is_counted_not_fatal() -> None:
    embedder = FakeEmbedderActor(fail=True)
    stats = await run_to_end(fast_camera(FakeSource([IMG] * 3 + [END], fps=10), embedder))
    assert stats["frames_failed"] == 3 and stats["frames_processed"] == 0
    assert "embedder unavailable" in stats["last_error"]


async def test_latency_is_measured_from_capture() -> None:
    embedder = FakeEmbedderActor(delay_s=0.02)
    stats = await run_to_end(fast_camera(FakeSource([IMG] * 5 + [END], fps=10), embedder))
    assert stats["latency_ms_p50"] >= 20


async def test_read_time_is_the_median_of_the_reads_that_gave_a_frame() -> None:
    source = FakeSource([IMG] * 5 + [END], fps=10, read_delay_s=0.03)
    camera = fast_camera(source, FakeEmbedderActor())
    assert (await camera.stats())["read_ms_median"] is None  # no frame read yet
    stats = await run_to_end(camera)
    assert stats["frames_read"] == 5
    assert 30 <= stats["read_ms_median"] < 300  # each read slept 30 ms; the end read is left out


def _source(description: dict[str, Any]) -> Source:
    """A topology camera's typed ``source``, validated as the topology loader does."""
    return TypeAdapter(Source).validate_python(description)


def test_build_source_rejects_unknown_type() -> None:
    with pytest.raises(ValidationError, match="'ftp'"):
        _source({"type": "ftp"})  # a topology never carries one
    with pytest.raises(ValueError, match="unknown camera source type 'ftp'"):
        build_source(cast(Source, SimpleNamespace(type="ftp")), fps=10, name="c", stall_timeout_s=5)


def test_synthetic_source_moves_sprites(tmp_path: Any) -> None:
    sprite = np.full((40, 30, 3), 255, np.uint8)
    cv2.imwrite(str(tmp_path / "s.png"), sprite)
    source = build_source(
        _source({
            "type": "synthetic", "width": 200, "height": 100, "frames": 3, "seed": 1,
            "sprites": [{"image": str(tmp_path / "s.png"), "start": [0.0, 0.1],
                         "velocity": [0.5, 0.0], "height": 0.5}],
        }),
        fps=10,
        name="syn",
        stall_timeout_s=5,
    )  # fmt: skip
    source.open()
    frames = [source.read() for _ in range(4)]
    assert frames[3] is None
    xs = [int(np.argmax(f.image[30, :, 0] == 255)) for f in frames[:3] if f is not None]
    assert xs == [0, 10, 20]  # 0.5 of 200 px per second, 10 frames per second


# -- the watchdog ------------------------------------------------------------------------


async def _wait_for(camera: CameraActor, state: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (health := await camera.health())["state"] != state:
        assert time.monotonic() < deadline, (state, await camera.stats())
        await asyncio.sleep(0.01)
    return health


async def _wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_a_frozen_stream_stalls_is_reopened_and_recovers() -> None:
    embedder = FakeEmbedderActor()
    source = FakeSource([IMG] * 5 + [HANG] + [IMG] * 5 + [END], live=True, read_delay_s=0.01)
    camera = fast_camera(
        source, embedder, pace="realtime", fps=100, stall_timeout_s=0.3,
        reconnect={"initial_backoff_s": 0.2, "max_backoff_s": 0.2},
    )  # fmt: skip
    try:
        await camera.start()
        await _wait_until(source.hanging.is_set)
        frozen_at = time.monotonic()
        source.fail_opens = source.opens + 2  # the next two reopens fail: it stays stalled
        health = await _wait_for(camera, "stalled")
        noticed_s = time.monotonic() - frozen_at
        assert 0.2 <= noticed_s < 2.0, noticed_s  # the watchdog, at stall_timeout_s
        assert re.fullmatch(
            r"no frame for \d+ s \(stall_timeout_s 0\.3\); reconnecting(: .+)?",
            health["last_error"],
        ), health["last_error"]
        await _wait_until(lambda: source.opens >= 3)  # a failed reopen: shown, still stalled
        while "unreachable" not in ((await camera.health())["last_error"] or ""):
            await asyncio.sleep(0.01)
        assert (await camera.health())["state"] == "stalled"
        stats = await run_to_end(camera)  # reopened: the frames after the freeze flow again
    finally:
        source.release()
    assert stats["state"] == "ended"
    assert stats["stalls"] == 1 and stats["reconnects"] == 3  # one stall, two failed reopens
    assert stats["frames_read"] == 10 and stats["last_error"] is None
    assert source.closes >= 2  # the stuck read's source was closed, and the last one


async def test_a_stalled_camera_reports_no_fps_and_how_long() -> None:
    source = FakeSource([IMG] * 5 + [HANG], live=True, read_delay_s=0.01)
    camera = fast_camera(source, FakeEmbedderActor(), pace="realtime", fps=100, stall_timeout_s=60)
    try:
        await camera.start()
        await _wait_until(source.hanging.is_set)
        assert (await camera.stats())["fps"] > 0
        await asyncio.sleep(2.3)  # past the fps window: a rate measured before is stale
        stats = await camera.stats()
        assert stats["fps"] == 0.0 and stats["seconds_since_frame"] >= 2.0
        assert stats["state"] == "running"  # 60 s is not up yet
        await camera.stop()
    finally:
        source.release()


async def test_a_stop_does_not_wait_for_a_stuck_read() -> None:
    source = FakeSource([IMG, HANG, IMG, END], live=True, hang_s=30)
    camera = fast_camera(source, FakeEmbedderActor(), pace="realtime", stall_timeout_s=60)
    try:
        await camera.start()
        await _wait_until(source.hanging.is_set)
        started = time.monotonic()
        stats = await camera.stop()
        took = time.monotonic() - started
        assert took < 1.0, took
        assert stats["state"] == "stopped" and source.closes >= 1
    finally:
        source.release()
    await _wait_until(lambda: source.hangs_ended == 1)  # the abandoned read ended by itself


async def test_a_stop_does_not_wait_for_a_stuck_open() -> None:
    source = FakeSource([IMG, END], live=True, hang_opens=1, hang_s=30)
    camera = fast_camera(source, FakeEmbedderActor(), pace="realtime")
    try:
        await camera.start()
        await _wait_until(source.hanging.is_set)
        assert (await camera.health())["state"] == "connecting"
        started = time.monotonic()
        stats = await camera.stop()
        assert time.monotonic() - started < 1.0
        assert stats["state"] == "stopped" and stats["frames_read"] == 0
    finally:
        source.release()


async def test_corrupt_frames_for_longer_than_the_timeout_are_one_stall() -> None:
    source = FakeSource([IMG] + [CORRUPT] * 60 + [IMG, END], live=True, read_delay_s=0.01)
    camera = fast_camera(
        source, FakeEmbedderActor(), pace="realtime", fps=100, stall_timeout_s=0.15
    )
    stats = await run_to_end(camera)
    # A read in flight when the watchdog fires is abandoned, with the item it was reading.
    assert 50 <= stats["corrupt_frames"] <= 60 and stats["frames_read"] >= 1
    assert stats["stalls"] == 1 and stats["reconnects"] >= 1  # reopened, maybe more than once
    assert stats["state"] == "ended"


async def test_pacing_and_a_full_queue_are_not_stalls() -> None:
    # A 2 fps file paced to real time waits 0.5 s between frames, longer than the timeout.
    paced = fast_camera(
        FakeSource([IMG] * 4 + [END], fps=2), FakeEmbedderActor(),
        fps=2, pace="realtime", stall_timeout_s=0.2,
    )  # fmt: skip
    stats = await run_to_end(paced)
    assert (stats["stalls"], stats["frames_processed"]) == (0, 4)
    # An asap reader waits for queue space behind an embedder slower than the timeout.
    waiting = fast_camera(
        FakeSource([IMG] * 5 + [END], fps=10), FakeEmbedderActor(delay_s=0.25),
        queue_size=1, stall_timeout_s=0.1,
    )  # fmt: skip
    stats = await run_to_end(waiting)
    assert (stats["stalls"], stats["frames_processed"], stats["frames_dropped"]) == (0, 5, 0)


async def test_backoff_doubles_to_its_cap_with_jitter_and_restarts_after_a_frame() -> None:
    camera = fast_camera(
        FakeSource([IMG, END]), FakeEmbedderActor(),
        reconnect={"initial_backoff_s": 0.5, "max_backoff_s": 5.0},
    )  # fmt: skip
    waits = [camera._next_backoff() for _ in range(7)]
    for wait, step in zip(waits, [0.5, 1, 2, 4, 5, 5, 5], strict=True):
        assert step * (1 - BACKOFF_JITTER) <= wait <= step
    camera._frame_arrived()
    assert camera._next_backoff() <= 0.5


def test_every_state_the_camera_sets_is_a_metrics_state() -> None:
    text = Path(camera_module.__file__).read_text("utf-8")
    states = set(re.findall(r'self\.state = "([a-z_]+)"', text))
    states |= set(re.findall(r'"stopped" if self\._stop\.is_set\(\) else "([a-z_]+)"', text))
    assert {"running", "stalled", "reconnecting", "ended"} <= states
    assert states <= set(CAMERA_STATES) and "created" in CAMERA_STATES


# -- the OpenCV source's hand-over of a stuck read --------------------------------------


class _BlockingCapture:
    """Stands in for cv2.VideoCapture: reads block until ``go`` is set."""

    made: list[_BlockingCapture] = []  # noqa: RUF012

    def __init__(self, target: Any, *args: Any) -> None:
        self.target, self.args = target, args
        self.go = threading.Event()
        self.reading = threading.Event()
        self.released = 0
        _BlockingCapture.made.append(self)

    def isOpened(self) -> bool:
        return not str(self.target).endswith("/missing")

    def get(self, prop: int) -> float:
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, Any]:
        self.reading.set()
        self.go.wait(10)
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self) -> None:
        self.released += 1


def test_capture_source_hands_a_stuck_read_its_own_release(monkeypatch: Any) -> None:
    monkeypatch.setattr(cv2, "VideoCapture", _BlockingCapture)
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    _BlockingCapture.made.clear()
    source = CaptureSource(
        "rtsp://cam:pw@127.0.0.1:1/s", live=True, name="c", transport="udp", read_timeout_s=3.5
    )
    source.open()
    first = _BlockingCapture.made[0]
    assert first.args == (
        cv2.CAP_FFMPEG,
        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 3500],
    )
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"
    outcome: list[Any] = []

    def read() -> None:
        try:
            outcome.append(source.read())
        except SourceError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert first.reading.wait(5)
    source.close()  # from another thread, while the read is blocked: no release yet
    assert first.released == 0
    source.open()  # a new capture at once, beside the stuck one
    second = _BlockingCapture.made[1]
    first.go.set()
    reader.join(5)
    assert first.released == 1  # released by the read's own thread, once it returned
    assert isinstance(outcome[0], SourceError) and "closed while reading" in str(outcome[0])
    second.go.set()
    frame = source.read()  # the new capture is untouched by the old read ending
    assert frame is not None and second.released == 0
    source.close()
    assert second.released == 1
    source.close()  # twice is fine
    assert second.released == 1


def test_capture_source_hides_the_password_when_it_cannot_open(monkeypatch: Any) -> None:
    monkeypatch.setattr(cv2, "VideoCapture", _BlockingCapture)
    source = CaptureSource("rtsp://cam:pw@127.0.0.1:1/missing", live=True, name="c")
    with pytest.raises(SourceError) as caught:
        source.open()
    assert str(caught.value) == (
        "cannot open rtsp://cam:***@127.0.0.1:1/missing: nothing listens on 127.0.0.1:1: "
        "the stream server is down, or elsewhere"
    )


def test_a_source_that_will_not_open_says_why(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(cv2, "VideoCapture", _BlockingCapture)
    with socket.socket() as server:  # a port that answers, but serves no stream
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        source = CaptureSource(f"rtsp://127.0.0.1:{port}/missing", live=True, name="c")
        with pytest.raises(SourceError, match="answers but gave no stream to play"):
            source.open()
    unknown = CaptureSource("rtsp://no-such-host.invalid/missing", live=True, name="c")
    with pytest.raises(SourceError, match=r"host name 'no-such-host\.invalid' is not known"):
        unknown.open()
    monkeypatch.undo()  # OpenCV itself, on a file that is no video
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="could not read it as a video"):
        CaptureSource(str(not_video), live=False, name="c").open()


def test_url_sources_get_a_read_timeout_past_the_stall_timeout() -> None:
    source = build_source(
        _source({"type": "url", "url": "rtsp://127.0.0.1:1/s", "transport": "udp"}),
        fps=10, name="c", stall_timeout_s=4.0,
    )  # fmt: skip
    assert isinstance(source, CaptureSource)
    assert (source.transport, source.read_timeout_s, source.network) == ("udp", 5.0, True)
