"""Where in a recording each frame is: the sources number their frames, the camera sends it.

Real files are written with OpenCV's VideoWriter (Motion JPEG in AVI, which every OpenCV
build can write and read back), so the numbering checked is the decoder's own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr_actors.testing.doubles import CORRUPT, END, FakeEmbedderActor, FakeSource
from lfr_actors.video import CaptureSource, CorruptFrameError, SourceFrame, SyntheticSource
from tests.camera_runs import fast_camera, run_to_end

FPS = 10.0
FRAMES = 12
SIZE = (64, 48)  # width, height


def _shade(number: int) -> int:
    """The grey level of frame ``number`` of the test video (frames tell apart by it)."""
    return 10 + 20 * number


def write_video(path: Path, frames: int = FRAMES, fps: float = FPS) -> Path:
    """A small Motion JPEG video whose frame ``n`` is a flat grey of :func:`_shade` ``n``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE)
    assert writer.isOpened()
    for number in range(frames):
        writer.write(np.full((SIZE[1], SIZE[0], 3), _shade(number), np.uint8))
    writer.release()
    return path


def wipe_frame(path: Path, number: int) -> None:
    """Overwrite frame ``number``'s JPEG bytes (SOI to EOI) with zeros: it cannot decode."""
    data = bytearray(path.read_bytes())
    start = -1
    for _ in range(number + 1):
        start = data.find(b"\xff\xd8\xff", start + 1)
        assert start >= 0
    end = data.find(b"\xff\xd9", start) + 2
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))


def read_all(source: CaptureSource | SyntheticSource) -> list[SourceFrame | str]:
    """Every frame to the end; a corrupt frame as the marker :data:`CORRUPT`."""
    out: list[SourceFrame | str] = []
    for _ in range(1000):
        try:
            frame = source.read()
        except CorruptFrameError:
            out.append(CORRUPT)
            continue
        if frame is None:
            return out
        out.append(frame)
    raise AssertionError("the source never ended")


def test_a_files_frames_carry_their_number_and_time(tmp_path: Path) -> None:
    source = CaptureSource(str(write_video(tmp_path / "clip.avi")), live=False, name="cam")
    source.open()
    frames = read_all(source)
    assert all(isinstance(f, SourceFrame) for f in frames)
    assert [f.media_index for f in frames if isinstance(f, SourceFrame)] == list(range(FRAMES))
    times = [f.media_time_s for f in frames if isinstance(f, SourceFrame)]
    assert times == pytest.approx([n / FPS for n in range(FRAMES)])
    shades = [int(f.image[0, 0, 0]) for f in frames if isinstance(f, SourceFrame)]
    assert shades == pytest.approx([_shade(n) for n in range(FRAMES)], abs=4)
    source.open()  # reopening a file starts it, and its numbering, again
    first = source.read()
    assert first is not None and first.media_index == 0
    source.close()


def test_a_corrupt_frame_keeps_its_number_so_the_next_is_the_files_own(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi")
    wipe_frame(path, 5)
    source = CaptureSource(str(path), live=False, name="cam")
    source.open()
    frames = read_all(source)
    source.close()
    assert frames[5] == CORRUPT and frames.count(CORRUPT) == 1
    good = [f for f in frames if isinstance(f, SourceFrame)]
    assert [f.media_index for f in good] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert good[5].media_time_s == pytest.approx(0.6)
    assert int(good[5].image[0, 0, 0]) == pytest.approx(_shade(6), abs=4)  # truly frame 6


def test_a_live_capture_has_no_media_index(tmp_path: Path) -> None:
    # A file read as if it were a camera: its frames have no place in a recording.
    source = CaptureSource(str(write_video(tmp_path / "clip.avi")), live=True, name="cam")
    source.open()
    frame = source.read()
    source.close()
    assert frame is not None and frame.media_index is None


def test_a_synthetic_scene_numbers_its_frames_from_zero_at_each_open() -> None:
    source = SyntheticSource(width=32, height=24, fps=5.0, frames=4)
    source.open()
    frames = read_all(source)
    assert [(f.media_index, f.media_time_s) for f in frames if isinstance(f, SourceFrame)] == [
        (0, 0.0),
        (1, 0.2),
        (2, 0.4),
        (3, 0.6),
    ]
    source.open()
    again = source.read()
    assert again is not None and (again.media_index, again.media_time_s) == (0, 0.0)


async def test_the_camera_sends_each_sampled_frames_place_in_the_file(tmp_path: Path) -> None:
    # The file is 10 frames/s, the camera samples 5: every other frame, by the file's numbers.
    source = CaptureSource(str(write_video(tmp_path / "clip.avi")), live=False, name="cam")
    embedder = FakeEmbedderActor()
    stats = await run_to_end(fast_camera(source, embedder, fps=5))
    assert stats["frames_processed"] == FRAMES // 2
    assert [index for index, _ in embedder.positions] == list(range(0, FRAMES, 2))
    times = [t for _, t in embedder.positions]
    assert times == pytest.approx([n / FPS for n in range(0, FRAMES, 2)])


async def test_a_looped_file_counts_on_so_no_position_repeats(tmp_path: Path) -> None:
    source = CaptureSource(str(write_video(tmp_path / "clip.avi")), live=False, name="cam")
    embedder = FakeEmbedderActor()
    camera = fast_camera(source, embedder, at_end="loop")
    await camera.start()
    while (await camera.stats())["frames_processed"] < 2 * FRAMES + 3:
        await asyncio.sleep(0.01)
    await camera.stop()
    indices = [index for index, _ in embedder.positions]
    times = [t for _, t in embedder.positions]
    assert indices[: 2 * FRAMES + 3] == list(range(2 * FRAMES + 3))  # three passes, numbered on
    assert times[: 2 * FRAMES + 3] == pytest.approx([n / FPS for n in range(2 * FRAMES + 3)])
    assert len(set(indices)) == len(indices)


async def test_corrupt_frames_keep_the_numbering_through_the_camera() -> None:
    image = np.zeros((24, 32, 3), np.uint8)
    source = FakeSource([image, CORRUPT, image, image, END], fps=10)
    embedder = FakeEmbedderActor()
    stats = await run_to_end(fast_camera(source, embedder))
    assert stats["corrupt_frames"] == 1
    assert embedder.positions == [(0, 0.0), (2, 0.2), (3, pytest.approx(0.3))]


async def test_live_frames_carry_no_media_position() -> None:
    image = np.zeros((24, 32, 3), np.uint8)
    source = FakeSource([image] * 3 + [END], fps=10, live=True, read_delay_s=0.01)
    embedder = FakeEmbedderActor()
    stats = await run_to_end(fast_camera(source, embedder, fps=100, pace="realtime"))
    assert stats["frames_processed"] >= 1
    assert set(embedder.positions) == {(None, None)}


async def test_the_camera_counts_the_tracks_its_frames_began() -> None:
    image = np.zeros((24, 32, 3), np.uint8)
    embedder = FakeEmbedderActor(faces_per_frame=3, tracks_per_frame=2)
    stats = await run_to_end(fast_camera(FakeSource([image] * 4 + [END], fps=10), embedder))
    assert (stats["frames_processed"], stats["faces"], stats["tracks"]) == (4, 12, 8)
