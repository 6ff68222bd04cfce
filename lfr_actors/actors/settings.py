"""The typed settings each actor is started with, and the functions that build them.

Every actor's constructor takes exactly one of these frozen objects and reads its typed
attributes; no actor applies a default of its own. The defaults live in one place: the
topology schema (:mod:`lfr_actors.topology.schema`), whose embedder sub-settings default
to the model layer's own constants (``DetectorConfig``, ``CenterFaceConfig``,
``QualityConfig``) and to the tracking settings' (``TrackingConfig``); the builders below
only copy a validated :class:`~lfr_actors.topology.schema.Topology` and the plan's wiring
(names, thresholds, paths) into the settings. The settings are plain frozen
dataclasses of numbers, strings, tuples and frozen models, so Ray pickles them as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from lfr_actors.alerts.fusion import FusionConfig
from lfr_actors.index.config import ShardConfig
from lfr_actors.models.centerface import CenterFaceConfig
from lfr_actors.models.detector import DetectorConfig
from lfr_actors.models.detectors import DetectorChoice
from lfr_actors.models.pipeline import PipelineConfig
from lfr_actors.models.quality import QualityConfig
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import EmbedderSpec
from lfr_actors.topology.schema import (
    Camera,
    CenterFaceSettings,
    EmbedderConfig,
    MtcnnSettings,
    Reconnect,
    Source,
    Topology,
)
from lfr_actors.tracking.config import TrackingConfig

__all__ = [
    "AlertSettings",
    "CameraSettings",
    "EmbedderSettings",
    "RouterSettings",
    "ShardSettings",
    "alert_settings",
    "camera_settings",
    "detector_config",
    "embedder_settings",
    "pipeline_config",
    "router_settings",
    "shard_settings",
]


@dataclass(frozen=True)
class CameraSettings:
    """One camera actor: its source, sampling, queue, reconnection and where frames go.

    ``window_start`` and ``window_end`` are the deployment's authorised window (Unix
    seconds, None for open); ``embedder_names`` are the embedder actors in the camera's
    failover order.
    """

    camera_id: str
    deployment_id: str
    window_start: float | None
    window_end: float | None
    source: Source
    fps: float
    pace: str
    at_end: str
    queue_size: int
    max_in_flight: int
    stall_timeout_s: float
    reconnect: Reconnect
    embedder_names: tuple[str, ...]
    namespace: str


@dataclass(frozen=True)
class EmbedderSettings:
    """One embedder replica: the face pipeline, its batching, and where results go.

    ``threshold`` is the deployment's threshold and ``entry_thresholds`` the entries' own
    (a track matches an entry within the entry's own, else the deployment's); the search
    looks as far as the loosest of them. ``tracking`` says how faces become tracks and when
    a track is decided. ``router`` and ``alerts`` are the actor names of the index router
    and the alert actor in ``namespace``; ``models_home`` is the folder whose ``models``
    cache holds the models.
    """

    embedder_id: str
    deployment_id: str
    pipeline: PipelineConfig
    runtime: RuntimeConfig
    max_batch: int
    max_wait_ms: float
    crop_size: int
    tracking: TrackingConfig
    threshold: float
    top_k: int
    namespace: str
    router: str
    alerts: str
    models_home: str
    entry_thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardSettings:
    """One index shard: its storage and search settings and its snapshot folder."""

    shard_id: str
    index: ShardConfig
    snapshot_dir: str | None

    def index_config(self) -> dict[str, object]:
        """The shard's settings as the index's plain mapping (``ShardIndex.from_config``)."""
        return asdict(self.index)


@dataclass(frozen=True)
class AlertSettings:
    """The alert actor: its name, its deployment, its store file and its fusion rules."""

    actor_id: str
    deployment_id: str
    db_path: str
    fusion: FusionConfig


@dataclass(frozen=True)
class RouterSettings:
    """The index router: the shards it fans out to, and how long it waits for one.

    A shard that cannot be reached within ``retry_timeout_s`` fails the call;
    ``health_timeout_s`` bounds each shard's health answer; ``latency_window`` is how many
    recent searches the fan-out latency percentiles cover.
    """

    router_id: str
    shard_names: tuple[str, ...]
    namespace: str
    retry_timeout_s: float = 10.0
    health_timeout_s: float = 2.0
    latency_window: int = 1024


def detector_config(detector: MtcnnSettings | CenterFaceSettings) -> DetectorChoice:
    """The model layer's config of the detector a topology's ``embedder.detector`` names.

    Its type picks the detector (:func:`lfr_actors.models.detectors.build_detector`);
    CenterFace's ``input_size`` [W, H] becomes ``input_width`` and ``input_height``.
    """
    if isinstance(detector, CenterFaceSettings):
        return CenterFaceConfig(
            input_width=detector.input_width,
            input_height=detector.input_height,
            score_threshold=detector.score_threshold,
            nms_threshold=detector.nms_threshold,
            min_face_px=detector.min_face_px,
            max_batch=detector.max_batch,
        )
    return DetectorConfig(**detector.model_dump(exclude={"model"}))


def pipeline_config(embedder: EmbedderConfig, spec: EmbedderSpec) -> PipelineConfig:
    """The face pipeline settings from a topology's ``embedder`` section and its model."""
    return PipelineConfig(
        detector=detector_config(embedder.detector),
        quality=QualityConfig(**embedder.quality.model_dump()),
        embedder=spec,
    )


