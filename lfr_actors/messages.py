"""Typed, versioned messages between actors, encoded with msgpack.

Every message is a small frozen dataclass with a type tag and a schema version. On the
wire it is a msgpack map ``{"t": tag, "v": version, "b": {field: value}}``; numpy arrays
travel as a msgpack extension holding ``(dtype, shape, raw bytes)``. Actors exchange these
bytes, never pickled domain objects, so a message can be read by any process that has this
module, and a malformed one is a :class:`MessageDecodeError` that the receiving actor
counts and drops instead of crashing.

Face data (frames, crops, embeddings) lives only in these messages and in memory: nothing
here writes anything anywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import msgpack
import numpy as np

from lfr_actors.errors import LfrError

_NDARRAY_EXT = 1
_ALLOWED_DTYPES = frozenset({"|u1", "<f4", "<f8", "<i4", "<i8", "|b1", "<u2", "<f2"})


class MessageDecodeError(LfrError):
    """Bytes that are not a valid message of a known type and version."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        header = msgpack.packb((dtype.str, list(array.shape)))
        return msgpack.ExtType(_NDARRAY_EXT, header + array.tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} in a message")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _NDARRAY_EXT:
        raise MessageDecodeError(f"unknown msgpack extension type {code}")
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    dtype_str, shape = unpacker.unpack()
    offset = unpacker.tell()
    if dtype_str not in _ALLOWED_DTYPES:
        raise MessageDecodeError(f"array dtype {dtype_str!r} is not allowed in messages")
    dtype = np.dtype(dtype_str)
    count = int(np.prod(shape)) if shape else 1
    payload = data[offset:]
    if len(payload) != count * dtype.itemsize:
        raise MessageDecodeError(
            f"array of shape {shape} {dtype_str} needs {count * dtype.itemsize} bytes, "
            f"got {len(payload)}"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


T = TypeVar("T", bound="Message")


@dataclass(frozen=True)
class Message:
    """Base of every message: a tag and a schema version per subclass."""

    TAG: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def encode(self) -> bytes:
        """Encode as msgpack bytes."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        packed: bytes = msgpack.packb(
            {"t": self.TAG, "v": self.VERSION, "b": body}, default=_default, use_bin_type=True
        )
        return packed

    @classmethod
    def decode(cls: type[T], data: bytes) -> T:
        """Decode bytes that must hold a message of exactly this class."""
        message = decode(data)
        if not isinstance(message, cls):
            raise MessageDecodeError(f"expected a {cls.TAG!r} message, got {message.TAG!r}")
        return message


_REGISTRY: dict[str, type[Message]] = {}


def message(cls: type[T]) -> type[T]:
    """Register a message class by its tag (refusing duplicates)."""
    if not cls.TAG:
        raise TypeError(f"{cls.__name__} has no TAG")
    if cls.TAG in _REGISTRY:
        raise TypeError(f"message tag {cls.TAG!r} is registered twice")
    _REGISTRY[cls.TAG] = cls
    return cls


def decode(data: bytes) -> Message:
    """Decode any registered message; raises :class:`MessageDecodeError` on anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageDecodeError(f"a message must be bytes, got {type(data).__name__}")
    try:
        envelope = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
    except MessageDecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise MessageDecodeError(f"not a msgpack message: {exc}") from exc
    if not isinstance(envelope, dict) or set(envelope) != {"t", "v", "b"}:
        raise MessageDecodeError("not a message envelope (expected keys t, v, b)")
    cls = _REGISTRY.get(envelope["t"])
    if cls is None:
        raise MessageDecodeError(f"unknown message type {envelope['t']!r}")
    if envelope["v"] != cls.VERSION:
        raise MessageDecodeError(
            f"{cls.TAG!r} message version {envelope['v']!r}; this build reads {cls.VERSION}"
        )
    body = envelope["b"]
    if not isinstance(body, dict):
        raise MessageDecodeError(f"{cls.TAG!r} body is not a map")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown = set(body) - names
    missing = required - set(body)
    if unknown or missing:
        raise MessageDecodeError(
            f"{cls.TAG!r} message: unknown fields {sorted(unknown)}, missing {sorted(missing)}"
        )
    try:
        return cls(**body)
    except (TypeError, ValueError) as exc:
        raise MessageDecodeError(f"{cls.TAG!r} message: {exc}") from exc


def _require_array(name: str, value: Any, dtype: str, ndim: int) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype) or value.ndim != ndim:
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value)
        raise ValueError(f"{name} must be a {ndim}-d {dtype} array, got {got}")


