"""Typed, versioned messages between actors: frozen ``msgspec`` Structs on msgpack.

Every message is a frozen :class:`msgspec.Struct` with a type tag and a schema version.
On the wire it is one msgpack map: the tag under ``"t"``, the version under ``"v"``, and
the fields by name. Numpy arrays travel as a msgpack extension holding their dtype, shape
and raw bytes. Actors exchange these bytes, never pickled domain objects, so a message can
be read by any process that has this module.

Decoding validates every field's type (and the shapes and dtypes of arrays) before a
receiver sees the message. Anything else is a :class:`MessageDecodeError` whose text says
what was wrong and where (``'frame' message: Expected `int`, got `str` - at `$.seq```),
never the payload: the receiving actor counts it, logs that text and drops the message
instead of crashing.

Face data (frames, crops, embeddings) lives only in these messages and in memory: nothing
here writes anything anywhere.
"""

from __future__ import annotations

import math
import sys
from typing import Annotated, Any, ClassVar, Literal, TypeVar, overload

import msgspec
import numpy as np

from lfr_actors.errors import LfrError

Buffer = bytes | bytearray | memoryview
"""What a message is decoded from."""

_NDARRAY_EXT = 1
_ALLOWED_DTYPES = frozenset({"|u1", "<f4", "<f8", "<i4", "<i8", "|b1", "<u2", "<f2"})
_HEADER_LENGTH_BYTES = 2

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
"""A string with at least one character."""
FiniteFloat = Annotated[
    float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)
]  # NaN and the infinities fail both bounds
"""A finite number (an integer is taken as its float)."""


class MessageDecodeError(LfrError):
    """Bytes that are not a valid message of a known type and version."""


def _enc_hook(obj: Any) -> Any:
    """Arrays become extension ``1``: a 2-byte header length, ``[dtype, shape]``, raw bytes."""
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        header = _HEADER_ENCODER.encode((dtype.str, array.shape))
        size = len(header).to_bytes(_HEADER_LENGTH_BYTES, "little")
        return msgspec.msgpack.Ext(_NDARRAY_EXT, b"".join((size, header, array.data)))
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot encode {type(obj).__name__} in a message")


def _ext_hook(code: int, data: memoryview) -> Any:
    """An array from extension ``1``, checked; read-only, sharing the message's bytes.

    Only an array whose bytes are not aligned for its dtype in the message is copied
    (libraries such as usearch refuse unaligned arrays); ``uint8`` images never are.
    """
    if code != _NDARRAY_EXT:
        raise MessageDecodeError(f"unknown msgpack extension type {code}")
    size = int.from_bytes(data[:_HEADER_LENGTH_BYTES], "little")
    start = _HEADER_LENGTH_BYTES + size
    try:
        dtype_str, shape = _HEADER_DECODER.decode(data[_HEADER_LENGTH_BYTES:start])
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"array header is not (dtype, shape): {exc}") from None
    if dtype_str not in _ALLOWED_DTYPES:
        raise MessageDecodeError(f"array dtype {dtype_str!r} is not allowed in messages")
    dtype = np.dtype(dtype_str)
    count = math.prod(shape)  # exact, however large the claimed shape
    payload = data[start:]
    if len(payload) != count * dtype.itemsize:
        raise MessageDecodeError(
            f"array of shape {shape} {dtype_str} needs {count * dtype.itemsize} bytes, "
            f"got {len(payload)}"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    if not array.flags.aligned:  # the bytes sit at an odd offset in the message: copy them
        array = array.copy()
        array.flags.writeable = False
    return array


_HEADER_ENCODER = msgspec.msgpack.Encoder()
_HEADER_DECODER = msgspec.msgpack.Decoder(tuple[str, list[Annotated[int, msgspec.Meta(ge=0)]]])
_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def _require_array(name: str, value: Any, dtype: str, ndim: int, channels: int = 0) -> None:
    if (
        not isinstance(value, np.ndarray)
        or value.dtype != np.dtype(dtype)
        or value.ndim != ndim
        or (channels and value.shape[-1] != channels)
    ):
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value)
        what = f"{ndim}-d {dtype} array" + (f" with {channels} channels" if channels else "")
        raise ValueError(f"{name} must be a {what}, got {got}")


T = TypeVar("T", bound="Message")


class Message(msgspec.Struct, frozen=True, tag_field="t", forbid_unknown_fields=True):
    """Base of every message: a tag (``TAG``) and a schema version (``VERSION``).

    Each message class names its tag as its ``tag=`` class argument and declares its
    version as its last field, ``v: Literal[N] = N``, so the version is on the wire and a
    message of any other version does not decode. :func:`message` registers the class and
    sets ``TAG`` and ``VERSION`` from those two.
    """

    TAG: ClassVar[str] = ""
    VERSION: ClassVar[int] = 0

    def encode(self) -> bytes:
        """Encode as msgpack bytes."""
        return _ENCODER.encode(self)

    @classmethod
    def decode(cls: type[T], data: Buffer) -> T:
        """Decode bytes that must hold a message of exactly this class."""
        return decode(data, type=cls)


