"""Frame sources for camera actors: files, streams, devices and a synthetic scene.

:func:`build_source` chooses one from a topology camera's typed ``source`` (the
:data:`~lfr_actors.topology.schema.Source` union). The synthetic scene serves tests, demos
and load tests.

A source yields RGB uint8 frames with their position in the source's own time line. It
does not sample, pace or queue: the camera actor does that. Errors are typed so the
camera can tell a stream that failed (reconnect with backoff) from one corrupt frame
(count it, skip it) from the end of a file (stop or loop).

Reads and opens block; the camera runs them in a thread of their own and may give up on
one that takes too long (its watchdog), so every source's ``close`` must be safe while
another thread is still inside ``open`` or ``read``.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from lfr_actors.errors import LfrError
from lfr_actors.models.images import load_image
from lfr_actors.models.types import UInt8Array
from lfr_actors.topology import schema


class SourceError(LfrError):
    """The source cannot be opened or has failed; the camera reconnects with backoff."""


class CorruptFrameError(LfrError):
    """One frame could not be decoded; the camera counts it and reads on."""


@dataclass(frozen=True)
class SourceFrame:
    """A frame and its position in the source's own time line.

    ``media_time_s`` is seconds from the source's start. ``media_index`` is the frame's
    number in a file or synthetic scene, from 0, counting frames that could not be
    decoded, so it is the file's own numbering; None for a live source, whose frames have
    no place in a recording.
    """

    image: UInt8Array
    media_time_s: float
    media_index: int | None = None


class FrameSource(Protocol):
    """What a camera reads from."""

    live: bool
    """True for cameras and streams (sampled by wall clock), False for files and synthetic
    scenes (sampled by their own time line, and paced to real time by the camera)."""

    def open(self) -> None:
        """Open or reopen the source; raises :class:`SourceError`."""

    def read(self) -> SourceFrame | None:
        """The next frame, or None at the end of a finite source."""

    def close(self) -> None:
        """Release the source; safe to call twice, and from any thread.

        Also while another thread is blocked in open() or read(): what that call holds is
        released when it returns.
        """


def _to_rgb(frame: np.ndarray) -> UInt8Array:
    if frame.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB))
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB))
    if frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8:
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    raise CorruptFrameError(f"unexpected frame shape {frame.shape} {frame.dtype}")


OPEN_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 1.0
"""How long the one TCP connection that explains a URL that would not open may take."""
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}
"""How long FFmpeg may take to open a network stream (connect, handshake, first probe)."""

READ_TIMEOUT_MARGIN_S = 1.0
"""How much longer than the camera's stall timeout FFmpeg may block in one read, so that
the camera's watchdog, not a read error, is what notices a stream that stops."""

