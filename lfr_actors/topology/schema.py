"""The deployment topology and watchlist files, as strict, versioned pydantic models.

A topology file says what one authorised deployment runs: its authority and time window,
its cameras, the embedder, the index, the alert rules, the watchlist file, the API and
where data is kept. A watchlist file lists the people that deployment may look for.

Every model forbids unknown keys and is frozen; every field has a description and
limits. Each field's description is a noun phrase ("the camera's sampling rate, in frames
per second"): the loader builds its fixes from it ("Set cameras[1].fps to the camera's
sampling rate ...") and ``docs/topology.md`` lists it.

Rules that relate several fields are small pure methods (``_violations``) run once a
model's fields are valid; they return every broken rule, not the first. Validation does
no I/O: file paths are checked by :func:`lfr_actors.topology.checks.check_files`, and
relative paths are made absolute by the loader after validation.

The embedder's sub-settings use the field names of the model layer's configs, so
``QualityConfig(**embedder.quality.model_dump())`` and
``TrackingConfig(**embedder.tracking.model_dump())`` build them; the detector's settings
are one model per detector, chosen by their ``model`` field (the device's default when it
is left out), and :func:`lfr_actors.actors.settings.detector_config` builds the model
layer's config from them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lfr_actors.models.centerface import MAX_INPUT_SIDE, MIN_INPUT_SIDE, CenterFaceConfig
from lfr_actors.models.convert.centerface import SIDE_MULTIPLE
from lfr_actors.models.detector import DetectorConfig
from lfr_actors.models.detectors import DETECTOR_SCORES
from lfr_actors.models.quality import QualityConfig
from lfr_actors.models.spec import DLIB_RESNET_NAME
from lfr_actors.plaintext import PLAIN, not_plain
from lfr_actors.timefmt import iso_z
from lfr_actors.tracking.config import LIMITS as TRACKING_LIMITS
from lfr_actors.tracking.config import TrackingConfig

SCHEMA_VERSION = 1
"""The only topology and watchlist format version this package reads."""

MAX_DEPLOYMENT_WINDOW = timedelta(days=31)
"""The longest authorised window one deployment may declare."""

MAX_LEAD = timedelta(days=366)
"""How far ahead a deployment declared through the API may start."""

DEFAULT_MODELS: tuple[str, ...] = (DLIB_RESNET_NAME,)
"""Embedder names the model cache provides (``lfr models prepare``)."""

MIN_CROP_SIZE = 160
"""The smallest alert crop, in pixels: the least an officer needs to adjudicate a match."""

ACTOR_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ENTRY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HEX_COLOUR_PATTERN = r"^#[0-9A-Fa-f]{6}$"
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class RuleViolation:
    """One broken cross-field rule, relative to the model that checked it.

    ``path`` is the offending field; ``related`` are other fields involved (the other
    uses of a duplicate ID, say), which the loader reports with their lines.
    """

    path: PathKey
    message: str
    fix: str
    related: tuple[PathKey, ...] = ()


RULES_ERROR = "topology_rules"
"""Pydantic error type carrying a tuple of :class:`RuleViolation` in ``ctx["violations"]``."""


FORM_FIELDS = {"form_fields": True}
"""Validation context for an HTML form's fields, where every value arrives as text."""


def _reject_bool(value: object, info: ValidationInfo) -> object:
    # Pydantic's lax mode reads true as 1, and "18103" as 18103; in a configuration file
    # either is a slip (a quoted number is text to YAML), so both are refused. A form's
    # fields (FORM_FIELDS) are all text, so there a number's text is read as the number.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "expected a number, not true or false")
    form = bool(info.context and info.context.get("form_fields"))
    if isinstance(value, str) and not form and _looks_numeric(value):
        raise PydanticCustomError(
            "text_not_number", "expected a number, got text: remove the quotes"
        )
    return value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _path_text(value: object) -> object:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("path_type", "expected a file path")
    if not value.strip():
        raise PydanticCustomError("path_empty", "a file path must not be empty")
    if (why := not_plain(value)) is not None:  # NUL cannot be in a path; the rest is a typo
        raise PydanticCustomError("path_text", f"a file path {why}")
    if value.startswith("~"):
        try:
            Path(value).expanduser()
        except RuntimeError:  # ~name of a user this machine does not know
            user = value[1:].split("/", 1)[0]
            raise PydanticCustomError(
                "path_home", f"no home folder is known for user {user!r} (the path's ~{user})"
            ) from None
    return value


def _datetime_text(value: object, info: ValidationInfo) -> object:
    # Without this, pydantic would read a bare number as seconds since 1970.
    if not isinstance(value, (str, datetime)):
        raise PydanticCustomError("datetime_type", "expected an ISO 8601 date and time")
    if info.mode == "json" and isinstance(value, str):
        # A JSON body is validated strictly, where only JSON text (not the Python text this
        # validator passes on) may become a datetime: read it here, as pydantic would.
        try:
            return _INSTANT_TEXT.validate_json(json.dumps(value), strict=True)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise PydanticCustomError(error["type"], error["msg"]) from None
    return value


def _date_text(value: object) -> object:
    if isinstance(value, (str, date)):
        return value
    raise PydanticCustomError("date_type", "expected a date, YYYY-MM-DD")


_INSTANT_TEXT: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
Int = Annotated[int, BeforeValidator(_reject_bool)]
Float = Annotated[float, BeforeValidator(_reject_bool)]
Text = Annotated[str, Field(pattern=r"\S", max_length=500), PLAIN]
FilePath = Annotated[Path, BeforeValidator(_path_text)]
Instant = Annotated[AwareDatetime, BeforeValidator(_datetime_text)]
Day = Annotated[date, BeforeValidator(_date_text)]
ActorId = Annotated[str, Field(pattern=ACTOR_ID_PATTERN)]
UnitFloat = Annotated[float, BeforeValidator(_reject_bool), Field(ge=0.0, le=1.0)]
Speed = Annotated[float, BeforeValidator(_reject_bool), Field(ge=-10.0, le=10.0)]
Threshold = Annotated[float, BeforeValidator(_reject_bool), Field(gt=0.0, lt=2.0)]
"""A distance threshold: lower is stricter."""
MAX_WATCHLIST_AGE_H = 8784.0
"""The longest ``watchlist_max_age_h`` (a leap year of hours); null means no limit."""
WatchlistMaxAge = Annotated[
    float, BeforeValidator(_reject_bool), Field(gt=0.0, le=MAX_WATCHLIST_AGE_H)
]
"""Hours since an entry's approval after which it is stale (more than 0)."""

RAY_BUILT_IN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
RESOURCE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
Resources = dict[str, Float]
"""Custom Ray resources an actor needs: names as the nodes declare them, amounts above 0."""


