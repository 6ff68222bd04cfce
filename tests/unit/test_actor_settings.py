"""The actors' typed settings: built from a topology, defaults from one place, picklable."""

from __future__ import annotations

import dataclasses
import pickle

import ray.cloudpickle

from lfr_actors.actors.settings import (
    alert_settings,
    camera_settings,
    detector_config,
    embedder_settings,
    router_settings,
    shard_settings,
)
from lfr_actors.alerts.fusion import FusionConfig
from lfr_actors.index.config import ShardConfig
from lfr_actors.models.centerface import CenterFaceConfig
from lfr_actors.models.detector import DetectorConfig
from lfr_actors.models.pipeline import PipelineConfig
from lfr_actors.models.quality import QualityConfig
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.topology.schema import Camera, CenterFaceSettings, MtcnnSettings, Reconnect
from lfr_actors.tracking.config import TrackingConfig
from lfr_actors.video import SyntheticSource, build_source
from tests.actor_settings import embedder_settings as settings_for_section
from tests.actor_settings import topology


def _all_settings() -> list[object]:
    t = topology()
    return [
        camera_settings(t, t.cameras[0], ["embedder/embedder"], "dep"),
        embedder_settings(
            t, DEFAULT_EMBEDDER_SPEC, "embedder", namespace="dep", router="index_router/index",
            alerts="alerts/alerts", threshold=0.6, models_home="/home",
        ),
        shard_settings(t, DEFAULT_EMBEDDER_SPEC, "index-0", "/data/index/index-0"),
        router_settings(t, ["index_shard/index-0"], "dep"),
        alert_settings(t, "/data/alerts.sqlite3", 0.6, {"e1": 0.5}),
    ]  # fmt: skip


def test_a_minimal_topology_gives_the_model_layers_defaults() -> None:
    t = topology()
    embedder = embedder_settings(
        t, DEFAULT_EMBEDDER_SPEC, "embedder", namespace="dep", router="r", alerts="a",
        threshold=0.6, models_home="/home",
    )  # fmt: skip
    # A topology's default detector is CenterFace (on every device), whose scores are on
    # their own scale: the quality gate and the tracker start from its defaults.
    assert embedder.pipeline == PipelineConfig(
        detector=CenterFaceConfig(),
        quality=dataclasses.replace(QualityConfig(), min_score=0.5),
        embedder=DEFAULT_EMBEDDER_SPEC,
    )
    assert embedder.runtime == RuntimeConfig()
    assert embedder.tracking == dataclasses.replace(TrackingConfig(), high_score=0.7)
    assert embedder.crop_size == 160
    shard = shard_settings(t, DEFAULT_EMBEDDER_SPEC, "index-0", None)
    assert shard.index == ShardConfig(
        dimension=DEFAULT_EMBEDDER_SPEC.dimension, metric=DEFAULT_EMBEDDER_SPEC.metric
    )
    fusion = alert_settings(t, "/db", 0.6, {}).fusion
    assert fusion == FusionConfig(threshold=0.6)


def test_the_embedder_gets_the_topologys_tracking_section() -> None:
    section = {"min_iou": 0.3, "max_missed_frames": 25, "full_face_px": 80, "max_tracks": 32}
    settings = settings_for_section({"tracking": section}, models_home="/home")
    # The default detector (CenterFace) sets the score a track starts from on its scale.
    assert settings.tracking == TrackingConfig(**section, high_score=0.7)
    assert settings.tracking.tracker.max_tracks == 32
    assert settings_for_section({}, models_home="/home").tracking == TrackingConfig(high_score=0.7)
    mtcnn = settings_for_section({"detector": {"model": "mtcnn"}}, models_home="/home")
    assert mtcnn.tracking == TrackingConfig()


def test_the_embedder_gets_the_topologys_centerface_section() -> None:
    section = {
        "model": "centerface",
        "input_size": [1280, 736],
        "score_threshold": 0.4,
        "nms_threshold": 0.35,
        "min_face_px": 12,
        "max_batch": 4,
    }
    settings = settings_for_section({"detector": section}, models_home="/home")
    assert settings.pipeline.detector == CenterFaceConfig(
        input_width=1280,
        input_height=736,
        score_threshold=0.4,
        nms_threshold=0.35,
        min_face_px=12,
        max_batch=4,
    )
    # Left out, every value is CenterFaceConfig's own (max_faces is not a topology field).
    assert detector_config(CenterFaceSettings()) == CenterFaceConfig()


def test_the_embedder_gets_the_topologys_mtcnn_section() -> None:
    section = {"model": "mtcnn", "min_face_px": 24, "thresholds": [0.5, 0.6, 0.8]}
    settings = settings_for_section({"detector": section}, models_home="/home")
    assert settings.pipeline.detector == DetectorConfig(min_face_px=24, thresholds=(0.5, 0.6, 0.8))
    assert detector_config(MtcnnSettings(min_face_px=20)) == DetectorConfig()


def test_the_embedder_gets_its_devices_default_detector() -> None:
    gpu = settings_for_section({"device": "gpu", "gpus_per_replica": 0.5}, models_home="/h")
    assert gpu.pipeline.detector == CenterFaceConfig()
    auto = settings_for_section(
        {"device": "auto", "detector": {"min_face_px": 20}}, models_home="/h"
    )
    assert auto.pipeline.detector == CenterFaceConfig(min_face_px=20)
    cpu = settings_for_section({"device": "cpu"}, models_home="/h")
    assert cpu.pipeline.detector == CenterFaceConfig()


def test_the_camera_gets_the_topologys_camera_and_window() -> None:
    t = topology()
    settings = camera_settings(t, t.cameras[0], ["embedder/embedder-1", "embedder/embedder-0"], "n")
    section = t.cameras[0]
    assert settings.reconnect == Reconnect() == section.reconnect
    copied = ("fps", "pace", "at_end", "queue_size", "max_in_flight", "stall_timeout_s")
    defaults = {name: Camera.model_fields[name].default for name in copied}
    assert {name: getattr(settings, name) for name in defaults} == defaults
    assert settings.window_start == t.deployment.start.timestamp()
    assert settings.window_end == t.deployment.end.timestamp()
    assert settings.embedder_names == ("embedder/embedder-1", "embedder/embedder-0")
    # The synthetic scene is drawn at the camera's rate (the schema has no native_fps).
    source = build_source(settings.source, fps=12.5, name="c", stall_timeout_s=5)
    assert isinstance(source, SyntheticSource) and source.fps == 12.5


def test_settings_are_frozen_and_survive_pickling() -> None:
    for settings in _all_settings():
        assert dataclasses.is_dataclass(settings)
        assert type(settings).__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert pickle.loads(pickle.dumps(settings)) == settings
        assert ray.cloudpickle.loads(ray.cloudpickle.dumps(settings)) == settings
