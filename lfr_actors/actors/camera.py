"""The camera actor: one per camera. Reads, samples, timestamps, queues and sends frames.

- Sampling: a live stream is sampled by wall clock; a file or synthetic scene by its own
  time line, paced to real time (``pace: realtime``) like the camera it stands in for, or
  as fast as the embedder takes frames (``pace: asap``, for benchmarks and batch runs).
- Every frame is timestamped at capture (Unix seconds), before it waits anywhere. A frame
  of a file or synthetic scene also carries its media position (its frame number from 0
  and its time from the start); a file played in a loop counts both on from one pass to
  the next, so no two frames of a camera run share a position. Live frames carry none.
- The queue is bounded. A live camera never waits for a slow embedder: when the queue is
  full the oldest frame is dropped and counted. (In ``asap`` pacing nothing is live, so the
  reader waits instead and nothing is dropped.)
- At most ``max_in_flight`` frames are at the embedder, unanswered, at any time.
- A failed stream is reopened with exponential backoff (doubling from
  ``reconnect.initial_backoff_s`` up to ``reconnect.max_backoff_s``, each wait shortened by
  up to :data:`BACKOFF_JITTER` at random); status shows it meanwhile. The backoff starts
  again from the beginning once a frame arrives.
- A watchdog: a source that delivers no frame for ``stall_timeout_s`` (time spent pacing
  or waiting for queue space does not count) makes the camera ``stalled``: counted
  (``stalls``), shown with how long it has been quiet, and reopened with the backoff. It
  stays ``stalled`` until a frame arrives again.
- Opens and reads block, so they run in a thread of the camera's own. When one is stuck
  (the watchdog, or a stop) the camera abandons that thread, closes the source (which
  releases what the stuck call holds once it returns) and carries on with a new thread:
  a stop never waits for a read.
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
import queue
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import numpy as np

from lfr_actors.actors.settings import CameraSettings
from lfr_actors.kernel.calls import ActorCalls
from lfr_actors.logs import configure, get_logger
from lfr_actors.messages import Frame, FrameResult, MessageDecodeError
from lfr_actors.percentiles import percentile
from lfr_actors.video import (
    CorruptFrameError,
    FrameSource,
    SourceError,
    SourceFrame,
    build_source,
)

_LATENCY_WINDOW = 512
_READ_WINDOW = 128
RESEND_DEADLINE_S = 15.0
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
    "stalls",
    "faces",
    "tracks",
    "candidates",
    "decode_errors",
)
"""The counters in a camera's ``stats()``: each counts up from 0 in every camera run.

``faces`` counts the faces the embedder found in the camera's frames, ``tracks`` the face
tracks (people seen) those frames began."""


def new_epoch() -> str:
    """A token naming one camera run: the start time (ms, hex) and 24 random bits."""
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(3)}"


BACKOFF_JITTER = 0.2
"""Each backoff wait is shortened by up to this fraction at random, so that cameras that
failed together (one switch, one server) do not all retry in the same instant."""

CLOSE_TIMEOUT_S = 1.0
"""How long a stopping camera waits for its source to close before leaving it behind."""

T = TypeVar("T")


class _Queued(NamedTuple):
    """A sampled frame waiting to be sent, with its capture time and media position."""

    seq: int
    captured_at: float
    image: np.ndarray
    media_index: int | None
    media_time_s: float | None


class _Stalled(Exception):
    """The watchdog's deadline passed before the source delivered a frame."""


class _Stopping(Exception):
    """The camera was asked to stop while a source call was blocked."""