def resource_violations(resources: Mapping[str, float]) -> list[RuleViolation]:
    """What is wrong with a ``resources`` mapping, relative to it (``("resources", NAME)``)."""
    found = []
    for name, amount in resources.items():
        path = ("resources", name)
        if name in RAY_BUILT_IN_RESOURCES:
            found.append(
                RuleViolation(
                    path,
                    f"{name} is one of Ray's own resources, not a custom one",
                    "Remove it; CPUs and GPUs are set by embedder.cpus_per_replica and "
                    "gpus_per_replica.",
                )
            )
        elif not re.match(RESOURCE_NAME_PATTERN, name):
            found.append(
                RuleViolation(
                    path,
                    f"resource name {name!r} must be 1 to 64 letters, digits, '_', '.' or '-', "
                    "starting with a letter or '_'",
                    "Use the name the nodes declare (`ray start --resources "
                    "'{\"camera_node\": 4}'`).",
                )
            )
        elif not 0.0 < amount <= 1_000_000.0:
            found.append(
                RuleViolation(
                    path,
                    f"resource {name} must be more than 0 and at most 1000000, not {amount:g}",
                    f"Set {name} to the share of a node's {name} each actor takes, e.g. 1, or "
                    "0.1 to fit ten such actors on a node that declares 1.",
                )
            )
    return found


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def _violations(self) -> list[RuleViolation]:
        return []

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        found = self._violations()
        if found:
            raise _rules_error(found)
        return self


def _rules_error(found: list[RuleViolation]) -> PydanticCustomError:
    return PydanticCustomError(
        RULES_ERROR,
        "{summary}",
        {"summary": "; ".join(v.message for v in found), "violations": tuple(found)},
    )


class FileModel(_Strict):
    """A model read from a file; the loader records where, so later checks name lines too."""

    _origin: Any = PrivateAttr(default=None)


def _duplicates(ids: list[str], what: str, fix: str) -> list[RuleViolation]:
    """One violation per use of each repeated ID (paths ``(i, "id")``), naming the others."""
    found = []
    for value in dict.fromkeys(ids):
        places = [i for i, v in enumerate(ids) if v == value]
        if len(places) < 2:
            continue
        for i in places:
            found.append(
                RuleViolation(
                    (i, "id"),
                    f"{what} {value!r} is used {len(places)} times",
                    fix,
                    tuple((j, "id") for j in places if j != i),
                )
            )
    return found


# -- deployment ------------------------------------------------------------------------


def window_violations(
    start: datetime, end: datetime, *, now: datetime | None = None
) -> list[RuleViolation]:
    """Every rule a deployment's authorised window breaks: the one place they are coded.

    Always: ``end`` after ``start``, and at most :data:`MAX_DEPLOYMENT_WINDOW` later. With
    ``now``, for a deployment declared now (through the API): ``end`` still to come, and
    ``start`` at most :data:`MAX_LEAD` ahead. Paths are ``("start",)`` and ``("end",)``.
    """
    found = []
    if end <= start:
        found.append(
            RuleViolation(
                ("end",),
                f"end {iso_z(end)} is not after start {iso_z(start)}",
                "Set deployment.end to the end of the authorised window, after deployment.start.",
                (("start",),),
            )
        )
    elif end - start > MAX_DEPLOYMENT_WINDOW:
        found.append(
            RuleViolation(
                ("end",),
                f"the window from start to end lasts {_days(end - start)}, longer than "
                f"the {MAX_DEPLOYMENT_WINDOW.days} days one deployment may last",
                f"Set deployment.end at most {MAX_DEPLOYMENT_WINDOW.days} days after "
                "deployment.start, or split the operation into several deployments, "
                "each with its own authority.",
                (("start",),),
            )
        )
    if now is not None and end <= now:
        found.append(
            RuleViolation(
                ("end",),
                f"end {iso_z(end)} is in the past: the window would already be over",
                "Set end to the end of a window still to come.",
            )
        )
    if now is not None and start > now + MAX_LEAD:
        found.append(
            RuleViolation(
                ("start",),
                f"start {iso_z(start)} is more than {MAX_LEAD.days} days ahead; authorise it "
                "nearer the time",
                f"Set start at most {MAX_LEAD.days} days from now.",
            )
        )
    return found


class Deployment(_Strict):
    """The authority for this deployment: who, why, where and when."""

    id: ActorId = Field(
        description="the deployment's identifier. It is also the Ray namespace and the "
        "`deployment` label on every metric.",
        examples=["westfield-2026-11"],
    )
    authorised_by: Text = Field(
        description="the name and rank or role of the officer who authorised the deployment",
        examples=["Supt A. Example, authority LFR-2026-014"],
    )
    purpose: Text = Field(
        description="the authorised purpose of the deployment, as the authority words it",
        examples=["locate people wanted for serious offences"],
    )
    location: Text = Field(
        description="the place the cameras watch, as the authority words it",
        examples=["Westfield Stratford City, main entrance"],
    )
    start: Instant = Field(
        description="the start of the authorised window: an ISO 8601 date and time with a "
        "time zone. Cameras run only inside the window.",
        examples=["2026-11-20T08:00:00Z"],
    )
    end: Instant = Field(
        description="the end of the authorised window: an ISO 8601 date and time with a time "
        f"zone, after start and at most {MAX_DEPLOYMENT_WINDOW.days} days later. When it "
        "passes, the watchlist is destroyed.",
        examples=["2026-11-20T20:00:00Z"],
    )
    impact_assessment_ref: Text | None = Field(
        default=None,
        description="the reference of the deployment's impact assessment, or null",
        examples=["DPIA-2026-031"],
    )
    watchlist_max_age_h: WatchlistMaxAge | None = Field(
        default=None,
        description="the longest time, in hours, since a watchlist entry was approved for it "
        "to be searched, or null for no limit. An entry approved longer ago is stale: it is "
        "left out of the index at the start and while the deployment runs, and listed as "
        "stale; nothing is deleted because of it.",
        examples=[24],
    )

    @property
    def duration(self) -> timedelta:
        """Length of the authorised window."""
        return self.end - self.start

    def is_active(self, now: datetime) -> bool:
        """Whether ``now`` (timezone-aware) lies inside the authorised window."""
        return self.start <= now < self.end

    def _violations(self) -> list[RuleViolation]:
        return window_violations(self.start, self.end)


class NewDeployment(Deployment):
    """A deployment as its authorising officer declares it, the one form of that declaration.

    A topology's ``deployment`` section with the threshold its ``alerts`` section starts
    with (:meth:`of`); the body of ``POST /v1/deployments``; what the store records. The
    store keeps the window in Unix seconds (:attr:`starts_at`, :attr:`ends_at`). Declared
    through the API, the window must also end in the future and start at most
    :data:`MAX_LEAD` ahead (:func:`window_violations` with ``now``).
    """

    model_config = ConfigDict(title="NewDeployment")

    threshold: Threshold = Field(
        description="the distance at or below which a face is a possible match; a topology "
        "sets it in alerts.threshold",
        examples=[0.6],
    )

    @classmethod
    def of(cls, topology: Topology) -> Self:
        """The declaration a topology file makes."""
        return cls(**dict(topology.deployment), threshold=topology.alerts.threshold)

    @property
    def starts_at(self) -> float:
        """The window's start, in Unix seconds."""
        return self.start.timestamp()

    @property
    def ends_at(self) -> float:
        """The window's end, in Unix seconds."""
        return self.end.timestamp()

    def as_dict(self) -> dict[str, Any]:
        """The declaration as a JSON-ready map, in the store's terms (Unix seconds)."""
        return {
            "id": self.id,
            "authorised_by": self.authorised_by,
            "purpose": self.purpose,
            "location": self.location,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "threshold": self.threshold,
            "impact_assessment_ref": self.impact_assessment_ref,
            "watchlist_max_age_h": self.watchlist_max_age_h,
        }