@message
@dataclass(frozen=True)
class Frame(Message):
    """One captured frame, RGB uint8 ``H x W x 3``, timestamped at capture (Unix seconds).

    ``epoch`` names the camera actor's run: a token the camera picks when its actor
    starts, different for every actor and every ``lfr up``. ``seq`` counts from 1 within
    that run, so ``(camera_id, epoch, seq)`` names one captured frame for ever, and the
    same frame sent again (a retry) carries the same three values.

    Version 2 added ``epoch``; a version-1 frame is refused as a version mismatch.
    """

    TAG: ClassVar[str] = "frame"
    VERSION: ClassVar[int] = 2
    camera_id: str
    seq: int
    captured_at: float
    image: np.ndarray
    epoch: str

    def __post_init__(self) -> None:
        _require_array("image", self.image, "uint8", 3)
        if not isinstance(self.epoch, str) or not self.epoch or ":" in self.epoch:
            raise ValueError("epoch must be a non-empty string without ':'")


@message
@dataclass(frozen=True)
class FrameResult(Message):
    """What the embedder did with one frame: counts and timings, never face data.

    ``store_error`` is None when the frame's possible matches (if any) are stored. When
    the alert store could not take them it says why (``"alert store unavailable: disk
    full"``): the embedder then holds them in memory and sends them again by itself.

    Version 2 added ``store_error``.
    """

    TAG: ClassVar[str] = "frame_result"
    VERSION: ClassVar[int] = 2
    camera_id: str
    seq: int
    captured_at: float
    faces: int
    faces_compared: int
    candidates: int
    processed_at: float
    store_error: str | None = None


@message
@dataclass(frozen=True)
class SearchRequest(Message):
    """Embeddings ``[N, D]`` float32 to search; only hits within ``max_distance`` return."""

    TAG: ClassVar[str] = "search"
    vectors: np.ndarray
    k: int = 1
    max_distance: float | None = None

    def __post_init__(self) -> None:
        _require_array("vectors", self.vectors, "float32", 2)


@message
@dataclass(frozen=True)
class SearchResult(Message):
    """Per query, its hits as ``[entry_id, distance]`` pairs, nearest first (maybe none)."""

    TAG: ClassVar[str] = "search_result"
    hits: list[list[list[Any]]]


@message
@dataclass(frozen=True)
class EnrolVectors(Message):
    """Add an entry's template vectors ``[M, D]`` to the index (replacing any it had)."""

    TAG: ClassVar[str] = "enrol"
    entry_id: str
    vectors: np.ndarray

    def __post_init__(self) -> None:
        _require_array("vectors", self.vectors, "float32", 2)


@message
@dataclass(frozen=True)
class RemoveEntry(Message):
    """Remove every vector of an entry from the index."""

    TAG: ClassVar[str] = "remove"
    entry_id: str


def sighting_id(frame: Frame, face: int, entry_id: str) -> str:
    """The id of the sighting of ``entry_id`` by face number ``face`` of ``frame``.

    It includes the camera run's epoch: frame numbers start again at 1 in every camera
    run, and without the epoch a new run's sightings would take the ids of stored ones.
    """
    return f"{frame.camera_id}:{frame.epoch}:{frame.seq}:{face}:{entry_id}"


@message
@dataclass(frozen=True)
class Sighting(Message):
    """A face within the threshold of a watchlist entry: the only face data past the embedder.

    ``sighting_id`` is ``camera:epoch:seq:face:entry`` (see :func:`sighting_id`): unique
    across camera restarts and runs, and stable, so a frame processed twice (resent after
    an actor restart) yields the same ids and the alert actor can drop the repeat.
    """

    TAG: ClassVar[str] = "sighting"
    sighting_id: str
    camera_id: str
    frame_seq: int
    captured_at: float
    entry_id: str
    distance: float
    box: list[float]
    quality: dict[str, float]
    crop_jpeg: bytes
    track_id: str | None = None


@message
@dataclass(frozen=True)
class SightingBatch(Message):
    """The possible matches of one embedder batch, sent in one call."""

    TAG: ClassVar[str] = "sightings"
    sightings: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def of(items: list[Sighting]) -> SightingBatch:
        """Pack sightings (as field maps, so the batch is one flat msgpack document)."""
        return SightingBatch(
            [{f.name: getattr(s, f.name) for f in dataclasses.fields(s)} for s in items]
        )

    def items(self) -> list[Sighting]:
        """The sightings, each validated as a :class:`Sighting`."""
        out = []
        for raw in self.sightings:
            try:
                out.append(Sighting(**raw))
            except TypeError as exc:
                raise MessageDecodeError(f"'sightings' item: {exc}") from exc
        return out