_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class _Worker:
    """One daemon thread that runs a source's blocking calls (open, read, close) in turn.

    A camera gives up on a worker whose call is stuck and starts another; the abandoned
    thread finishes that call, throws its result away and ends. The thread is a daemon, so
    a call that never returns cannot hold the process at exit.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` in the thread; the future gets its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return future

    def abandon(self) -> None:
        """Let the thread end once its current call returns; it takes no more calls."""
        self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            result: Any = None
            error: Exception | None = None
            try:
                result = fn()
            except Exception as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the event loop has closed meanwhile
                loop.call_soon_threadsafe(_settle, future, result, error)
            del result, error, fn, future, job  # drop a late frame at once


def _median_ms(seconds: deque[float]) -> float | None:
    """The median of ``seconds`` in milliseconds (1 decimal), or None when empty."""
    values = list(seconds)  # one copy (made under the GIL): the worker thread appends
    return round(float(np.median(values)) * 1000, 2) if values else None


def _settle(future: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
    if future.done():  # given up on (cancelled): nobody wants this result
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class CameraActor:
    """Reads one camera and feeds the embedder; see the module docstring for the policy."""

    def __init__(
        self,
        settings: CameraSettings,
        *,
        source: FrameSource | None = None,
        resolve: Callable[[str], Any] | None = None,
    ) -> None:
        configure()
        self.settings = settings
        self.camera_id = settings.camera_id
        self.deployment_id = settings.deployment_id
        self.window = (settings.window_start, settings.window_end)
        self.reconnect = settings.reconnect
        self.embedder_names = list(settings.embedder_names)
        self.namespace = settings.namespace
        self.epoch = new_epoch()
        self.log = get_logger("lfr.camera").bind(
            actor=self.camera_id, deployment=self.deployment_id, epoch=self.epoch
        )
        self.source = source or build_source(
            settings.source,
            fps=self.settings.fps,
            name=self.camera_id,
            stall_timeout_s=self.settings.stall_timeout_s,
        )
        self.queue: deque[_Queued] = deque()
        self._queue_event = asyncio.Event()
        self._space_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._capture_done = False
        self._task: asyncio.Task[None] | None = None
        # Any error of a frame's send is worth one resend to the next embedder.
        self._calls = ActorCalls(self.namespace, resolve=resolve, retry_on=(Exception,))
        self._in_flight: set[asyncio.Task[None]] = set()
        self.state = "created"
        self.last_error: str | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._read_s: deque[float] = deque(maxlen=_READ_WINDOW)  # appended in the worker
        self._sample_times: deque[float] = deque(maxlen=64)
        self._seq = 0
        self._worker: _Worker | None = None
        self._stop_waiter: asyncio.Task[Any] | None = None
        self._backoff_s = self.reconnect.initial_backoff_s
        self._last_frame_at: float | None = None  # monotonic time of the source's newest frame
        self._quiet_since = time.monotonic()  # the watchdog's clock: waiting for a frame since
        self._stalled_since: float | None = None  # set while stalled: the last frame's time
        self._stall_detail: str | None = None  # while stalled: the last reconnection failure

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
        """Liveness and state.

        The states: created, waiting_for_window, connecting, running, reconnecting,
        stalled, ended, stopped, window_ended, failed. Only ``failed`` is not ``ok``: a
        camera that reconnects or is stalled is alive and retrying by itself.
        """
        return {
            "ok": self.state not in {"failed"},
            "id": self.camera_id,
            "role": "camera",
            "state": self.state,
            "last_error": self._error_text(),
        }

    def _error_text(self) -> str | None:
        """``last_error``; while stalled, how long no frame has come, and the latest retry."""
        if self._stalled_since is None or self.state != "stalled":
            return self.last_error
        quiet = time.monotonic() - self._stalled_since
        limit = f"stall_timeout_s {self.settings.stall_timeout_s:g}"
        text = f"no frame for {quiet:.0f} s ({limit}); reconnecting"
        return f"{text}: {self._stall_detail}" if self._stall_detail else text

    async def stats(self) -> dict[str, Any]:
        """Counters, measured sampling rate, queue depth and capture-to-result latency.

        ``read_ms_median``: the median time of one source read over the last
        :data:`_READ_WINDOW` frames (the decode of a file's frame; see :meth:`_timed_read`).
        """
        latencies = sorted(self._latencies)

        def pct(q: float) -> float | None:
            value = percentile(latencies, q)
            return None if value is None else round(value * 1000, 1)

        now = time.monotonic()
        fps = None
        if len(self._sample_times) >= 2:
            span = self._sample_times[-1] - self._sample_times[0]
            fps = round((len(self._sample_times) - 1) / span, 2) if span > 0 else None
        if fps is not None and now - self._sample_times[-1] > max(2.0, 3.0 / self.settings.fps):
            fps = 0.0  # no sample lately: the rate measured before is not the rate now
        since_frame = None if self._last_frame_at is None else round(now - self._last_frame_at, 1)
        return {
            **self.counters,
            "id": self.camera_id,
            "epoch": self.epoch,
            "state": self.state,
            "last_error": self._error_text(),
            "fps": fps,
            "seconds_since_frame": since_frame,
            "stall_timeout_s": self.settings.stall_timeout_s,
            "queue": len(self.queue),
            "in_flight": len(self._in_flight),
            "latency_ms_p50": pct(0.5),
            "latency_ms_p95": pct(0.95),
            "latency_ms_p99": pct(0.99),
            "read_ms_median": _median_ms(self._read_s),
        }

    async def ended(self) -> bool:
        """True once a finite source has been read to its end and every frame answered."""
        return self.state in {"ended", "failed", "window_ended", "stopped"}

    async def latencies(self) -> list[float]:
        """Recent capture-to-result latencies in seconds (for benchmarks and summaries)."""
        return list(self._latencies)

    # --- the loops ---------------------------------------------------------------------

    async def _run(self) -> None:
        self._stop_waiter = asyncio.create_task(self._stop.wait())
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
            self._stop_waiter.cancel()
            await self._close_source()
            self.log.info("camera_finished", state=self.state, **self.counters)

    async def _close_source(self) -> None:
        """Close the source in a worker thread, waiting at most :data:`CLOSE_TIMEOUT_S`."""
        worker, self._worker = self._worker or _Worker(f"camera-{self.camera_id}"), None
        try:
            await asyncio.wait_for(worker.call(self.source.close), CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.log.warning("camera_close_slow", timeout_s=CLOSE_TIMEOUT_S)
        except Exception as exc:
            self.log.warning("camera_close_failed", reason=f"{type(exc).__name__}: {exc}")
        finally:
            worker.abandon()

    async def _blocking(self, fn: Callable[[], T], deadline: float | None = None) -> T:
        """``fn()`` in the camera's worker thread, given up on at a stop or at ``deadline``.

        Giving up abandons the worker (its thread ends when ``fn`` returns) and closes the
        source, then raises :class:`_Stopping` or :class:`_Stalled`.
        """
        if self._worker is None:
            self._worker = _Worker(f"camera-{self.camera_id}")
        future = self._worker.call(fn)
        assert self._stop_waiter is not None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait(
            {future, self._stop_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if future in done:
            return future.result()
        future.cancel()
        self._worker.abandon()
        self._worker = None
        self.source.close()  # safe while fn is blocked: its thread releases what it holds
        if self._stop.is_set():
            raise _Stopping()
        raise _Stalled()

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

    def _next_backoff(self) -> float:
        """The wait before the next attempt: the current step less up to the jitter."""
        step = self._backoff_s
        self._backoff_s = min(self.reconnect.max_backoff_s, step * 2)
        return step * (1.0 - BACKOFF_JITTER * random.random())

    def _window_over(self) -> bool:
        """True (and state ``window_ended``) once the authorised window has passed."""
        if self.window[1] is None or time.time() < self.window[1]:
            return False
        self.state = "window_ended"
        self.last_error = "the deployment's authorised window has ended"
        self.log.warning("camera_outside_window", reason="window_ended")
        return True

    def _timed_read(self) -> SourceFrame | None:
        """``source.read()``, its time kept for ``read_ms_median`` when it gives a frame.

        Runs in the worker thread. For a file or synthetic scene this is the decode (or
        drawing) of one frame; for a live stream it includes the wait for the next frame.
        """
        started = time.perf_counter()
        frame = self.source.read()
        if frame is not None:
            self._read_s.append(time.perf_counter() - started)
        return frame

    async def _open_with_backoff(self) -> bool:
        attempts = 0
        while not self._stop.is_set():
            if self._window_over():  # a camera that is down does not retry past its window
                return False
            try:
                await self._blocking(self.source.open)
            except _Stopping:
                return False
            except SourceError as exc:
                attempts += 1
                self.counters["reconnects"] += 1
                if self._stalled_since is None:
                    self.state = "reconnecting"
                    self.last_error = str(exc)
                else:
                    self._stall_detail = str(exc)
                delay = self._next_backoff()
                self.log.warning(
                    "camera_reconnecting",
                    attempt=attempts,
                    delay_s=round(delay, 2),
                    reason=str(exc),
                )
                if (
                    self.reconnect.max_attempts is not None
                    and attempts >= self.reconnect.max_attempts
                ):
                    self.last_error = self._error_text() or str(exc)
                    self.state = "failed"
                    self._stalled_since = None
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            if self._stalled_since is None:
                self.state = "running"
                self.last_error = None
            self._quiet_since = time.monotonic()
            return True
        return False

    def _stalled(self) -> None:
        """The watchdog fired: note the stall (once per stall); the caller reopens."""
        quiet = time.monotonic() - self._quiet_since
        self.counters["reconnects"] += 1
        if self._stalled_since is None:  # a stall is counted once, however many retries
            self.counters["stalls"] += 1
            self._stalled_since = self._quiet_since
        self._stall_detail = None
        self.state = "stalled"
        self.log.warning(
            "camera_stalled", seconds=round(quiet, 1), stall_timeout_s=self.settings.stall_timeout_s
        )

    def _frame_arrived(self) -> None:
        now = time.monotonic()
        self._last_frame_at = self._quiet_since = now
        self._backoff_s = self.reconnect.initial_backoff_s
        if self._stalled_since is not None:
            self.log.info("camera_recovered", stalled_s=round(now - self._stalled_since, 1))
            self._stalled_since = None
            self._stall_detail = None
            self.state = "running"
            self.last_error = None

    async def _capture_loop(self) -> None:
        self.state = "connecting"
        if not await self._open_with_backoff():
            return
        interval = 1.0 / self.settings.fps
        wall_start = time.monotonic()
        media_offset = 0.0  # a looped file's time and frame number go on from pass to pass
        index_offset = 0
        next_sample = 0.0
        last_media = 0.0
        last_index = -1
        while not self._stop.is_set():
            if self._window_over():
                return
            deadline = self._quiet_since + self.settings.stall_timeout_s
            try:
                frame: SourceFrame | None = await self._blocking(self._timed_read, deadline)
            except _Stopping:
                return
            except _Stalled:
                self._stalled()
                if not await self._open_with_backoff():
                    return
                continue
            except CorruptFrameError:
                self.counters["corrupt_frames"] += 1
                continue
            except SourceError as exc:
                self.counters["reconnects"] += 1
                if self._stalled_since is None:
                    self.last_error = str(exc)
                    self.state = "reconnecting"
                else:
                    self._stall_detail = str(exc)
                self.log.warning("camera_stream_failed", reason=str(exc))
                if not await self._open_with_backoff():
                    return
                continue
            if frame is None:
                if self.settings.at_end == "loop":
                    media_offset = last_media + interval
                    index_offset = last_index + 1
                    if not await self._open_with_backoff():
                        return
                    continue
                return
            self._frame_arrived()
            self.counters["frames_read"] += 1
            media_index: int | None = None
            if self.source.live:
                t = time.monotonic() - wall_start
            else:
                t = frame.media_time_s + media_offset
                last_media = t
                if frame.media_index is not None:
                    media_index = last_index = frame.media_index + index_offset
            if t + 1e-6 < next_sample:
                continue
            # Keep the schedule exact while on time; after a stall, restart it from now.
            next_sample = next_sample + interval if t - next_sample < interval else t + interval
            if not self.source.live and self.settings.pace == "realtime":
                ahead = wall_start + t - time.monotonic()
                if ahead > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), ahead)
                    if self._stop.is_set():
                        return
            await self._enqueue(frame.image, media_index, None if self.source.live else t)
            self._quiet_since = time.monotonic()  # pacing and queue waits are not the source's

    async def _enqueue(
        self, image: np.ndarray, media_index: int | None, media_time_s: float | None
    ) -> None:
        captured_at = time.time()
        self._seq += 1
        self.counters["frames_sampled"] += 1
        self._sample_times.append(time.monotonic())
        if self.settings.pace == "asap" and not self.source.live:
            while len(self.queue) >= self.settings.queue_size and not self._stop.is_set():
                self._space_event.clear()
                await self._space_event.wait()
        elif len(self.queue) >= self.settings.queue_size:
            self.queue.popleft()
            self.counters["frames_dropped"] += 1
        self.queue.append(_Queued(self._seq, captured_at, image, media_index, media_time_s))
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
            if len(self._in_flight) >= self.settings.max_in_flight:
                await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
                continue
            queued = self.queue.popleft()
            self._space_event.set()
            captured_at = queued.captured_at
            data = Frame(
                self.camera_id,
                queued.seq,
                captured_at,
                queued.image,
                epoch=self.epoch,
                media_index=queued.media_index,
                media_time_s=queued.media_time_s,
            ).encode()
            del queued
            task = asyncio.create_task(self._submit(data, captured_at))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _submit(self, data: bytes, captured_at: float) -> None:
        self.counters["frames_sent"] += 1
        try:
            # Sent at most twice, with the same bytes (so the same sighting ids): to this
            # camera's embedder, then to the next one, waiting out a restart meanwhile.
            reply = await self._calls.call(
                self.embedder_names,
                "process",
                data,
                deadline_s=RESEND_DEADLINE_S,
                max_calls=2,
                retried=self._not_processed,
                give_up=self._stop.is_set,
            )
        except Exception as exc:  # RayActorError, ActorUnavailableError, lookup failure
            self._embedder_failed(exc, attempt="last")
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
        self.counters["tracks"] += result.tracks_started
        self.counters["candidates"] += result.candidates
        self._latencies.append(result.processed_at - captured_at)

    def _embedder_failed(self, exc: BaseException, attempt: int | str) -> None:
        self.last_error = f"embedder unavailable: {type(exc).__name__}"
        self.log.warning("frame_not_processed", reason=type(exc).__name__, attempt=attempt)

    def _not_processed(self, name: str, exc: BaseException, attempt: int) -> None:
        """A try of a frame's send failed and it is tried again (the first time: a resend)."""
        self._embedder_failed(exc, attempt)
        if attempt == 1:
            self.counters["frames_retried"] += 1