def _days(span: timedelta) -> str:
    return f"{span.total_seconds() / 86400:.1f} days"


# -- cameras -----------------------------------------------------------------------------


class FileSource(_Strict):
    """A video file, decoded with OpenCV."""

    type: Literal["file"] = Field(description="the source kind: file")
    path: FilePath = Field(
        description="the video file, relative to the topology file's folder unless absolute",
        examples=["videos/entrance.mp4"],
    )

    def describe(self) -> str:
        """One line for summaries."""
        return f"file {self.path}"


class UrlSource(_Strict):
    """A network stream (RTSP or HTTP), reconnected with backoff when it fails."""

    type: Literal["url"] = Field(description="the source kind: url")
    url: str = Field(
        max_length=2048,
        description="the stream's address, starting rtsp://, rtsps://, http:// or https://",
        examples=["rtsp://192.0.2.10:554/stream1"],
    )
    transport: Literal["tcp", "udp"] | None = Field(
        default=None,
        description="how an rtsp:// stream's video travels: tcp or udp. tcp (OpenCV's "
        "default, also when null) carries it inside the RTSP connection; udp as separate RTP "
        "packets, which some cameras and servers need.",
        examples=["udp"],
    )

    def redacted(self) -> str:
        """The URL with any password replaced by ``***``, for logs and summaries."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.username}:***@{host}"
        return parts._replace(netloc=netloc).geturl()

    def describe(self) -> str:
        """One line for summaries."""
        over = f" over {self.transport}" if self.transport else ""
        return f"url {self.redacted()}{over}"

    def _violations(self) -> list[RuleViolation]:
        parts = urlsplit(self.url)
        example = "e.g. rtsp://192.0.2.10:554/stream1"
        if parts.scheme.lower() not in URL_SCHEMES:
            return [
                RuleViolation(
                    ("url",),
                    "url must start with rtsp://, rtsps://, http:// or https://",
                    f"Set the camera's url to its stream address, {example}; for a video "
                    "file use type: file with path:.",
                )
            ]
        if not parts.hostname:
            return [
                RuleViolation(
                    ("url",),
                    "url has no host",
                    f"Write the camera's address in full, {example}.",
                )
            ]
        if self.transport is not None and not parts.scheme.lower().startswith("rtsp"):
            return [
                RuleViolation(
                    ("transport",),
                    f"transport applies only to rtsp:// and rtsps:// streams, not {parts.scheme}",
                    "Remove transport from this source; HTTP streams have no choice of transport.",
                )
            ]
        return []


class DeviceSource(_Strict):
    """A local capture device (a USB camera, say)."""

    type: Literal["device"] = Field(description="the source kind: device")
    index: Int = Field(
        ge=0,
        le=63,
        description="the local video device's number as OpenCV counts them (0 is /dev/video0)",
        examples=[0],
    )

    def describe(self) -> str:
        """One line for summaries."""
        return f"device {self.index}"


class Sprite(_Strict):
    """A face image moved across a synthetic frame."""

    image: FilePath = Field(
        description="the face image, relative to the topology file's folder unless absolute",
        examples=["faces/person1.jpg"],
    )
    label: Text | None = Field(
        default=None,
        description="the name the sprite goes by in test reports, or null",
        examples=["person1"],
    )
    start: tuple[UnitFloat, UnitFloat] = Field(
        description="the sprite's centre when it appears, as [x, y] fractions of the frame "
        "width and height (0 to 1)",
        examples=[(0.2, 0.5)],
    )
    velocity: tuple[Speed, Speed] = Field(
        default=(0.0, 0.0),
        description="the sprite's speed, as [vx, vy] fractions of the frame per second",
        examples=[(0.05, 0.0)],
    )
    height: Float = Field(
        default=0.3,
        ge=0.05,
        le=1.0,
        description="the sprite's height as a fraction of the frame height",
    )
    appear_s: Float = Field(
        default=0.0,
        ge=0.0,
        le=86400.0,
        description="the time the sprite appears, in seconds from the stream's start",
    )
    disappear_s: Float | None = Field(
        default=None,
        ge=0.0,
        le=86400.0,
        description="the time the sprite leaves, in seconds from the stream's start, or null "
        "to stay to the end",
        examples=[12.0],
    )

    def _violations(self) -> list[RuleViolation]:
        if self.disappear_s is not None and self.disappear_s <= self.appear_s:
            return [
                RuleViolation(
                    ("disappear_s",),
                    f"disappear_s {self.disappear_s:g} is not after appear_s {self.appear_s:g}",
                    "Set disappear_s later than appear_s, or null to keep the sprite.",
                    (("appear_s",),),
                )
            ]
        return []


class SyntheticSource(_Strict):
    """Generated frames with face images moving over a plain background, for tests."""

    type: Literal["synthetic"] = Field(description="the source kind: synthetic")
    width: Int = Field(default=640, ge=16, le=7680, description="the frame width, in pixels")
    height: Int = Field(default=360, ge=16, le=4320, description="the frame height, in pixels")
    frames: Int | None = Field(
        default=None,
        ge=1,
        description="the number of frames to produce, or null for an endless stream",
        examples=[300],
    )
    seed: Int = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description="the random seed, so that a synthetic stream repeats exactly",
    )
    background: str = Field(
        default="#406080",
        pattern=HEX_COLOUR_PATTERN,
        description='the background colour, as a quoted hex string "#RRGGBB"',
    )
    sprites: tuple[Sprite, ...] = Field(
        default=(),
        max_length=64,
        description="the face images moved across the frame",
    )

    def describe(self) -> str:
        """One line for summaries."""
        length = "endless" if self.frames is None else f"{self.frames} frames"
        return f"synthetic {self.width}x{self.height}, {len(self.sprites)} sprites, {length}"


Source = Annotated[
    FileSource | UrlSource | DeviceSource | SyntheticSource, Field(discriminator="type")
]


class Reconnect(_Strict):
    """How a camera reconnects when its stream fails or stalls: exponential backoff.

    The first attempt is at once; then each failed attempt doubles the wait, from
    ``initial_backoff_s`` up to ``max_backoff_s``, and each wait is shortened by up to 20%
    at random so that cameras that failed together do not retry in step. The backoff
    starts again from ``initial_backoff_s`` once a frame arrives.
    """

    initial_backoff_s: Float = Field(
        default=0.5,
        gt=0.0,
        le=3600.0,
        description="the wait after the first failed reconnection attempt, in seconds. Each "
        "further failed attempt doubles it.",
    )
    max_backoff_s: Float = Field(
        default=5.0,
        gt=0.0,
        le=3600.0,
        description="the longest wait between reconnection attempts, in seconds. A camera "
        "that comes back is found again at most this long (plus the time to open it) later.",
    )
    max_attempts: Int | None = Field(
        default=None,
        ge=1,
        description="the number of failed attempts after which the camera gives up and "
        "reports failed, or null to keep trying",
        examples=[20],
    )

    def _violations(self) -> list[RuleViolation]:
        if self.initial_backoff_s > self.max_backoff_s:
            return [
                RuleViolation(
                    ("initial_backoff_s",),
                    f"initial_backoff_s {self.initial_backoff_s:g} is above max_backoff_s "
                    f"{self.max_backoff_s:g}",
                    "Set initial_backoff_s at or below max_backoff_s.",
                    (("max_backoff_s",),),
                )
            ]
        return []


class Camera(_Strict):
    """One camera: a source sampled at a fixed rate into a bounded queue."""

    id: ActorId = Field(
        description="the camera's identifier. It names the camera actor, its log lines and "
        "its metrics.",
        examples=["cam_north"],
    )
    source: Source = Field(
        description="where the camera's frames come from: a mapping whose type is file, url, "
        "device or synthetic",
    )
    fps: Float = Field(
        default=10.0,
        gt=0.0,
        le=60.0,
        description="the camera's sampling rate, in frames per second. Frames in between are "
        "skipped, never queued.",
    )
    at_end: Literal["stop", "loop"] = Field(
        default="stop",
        description="what a file or synthetic source does when it runs out of frames: stop, "
        "or loop from the start",
    )
    resources: Resources = Field(
        default_factory=dict,
        description="custom Ray resources the camera actor needs, to place it on camera-ingest "
        "nodes of a cluster, e.g. {camera_ingest: 0.1}. Empty: any node.",
    )
    pace: Literal["realtime", "asap"] = Field(
        default="realtime",
        description="how a file or synthetic source is read: realtime, at the speed of the "
        "camera it stands in for (frames are dropped if the embedder falls behind), or asap, "
        "as fast as the embedder takes frames with none dropped (benchmarks, batch runs)",
    )
    queue_size: Int = Field(
        default=4,
        ge=1,
        le=256,
        description="the number of frames held for the embedder. When the queue is full the "
        "oldest frame is dropped and counted.",
    )
    max_in_flight: Int = Field(
        default=2,
        ge=1,
        le=16,
        description="the number of this camera's frames sent to the embedder and not yet answered",
    )
    reconnect: Reconnect = Field(
        default_factory=Reconnect,
        description="how the camera reconnects when its stream fails or stalls",
    )
    stall_timeout_s: Float = Field(
        default=5.0,
        ge=0.5,
        le=600.0,
        description="the time, in seconds, a camera may go without a frame from its source "
        "before it counts as stalled. A stalled camera shows state stalled, counts the stall "
        "and reopens the source with the reconnect backoff.",
    )

    def _violations(self) -> list[RuleViolation]:
        found = resource_violations(self.resources)
        if "at_end" in self.model_fields_set and isinstance(self.source, (UrlSource, DeviceSource)):
            found.append(
                RuleViolation(
                    ("at_end",),
                    f"at_end applies only to file and synthetic sources, not {self.source.type}",
                    "Remove at_end from this camera; a live stream that ends is reconnected "
                    "(see reconnect).",
                )
            )
        shortest = 2.0 / self.fps
        if self.stall_timeout_s < shortest:
            found.append(
                RuleViolation(
                    ("stall_timeout_s",),
                    f"stall_timeout_s {self.stall_timeout_s:g} is shorter than two frames at "
                    f"fps {self.fps:g} ({shortest:g} s)",
                    f"Set stall_timeout_s to at least {shortest:g}, or raise fps.",
                    (("fps",),),
                )
            )
        return found


# -- embedder ----------------------------------------------------------------------------


DEFAULT_DETECTOR: dict[str, str] = {"cpu": "centerface", "gpu": "centerface", "auto": "centerface"}
"""The face detector an embedder runs when its ``detector`` section names no ``model``, by
``embedder.device``. The one place the choice is made (see docs/topology.md for why)."""


def _defaults_text() -> str:
    """``DEFAULT_DETECTOR`` in words: "centerface on every device", or by device."""
    devices: dict[str, list[str]] = {}
    for device, model in DEFAULT_DETECTOR.items():
        devices.setdefault(model, []).append(device)
    if len(devices) == 1:
        return f"{next(iter(devices))} on every device"
    return ", ".join(f"{model} on {' and '.join(names)}" for model, names in devices.items())


_DETECTOR_MODEL = (
    f"the face detector: mtcnn or centerface. Left out, the embedder device's default: "
    f"{_defaults_text()}."
)


class MtcnnSettings(_Strict):
    """MTCNN face detector tuning (names as in ``lfr_actors.models.detector.DetectorConfig``).

    MTCNN searches an image pyramid one frame at a time: its cost grows as min_face_px
    falls, and every frame size is a new set of tensor shapes.
    """

    model: Literal["mtcnn"] = Field(
        default="mtcnn",
        description=_DETECTOR_MODEL,
    )
    # Live cameras search from 40 px (the model layer's 20 is facenet-pytorch's, which
    # `lfr evaluate` keeps); every other default is the model layer's own.
    min_face_px: Int = Field(
        default=40,
        ge=12,
        le=1000,
        description="the smallest face side searched for, in pixels. Smaller values cost "
        "much more time.",
    )
    thresholds: tuple[UnitFloat, UnitFloat, UnitFloat] = Field(
        default=DetectorConfig.thresholds,
        description="the face probabilities needed after MTCNN's three stages, as [P-Net, "
        "R-Net, O-Net], each 0 to 1",
    )
    scale_factor: Float = Field(
        default=DetectorConfig.scale_factor,
        ge=0.5,
        le=0.95,
        description="the size ratio between levels of the image pyramid",
    )

    def describe(self) -> str:
        """One line for summaries."""
        return f"mtcnn, faces from {self.min_face_px} px"


InputSide = Annotated[
    int,
    BeforeValidator(_reject_bool),
    Field(ge=MIN_INPUT_SIDE, le=MAX_INPUT_SIDE, multiple_of=SIDE_MULTIPLE),
]
"""One side of CenterFace's fixed input, in pixels."""