def _timestamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def camera_settings(
    topology: Topology, camera: Camera, embedder_names: list[str], namespace: str
) -> CameraSettings:
    """A camera actor's settings: the topology's camera, its window and failover order."""
    deployment = topology.deployment
    return CameraSettings(
        camera_id=camera.id,
        deployment_id=deployment.id,
        window_start=_timestamp(deployment.start),
        window_end=_timestamp(deployment.end),
        source=camera.source,
        fps=camera.fps,
        pace=camera.pace,
        at_end=camera.at_end,
        queue_size=camera.queue_size,
        max_in_flight=camera.max_in_flight,
        stall_timeout_s=camera.stall_timeout_s,
        reconnect=camera.reconnect,
        embedder_names=tuple(embedder_names),
        namespace=namespace,
    )


def embedder_settings(
    topology: Topology,
    spec: EmbedderSpec,
    embedder_id: str,
    *,
    namespace: str,
    router: str,
    alerts: str,
    threshold: float,
    models_home: str,
    entry_thresholds: dict[str, float] | None = None,
) -> EmbedderSettings:
    """An embedder replica's settings: the topology's embedder, its model and its wiring."""
    embedder = topology.embedder
    return EmbedderSettings(
        embedder_id=embedder_id,
        deployment_id=topology.deployment.id,
        pipeline=pipeline_config(embedder, spec),
        runtime=RuntimeConfig(device=embedder.device, intra_op_threads=embedder.threads),
        max_batch=embedder.max_batch,
        max_wait_ms=embedder.max_wait_ms,
        crop_size=embedder.crop_size,
        tracking=TrackingConfig(**embedder.tracking.model_dump()),
        threshold=threshold,
        top_k=topology.alerts.top_k,
        namespace=namespace,
        router=router,
        alerts=alerts,
        models_home=models_home,
        entry_thresholds=dict(entry_thresholds or {}),
    )


def shard_settings(
    topology: Topology, spec: EmbedderSpec, shard_id: str, snapshot_dir: str | None
) -> ShardSettings:
    """An index shard's settings: the topology's index, for the embedding model's vectors."""
    index = topology.index
    return ShardSettings(
        shard_id=shard_id,
        index=ShardConfig(
            dimension=spec.dimension,
            metric=spec.metric,
            mode=index.mode,
            dtype=index.dtype,
            exact_below=index.exact_below,
            connectivity=index.connectivity,
            expansion_add=index.expansion_add,
            expansion_search=index.expansion_search,
        ),
        snapshot_dir=snapshot_dir,
    )


def router_settings(topology: Topology, shard_names: list[str], namespace: str) -> RouterSettings:
    """The index router's settings: its shards, by actor name, in shard order."""
    return RouterSettings(
        router_id=topology.index.id, shard_names=tuple(shard_names), namespace=namespace
    )


def alert_settings(
    topology: Topology, db_path: str, threshold: float, entry_thresholds: dict[str, float]
) -> AlertSettings:
    """The alert actor's settings: the thresholds in force and the topology's fusion rules."""
    alerts = topology.alerts
    return AlertSettings(
        actor_id=alerts.id,
        deployment_id=topology.deployment.id,
        db_path=db_path,
        fusion=FusionConfig(
            threshold=threshold,
            fusion_window_s=alerts.fusion_window_s,
            min_sightings=alerts.min_sightings,
            entry_thresholds=entry_thresholds,
        ),
    )
