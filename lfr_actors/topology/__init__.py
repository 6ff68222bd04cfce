"""The deployment topology: the file an operator writes for each authorised deployment.

:mod:`~lfr_actors.topology.schema` holds the models (every field described and bounded);
:mod:`~lfr_actors.topology.loader` reads files into them with errors that name the file,
line, field and fix: :mod:`~lfr_actors.topology.yaml` reads the YAML with its lines,
:mod:`~lfr_actors.topology.explain` turns validation errors into issues, and
:mod:`~lfr_actors.topology.checks` checks the files a topology names.
:mod:`~lfr_actors.topology.validate` is ``lfr validate``. This floor imports nothing from
the kernel, the actors or the API.
"""

from lfr_actors.topology.checks import check_files
from lfr_actors.topology.issues import TopologyError, TopologyIssue
from lfr_actors.topology.loader import load_embedder_spec, load_topology, load_watchlist
from lfr_actors.topology.schema import (
    DEFAULT_DETECTOR,
    DEFAULT_MODELS,
    MAX_DEPLOYMENT_WINDOW,
    MAX_LEAD,
    SCHEMA_VERSION,
    AlertsConfig,
    ApiConfig,
    Camera,
    CenterFaceSettings,
    Deployment,
    DetectorSettings,
    DeviceSource,
    EmbedderConfig,
    FileSource,
    IndexConfig,
    LoggingConfig,
    MtcnnSettings,
    NewDeployment,
    NewEntry,
    QualitySettings,
    Reconnect,
    Source,
    Sprite,
    StorageConfig,
    SyntheticSource,
    Topology,
    UrlSource,
    Watchlist,
    WatchlistEntry,
    WatchlistRef,
)
from lfr_actors.topology.validate import summary, validate_command

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_MODELS",
    "MAX_DEPLOYMENT_WINDOW",
    "MAX_LEAD",
    "SCHEMA_VERSION",
    "AlertsConfig",
    "ApiConfig",
    "Camera",
    "CenterFaceSettings",
    "Deployment",
    "DetectorSettings",
    "DeviceSource",
    "EmbedderConfig",
    "FileSource",
    "IndexConfig",
    "LoggingConfig",
    "MtcnnSettings",
    "NewDeployment",
    "NewEntry",
    "QualitySettings",
    "Reconnect",
    "Source",
    "Sprite",
    "StorageConfig",
    "SyntheticSource",
    "Topology",
    "TopologyError",
    "TopologyIssue",
    "UrlSource",
    "Watchlist",
    "WatchlistEntry",
    "WatchlistRef",
    "check_files",
    "load_embedder_spec",
    "load_topology",
    "load_watchlist",
    "summary",
    "validate_command",
]
