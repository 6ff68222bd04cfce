"""The embedder actor: frames in, possible matches out, everything else forgotten.

Frames from any camera wait at most ``max_wait_ms`` to be batched (up to ``max_batch``
frames). For each batch: detection, alignment and quality per frame, then ONE embedding
call for every face that passed, ONE search of the index router for all of them, and ONE
call to the alert actor with the sightings of faces that came within the threshold. Each
frame is answered with counts once its sightings are stored, so the camera's
acknowledgement means "persisted" -- unless the answer says otherwise (below).

When the alert actor cannot take a batch of sightings (its store is unavailable, say the
disk is full, or the actor is restarting beyond the retries of one call), the batch is
kept in a bounded buffer in memory, the frames are answered with the reason
(``FrameResult.store_error``), and the buffer is sent again, oldest first, before any new
sightings and about once a second until the alert actor takes it. Sightings beyond the
bound are dropped oldest first and counted as ``sightings_lost``. Only possible matches
are ever buffered.

Non-match deletion: chips and embeddings of faces with no hit are local variables of one
batch; they are never logged, counted by anything but number, or sent anywhere (the
embeddings are sent to the index for the search and dropped there after it). Only faces
within the threshold travel on, as a small crop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
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
from lfr_actors.models.images import encode_jpeg
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.types import UInt8Array

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
    """The faces of one batch that passed quality: where each came from, and its data."""

    frame_index: list[int]
    face_index: list[int]
    boxes: list[list[float]]
    quality: list[dict[str, float]]
    chips: np.ndarray
    embeddings: np.ndarray
    faces_per_frame: list[int]
    passed_per_frame: list[int]
    detect_s: float
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
        self.threshold = settings.threshold  # changed by set_threshold
        self.pipeline = FacePipeline.build(
            settings.runtime,
            settings.pipeline,
            cache=ModelCache(Path(settings.models_home) / "models"),
        )
        self.pipeline.warm_up()
        self.providers = list(self.pipeline.embedder.report.active)
        self.log.info("embedder_ready", providers=self.providers, max_batch=self.settings.max_batch)
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
            "non_matches_discarded": 0,
            "candidates": 0,
            "decode_errors": 0,
            "downstream_errors": 0,
            "sightings_resent": 0,
        }
        self._batch_sizes: deque[int] = deque(maxlen=256)
        self._stage_ms: dict[str, deque[float]] = {
            k: deque(maxlen=256) for k in ("detect", "embed", "search", "alerts", "batch")
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

    async def set_threshold(self, threshold: float) -> float:
        """The search's new maximum distance (the loosest threshold any entry has)."""
        self.threshold = float(threshold)
        self.log.info("threshold_changed", threshold=self.threshold)
        return self.threshold

    async def stats(self) -> dict[str, Any]:
        """Counters, batch sizes and per-stage timings (ms, medians over recent batches)."""
        sizes = list(self._batch_sizes)
        return {
            **self.counters,
            "sightings_unstored": len(self._unstored),
            "sightings_lost": self._unstored.lost,
            "store_error": self.store_error,
            "id": self.embedder_id,
            "providers": self.providers,
            "search_limit": self.threshold,
            "batch_size_mean": round(float(np.mean(sizes)), 2) if sizes else None,
            "batch_size_max": max(sizes) if sizes else None,
            "stage_ms_median": {
                k: round(float(np.median(v)), 2) if v else None for k, v in self._stage_ms.items()
            },
        }

    async def flush(self, timeout_s: float = 10.0) -> int:
        """Try to hand every held sighting to the alert actor (before a drain).

        Returns how many are still held (0 when all were stored).
        """
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
        """The batch through the face pipeline; only the faces that passed are kept."""
        analysed = self.pipeline.analyse_batch([frame.image for frame in frames], embed="passed")
        rows = list(zip(analysed.image_index.tolist(), analysed.face_index.tolist(), strict=True))
        images = analysed.images
        return _FaceBatch(
            frame_index=[i for i, _ in rows],
            face_index=[j for _, j in rows],
            boxes=[[round(float(v), 1) for v in images[i].detections.boxes[j]] for i, j in rows],
            quality=[images[i].quality[j].as_dict() for i, j in rows],
            chips=analysed.chips,
            embeddings=analysed.embeddings,
            faces_per_frame=[len(image.detections) for image in images],
            passed_per_frame=[int(image.passed.sum()) for image in images],
            detect_s=analysed.detect_s,
            embed_s=analysed.embed_s,
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
        """Search the index, store the sightings, answer the frames."""
        frames = [frame for frame, _ in batch]
        hits: list[list[tuple[str, float]]] = []
        sightings: list[Sighting] = []
        sighting_frames: list[int] = []
        search_s = alerts_s = 0.0
        if faces.embeddings.shape[0]:
            t0 = time.perf_counter()
            request = SearchRequest(
                faces.embeddings, k=self.settings.top_k, max_distance=self.threshold
            )
            reply = await self._call(self.settings.router, "search", request.encode())
            hits = SearchResult.decode(reply).hits
            search_s = time.perf_counter() - t0
            for row, face_hits in enumerate(hits):
                if not face_hits:
                    continue
                frame = frames[faces.frame_index[row]]
                crop = _jpeg(faces.chips[row], self.settings.crop_size)
                for entry_id, distance in face_hits:
                    sighting_frames.append(faces.frame_index[row])
                    sightings.append(
                        Sighting(
                            sighting_id=sighting_id(frame, faces.face_index[row], str(entry_id)),
                            camera_id=frame.camera_id,
                            frame_seq=frame.seq,
                            captured_at=frame.captured_at,
                            entry_id=str(entry_id),
                            distance=float(distance),
                            box=faces.boxes[row],
                            quality=faces.quality[row],
                            crop_jpeg=crop,
                        )
                    )
        matched_faces = sum(1 for h in hits if h)
        compared = int(faces.embeddings.shape[0])
        # Non-matches end here: the chips and embeddings of this batch go out of scope.
        del faces.chips, faces.embeddings
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
                faces_compared=faces.passed_per_frame[i],
                candidates=candidates_per_frame[i],
                processed_at=now,
                store_error=store_error,
            )
            if not future.done():
                future.set_result(result.encode())
        self.counters["frames"] += len(frames)
        self.counters["batches"] += 1
        self.counters["faces"] += sum(faces.faces_per_frame)
        self.counters["faces_compared"] += compared
        self.counters["non_matches_discarded"] += compared - matched_faces
        self.counters["candidates"] += len(sightings)
        self._batch_sizes.append(len(frames))
        for key, seconds in (
            ("detect", faces.detect_s), ("embed", faces.embed_s), ("search", search_s),
            ("alerts", alerts_s), ("batch", time.perf_counter() - started),
        ):  # fmt: skip
            self._stage_ms[key].append(seconds * 1000)


def _jpeg(chip: np.ndarray, size: int) -> bytes:
    """A small JPEG of an aligned RGB chip: the crop an officer compares."""
    resized = cast(UInt8Array, cv2.resize(chip, (size, size), interpolation=cv2.INTER_AREA))
    return encode_jpeg(resized, quality=90)