class CenterFaceSettings(_Strict):
    """CenterFace face detector tuning (``lfr_actors.models.centerface.CenterFaceConfig``).

    CenterFace takes one fixed input size: every frame of a batch is scaled to fit inside
    it, keeping its aspect ratio, and the whole batch is one inference call. Faces are
    then aligned from the full-resolution frame.
    """

    model: Literal["centerface"] = Field(
        default="centerface",
        description=_DETECTOR_MODEL,
    )
    input_size: tuple[InputSide, InputSide] = Field(
        default=(CenterFaceConfig.input_width, CenterFaceConfig.input_height),
        description=f"the detector's input, as [width, height] in pixels, each a multiple of "
        f"{SIDE_MULTIPLE} from {MIN_INPUT_SIDE} to {MAX_INPUT_SIDE}. Each frame is scaled to "
        "fit inside it, so a frame larger than the input shows the detector its faces "
        "smaller; a larger input finds smaller faces and costs more.",
        examples=[(1280, 736)],
    )
    score_threshold: Float = Field(
        default=CenterFaceConfig.score_threshold,
        gt=0.0,
        lt=1.0,
        description="the face probability a detection needs, between 0 and 1",
    )
    nms_threshold: Float = Field(
        default=CenterFaceConfig.nms_threshold,
        gt=0.0,
        le=1.0,
        description="the overlap, as intersection over union, above which the weaker of "
        "two detections is dropped",
    )
    min_face_px: Int = Field(
        default=CenterFaceConfig.min_face_px,
        ge=1,
        le=1000,
        description="the shorter side, in frame pixels, a detection needs to be kept. "
        "Faces too small for the detector's input are not found whatever its value.",
    )
    max_batch: Int = Field(
        default=CenterFaceConfig.max_batch,
        ge=1,
        le=64,
        description="the most frames in one detector inference call; a larger embedder "
        "batch is split into several calls",
    )

    @property
    def input_width(self) -> int:
        """The input's width, in pixels."""
        return self.input_size[0]

    @property
    def input_height(self) -> int:
        """The input's height, in pixels."""
        return self.input_size[1]

    def describe(self) -> str:
        """One line for summaries."""
        return (
            f"centerface, input {self.input_width}x{self.input_height}, score >= "
            f"{self.score_threshold:g}, faces from {self.min_face_px} px"
        )


