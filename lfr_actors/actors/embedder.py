"""The embedder actor: frames in, decisions on face tracks out, everything else forgotten.

Frames from any camera wait at most ``max_wait_ms`` to be batched (up to ``max_batch``
frames). For each batch: detection, alignment and quality per frame; the faces of each
camera matched to that camera's face tracks (:mod:`lfr_actors.tracking`); then ONE
embedding call for the faces the tracks need (every face that counts while a track is
undecided, few once it is decided), ONE search of the index router with one vector per
track that has enough evidence, and ONE call to the alert actor with the sightings of the
tracks that came within the threshold. Each frame is answered with counts once its
sightings are stored, so the camera's acknowledgement means "persisted" -- unless the
answer says otherwise (below). A camera keeps to one replica while it answers; after a
failover the next replica starts the camera's tracks afresh.

When the alert actor cannot take a batch of sightings (its store is unavailable, say the
disk is full, or the actor is restarting beyond the retries of one call), the batch is
kept in a bounded buffer in memory, the frames are answered with the reason
(``FrameResult.store_error``), and the buffer is sent again, oldest first, before any new
sightings and about once a second until the alert actor takes it. Sightings beyond the
bound are dropped oldest first and counted as ``sightings_lost``. Only possible matches
are ever buffered.

Non-match deletion: chips and embeddings are local variables of one batch. What a track
keeps (the weighted sum of its embeddings and its best face's crop) lives in this actor's
memory only, bounded per camera, and is dropped when the track ends (lost for
``max_missed_frames``), when its camera restarts or goes quiet, at :meth:`flush` (a drain)
and with the actor. Nothing of it is logged, counted by anything but number, or sent
anywhere except a track's vector to the index for the search (dropped there after it).
Only tracks within the threshold travel on, as their best crop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from lfr_actors.actors.alerts import StoreUnavailableError
from lfr_actors.actors.settings import EmbedderSettings
from lfr_actors.kernel.calls import ActorCalls
from lfr_actors.logs import configure, get_logger
from lfr_actors.messages import (
    Frame,
    FrameResult,
    MessageDecodeError,
    SearchRequest,
    SearchResult,
    Sighting,
    SightingBatch,
    sighting_id,
)
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime_packages import check_runtime_packages
from lfr_actors.tracking.stage import FrameInfo, TrackDecision, Tracking, TrackQuery

DOWNSTREAM_DEADLINE_S = 5.0
"""How long a call to the index router or the alert actor is retried while it restarts."""
UNSTORED_LIMIT = 2000
"""Sightings the embedder holds while the alert store cannot take them (about 5 KB each)."""
_RESEND_INTERVAL_S = 1.0
_LOST_LOG_INTERVAL_S = 30.0


class UnstoredSightings:
    """Sighting batches the alert actor has not acknowledged, oldest first, bounded.

    Holds at most ``limit`` sightings; adding beyond it drops whole batches, oldest first,
    and counts their sightings in ``lost``. Pure bookkeeping: sending is the caller's.
    """

    def __init__(self, limit: int = UNSTORED_LIMIT) -> None:
        self.limit = limit
        self.lost = 0
        self._batches: deque[list[Any]] = deque()  # [data, sightings, held]
        self._count = 0

    def __len__(self) -> int:
        """How many sightings are held."""
        return self._count

    def add(self, data: bytes, sightings: int) -> int:
        """Hold one encoded batch; returns how many sightings were dropped to make room."""
        self._batches.append([data, sightings, False])
        self._count += sightings
        dropped = 0
        while self._count > self.limit and self._batches:
            n = int(self._batches.popleft()[1])
            self._count -= n
            dropped += n
        self.lost += dropped
        return dropped

    def oldest(self) -> bytes | None:
        """The oldest batch held, or None."""
        return bytes(self._batches[0][0]) if self._batches else None

    def refused(self) -> None:
        """The alert actor refused the oldest batch: every batch held now had to wait."""
        for batch in self._batches:
            batch[2] = True

    def acknowledged(self) -> tuple[int, bool]:
        """Forget the oldest batch (the alert actor took it).

        Returns its sightings, and whether it had to wait (so this send was a resend).
        """
        _, n, held = self._batches.popleft()
        self._count -= n
        return int(n), bool(held)


@dataclass
class _FaceBatch:
    """What one batch's analysis leaves for the search: the tracks to compare, and counts."""

    queries: list[TrackQuery]
    faces_per_frame: list[int]
    embedded_per_frame: list[int]
    tracks_started: list[int]
    detect_s: float
    align_s: float
    track_s: float
    embed_s: float


