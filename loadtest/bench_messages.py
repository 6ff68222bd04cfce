"""Message codec benchmark: msgspec Structs against the dataclass + msgpack code before them.

Two messages, each encoded and then decoded as its receiver does, many times over:

- **Frame**: a 640x480x3 uint8 image with its camera, epoch, seq and capture time (what
  each camera sends the embedder for every frame).
- **SightingBatch**: ``--sightings`` sightings, each with a ~5 KB JPEG crop, a box and
  quality figures (what the embedder sends the alert actor), decoded into
  :class:`~lfr_actors.messages.Sighting` objects with every field checked.

Baseline: the messages as they were before they became ``msgspec`` Structs, kept below
(``_Old*``): frozen dataclasses, a ``{"t", "v", "b"}`` envelope packed with ``msgpack``,
arrays as an extension holding a packed ``(dtype, shape)`` then the raw bytes, a
``__post_init__`` check of arrays, and for sightings the alert actor's field checks by
hand, which it ran on every decoded sighting. Ratio = msgspec time / baseline time (below
1 is faster). Both sides must give back what they were given, or the run fails.

    python loadtest/bench_messages.py [--rounds 300] [--sightings 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
import numpy as np
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.messages import Frame, MessageDecodeError, Sighting, SightingBatch

# -- the baseline: the messages before msgspec ---------------------------------------------


def _old_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        header = msgpack.packb((array.dtype.str, list(array.shape)))
        return msgpack.ExtType(1, header + array.tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _old_ext_hook(code: int, data: bytes) -> Any:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    dtype_name, shape = unpacker.unpack()
    dtype = np.dtype(dtype_name)
    payload = data[unpacker.tell() :]
    if len(payload) != int(np.prod(shape)) * dtype.itemsize:
        raise MessageDecodeError("array payload of the wrong size")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


@dataclass(frozen=True)
class _OldMessage:
    TAG: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def encode(self) -> bytes:
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        packed: bytes = msgpack.packb(
            {"t": self.TAG, "v": self.VERSION, "b": body}, default=_old_default, use_bin_type=True
        )
        return packed


def _old_decode(data: bytes, cls: type[Any]) -> Any:
    """The old ``decode``: unpack, check the envelope, tag, version and field names."""
    envelope = msgpack.unpackb(data, ext_hook=_old_ext_hook, raw=False, strict_map_key=True)
    if not isinstance(envelope, dict) or set(envelope) != {"t", "v", "b"}:
        raise MessageDecodeError("not a message envelope")
    if envelope["t"] != cls.TAG or envelope["v"] != cls.VERSION:
        raise MessageDecodeError("wrong message type or version")
    body = envelope["b"]
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if set(body) - names or required - set(body):
        raise MessageDecodeError("unknown or missing fields")
    return cls(**body)


@dataclass(frozen=True)
class _OldFrame(_OldMessage):
    TAG: ClassVar[str] = "frame"
    VERSION: ClassVar[int] = 2
    camera_id: str
    seq: int
    captured_at: float
    image: np.ndarray
    epoch: str

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError("image must be a 3-d uint8 array")
        if not isinstance(self.epoch, str) or not self.epoch or ":" in self.epoch:
            raise ValueError("epoch must be a non-empty string without ':'")


@dataclass(frozen=True)
class _OldSighting(_OldMessage):
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


@dataclass(frozen=True)
class _OldSightingBatch(_OldMessage):
    TAG: ClassVar[str] = "sightings"
    sightings: list[dict[str, Any]]


def _old_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _old_checked(raw: dict[str, Any]) -> _OldSighting:
    """A sighting from its field map, checked as the alert actor did by hand."""
    s = _OldSighting(**raw)
    ok = (
        all(isinstance(getattr(s, n), str) and getattr(s, n) for n in ("sighting_id", "camera_id"))
        and isinstance(s.entry_id, str)
        and bool(s.entry_id)
        and isinstance(s.frame_seq, int)
        and not isinstance(s.frame_seq, bool)
        and _old_number(s.captured_at)
        and math.isfinite(s.captured_at)
        and _old_number(s.distance)
        and isinstance(s.box, list)
        and len(s.box) == 4
        and all(_old_number(v) for v in s.box)
        and isinstance(s.quality, dict)
        and all(isinstance(k, str) and _old_number(v) for k, v in s.quality.items())
        and isinstance(s.crop_jpeg, bytes)
        and (s.track_id is None or isinstance(s.track_id, str))
    )
    if not ok:
        raise MessageDecodeError("malformed sighting")
    return s


# -- the measurement -----------------------------------------------------------------------


def _sighting_fields(n: int, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "sighting_id": f"cam_a:18c2f-a1b2c3:{n}:0:entry-{n % 5}",
        "camera_id": "cam_a",
        "frame_seq": n,
        "captured_at": 1_700_000_000.0 + n / 10,
        "entry_id": f"entry-{n % 5}",
        "distance": 0.3 + n / 1000,
        "box": [100.0 + n, 80.0, 160.0, 200.0],
        "quality": {"size_px": 60.0, "sharpness": 0.8, "brightness": 0.5, "frontal": 0.9},
        "crop_jpeg": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    }


def _seconds_per_round(work: Callable[[], object], rounds: int) -> float:
    """The median of five timings of ``rounds`` calls, per call (after one warm-up call)."""
    work()
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            work()
        runs.append((time.perf_counter() - started) / rounds)
    return float(np.median(runs))


def _compare(
    name: str, new: Callable[[], object], old: Callable[[], object], rounds: int
) -> dict[str, Any]:
    new_s = _seconds_per_round(new, rounds)
    old_s = _seconds_per_round(old, rounds)
    return {
        "message": name,
        "msgspec_us": round(new_s * 1e6, 1),
        "baseline_us": round(old_s * 1e6, 1),
        "ratio": round(new_s / old_s, 3),
    }


def bench_frame(rounds: int) -> dict[str, Any]:
    """Encode + decode of one 640x480x3 frame, both ways; checks each gives the pixels back."""
    image = np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    fields = {"camera_id": "cam_a", "seq": 41, "captured_at": 1_700_000_000.25, "epoch": "e1"}

    def new() -> np.ndarray:
        data = Frame(image=image, **fields).encode()
        return Frame.decode(data).image

    def old() -> np.ndarray:
        data = _OldFrame(image=image, **fields).encode()
        frame: _OldFrame = _old_decode(data, _OldFrame)
        return frame.image

    if not (np.array_equal(new(), image) and np.array_equal(old(), image)):
        raise SystemExit("a frame did not come back as it was sent")
    out = _compare("Frame 640x480x3", new, old, rounds)
    out["bytes"] = {
        "msgspec": len(Frame(image=image, **fields).encode()),
        "baseline": len(_OldFrame(image=image, **fields).encode()),
    }
    return out


def bench_sightings(rounds: int, count: int) -> dict[str, Any]:
    """Encode + decode of one batch of ``count`` sightings, each sighting checked."""
    rng = np.random.default_rng(11)
    maps = [_sighting_fields(n, rng) for n in range(count)]
    new_items = [Sighting(**m) for m in maps]
    old_items = [_OldSighting(**m) for m in maps]

    def new() -> list[Sighting]:
        data = SightingBatch.of(new_items).encode()
        return SightingBatch.decode(data).items()

    def old() -> list[_OldSighting]:
        batch = _OldSightingBatch(
            [{f.name: getattr(s, f.name) for f in dataclasses.fields(s)} for s in old_items]
        )
        decoded: _OldSightingBatch = _old_decode(batch.encode(), _OldSightingBatch)
        return [_old_checked(raw) for raw in decoded.sightings]

    if new() != new_items or [dataclasses.asdict(s) for s in old()] != [
        dataclasses.asdict(s) for s in old_items
    ]:
        raise SystemExit("a sighting batch did not come back as it was sent")
    return _compare(f"SightingBatch of {count}", new, old, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="encode+decode rounds per timing")
    parser.add_argument("--sightings", type=int, default=8, help="sightings per batch")
    args = parser.parse_args()
    report = {
        "machine": machine(load_average_1m=round(os.getloadavg()[0], 2)),
        "rounds": args.rounds,
        "encode_plus_decode": [
            bench_frame(args.rounds),
            bench_sightings(args.rounds, args.sightings),
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