DetectorSettings = Annotated[MtcnnSettings | CenterFaceSettings, Field(discriminator="model")]
"""An embedder's face detector: its settings model is chosen by their ``model`` field."""


def _default_detector(device: object) -> str:
    """The detector :data:`DEFAULT_DETECTOR` gives ``device`` (cpu's for an invalid one)."""
    if isinstance(device, str) and device in DEFAULT_DETECTOR:
        return DEFAULT_DETECTOR[device]
    return DEFAULT_DETECTOR["cpu"]


class QualitySettings(_Strict):
    """Face quality minimums (names as in ``lfr_actors.models.quality.QualityConfig``)."""

    min_face_px: Float = Field(
        default=QualityConfig.min_face_px,
        ge=0.0,
        le=1000.0,
        description="the shorter side a face's box needs, in pixels",
    )
    min_score: Float = Field(
        default=QualityConfig.min_score,
        ge=0.0,
        le=1.0,
        description="the detector confidence a face needs. Left out, the detector's own "
        "scale decides: " + ", ".join(f"{m} {q:g}" for m, (q, _) in DETECTOR_SCORES.items()),
    )
    min_sharpness: Float = Field(
        default=QualityConfig.min_sharpness,
        ge=0.0,
        le=100000.0,
        description="the sharpness a face needs: the variance of the Laplacian over the "
        "middle of the aligned chip",
    )
    min_frontal: Float = Field(
        default=QualityConfig.min_frontal,
        ge=0.0,
        le=1.0,
        description="the frontal-pose score a face needs: 1 looks at the camera, 0 is in profile",
    )


def _tracking(name: str, description: str) -> Any:
    """A tracking setting's field: ``TrackingConfig``'s default, ``LIMITS``' range."""
    low, high = TRACKING_LIMITS[name]
    return Field(default=getattr(TrackingConfig, name), ge=low, le=high, description=description)


class TrackingSettings(_Strict):
    """Face tracks (names as in ``lfr_actors.tracking.config.TrackingConfig``).

    A track is one person seen on one camera: the embedder follows each camera's faces
    from frame to frame and decides on each track as a whole, not on single frames.
    """

    min_iou: Float = _tracking(
        "min_iou",
        "the overlap a face's box needs with where a track's face is expected, as "
        "intersection over union from 0 to 1, to continue that track. Lower follows faster "
        "motion; higher keeps people who pass close apart.",
    )
    max_missed_frames: Int = _tracking(
        "max_missed_frames",
        "the number of processed frames a track waits for its face before it ends. A face "
        "hidden for no longer keeps its track; one away longer starts a new track.",
    )
    high_score: Float = _tracking(
        "high_score",
        "the detector confidence a face needs to start a track. A weaker face may only "
        "continue a track it overlaps. Left out, the detector's own scale decides: "
        + ", ".join(f"{m} {h:g}" for m, (_, h) in DETECTOR_SCORES.items()),
    )
    min_face_px: Float = _tracking(
        "min_face_px",
        "the shorter side, in pixels, a face's box needs to count as evidence for its track. "
        "The detector must find faces this small: its min_face_px no larger (mtcnn's default "
        f"is {MtcnnSettings.model_fields['min_face_px'].default}, centerface's "
        f"{CenterFaceSettings.model_fields['min_face_px'].default}), and for centerface an "
        "input_size that does not shrink the frames so far that such faces become too small "
        "for it.",
    )
    full_face_px: Float = _tracking(
        "full_face_px",
        "the shorter side, in pixels, from which a face counts fully. Smaller faces count "
        "less, down to min_face_px.",
    )
    min_track_frames: Int = _tracking(
        "min_track_frames",
        "the number of faces a track needs before it is compared with the watchlist",
    )
    reembed_every: Int = _tracking(
        "reembed_every",
        "the number of frames between embeddings of a decided track (one that matched, or "
        "that matched nobody after no_match_frames faces)",
    )
    reembed_gain: Float = _tracking(
        "reembed_gain",
        "the factor by which a face of a decided track must beat the track's best face so "
        "far to be embedded at once, between its reembed_every frames",
    )
    no_match_frames: Int = _tracking(
        "no_match_frames",
        "the number of faces after which a track that matched nobody counts as decided, "
        "and is embedded only every reembed_every frames",
    )
    max_tracks: Int = _tracking(
        "max_tracks",
        "the most tracks one camera follows at once, a bound on memory. Beyond it the track "
        "seen least recently ends.",
    )
    small_face_margin: Float = _tracking(
        "small_face_margin",
        "the distance by which a track of small faces is decided stricter than the "
        "threshold: all of it when its largest face is min_face_px, none from full_face_px. "
        "Blurred small faces of strangers come closer to a watchlist photo than large ones.",
    )

    def _violations(self) -> list[RuleViolation]:
        if self.full_face_px >= self.min_face_px:
            return []
        return [
            RuleViolation(
                ("full_face_px",),
                f"full_face_px {self.full_face_px:g} is smaller than min_face_px "
                f"{self.min_face_px:g}",
                f"Set embedder.tracking.full_face_px to at least {self.min_face_px:g}, or "
                "lower embedder.tracking.min_face_px.",
                (("min_face_px",),),
            )
        ]