_REGISTRY: dict[str, type[Message]] = {}
_DECODERS: dict[type[Message], msgspec.msgpack.Decoder[Any]] = {}


def message(cls: type[T]) -> type[T]:
    """Register a message class by its tag (refusing duplicates); set ``TAG``, ``VERSION``."""
    tag = cls.__struct_config__.tag
    versions = [f.default for f in msgspec.structs.fields(cls) if f.name == "v"]
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"{cls.__name__} has no tag")
    if len(versions) != 1 or not isinstance(versions[0], int):
        raise TypeError(f"{cls.__name__} declares no version field v")
    if tag in _REGISTRY:
        raise TypeError(f"message tag {tag!r} is registered twice")
    cls.TAG, cls.VERSION = tag, versions[0]
    _REGISTRY[tag] = cls
    _DECODERS[cls] = msgspec.msgpack.Decoder(cls, ext_hook=_ext_hook)
    return cls


class _Envelope(msgspec.Struct):
    """The tag and version of any map, for explaining why a message did not decode."""

    t: Any = None
    v: Any = None


_ENVELOPE_DECODER = msgspec.msgpack.Decoder(_Envelope, ext_hook=lambda code, data: None)


@overload
def decode(data: Buffer, type: None = None) -> AnyMessage: ...
@overload
def decode(data: Buffer, type: type[T]) -> T: ...
def decode(data: Buffer, type: type[T] | None = None) -> Any:
    """Decode a registered message, of exactly class ``type`` when that is given.

    Raises :class:`MessageDecodeError` on anything else, saying what was wrong and where.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageDecodeError(f"a message must be bytes, got {data.__class__.__name__}")
    decoder = _ANY_DECODER if type is None else _DECODERS.get(type)
    if decoder is None:
        raise TypeError(f"{type!r} is not a registered message class")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MessageDecodeError(_explain(data, type, exc)) from None
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"not a msgpack message: {exc}") from None


def _explain(data: Buffer, expected: type[Message] | None, exc: msgspec.ValidationError) -> str:
    """Why ``data`` is not a message (of ``expected``): type, version, else msgspec's words."""
    try:
        envelope = _ENVELOPE_DECODER.decode(data)
    except msgspec.DecodeError:
        return "not a message envelope (expected a map with t and v)"
    cls = _REGISTRY.get(envelope.t) if isinstance(envelope.t, str) else None
    if cls is None:
        return f"unknown message type {envelope.t!r}"
    if expected is not None and cls is not expected:
        return f"expected a {expected.TAG!r} message, got {cls.TAG!r}"
    if envelope.v != cls.VERSION:
        return f"{cls.TAG!r} message version {envelope.v!r}; this build reads {cls.VERSION}"
    return f"{cls.TAG!r} message: {exc}"


@message
class Frame(Message, frozen=True, tag="frame"):
    """One captured frame, RGB uint8 ``H x W x 3``, timestamped at capture (Unix seconds).

    ``epoch`` names the camera actor's run: a token the camera picks when its actor
    starts, different for every actor and every ``lfr up``. ``seq`` counts from 1 within
    that run, so ``(camera_id, epoch, seq)`` names one captured frame for ever, and the
    same frame sent again (a retry) carries the same three values.

    ``media_index`` and ``media_time_s`` say where in a recording the frame is (its frame
    number from 0, and seconds from the start of the file); None for live sources. A file
    played in a loop counts on from the first pass, so each pass has positions of its own.

    Version 2 added ``epoch``, version 3 the media position; an older frame is refused as
    a version mismatch.
    """

    camera_id: str
    seq: int
    captured_at: float
    image: np.ndarray
    epoch: str
    media_index: Annotated[int, msgspec.Meta(ge=0)] | None = None
    media_time_s: FiniteFloat | None = None
    v: Literal[3] = 3

    def __post_init__(self) -> None:
        _require_array("image", self.image, "uint8", 3, channels=3)
        if not isinstance(self.epoch, str) or not self.epoch or ":" in self.epoch:
            raise ValueError("epoch must be a non-empty string without ':'")


@message
class FrameResult(Message, frozen=True, tag="frame_result"):
    """What the embedder did with one frame: counts and timings, never face data.

    ``store_error`` is None when the frame's possible matches (if any) are stored. When
    the alert store could not take them it says why (``"alert store unavailable: disk
    full"``): the embedder then holds them in memory and sends them again by itself.

    ``faces_compared`` counts the faces of this frame that were embedded and compared;
    ``tracks_started`` the face tracks (people) this frame began.

    Version 2 added ``store_error``, version 3 ``tracks_started``.
    """

    camera_id: str
    seq: int
    captured_at: float
    faces: int
    faces_compared: int
    candidates: int
    processed_at: float
    store_error: str | None = None
    tracks_started: int = 0
    v: Literal[3] = 3