_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class CaptureSource:
    """A source read with OpenCV's VideoCapture: a file, a URL or a device index.

    Network streams are opened with FFmpeg's open and read timeouts
    (:data:`OPEN_TIMEOUT_S`; the read timeout is ``read_timeout_s``), so no call blocks
    without end, and an RTSP URL uses ``transport`` (``tcp``, OpenCV's own default, or
    ``udp``), set through FFmpeg's ``rtsp_transport`` option. OpenCV reads that option
    from the process environment, which is safe because each camera actor is a process
    of its own.

    :meth:`close` may be called from any thread at any time, also while another thread
    is blocked in :meth:`open` or :meth:`read`: the capture that call holds is then
    released by that thread as soon as it returns, and its result is thrown away (it
    raises :class:`SourceError`). So a camera can abandon a stuck read and reopen at once.
    """

    def __init__(
        self,
        target: str | int,
        *,
        live: bool,
        name: str,
        transport: str | None = None,
        read_timeout_s: float = 6.0,
    ) -> None:
        self.target = target
        self.live = live
        self.name = name
        self.transport = transport
        self.read_timeout_s = read_timeout_s
        self._lock = threading.Lock()
        self._capture: cv2.VideoCapture | None = None
        self._generation = 0  # grows at every close; a call that began earlier is stale
        self._reading: cv2.VideoCapture | None = None  # the capture a read() is blocked in
        self._native_fps = 0.0
        self._index = 0
        self._failures_in_a_row = 0

    @property
    def network(self) -> bool:
        """True for a URL (RTSP or HTTP), which gets FFmpeg's timeouts."""
        return isinstance(self.target, str) and "://" in self.target

    def open(self) -> None:
        """Open (or reopen) the capture."""
        self.close()
        if isinstance(self.target, str) and not self.live and not Path(self.target).is_file():
            raise SourceError(f"{self.name}: video file {self.target} does not exist")
        with self._lock:
            generation = self._generation
        capture = self._new_capture()
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self._shown_target()}: {self._why_not_open()}")
        with self._lock:
            stale = generation != self._generation
            if not stale:
                self._capture = capture
        if stale:
            capture.release()
            raise SourceError(f"{self.name}: closed while opening")
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self._native_fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        self._index = 0
        self._failures_in_a_row = 0

    def _new_capture(self) -> cv2.VideoCapture:
        if not self.network:
            return cv2.VideoCapture(self.target)
        if self.transport is not None and str(self.target).lower().startswith("rtsp"):
            os.environ[_OPTIONS_ENV] = f"rtsp_transport;{self.transport}"
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(OPEN_TIMEOUT_S * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(self.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)

    def _why_not_open(self) -> str:
        """A likely reason OpenCV could not open the target (it gives none itself).

        For a URL, one TCP connection to its host and port tells a stream server that is
        down or unreachable from one that answers but has no playable stream there.
        """
        if isinstance(self.target, int):
            return "the camera device is missing, or in use by another program"
        if not self.network:
            return "FFmpeg could not read it as a video (not a video file, or a codec it lacks)"
        parts = urlsplit(str(self.target))
        host = parts.hostname or ""
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        except ValueError:
            return "its port is not a number"
        if not host or not port:
            return "the URL names no host and port to connect to"
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        except socket.gaierror:
            return f"the host name {host!r} is not known"
        except ConnectionRefusedError:
            return f"nothing listens on {host}:{port}: the stream server is down, or elsewhere"
        except OSError as exc:
            return f"no connection to {host}:{port} within {PROBE_TIMEOUT_S:g} s ({exc})"
        return (
            f"{host}:{port} answers but gave no stream to play (a wrong path, a stream that "
            "has not started, or a codec FFmpeg lacks)"
        )

    def _shown_target(self) -> str:
        """The target for messages, with any password in a URL replaced by ``***``."""
        if not self.network:
            return str(self.target)
        parts = urlsplit(str(self.target))
        if parts.password is None:
            return str(self.target)
        host = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()

    def read(self) -> SourceFrame | None:
        """The next decoded frame; None at the end of a file."""
        with self._lock:
            capture, generation = self._capture, self._generation
            if capture is None:
                raise SourceError(f"{self.name}: not open")
            self._reading = capture
        try:
            ok, frame = capture.read()
        finally:
            with self._lock:
                if self._reading is capture:
                    self._reading = None
                stale = generation != self._generation
        if stale:  # closed while this read was blocked: this thread releases the capture
            capture.release()
            raise SourceError(f"{self.name}: closed while reading")
        if not ok or frame is None:
            if not self.live:
                total = capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0
                if total and self._index < total - 1 and self._failures_in_a_row < 10:
                    # A file that stops short of its frame count: a corrupt frame mid-file.
                    self._failures_in_a_row += 1
                    self._index += 1
                    raise CorruptFrameError(f"{self.name}: frame {self._index} cannot be decoded")
                return None
            raise SourceError(f"{self.name}: the stream stopped delivering frames")
        self._failures_in_a_row = 0
        index = self._index
        media_time = index / self._native_fps if self._native_fps else time.monotonic()
        self._index += 1
        return SourceFrame(_to_rgb(frame), media_time, None if self.live else index)

    def close(self) -> None:
        """Release the capture now, or (while a read holds it) when that read returns."""
        with self._lock:
            capture, self._capture = self._capture, None
            self._generation += 1
            busy = capture is not None and capture is self._reading
        if capture is not None and not busy:
            capture.release()


@dataclass(frozen=True)
class Sprite:
    """A picture moving across a synthetic scene (fractions of the frame, per second)."""

    image: UInt8Array
    start: tuple[float, float]
    velocity: tuple[float, float]
    height: float
    appear_s: float = 0.0
    disappear_s: float | None = None
    label: str | None = None


class SyntheticSource:
    """A scene drawn frame by frame: a plain background with pictures moving across it.

    Deterministic for a given seed, so tests and load tests see the same frames each run.
    With no sprites it draws moving shapes only (a load test with no faces in it).
    """

    live = False

    def __init__(
        self,
        *,
        width: int,
        height: int,
        fps: float,
        frames: int | None,
        sprites: Sequence[Sprite] = (),
        background: tuple[int, int, int] = (64, 96, 128),
        seed: int = 0,
        name: str = "synthetic",
    ) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.frames = frames
        self.sprites = list(sprites)
        self.name = name
        rng = np.random.default_rng(seed)
        base = np.empty((height, width, 3), np.uint8)
        base[:] = background
        noise = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
        self._background = np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        self._scaled: dict[int, UInt8Array] = {}
        self._index = 0

    def open(self) -> None:
        """Restart the scene from its first frame."""
        self._index = 0

    def read(self) -> SourceFrame | None:
        """The next frame of the scene, or None after ``frames`` frames."""
        if self.frames is not None and self._index >= self.frames:
            return None
        t = self._index / self.fps
        canvas = self._background.copy()
        for i, sprite in enumerate(self.sprites):
            if t < sprite.appear_s or (sprite.disappear_s is not None and t >= sprite.disappear_s):
                continue
            picture = self._sprite_pixels(i, sprite)
            x = (sprite.start[0] + sprite.velocity[0] * (t - sprite.appear_s)) * self.width
            y = (sprite.start[1] + sprite.velocity[1] * (t - sprite.appear_s)) * self.height
            _paste(canvas, picture, round(x), round(y))
        index, self._index = self._index, self._index + 1
        return SourceFrame(canvas, t, index)

    def _sprite_pixels(self, i: int, sprite: Sprite) -> UInt8Array:
        if i not in self._scaled:
            target_h = max(2, round(sprite.height * self.height))
            scale = target_h / sprite.image.shape[0]
            target_w = max(2, round(sprite.image.shape[1] * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            resized = cv2.resize(sprite.image, (target_w, target_h), interpolation=interp)
            self._scaled[i] = np.asarray(resized, np.uint8)
        return self._scaled[i]

    def close(self) -> None:
        """Nothing to release."""


def _paste(canvas: UInt8Array, picture: UInt8Array, x: int, y: int) -> None:
    """Paste ``picture`` with its top-left corner at (x, y), clipped to the canvas."""
    h, w = picture.shape[:2]
    ch, cw = canvas.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(cw, x + w), min(ch, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    canvas[y0:y1, x0:x1] = picture[y0 - y : y1 - y, x0 - x : x1 - x]


def build_source(
    source: schema.Source, *, fps: float, name: str, stall_timeout_s: float
) -> FrameSource:
    """A frame source from a topology camera's typed ``source``.

    A network stream's FFmpeg read timeout is ``stall_timeout_s`` plus
    :data:`READ_TIMEOUT_MARGIN_S`, so the camera's watchdog notices a
    silent stream first and the read it abandons still ends soon after.
    """
    if isinstance(source, schema.FileSource):
        return CaptureSource(str(source.path), live=False, name=name)
    if isinstance(source, schema.UrlSource):
        return CaptureSource(
            source.url,
            live=True,
            name=name,
            transport=source.transport,
            read_timeout_s=stall_timeout_s + READ_TIMEOUT_MARGIN_S,
        )
    if isinstance(source, schema.DeviceSource):
        return CaptureSource(source.index, live=True, name=name)
    if isinstance(source, schema.SyntheticSource):
        colour = source.background.lstrip("#")
        background = (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))
        sprites = [
            Sprite(
                image=load_image(Path(s.image)),
                start=s.start,
                velocity=s.velocity,
                height=s.height,
                appear_s=s.appear_s,
                disappear_s=s.disappear_s,
                label=s.label,
            )
            for s in source.sprites
        ]
        return SyntheticSource(
            width=source.width,
            height=source.height,
            fps=fps,
            frames=source.frames,
            sprites=sprites,
            background=background,
            seed=source.seed,
            name=name,
        )
    raise ValueError(f"unknown camera source type {getattr(source, 'type', source)!r}")
