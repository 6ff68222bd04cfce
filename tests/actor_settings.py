"""Settings for actors that tests start by hand, with the topology schema's defaults.

The plan builds settings from a validated topology; tests that start one actor without a
topology (and with limits a topology would refuse, such as 10 ms backoffs) build them
here, taking every value a test leaves out from the schema's own field defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from lfr_actors.actors import settings as actor_settings
from lfr_actors.actors.settings import CameraSettings, EmbedderSettings
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC
from lfr_actors.topology.schema import Camera, Reconnect, SyntheticSource, Topology


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    return {
        name: field.get_default(call_default_factory=True)
        for name, field in model.model_fields.items()
        if not field.is_required()
    }


def camera_settings(
    *,
    deployment: Mapping[str, Any] | None = None,
    camera_id: str = "cam_test",
    embedder_names: tuple[str, ...] = ("embedder/embedder",),
    namespace: str = "dep",
    **config: Any,
) -> CameraSettings:
    """A camera's settings from topology-style keys (``fps``, ``reconnect`` as a mapping...).

    ``deployment`` holds the deployment's ``id`` and, optionally, its window's ``start``
    and ``end`` in Unix seconds. The source is a stand-in: tests pass their own.
    """
    values = {**_defaults(Camera), **config}
    reconnect = values["reconnect"]
    if isinstance(reconnect, Mapping):
        reconnect = Reconnect(**reconnect)
    deployment = deployment or {"id": "dep"}
    return CameraSettings(
        camera_id=camera_id,
        deployment_id=str(deployment["id"]),
        window_start=deployment.get("start"),
        window_end=deployment.get("end"),
        source=values.get("source") or SyntheticSource(type="synthetic"),
        fps=float(values["fps"]),
        pace=values["pace"],
        at_end=values["at_end"],
        queue_size=values["queue_size"],
        max_in_flight=values["max_in_flight"],
        stall_timeout_s=float(values["stall_timeout_s"]),
        reconnect=reconnect,
        embedder_names=tuple(embedder_names),
        namespace=namespace,
    )


def topology(**sections: Any) -> Topology:
    """A minimal valid topology (one synthetic camera), with the given sections set."""
    return Topology.model_validate(
        {
            "version": 1,
            "deployment": {
                "id": "dep",
                "authorised_by": "a test",
                "purpose": "testing",
                "location": "a test bench",
                "start": "2026-11-20T08:00:00Z",
                "end": "2026-11-20T20:00:00Z",
            },
            "cameras": [{"id": "cam_test", "source": {"type": "synthetic"}}],
            "alerts": {"threshold": 0.6},
            "storage": {"data_dir": "data"},
            **sections,
        }
    )


def embedder_settings(
    embedder: Mapping[str, Any], *, models_home: str, threshold: float = 0.6
) -> EmbedderSettings:
    """The settings the plan gives an embedder with this ``embedder`` section, wired to
    the actors ``index`` and ``alerts`` of namespace ``dep``."""
    return actor_settings.embedder_settings(
        topology(embedder=dict(embedder)),
        DEFAULT_EMBEDDER_SPEC,
        "embedder",
        namespace="dep",
        router="index",
        alerts="alerts",
        threshold=threshold,
        models_home=models_home,
    )
