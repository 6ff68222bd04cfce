"""The camera actor: one per camera. Reads, samples, timestamps, queues and sends frames.

- Sampling: a live stream is sampled by wall clock; a file or synthetic scene by its own
  time line, paced to real time (``pace: realtime``) like the camera it stands in for, or
  as fast as the embedder takes frames (``pace: asap``, for benchmarks and batch runs).
- Every frame is timestamped at capture (Unix seconds), before it waits anywhere.
- The queue is bounded. A live camera never waits for a slow embedder: when the queue is
  full the oldest frame is dropped and counted. (In ``asap`` pacing nothing is live, so the
  reader waits instead and nothing is dropped.)
- At most ``max_in_flight`` frames are at the embedder, unanswered, at any time.
- A failed stream is reopened with exponential backoff; status shows it meanwhile.
- Frames are sent as :class:`~lfr_actors.messages.Frame` bytes and forgotten once answered.
  A frame whose embedder dies (or cannot be reached) before answering is sent once more,
  to the next embedder or the restarted one, with the same bytes: the alert actor drops
  whatever it had already stored from the first try.
- Every camera actor picks a run ``epoch`` when it starts and puts it in each frame, so
  frames (and the sightings made from them) of a restarted camera, or of a later
  ``lfr up``, never take the ids of earlier ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import ray

from lfr_actors.logs import configure, get_logger
from lfr_actors.messages import Frame, FrameResult, MessageDecodeError
from lfr_actors.models.images import load_image
from lfr_actors.video import (
    CaptureSource,
    CorruptFrameError,
    FrameSource,
    SourceError,
    SourceFrame,
    Sprite,
    SyntheticSource,
)

_LATENCY_WINDOW = 512
_RESOLVE_RETRY_S = 15.0
"""How long a frame's one resend waits for an embedder to be found again (restarts take ~5 s)."""
_SEND_ERRORS = ("embedder unavailable", "alert store unavailable", "alert actor unavailable")


COUNTERS = (
    "frames_read",
    "frames_sampled",
    "frames_sent",
    "frames_processed",
    "frames_dropped",
    "frames_failed",
    "frames_retried",
    "frames_discarded_at_stop",
    "corrupt_frames",
    "reconnects",
    "faces",
    "candidates",
    "decode_errors",
)
"""The counters in a camera's ``stats()``: each counts up from 0 in every camera run."""


def new_epoch() -> str:
    """A token naming one camera run: the start time (ms, hex) and 24 random bits."""
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(3)}"


def build_source(source: dict[str, Any], *, fps: float, name: str) -> FrameSource:
    """A frame source from a topology camera's ``source`` section (as a plain dict)."""
    kind = source["type"]
    if kind == "file":
        return CaptureSource(str(source["path"]), live=False, name=name)
    if kind == "url":
        return CaptureSource(str(source["url"]), live=True, name=name)
    if kind == "device":
        return CaptureSource(int(source["index"]), live=True, name=name)
    if kind == "synthetic":
        colour = str(source.get("background", "#406080")).lstrip("#")
        background = (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))
        sprites = [
            Sprite(
                image=load_image(Path(s["image"])),
                start=(float(s["start"][0]), float(s["start"][1])),
                velocity=(float(s["velocity"][0]), float(s["velocity"][1])),
                height=float(s["height"]),
                appear_s=float(s.get("appear_s", 0.0)),
                disappear_s=s.get("disappear_s"),
                label=s.get("label"),
            )
            for s in source.get("sprites", [])
        ]
        return SyntheticSource(
            width=int(source.get("width", 640)),
            height=int(source.get("height", 360)),
            fps=max(fps, float(source.get("native_fps", fps))),
            frames=source.get("frames"),
            sprites=sprites,
            background=background,
            seed=int(source.get("seed", 0)),
            name=name,
        )
    raise ValueError(f"unknown camera source type {kind!r}")


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