class EmbedderConfig(_Strict):
    """The embedder actors: detection, alignment, quality and embedding, batched."""

    id: ActorId = Field(
        default="embedder",
        description="the embedder's identifier; it names the embedder actors, their log "
        "lines and their metrics",
    )
    replicas: Int = Field(
        default=1,
        ge=1,
        le=64,
        description="the number of embedder actors; the cameras' frames are shared among them",
    )
    device: Literal["cpu", "gpu", "auto"] = Field(
        default="cpu",
        description="where inference runs: cpu; gpu (refuses to start without a working GPU "
        "provider); or auto (a GPU where one works, else the CPU)",
    )
    gpus_per_replica: Float = Field(
        default=1.0,
        gt=0.0,
        le=8.0,
        description="the GPUs Ray reserves for each replica when device is gpu or auto; a "
        "fraction lets replicas share a GPU",
    )
    cpus_per_replica: Float = Field(
        default=1.0,
        ge=0.0,
        le=256.0,
        description="the CPUs Ray reserves for each replica",
    )
    resources: Resources = Field(
        default_factory=dict,
        description="custom Ray resources each replica needs, to place the embedders on "
        "chosen nodes of a cluster, e.g. {camera_node: 1}. Empty: any node with the CPUs "
        "and GPUs above.",
    )
    max_batch: Int = Field(
        default=8, ge=1, le=256, description="the most frames embedded in one batch"
    )
    max_wait_ms: Float = Field(
        default=20.0,
        ge=0.0,
        le=1000.0,
        description="the longest a frame waits for its batch to fill, in milliseconds",
    )
    threads: Int = Field(
        default=0,
        ge=0,
        le=256,
        description="the ONNX Runtime intra-op threads of each replica, or 0 to let ONNX "
        "Runtime choose",
    )
    detector: DetectorSettings = Field(
        default_factory=MtcnnSettings,
        description="the face detector and its settings: a mapping whose model is mtcnn or "
        "centerface, or that leaves model out for the device's default",
    )
    model: str = Field(
        default=DLIB_RESNET_NAME,
        max_length=64,
        description="the name of a default embedding model from the model cache (see `lfr "
        "models list`). Leave it out when model_file is set.",
    )
    model_file: FilePath | None = Field(
        default=None,
        description="an embedder spec YAML file declaring the operator's own ONNX model, "
        "relative to the topology file's folder unless absolute, or null for model",
        examples=["models/my_embedder.yaml"],
    )
    quality: QualitySettings = Field(
        default_factory=QualitySettings,
        description="the quality a face needs before it is compared with the watchlist",
    )
    tracking: TrackingSettings = Field(
        default_factory=TrackingSettings,
        description="how faces are followed from frame to frame as tracks, and when a track "
        "is decided",
    )
    crop_size: Int = Field(
        default=MIN_CROP_SIZE,
        ge=MIN_CROP_SIZE,
        le=1024,
        description=f"the side, in pixels, of the face crop attached to an alert (the track's "
        f"best face), at least {MIN_CROP_SIZE} so that an officer can judge the match",
    )

    @model_validator(mode="before")
    @classmethod
    def _device_default_detector(cls, data: Any) -> Any:
        # A detector section without a model (or no section) gets the device's default
        # detector before validation, so that the model field picks its settings.
        # The quality gate's and the tracker's score defaults follow the detector's scale.
        if not isinstance(data, Mapping):
            return data
        detector = data.get("detector", {})
        if not isinstance(detector, Mapping):
            return data
        if "model" not in detector:
            device = data.get("device", cls.model_fields["device"].default)
            data = {**data, "detector": {**detector, "model": _default_detector(device)}}
        model = data["detector"]["model"]
        if not isinstance(model, str) or model not in DETECTOR_SCORES:
            return data
        min_score, high_score = DETECTOR_SCORES[model]
        for section, field, value in (
            ("quality", "min_score", min_score),
            ("tracking", "high_score", high_score),
        ):
            given = data.get(section, {})
            if isinstance(given, Mapping) and field not in given:
                data = {**data, section: {**given, field: value}}
        return data

    def _violations(self) -> list[RuleViolation]:
        found = resource_violations(self.resources)
        if self.model_file is not None and "model" in self.model_fields_set:
            found.append(
                RuleViolation(
                    ("model",),
                    "model and model_file are both set; the embedder is named by one of them",
                    "Remove embedder.model to use your own model from model_file, or remove "
                    "embedder.model_file to use a default model.",
                    (("model_file",),),
                )
            )
        elif self.model not in DEFAULT_MODELS:
            found.append(
                RuleViolation(
                    ("model",),
                    f"unknown model {self.model!r}; the default models are "
                    f"{', '.join(DEFAULT_MODELS)}",
                    f"Set embedder.model to one of {', '.join(DEFAULT_MODELS)}, or declare "
                    "your own ONNX model in a spec file and set embedder.model_file to it.",
                )
            )
        if self.device == "cpu" and "gpus_per_replica" in self.model_fields_set:
            found.append(
                RuleViolation(
                    ("gpus_per_replica",),
                    "gpus_per_replica has no effect with device cpu",
                    "Set embedder.device to gpu or auto, or remove gpus_per_replica.",
                    (("device",),),
                )
            )
        return found


# -- index, alerts, and the rest ---------------------------------------------------------


class IndexConfig(_Strict):
    """The watchlist's vector index, split over shard actors (usearch)."""

    id: ActorId = Field(
        default="index",
        description="the index's identifier; it names the router and its shards in logs and "
        "metrics",
    )
    shards: Int = Field(
        default=1,
        ge=1,
        le=256,
        description="the number of shard actors the watchlist's embeddings are split over",
    )
    mode: Literal["auto", "exact", "hnsw"] = Field(
        default="auto",
        description="the search method: exact (brute force), hnsw (approximate, for large "
        "watchlists), or auto (exact below exact_below entries, else hnsw)",
    )
    exact_below: Int = Field(
        default=20000,
        ge=0,
        le=100_000_000,
        description="the watchlist size below which mode auto searches exactly",
    )
    dtype: Literal["f32", "f16", "i8"] = Field(
        default="f32",
        description="the storage type of enrolled embeddings: f32, f16, or i8 (smaller, "
        "slightly less accurate)",
    )
    connectivity: Int = Field(
        default=16, ge=2, le=256, description="the HNSW graph degree (usearch connectivity)"
    )
    expansion_add: Int = Field(
        default=128,
        ge=1,
        le=4096,
        description="the HNSW candidate list size when enrolling (usearch expansion_add)",
    )
    expansion_search: Int = Field(
        default=64,
        ge=1,
        le=4096,
        description="the HNSW candidate list size when searching (usearch expansion_search)",
    )
    resources: Resources = Field(
        default_factory=dict,
        description="custom Ray resources the router and each shard need. They run on the "
        "node of `lfr up` (their snapshots are files in its data folder), so this checks "
        "that node has them, e.g. {store_node: 0.1}; a node without them is refused at start",
    )

    def _violations(self) -> list[RuleViolation]:
        return resource_violations(self.resources)


WEBHOOK_EVENTS = ("raised", "updated", "adjudicated")
"""The alert event kinds a webhook may be sent."""
WEBHOOK_SCHEMES = ("http", "https")
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
WebhookEvent = Literal["raised", "updated", "adjudicated"]


