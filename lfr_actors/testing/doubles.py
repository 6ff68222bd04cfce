"""Stand-ins for a camera's source and for actors, so actor logic is testable without Ray.

- :class:`FakeSource` plays a scripted list of frames with end-of-stream, abort (the
  stream fails), corrupt-frame and hang (the read blocks, as on a frozen stream) markers.
- :class:`LocalHandle` makes a plain object look like a Ray actor handle
  (``handle.method.remote(...)`` returns an awaitable).
- :class:`FakeEmbedderActor` answers frames like the embedder actor, with a set delay and
  deterministic face and track counts, and records what it saw.
- :class:`FakeFaceEmbedder` gives deterministic embeddings for chips (same chip, same
  vector), with the real embedder's ``embed`` interface.
- :func:`make_sighting` builds a possible match with a tiny fake crop, for alert tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from lfr_actors.messages import Frame, FrameResult, Sighting
from lfr_actors.models.types import FloatArray, UInt8Array
from lfr_actors.video import CorruptFrameError, SourceError, SourceFrame

END = "end"
"""Marker: the stream ends here (a file's end)."""
ABORT = "abort"
"""Marker: the stream fails here (reading raises SourceError)."""
CORRUPT = "corrupt"
"""Marker: one frame here cannot be decoded."""
HANG = "hang"
"""Marker: the read blocks here, like a frozen stream, until :meth:`FakeSource.release` or
``hang_s``; then it goes on with the next item."""


class FakeSource:
    """A scripted frame source; items are images or the markers above.

    Opens numbered up to ``fail_opens`` fail (the attribute may be raised later, to make
    the next opens fail); the first ``hang_opens`` opens block like :data:`HANG`.
    ``hanging`` is set while a call is blocked. Safe to call from several threads, as a
    camera does when it abandons a stuck read.
    """

    def __init__(
        self,
        items: Sequence[UInt8Array | str],
        *,
        fps: float = 30.0,
        live: bool = False,
        fail_opens: int = 0,
        hang_opens: int = 0,
        read_delay_s: float = 0.0,
        hang_s: float = 30.0,
    ) -> None:
        self.items = list(items)
        self.read_delay_s = read_delay_s
        self.fps = fps
        self.live = live
        self.fail_opens = fail_opens
        self.hang_opens = hang_opens
        self.hang_s = hang_s
        self.opens = 0
        self.closes = 0
        self.position = 0
        self.frame_number = 0
        self.hanging = threading.Event()
        self.hangs_ended = 0
        self._released = threading.Event()
        self._lock = threading.RLock()
        self._ended = False

    def release(self) -> None:
        """Let every blocked call (and every later hang) go on."""
        self._released.set()

    def _hang(self) -> None:
        self.hanging.set()
        self._released.wait(self.hang_s)
        self.hanging.clear()
        with self._lock:
            self.hangs_ended += 1

    def open(self) -> None:
        """Open; the first ``fail_opens`` attempts fail like an unreachable camera."""
        with self._lock:
            self.opens += 1
            number = self.opens
        if number <= self.hang_opens:
            self._hang()
        with self._lock:
            if number <= self.fail_opens:
                raise SourceError(f"fake source: unreachable (attempt {number})")
            if self._ended:  # reopening a finished file starts it again
                self.position = 0
                self.frame_number = 0
                self._ended = False

    def read(self) -> SourceFrame | None:
        """The next scripted item (after ``read_delay_s``, as a live camera paces frames)."""
        if self.read_delay_s:
            time.sleep(self.read_delay_s)
        with self._lock:
            if self.position >= len(self.items):
                self._ended = True
                return None
            item = self.items[self.position]
            self.position += 1
        if isinstance(item, str) and item == HANG:
            self._hang()
            return self.read()
        with self._lock:
            if isinstance(item, str):
                if item == END:
                    self._ended = True
                    return None
                if item == ABORT:
                    raise SourceError("fake source: the stream stopped")
                if item == CORRUPT:
                    self.frame_number += 1
                    raise CorruptFrameError("fake source: corrupt frame")
                raise ValueError(f"unknown marker {item!r}")
            number = None if self.live else self.frame_number
            frame = SourceFrame(item, self.frame_number / self.fps, number)
            self.frame_number += 1
            return frame

    def close(self) -> None:
        """Nothing to release; counted."""
        with self._lock:
            self.closes += 1


class _RemoteMethod:
    def __init__(self, method: Any) -> None:
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        result = self._method(*args, **kwargs)
        if asyncio.iscoroutine(result):
            return result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future


class LocalHandle:
    """``LocalHandle(obj).method.remote(...)`` calls ``obj.method(...)``, awaitable."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> _RemoteMethod:
        return _RemoteMethod(getattr(self._target, name))


@dataclass
class FakeEmbedderActor:
    """Answers frames after ``delay_s``; every frame has ``faces_per_frame`` faces.

    Every frame begins ``tracks_per_frame`` face tracks. ``seen`` records each frame's
    camera and number, ``positions`` its media position (frame number and time).
    """

    delay_s: float = 0.0
    faces_per_frame: int = 1
    tracks_per_frame: int = 0
    fail: bool = False
    seen: list[tuple[str, int]] = field(default_factory=list)
    positions: list[tuple[int | None, float | None]] = field(default_factory=list)

    async def process(self, data: bytes) -> bytes:
        """Like :meth:`EmbedderActor.process`."""
        frame = Frame.decode(data)
        if self.fail:
            raise ConnectionError("fake embedder is down")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.seen.append((frame.camera_id, frame.seq))
        self.positions.append((frame.media_index, frame.media_time_s))
        return FrameResult(
            camera_id=frame.camera_id,
            seq=frame.seq,
            captured_at=frame.captured_at,
            faces=self.faces_per_frame,
            faces_compared=self.faces_per_frame,
            candidates=0,
            processed_at=time.time(),
            tracks_started=self.tracks_per_frame,
        ).encode()


class FakeFaceEmbedder:
    """Deterministic embeddings: a unit vector seeded by the chip's bytes."""

    def __init__(self, dimension: int = 128) -> None:
        self.dimension = dimension

    def embed(self, chips: UInt8Array) -> FloatArray:
        """One vector per chip; identical chips give identical vectors."""
        out = np.empty((chips.shape[0], self.dimension), np.float32)
        for i, chip in enumerate(chips):
            seed = int.from_bytes(hashlib.blake2b(chip.tobytes(), digest_size=8).digest(), "little")
            vector = np.random.default_rng(seed).standard_normal(self.dimension)
            out[i] = vector / np.linalg.norm(vector)
        return out


SIGHTING_EPOCH = 1_700_000_000.0
"""Capture time of :func:`make_sighting`'s sighting ``at=0``."""


def fake_jpeg(seed: int) -> bytes:
    """A tiny real JPEG of random pixels: a stand-in face crop with no face in it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels)
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(encoded.tobytes())


def make_sighting(
    n: int,
    *,
    entry: str = "E1",
    camera: str = "cam_a",
    at: float = 0.0,
    distance: float = 0.3,
) -> Sighting:
    """Sighting number ``n`` of ``entry`` on ``camera``, ``at`` seconds after the epoch."""
    return Sighting(
        sighting_id=f"{camera}:{n}:0",
        camera_id=camera,
        frame_seq=n,
        captured_at=SIGHTING_EPOCH + at,
        entry_id=entry,
        distance=distance,
        box=[float(n), 2.0, 30.0, 40.0],
        quality={"sharpness": 0.5 + n / 100},
        crop_jpeg=fake_jpeg(n),
    )