@message
class SearchRequest(Message, frozen=True, tag="search"):
    """Embeddings ``[N, D]`` float32 to search; only hits within ``max_distance`` return.

    ``k``, the hits wanted per row, is a positive integer.
    """

    vectors: np.ndarray
    k: Annotated[int, msgspec.Meta(ge=1)] = 1
    max_distance: float | None = None
    v: Literal[1] = 1

    def __post_init__(self) -> None:
        _require_array("vectors", self.vectors, "float32", 2)


@message
class SearchResult(Message, frozen=True, tag="search_result"):
    """Per query, its hits as ``(entry_id, distance)`` pairs, nearest first (maybe none)."""

    hits: list[list[tuple[str, float]]]
    v: Literal[1] = 1


@message
class EnrolVectors(Message, frozen=True, tag="enrol"):
    """Add an entry's template vectors ``[M, D]`` to the index (replacing any it had)."""

    entry_id: str
    vectors: np.ndarray
    v: Literal[1] = 1

    def __post_init__(self) -> None:
        _require_array("vectors", self.vectors, "float32", 2)


@message
class RemoveEntry(Message, frozen=True, tag="remove"):
    """Remove every vector of an entry from the index."""

    entry_id: str
    v: Literal[1] = 1


def sighting_id(frame: Frame, face: int, entry_id: str) -> str:
    """The id of the sighting of ``entry_id`` by face number ``face`` of ``frame``.

    It includes the camera run's epoch: frame numbers start again at 1 in every camera
    run, and without the epoch a new run's sightings would take the ids of stored ones.
    """
    return f"{frame.camera_id}:{frame.epoch}:{frame.seq}:{face}:{entry_id}"


@message
class Sighting(Message, frozen=True, tag="sighting"):
    """A face within the threshold of a watchlist entry: the only face data past the embedder.

    ``sighting_id`` is ``camera:epoch:seq:face:entry`` (see :func:`sighting_id`): unique
    across camera restarts and runs, and stable, so a frame processed twice (resent after
    an actor restart) yields the same ids and the alert actor can drop the repeat.

    A sighting is the decision on a face TRACK (one person on one camera): ``track_id``
    names the track (``camera:epoch.seq.face`` of its first face), ``distance`` is the
    track's whole evidence against the entry, ``track_frames`` how many of its faces made
    that evidence. ``frame_seq`` and ``captured_at`` are those of the frame where the
    decision was taken; ``box``, ``quality``, ``crop_jpeg`` and the media position
    (``media_index``, ``media_time_s``: where in a recording, None for live sources)
    are those of the track's best face, the one the officer is shown.

    Decoding one checks what the alert actor relies on: the ids are non-empty strings,
    ``captured_at`` is finite, ``box`` holds 4 numbers and ``quality`` maps names to
    numbers.

    Version 2 added the media position and ``track_frames``.
    """

    sighting_id: NonEmptyStr
    camera_id: NonEmptyStr
    frame_seq: int
    captured_at: FiniteFloat
    entry_id: NonEmptyStr
    distance: float
    box: Annotated[list[float], msgspec.Meta(min_length=4, max_length=4)]
    quality: dict[str, float]
    crop_jpeg: bytes
    track_id: NonEmptyStr | None = None
    track_frames: Annotated[int, msgspec.Meta(ge=1)] = 1
    media_index: Annotated[int, msgspec.Meta(ge=0)] | None = None
    media_time_s: FiniteFloat | None = None
    v: Literal[2] = 2


@message
class SightingBatch(Message, frozen=True, tag="sightings"):
    """The possible matches of one embedder batch, sent in one call.

    Each sighting is an encoded :class:`Sighting` inside the batch's one msgpack document,
    decoded on its own, so one malformed sighting does not spoil the others.
    """

    sightings: list[msgspec.Raw] = []
    v: Literal[1] = 1

    @staticmethod
    def of(items: list[Sighting]) -> SightingBatch:
        """Pack sightings into one batch."""
        return SightingBatch([msgspec.Raw(s.encode()) for s in items])

    def items(self) -> list[Sighting]:
        """The sightings; a :class:`MessageDecodeError` if any of them is malformed."""
        out = []
        for item in self.checked():
            if isinstance(item, MessageDecodeError):
                raise item
            out.append(item)
        return out

    def checked(self) -> list[Sighting | MessageDecodeError]:
        """Each sighting decoded, or the :class:`MessageDecodeError` that says why not."""
        out: list[Sighting | MessageDecodeError] = []
        for number, raw in enumerate(self.sightings):
            try:
                out.append(Sighting.decode(memoryview(raw)))
            except MessageDecodeError as exc:
                out.append(MessageDecodeError(f"'sightings' item {number}: {exc}"))
        return out


AnyMessage = (
    Frame
    | FrameResult
    | SearchRequest
    | SearchResult
    | EnrolVectors
    | RemoveEntry
    | Sighting
    | SightingBatch
)
"""Every message class: what :func:`decode` returns without a ``type``."""
if set(AnyMessage.__args__) != set(_REGISTRY.values()):  # pragma: no cover - a coding slip
    raise TypeError("AnyMessage must list every registered message class")
_ANY_DECODER: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(AnyMessage, ext_hook=_ext_hook)