def _all_webhook_events() -> tuple[WebhookEvent, ...]:
    return ("raised", "updated", "adjudicated")


class Webhook(_Strict):
    """A control room's HTTP endpoint that is sent every alert event, signed."""

    name: ActorId | None = Field(
        default=None,
        description="the webhook's name in the status, /metrics and logs, and the key of "
        "its delivery position in the store; webhook-N (its place in the list, from 0) "
        "when left out",
        examples=["control_room"],
    )
    url: str = Field(
        max_length=2048,
        description="the address each alert event is POSTed to, starting http:// or https://",
        examples=["https://control.example.org/lfr/alerts"],
    )
    secret_env: str | None = Field(
        default=None,
        pattern=ENV_NAME_PATTERN,
        description="the name of the environment variable that holds the shared secret the "
        "requests are signed with (give this or secret_file, not both)",
        examples=["LFR_WEBHOOK_SECRET"],
    )
    secret_file: FilePath | None = Field(
        default=None,
        description="the file that holds the shared secret, readable by its owner only "
        "(mode 0600 or 0400), relative to the topology file's folder unless absolute "
        "(give this or secret_env, not both)",
        examples=["secrets/control_room.key"],
    )
    events: tuple[WebhookEvent, ...] = Field(
        default_factory=_all_webhook_events,
        min_length=1,
        max_length=3,
        description="the alert event kinds sent: any of raised, updated and adjudicated",
        examples=[["raised", "adjudicated"]],
    )
    timeout_s: Float = Field(
        default=5.0,
        ge=0.5,
        le=60.0,
        description="the time, in seconds, one request may take before it is retried",
    )

    def shown(self) -> str:
        """``scheme://host:port`` only: a URL's path, query or user part may hold secrets."""
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            port = 0
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{port}"

    def _violations(self) -> list[RuleViolation]:
        found = []
        parts = urlsplit(self.url)
        example = "e.g. https://control.example.org/lfr/alerts"
        if parts.scheme.lower() not in WEBHOOK_SCHEMES:
            found.append(
                RuleViolation(
                    ("url",),
                    "url must start with http:// or https://",
                    f"Set the webhook's url to the receiver's address, {example}.",
                )
            )
        elif not parts.hostname:
            found.append(
                RuleViolation(("url",), "url has no host", f"Write the address in full, {example}.")
            )
        else:
            try:
                parts.port  # noqa: B018 - reading it checks it
            except ValueError:
                found.append(
                    RuleViolation(
                        ("url",),
                        "url has a port that is not a number from 0 to 65535",
                        f"Correct the port in the url, {example}.",
                    )
                )
        if (self.secret_env is None) == (self.secret_file is None):
            both = self.secret_env is not None
            found.append(
                RuleViolation(
                    ("secret_env",) if both else (),
                    "a webhook needs exactly one of secret_env and secret_file, not both"
                    if both
                    else "a webhook needs a secret: secret_env or secret_file",
                    "Keep one: secret_env names an environment variable holding the shared "
                    "secret, secret_file a file (mode 0600) holding it.",
                    (("secret_file",),) if both else (),
                )
            )
        if len(set(self.events)) != len(self.events):
            found.append(
                RuleViolation(
                    ("events",),
                    "events lists a kind more than once",
                    "List each of raised, updated and adjudicated at most once.",
                )
            )
        return found


class AlertsConfig(_Strict):
    """When a face becomes an alert: the threshold and the fusion of repeated sightings."""

    id: ActorId = Field(default="alerts", description="the alert actor's identifier")
    threshold: Threshold = Field(
        description="the distance at or below which a face is a possible match. Lower is "
        "stricter: fewer false alerts, more missed matches.",
        examples=[0.6],
    )
    max_threshold: Float | None = Field(
        default=None,
        gt=0.0,
        lt=2.0,
        description="the loosest threshold governance allows, or null for no cap. threshold "
        "and every watchlist entry's own threshold must not exceed it.",
        examples=[0.6],
    )
    calibration: FilePath | None = Field(
        default=None,
        description="a calibration file from `lfr evaluate calibrate` for the embedder's "
        "model, relative to the topology file's folder unless absolute; the deployment then "
        "shows its expected false alerts per 1,000 passers-by for its watchlist size and "
        "threshold. Null for none",
        examples=["calibration.json"],
    )
    fusion_window_s: Float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="the time, in seconds, within which repeated sightings of one watchlist "
        "entry, on any camera, become one alert",
    )
    min_sightings: Int = Field(
        default=1,
        ge=1,
        le=100,
        description="the number of sightings within fusion_window_s needed before an alert "
        "is raised",
    )
    top_k: Int = Field(
        default=1,
        ge=1,
        le=10,
        description="the number of nearest watchlist entries considered for each face",
    )
    webhooks: tuple[Webhook, ...] = Field(
        default=(),
        max_length=16,
        description="the HTTP endpoints every alert event is POSTed to, signed with a shared "
        "secret (see the README's Webhooks section)",
    )
    resources: Resources = Field(
        default_factory=dict,
        description="custom Ray resources the alert actor needs. It runs on the node of `lfr "
        "up` (it writes the store in its data folder), so this checks that node has them, "
        "e.g. {store_node: 0.1}; a node without them is refused at start",
    )

    def webhook_names(self) -> list[str]:
        """Each webhook's name: its own, or ``webhook-N`` after its place in the list."""
        return [w.name or f"webhook-{i}" for i, w in enumerate(self.webhooks)]

    def _violations(self) -> list[RuleViolation]:
        found = resource_violations(self.resources)
        names = self.webhook_names()
        for i, name in enumerate(names):
            others = [j for j, n in enumerate(names) if n == name and j != i]
            if others:
                found.append(
                    RuleViolation(
                        ("webhooks", i, "name"),
                        f"webhook name {name!r} is used {len(others) + 1} times",
                        "Give each webhook a name of its own.",
                        tuple(("webhooks", j, "name") for j in others),
                    )
                )
        if self.max_threshold is not None and self.threshold > self.max_threshold:
            return [
                *found,
                RuleViolation(
                    ("threshold",),
                    f"threshold {self.threshold} is looser than max_threshold {self.max_threshold}",
                    f"Set alerts.threshold to {self.max_threshold:g} or lower; raising "
                    "max_threshold needs the governance approval that set it.",
                    (("max_threshold",),),
                ),
            ]
        return found


class WatchlistRef(_Strict):
    """The deployment's watchlist file."""

    file: FilePath = Field(
        description="the watchlist YAML file, relative to the topology file's folder unless "
        "absolute",
        examples=["watchlists/westfield.yaml"],
    )


class ApiConfig(_Strict):
    """The alert API's listening address."""

    host: str = Field(
        default="127.0.0.1",
        pattern=r"^\S+$",
        max_length=253,
        description="the address the alert API listens on; 0.0.0.0 for every interface",
    )
    port: Int = Field(
        default=8080, ge=0, le=65535, description="the API's TCP port, or 0 for any free port"
    )