class CameraActor:
    """Reads one camera and feeds the embedder; see the module docstring for the policy."""

    def __init__(
        self,
        camera_id: str,
        deployment: dict[str, Any],
        config: dict[str, Any],
        embedder_names: list[str],
        namespace: str,
        *,
        source: FrameSource | None = None,
        resolve: Callable[[str], Any] | None = None,
    ) -> None:
        configure()
        self.camera_id = camera_id
        self.deployment_id = str(deployment["id"])
        self.window = (_timestamp(deployment.get("start")), _timestamp(deployment.get("end")))
        self.config = config
        self.fps = float(config.get("fps", 10.0))
        self.pace = str(config.get("pace", "realtime"))
        self.at_end = str(config.get("at_end", "stop"))
        self.queue_size = int(config.get("queue_size", 4))
        self.max_in_flight = int(config.get("max_in_flight", 2))
        reconnect = config.get("reconnect") or {}
        self.initial_backoff_s = float(reconnect.get("initial_backoff_s", 0.5))
        self.max_backoff_s = float(reconnect.get("max_backoff_s", 30.0))
        self.max_attempts = reconnect.get("max_attempts")
        self.embedder_names = list(embedder_names)
        self.namespace = namespace
        self.epoch = new_epoch()
        self.log = get_logger("lfr.camera").bind(
            actor=camera_id, deployment=self.deployment_id, epoch=self.epoch
        )
        self.source = source or build_source(config["source"], fps=self.fps, name=camera_id)
        self.queue: deque[tuple[int, float, np.ndarray]] = deque()
        self._queue_event = asyncio.Event()
        self._space_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._capture_done = False
        self._task: asyncio.Task[None] | None = None
        self._resolve = resolve or (lambda name: ray.get_actor(name, namespace=namespace))
        self._handle: Any = None
        self._handle_index = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self.state = "created"
        self.last_error: str | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._sample_times: deque[float] = deque(maxlen=64)
        self._seq = 0

    # --- control -----------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Start capturing (returns at once); a second call does nothing."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await self.health()

    async def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop capturing; frames already at the embedder finish, queued ones are dropped."""
        self._stop.set()
        self._queue_event.set()
        self._space_event.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        return await self.stats()

    async def health(self) -> dict[str, Any]:
        """Liveness and state: connecting, running, reconnecting, ended, failed, waiting."""
        return {
            "ok": self.state not in {"failed"},
            "id": self.camera_id,
            "role": "camera",
            "state": self.state,
            "last_error": self.last_error,
        }

    async def stats(self) -> dict[str, Any]:
        """Counters, measured sampling rate, queue depth and capture-to-result latency."""
        latencies = sorted(self._latencies)

        def pct(q: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        fps = None
        if len(self._sample_times) >= 2:
            span = self._sample_times[-1] - self._sample_times[0]
            fps = round((len(self._sample_times) - 1) / span, 2) if span > 0 else None
        return {
            **self.counters,
            "id": self.camera_id,
            "epoch": self.epoch,
            "state": self.state,
            "last_error": self.last_error,
            "fps": fps,
            "queue": len(self.queue),
            "in_flight": len(self._in_flight),
            "latency_ms_p50": pct(0.5),
            "latency_ms_p95": pct(0.95),
            "latency_ms_p99": pct(0.99),
        }

    async def ended(self) -> bool:
        """True once a finite source has been read to its end and every frame answered."""
        return self.state in {"ended", "failed", "window_ended", "stopped"}

    async def latencies(self) -> list[float]:
        """Recent capture-to-result latencies in seconds (for benchmarks and summaries)."""
        return list(self._latencies)

    # --- the loops ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if not await self._wait_for_window():
                return
            sender = asyncio.create_task(self._send_loop())
            try:
                await self._capture_loop()
            finally:
                self._capture_done = True
                self._queue_event.set()
                await sender
            if self.state not in {"failed", "window_ended"}:
                self.state = "stopped" if self._stop.is_set() else "ended"
        except Exception as exc:  # the actor must report, not die silently
            self.state = "failed"
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.log.exception("camera_failed")
        finally:
            self.source.close()
            self.log.info("camera_finished", state=self.state, **self.counters)

    async def _wait_for_window(self) -> bool:
        start, end = self.window
        now = time.time()
        if end is not None and now >= end:
            self.state = "window_ended"
            self.last_error = "the deployment's authorised window has ended"
            self.log.warning("camera_outside_window", reason="window_ended")
            return False
        if start is not None and now < start:
            self.state = "waiting_for_window"
            self.log.info("camera_waiting_for_window", seconds=round(start - now, 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), start - now)
            if self._stop.is_set():
                self.state = "stopped"
                return False
        return True

    async def _open_with_backoff(self) -> bool:
        delay = self.initial_backoff_s
        attempts = 0
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.source.open)
                self.state = "running"
                self.last_error = None
                return True
            except SourceError as exc:
                attempts += 1
                self.counters["reconnects"] += 1
                self.state = "reconnecting"
                self.last_error = str(exc)
                self.log.warning("camera_reconnecting", attempt=attempts, delay_s=delay)
                if self.max_attempts is not None and attempts >= int(self.max_attempts):
                    self.state = "failed"
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(self.max_backoff_s, delay * 2)
        return False

    async def _capture_loop(self) -> None:
        self.state = "connecting"
        if not await self._open_with_backoff():
            return
        interval = 1.0 / self.fps
        wall_start = time.monotonic()
        media_offset = 0.0
        next_sample = 0.0
        last_media = 0.0
        while not self._stop.is_set():
            if self.window[1] is not None and time.time() >= self.window[1]:
                self.state = "window_ended"
                self.log.warning("camera_outside_window", reason="window_ended")
                return
            try:
                frame: SourceFrame | None = await asyncio.to_thread(self.source.read)
            except CorruptFrameError:
                self.counters["corrupt_frames"] += 1
                continue
            except SourceError as exc:
                self.last_error = str(exc)
                self.counters["reconnects"] += 1
                self.state = "reconnecting"
                self.log.warning("camera_stream_failed", reason=str(exc))
                if not await self._open_with_backoff():
                    return
                continue
            if frame is None:
                if self.at_end == "loop":
                    media_offset = last_media + interval
                    if not await self._open_with_backoff():
                        return
                    continue
                return
            self.counters["frames_read"] += 1
            if self.source.live:
                t = time.monotonic() - wall_start
            else:
                t = frame.media_time_s + media_offset
                last_media = t
            if t + 1e-6 < next_sample:
                continue
            # Keep the schedule exact while on time; after a stall, restart it from now.
            next_sample = next_sample + interval if t - next_sample < interval else t + interval
            if not self.source.live and self.pace == "realtime":
                ahead = wall_start + t - time.monotonic()
                if ahead > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), ahead)
                    if self._stop.is_set():
                        return
            await self._enqueue(frame.image)

    async def _enqueue(self, image: np.ndarray) -> None:
        captured_at = time.time()
        self._seq += 1
        self.counters["frames_sampled"] += 1
        self._sample_times.append(time.monotonic())
        if self.pace == "asap" and not self.source.live:
            while len(self.queue) >= self.queue_size and not self._stop.is_set():
                self._space_event.clear()
                await self._space_event.wait()
        elif len(self.queue) >= self.queue_size:
            self.queue.popleft()
            self.counters["frames_dropped"] += 1
        self.queue.append((self._seq, captured_at, image))
        self._queue_event.set()

    async def _send_loop(self) -> None:
        while True:
            if self._stop.is_set() and self.queue:
                self.counters["frames_discarded_at_stop"] += len(self.queue)
                self.queue.clear()
            if not self.queue:
                if self._capture_done or self._stop.is_set():
                    break
                self._queue_event.clear()
                await self._queue_event.wait()
                continue
            if len(self._in_flight) >= self.max_in_flight:
                await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
                continue
            seq, captured_at, image = self.queue.popleft()
            self._space_event.set()
            data = Frame(self.camera_id, seq, captured_at, image, epoch=self.epoch).encode()
            del image
            task = asyncio.create_task(self._submit(data, captured_at))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _embedder(self) -> Any:
        if self._handle is None:
            name = self.embedder_names[self._handle_index % len(self.embedder_names)]
            self._handle = await asyncio.to_thread(self._resolve, name)
        return self._handle

    async def _submit(self, data: bytes, captured_at: float) -> None:
        self.counters["frames_sent"] += 1
        reply = None
        for attempt in (1, 2):
            try:
                handle = await (self._embedder() if attempt == 1 else self._embedder_again())
                reply = await handle.process.remote(data)
                break
            except Exception as exc:  # RayActorError, ActorUnavailableError, lookup failure
                self.last_error = f"embedder unavailable: {type(exc).__name__}"
                self._handle = None
                self._handle_index += 1
                self.log.warning("frame_not_processed", reason=type(exc).__name__, attempt=attempt)
                if attempt == 1:
                    # Once more, with the same bytes (so the same sighting ids).
                    self.counters["frames_retried"] += 1
                    await asyncio.sleep(min(1.0, self.initial_backoff_s))
        if reply is None:
            self.counters["frames_failed"] += 1
            return
        try:
            result = FrameResult.decode(reply)
        except MessageDecodeError as exc:
            self.counters["decode_errors"] += 1
            self.log.warning("message_dropped", reason=str(exc))
            return
        if result.store_error is not None:
            self.last_error = result.store_error
        elif self.last_error is not None and self.last_error.startswith(_SEND_ERRORS):
            self.last_error = None
        self.counters["frames_processed"] += 1
        self.counters["faces"] += result.faces
        self.counters["candidates"] += result.candidates
        self._latencies.append(result.processed_at - captured_at)

    async def _embedder_again(self) -> Any:
        """An embedder for a frame's resend: the next one, waiting out a restart."""
        deadline = time.monotonic() + _RESOLVE_RETRY_S
        delay = 0.25
        while True:
            try:
                return await self._embedder()
            except Exception:
                self._handle_index += 1
                if time.monotonic() + delay > deadline or self._stop.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