class EmbedderActor:
    """Detection, quality, alignment and embedding, batched across cameras."""

    def __init__(self, settings: EmbedderSettings) -> None:
        configure()
        self.settings = settings
        self.embedder_id = settings.embedder_id
        self.deployment_id = settings.deployment_id
        self.log = get_logger("lfr.embedder").bind(
            actor=self.embedder_id, deployment=self.deployment_id
        )
        self.max_wait_s = settings.max_wait_ms / 1000.0
        check_runtime_packages()  # a worker node's environment may differ from the driver's
        self.pipeline = FacePipeline.build(
            settings.runtime,
            settings.pipeline,
            cache=ModelCache(Path(settings.models_home) / "models"),
        )
        self.pipeline.warm_up()
        self.providers = list(self.pipeline.embedder.report.active)
        spec = self.pipeline.embedder.spec
        self.tracking = Tracking(
            settings.tracking,
            metric=spec.metric,
            normalise=spec.l2_normalise,
            threshold=settings.threshold,  # changed by set_threshold
            entry_thresholds=settings.entry_thresholds,
            crop_size=settings.crop_size,
        )
        self.log.info(
            "embedder_ready",
            providers=self.providers,
            detector=self.pipeline.detector.name,
            detector_providers=self.pipeline.detector.providers,
            max_batch=self.settings.max_batch,
        )
        self._queue: asyncio.Queue[tuple[Frame, asyncio.Future[bytes]]] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._calls = ActorCalls(self.settings.namespace)
        self._unstored = UnstoredSightings()
        self._delivery = asyncio.Lock()
        self._resender: asyncio.Task[None] | None = None
        self.store_error: str | None = None
        self._lost_logged_at = 0.0
        self.counters = {
            "frames": 0,
            "batches": 0,
            "faces": 0,
            "faces_compared": 0,
            "candidates": 0,
            "decode_errors": 0,
            "downstream_errors": 0,
            "sightings_resent": 0,
        }
        self._batch_sizes: deque[int] = deque(maxlen=256)
        self._stage_ms: dict[str, deque[float]] = {
            k: deque(maxlen=256)
            for k in ("detect", "align", "track", "embed", "search", "alerts", "batch")
        }

    def _ensure_loop(self) -> asyncio.Queue[tuple[Frame, asyncio.Future[bytes]]]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._loop_task = asyncio.create_task(self._batch_loop())
        return self._queue

    async def process(self, data: bytes) -> bytes:
        """Process one encoded :class:`Frame`; answers an encoded :class:`FrameResult`."""
        try:
            frame = Frame.decode(data)
        except MessageDecodeError as exc:
            self.counters["decode_errors"] += 1
            self.log.warning("message_dropped", reason=str(exc))
            return b""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        await self._ensure_loop().put((frame, future))
        return await future

    async def health(self) -> dict[str, Any]:
        """Ready once the models are loaded and warmed up (which __init__ does)."""
        return {
            "ok": self._loop_task is None or not self._loop_task.done(),
            "id": self.embedder_id,
            "role": "embedder",
            "ready": True,
            "providers": self.providers,
            "queue": self._queue.qsize() if self._queue else 0,
        }

    async def set_threshold(
        self, threshold: float, entry_thresholds: dict[str, float] | None = None
    ) -> float:
        """The deployment's new threshold and (when given) every entry's own.

        Tracks are decided with them from the next batch on; returns the search's new
        maximum distance (the loosest of them).
        """
        self.tracking.set_threshold(threshold, entry_thresholds)
        self.log.info(
            "threshold_changed",
            threshold=self.tracking.threshold,
            search_limit=self.tracking.search_limit,
        )
        return self.tracking.search_limit

    async def stats(self) -> dict[str, Any]:
        """Counters, batch sizes and per-stage timings (ms, medians over recent batches)."""
        sizes = list(self._batch_sizes)
        return {
            **self.counters,
            **self.tracking.counters,
            "tracks_live": self.tracking.live,
            "sightings_unstored": len(self._unstored),
            "sightings_lost": self._unstored.lost,
            "store_error": self.store_error,
            "id": self.embedder_id,
            "providers": self.providers,
            "detector": self.pipeline.detector.name,
            "detector_providers": self.pipeline.detector.providers,
            "search_limit": self.tracking.search_limit,
            "batch_size_mean": round(float(np.mean(sizes)), 2) if sizes else None,
            "batch_size_max": max(sizes) if sizes else None,
            "stage_ms_median": {
                k: round(float(np.median(v)), 2) if v else None for k, v in self._stage_ms.items()
            },
        }

    async def flush(self, timeout_s: float = 10.0) -> int:
        """Try to hand every held sighting to the alert actor (before a drain).

        Every face track ends here too: the drain forgets what the tracks held. Returns
        how many sightings are still held (0 when all were stored).
        """
        ended = self.tracking.end_all()
        if ended:
            self.log.info("tracks_ended", tracks=ended, reason="flush")
        deadline = time.monotonic() + timeout_s
        while len(self._unstored) and time.monotonic() < deadline:
            if await self._deliver() is not None:
                await asyncio.sleep(0.2)
        return len(self._unstored)

    async def _store(self, data: bytes, sightings: int) -> str | None:
        """Queue one batch behind any held ones and send what can be sent.

        Returns None when everything held is stored, else why not.
        """
        dropped = self._unstored.add(data, sightings)
        if dropped:
            now = time.monotonic()
            if now - self._lost_logged_at >= _LOST_LOG_INTERVAL_S:
                self._lost_logged_at = now
                self.log.error(
                    "sightings_lost",
                    dropped=dropped,
                    lost=self._unstored.lost,
                    limit=self._unstored.limit,
                    reason=self.store_error,
                )
        return await self._deliver()

    async def _deliver(self) -> str | None:
        """Send held batches oldest first until one is refused; None when none is left."""
        async with self._delivery:
            while (data := self._unstored.oldest()) is not None:
                try:
                    await self._call(self.settings.alerts, "submit", data)
                except Exception as exc:
                    cause = getattr(exc, "cause", exc)
                    if isinstance(cause, StoreUnavailableError):
                        reason = str(cause)
                    else:
                        reason = f"alert actor unavailable: {type(cause).__name__}"
                    if self.store_error != reason:
                        self.log.warning("sightings_held", reason=reason, held=len(self._unstored))
                    self.store_error = reason
                    self._unstored.refused()
                    self._ensure_resender()
                    return reason
                sent, held = self._unstored.acknowledged()
                if held:
                    self.counters["sightings_resent"] += sent
            if self.store_error is not None:
                self.log.info("sightings_stored_again", reason_was=self.store_error)
            self.store_error = None
            return None

    def _ensure_resender(self) -> None:
        if self._resender is None or self._resender.done():
            self._resender = asyncio.create_task(self._resend_loop())

    async def _resend_loop(self) -> None:
        """While sightings are held, offer them again about once a second."""
        while len(self._unstored):
            await asyncio.sleep(_RESEND_INTERVAL_S)
            with contextlib.suppress(Exception):
                await self._deliver()

    async def _batch_loop(self) -> None:
        queue = self._queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        previous: asyncio.Task[None] | None = None
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.settings.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0 and queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), max(remaining, 0)))
                except TimeoutError:
                    break
            started = time.perf_counter()
            try:
                faces = await asyncio.to_thread(self._analyse, [frame for frame, _ in batch])
            except Exception as exc:  # one bad batch must not stop the loop
                self._fail(batch, exc)
                continue
            # The index search and the alert call of this batch overlap the next batch's
            # detection (which is where the CPU goes); they run one batch after another, so
            # sightings reach the alert actor in frame order. At most two batches wait.
            previous = asyncio.create_task(self._finish(batch, faces, started, previous))
            self._finishing.add(previous)
            previous.add_done_callback(self._finishing.discard)
            while len(self._finishing) >= 2:
                await asyncio.wait(set(self._finishing), return_when=asyncio.FIRST_COMPLETED)

    def _fail(self, batch: list[tuple[Frame, asyncio.Future[bytes]]], exc: Exception) -> None:
        self.log.error("batch_failed", frames=len(batch), reason=f"{type(exc).__name__}: {exc}")
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _finish(
        self,
        batch: list[tuple[Frame, asyncio.Future[bytes]]],
        faces: _FaceBatch,
        started: float,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await self._downstream(batch, faces, started)
        except Exception as exc:
            self._fail(batch, exc)

    def _analyse(self, frames: list[Frame]) -> _FaceBatch:
        """The batch through detection, tracking and the one embedding call."""
        images = [frame.image for frame in frames]
        timings: dict[str, float] = {}
        analysed = self.pipeline.find_batch(images, timings)
        started = time.perf_counter()
        infos = [_frame_info(frame) for frame in frames]
        self.tracking.end_idle()
        plan = self.tracking.observe(infos, analysed)
        track_s = time.perf_counter() - started
        started = time.perf_counter()
        embeddings = self.pipeline.embed_chips(plan.chips)
        embed_s = time.perf_counter() - started
        queries = self.tracking.absorb(plan, embeddings, infos, images, analysed).queries
        embedded = [0] * len(frames)
        for face in plan.faces:
            embedded[face.frame] += 1
        return _FaceBatch(
            queries=queries,
            faces_per_frame=[len(image.detections) for image in analysed],
            embedded_per_frame=embedded,
            tracks_started=plan.tracks_started,
            detect_s=timings["detect"],
            align_s=timings["align"],
            track_s=track_s,
            embed_s=embed_s,
        )

    def _downstream_retry(self, name: str, error: BaseException, attempt: int) -> None:
        self.counters["downstream_errors"] += 1
        self.log.warning(
            "downstream_unavailable", target=name, attempt=attempt, reason=type(error).__name__
        )

    async def _call(self, name: str, method: str, data: bytes) -> Any:
        """Call a downstream actor by name, finding it again if it was restarted.

        Retried on the kernel's policy; ``RuntimeError`` once :data:`DOWNSTREAM_DEADLINE_S`
        is spent.
        """
        try:
            return await self._calls.call(
                name, method, data, deadline_s=DOWNSTREAM_DEADLINE_S, retried=self._downstream_retry
            )
        except (ValueError, ray.exceptions.RayActorError) as exc:
            if isinstance(exc, ray.exceptions.RayTaskError):
                raise  # the actor's own error (a store outage, say), not a lost actor
            self.counters["downstream_errors"] += 1
            self.log.warning(
                "downstream_unavailable", target=name, reason=type(exc).__name__, retries="spent"
            )
            raise RuntimeError(f"{name} did not answer within {DOWNSTREAM_DEADLINE_S:g} s") from exc

    async def _downstream(
        self, batch: list[tuple[Frame, asyncio.Future[bytes]]], faces: _FaceBatch, started: float
    ) -> None:
        """Search the index with the tracks' vectors, decide, store sightings, answer frames."""
        frames = [frame for frame, _ in batch]
        sightings: list[Sighting] = []
        sighting_frames: list[int] = []
        search_s = alerts_s = 0.0
        queries = faces.queries
        if queries:
            t0 = time.perf_counter()
            request = SearchRequest(
                np.stack([query.vector for query in queries]),
                k=self.settings.top_k,
                max_distance=self.tracking.search_limit,
            )
            reply = await self._call(self.settings.router, "search", request.encode())
            hits = SearchResult.decode(reply).hits
            search_s = time.perf_counter() - t0
            if len(hits) != len(queries):  # the router dropped the request; it logged why
                hits = [[] for _ in queries]
            for decision in self.tracking.decide(queries, hits):
                sighting_frames.append(decision.frame)
                sightings.append(_sighting(frames[decision.frame], decision))
        # Non-matches end here: the tracks' vectors of this batch go out of scope; what an
        # undecided track holds stays in the tracker's memory until the track ends.
        del faces.queries, queries
        store_error = None
        if sightings:
            t0 = time.perf_counter()
            store_error = await self._store(SightingBatch.of(sightings).encode(), len(sightings))
            alerts_s = time.perf_counter() - t0
        elif len(self._unstored):
            store_error = self.store_error
        now = time.time()
        candidates_per_frame = [0] * len(frames)
        for frame_row in sighting_frames:
            candidates_per_frame[frame_row] += 1
        for i, (frame, future) in enumerate(batch):
            result = FrameResult(
                camera_id=frame.camera_id,
                seq=frame.seq,
                captured_at=frame.captured_at,
                faces=faces.faces_per_frame[i],
                faces_compared=faces.embedded_per_frame[i],
                candidates=candidates_per_frame[i],
                processed_at=now,
                store_error=store_error,
                tracks_started=faces.tracks_started[i],
            )
            if not future.done():
                future.set_result(result.encode())
        compared = sum(faces.embedded_per_frame)
        self.counters["frames"] += len(frames)
        self.counters["batches"] += 1
        self.counters["faces"] += sum(faces.faces_per_frame)
        self.counters["faces_compared"] += compared
        self.counters["candidates"] += len(sightings)
        self._batch_sizes.append(len(frames))
        for key, seconds in (
            ("detect", faces.detect_s), ("align", faces.align_s), ("track", faces.track_s),
            ("embed", faces.embed_s), ("search", search_s),
            ("alerts", alerts_s), ("batch", time.perf_counter() - started),
        ):  # fmt: skip
            self._stage_ms[key].append(seconds * 1000)


def _frame_info(frame: Frame) -> FrameInfo:
    return FrameInfo(
        camera_id=frame.camera_id,
        epoch=frame.epoch,
        seq=frame.seq,
        captured_at=frame.captured_at,
        media_index=frame.media_index,
        media_time_s=frame.media_time_s,
    )


def _sighting(frame: Frame, decision: TrackDecision) -> Sighting:
    """The sighting of one track decision: the frame's ids and time, the track's best face."""
    best = decision.best
    return Sighting(
        sighting_id=sighting_id(frame, decision.face, decision.entry_id),
        camera_id=frame.camera_id,
        frame_seq=frame.seq,
        captured_at=frame.captured_at,
        entry_id=decision.entry_id,
        distance=decision.distance,
        box=best.box,
        quality=best.quality,
        crop_jpeg=best.crop,
        track_id=decision.track.track_id,
        track_frames=best.faces,
        media_index=best.media_index,
        media_time_s=best.media_time_s,
    )