class StorageConfig(_Strict):
    """Where the deployment keeps its data."""

    data_dir: FilePath = Field(
        description="the deployment's data folder (alert database, index snapshots, audit "
        "log), relative to the topology file's folder unless absolute",
        examples=["../data/westfield-2026-11"],
    )


class LoggingConfig(_Strict):
    """Log level and format of every process of the deployment."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="the lowest level logged: DEBUG, INFO, WARNING or ERROR"
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="the log format: json, console, or auto (console on a terminal, else JSON)",
    )


class Topology(FileModel):
    """One authorised deployment: everything the kernel starts, and under which authority."""

    version: Literal[1] = Field(
        description="the topology format version; this program reads version 1",
        examples=[1],
    )
    deployment: Deployment = Field(description="the authority, place and time window")
    cameras: tuple[Camera, ...] = Field(
        min_length=1, max_length=1024, description="the cameras of the deployment, at least one"
    )
    embedder: EmbedderConfig = Field(
        default_factory=EmbedderConfig, description="the embedder actors"
    )
    index: IndexConfig = Field(default_factory=IndexConfig, description="the watchlist index")
    alerts: AlertsConfig = Field(description="the alert rules")
    watchlist: WatchlistRef | None = Field(
        default=None,
        description="the deployment's watchlist file, or null when its entries are enrolled "
        "and approved through the API",
    )
    api: ApiConfig = Field(default_factory=ApiConfig, description="the alert API")
    storage: StorageConfig = Field(description="where the deployment keeps its data")
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="log level and format"
    )

    # A field validator, so that repeated IDs are reported even when other sections fail.
    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, cameras: tuple[Camera, ...]) -> tuple[Camera, ...]:
        found = _duplicates(
            [c.id for c in cameras],
            "camera id",
            "Give every camera its own id; the id names its actor, logs and metrics.",
        )
        if found:
            raise _rules_error(found)
        return cameras

    def _violations(self) -> list[RuleViolation]:
        ids = [c.id for c in self.cameras]
        found = []
        services = {
            ("embedder", "id"): self.embedder.id,
            ("index", "id"): self.index.id,
            ("alerts", "id"): self.alerts.id,
        }
        for i, camera_id in enumerate(ids):
            for where, service_id in services.items():
                if camera_id == service_id:
                    found.append(
                        RuleViolation(
                            ("cameras", i, "id"),
                            f"camera id {camera_id!r} is also the {where[0]}'s id",
                            "Give the camera another id; every actor needs its own.",
                            (where,),
                        )
                    )
        service_ids = list(services.values())
        for where, service_id in services.items():
            if service_ids.count(service_id) > 1:
                found.append(
                    RuleViolation(
                        where,
                        f"{where[0]}.id {service_id!r} is used by another part of the topology",
                        f"Give {where[0]} its own id; every actor needs its own.",
                        tuple(w for w, v in services.items() if v == service_id and w != where),
                    )
                )
        return found


# -- watchlist ---------------------------------------------------------------------------


class NewEntry(_Strict):
    """A watchlist entry's identity and provenance, the one form of that declaration.

    The text fields of an API upload, what the store records; a watchlist file's entries
    (:class:`WatchlistEntry`) add their photos.
    """

    id: str = Field(
        pattern=ENTRY_ID_PATTERN,
        description="the entry's identifier, named in alerts and the audit trail",
        examples=["W-2026-0001"],
    )
    display_name: Text = Field(
        description="the name shown to the adjudicating officer", examples=["Jane Example"]
    )
    category: Text = Field(
        description="why the person is on the watchlist, such as wanted, missing person or "
        "bail conditions",
        examples=["wanted"],
    )
    legal_basis: Text | None = Field(
        default=None,
        description="the legal power under which the person is on the watchlist; required "
        "for everyone but a test subject, who has a consent_ref instead",
        examples=["PACE 1984 s.24; warrant 2026/0412"],
    )
    test_subject: bool = Field(
        default=False,
        description="true for a consenting volunteer who walks past the cameras to measure "
        "live accuracy: their alerts go to the test-subject queue, never to officers' "
        "suspect queue or to webhooks",
        examples=[False],
    )
    consent_ref: Text | None = Field(
        default=None,
        description="a test subject's consent reference (the signed consent form), in place "
        "of a legal basis; only for a test subject",
        examples=["CONSENT-2026-007"],
    )
    source: Text = Field(
        description="where the photos came from, such as a custody record reference",
        examples=["custody record CR-2025-118822"],
    )
    image_date: Day = Field(
        description="the date the photos were taken, as YYYY-MM-DD", examples=["2025-03-14"]
    )
    threshold: Float | None = Field(
        default=None,
        gt=0.0,
        lt=2.0,
        description="the entry's own distance threshold, or null for the deployment's",
        examples=[0.55],
    )

    def _violations(self) -> list[RuleViolation]:
        # Exactly one authority: a legal power for a suspect, a consent for a volunteer.
        if self.test_subject:
            found = []
            if self.consent_ref is None:
                found.append(
                    RuleViolation(
                        ("consent_ref",),
                        "a test subject needs consent_ref, the volunteer's consent reference",
                        "Give the reference of the volunteer's signed consent.",
                    )
                )
            if self.legal_basis is not None:
                found.append(
                    RuleViolation(
                        ("legal_basis",),
                        "a test subject has a consent_ref, not a legal_basis",
                        "Remove legal_basis; a volunteer is on the watchlist by consent.",
                    )
                )
            return found
        if self.consent_ref is not None:
            return [
                RuleViolation(
                    ("consent_ref",),
                    "consent_ref is only for a test subject (test_subject: true)",
                    "Remove consent_ref and give legal_basis, or set test_subject: true.",
                )
            ]
        if self.legal_basis is None:
            return [
                RuleViolation(
                    ("legal_basis",),
                    "legal_basis is required (the legal power for this watchlist entry)",
                    "Give the legal power, or set test_subject: true with a consent_ref.",
                )
            ]
        return []


class WatchlistEntry(NewEntry):
    """One person the deployment may look for, with the authority to do so."""

    images: tuple[FilePath, ...] = Field(
        min_length=1,
        max_length=64,
        description="the entry's photos, relative to the watchlist file's folder unless absolute",
        examples=[("images/w-2026-0001.jpg",)],
    )


class Watchlist(FileModel):
    """The people one deployment may look for."""

    version: Literal[1] = Field(
        description="the watchlist format version; this program reads version 1",
        examples=[1],
    )
    entries: tuple[WatchlistEntry, ...] = Field(
        min_length=1, max_length=1_000_000, description="the watchlist entries, at least one"
    )

    @field_validator("entries")
    @classmethod
    def _unique_entry_ids(cls, entries: tuple[WatchlistEntry, ...]) -> tuple[WatchlistEntry, ...]:
        found = _duplicates(
            [e.id for e in entries],
            "entry id",
            "Give every watchlist entry its own id; alerts and the audit trail name it.",
        )
        if found:
            raise _rules_error(found)
        return entries
