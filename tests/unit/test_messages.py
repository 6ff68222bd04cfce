"""Messages: round trips, arrays as (dtype, shape, bytes), and every malformed input refused."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from lfr_actors.messages import (
    EnrolVectors,
    Frame,
    FrameResult,
    MessageDecodeError,
    SearchRequest,
    SearchResult,
    Sighting,
    SightingBatch,
    decode,
    sighting_id,
)


def _sighting(i: int = 0) -> Sighting:
    return Sighting(
        sighting_id=f"cam:{i}:0:e1",
        camera_id="cam",
        frame_seq=i,
        captured_at=1.5,
        entry_id="e1",
        distance=0.41,
        box=[1.0, 2.0, 30.0, 40.0],
        quality={"size_px": 28.0},
        crop_jpeg=b"\xff\xd8\xff\xe0fake",
    )


def test_frame_round_trip_keeps_pixels_exactly() -> None:
    image = np.random.default_rng(1).integers(0, 256, (36, 64, 3), dtype=np.uint8)
    frame = Frame("cam_north", 7, 1700000000.25, image, epoch="18c2f-a1b2c3")
    back = decode(frame.encode())
    assert isinstance(back, Frame)
    assert (back.camera_id, back.seq, back.captured_at, back.epoch) == (
        "cam_north", 7, 1700000000.25, "18c2f-a1b2c3",
    )  # fmt: skip
    np.testing.assert_array_equal(back.image, image)
    assert back.image.dtype == np.uint8 and back.image.shape == (36, 64, 3)


def test_search_and_results_round_trip() -> None:
    vectors = np.random.default_rng(2).standard_normal((5, 128)).astype(np.float32)
    req = SearchRequest.decode(SearchRequest(vectors, k=3, max_distance=0.6).encode())
    np.testing.assert_array_equal(req.vectors, vectors)
    assert (req.k, req.max_distance) == (3, 0.6)
    hits = [[["e1", 0.3], ["e2", 0.5]], []]
    assert SearchResult.decode(SearchResult(hits).encode()).hits == hits


def test_sighting_batch_round_trip() -> None:
    batch = SightingBatch.of([_sighting(1), _sighting(2)])
    items = SightingBatch.decode(batch.encode()).items()
    assert [s.frame_seq for s in items] == [1, 2]
    assert items[0] == _sighting(1)


def test_big_endian_arrays_arrive_little_endian() -> None:
    vectors = np.arange(6, dtype=">f4").reshape(2, 3)
    request = EnrolVectors("e", vectors.astype(np.float32))
    back = EnrolVectors.decode(request.encode())
    np.testing.assert_array_equal(back.vectors, vectors.astype(np.float32))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a msgpack message"),
        (b"\xc1", "not a msgpack message"),
        (msgpack.packb([1, 2, 3]), "not a message envelope"),
        (msgpack.packb({"t": "nope", "v": 1, "b": {}}), "unknown message type 'nope'"),
        (msgpack.packb({"t": "frame", "v": 99, "b": {}}), "version 99; this build reads 2"),
        # A frame of the version before the run epoch: refused by its version, not guessed.
        (msgpack.packb({"t": "frame", "v": 1, "b": {}}), "'frame' message version 1"),
        (
            msgpack.packb(
                {
                    "t": "frame",
                    "v": 2,
                    "b": {
                        "camera_id": "c",
                        "seq": 1,
                        "captured_at": 0.0,
                        "image": msgpack.ExtType(1, msgpack.packb(("|u1", [1, 1, 3])) + b"abc"),
                    },
                }
            ),
            r"missing \['epoch'\]",
        ),
        (
            msgpack.packb({"t": "frame_result", "v": 2, "b": {"camera_id": "c"}}),
            "missing",
        ),
        (
            msgpack.packb({"t": "remove", "v": 1, "b": {"entry_id": "e", "extra": 1}}),
            r"unknown fields \['extra'\]",
        ),
    ],
)
def test_malformed_messages_are_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(MessageDecodeError, match=message):
        decode(data)


def test_array_payload_of_the_wrong_size_is_refused() -> None:
    good = Frame("c", 1, 0.0, np.zeros((2, 2, 3), np.uint8), epoch="e").encode()
    with pytest.raises(MessageDecodeError):
        decode(good[:-3])


def test_disallowed_dtype_is_refused() -> None:
    header = msgpack.packb(("|O", [1]))
    bad = msgpack.packb(
        {"t": "search", "v": 1, "b": {"vectors": msgpack.ExtType(1, header + b"x" * 8)}}
    )
    with pytest.raises(MessageDecodeError, match="not allowed"):
        decode(bad)


def test_wrong_types_are_refused() -> None:
    with pytest.raises(ValueError, match="image must be a 3-d uint8 array"):
        Frame("c", 1, 0.0, np.zeros((2, 2), np.uint8), epoch="e")
    for epoch in ("", "a:b", 7):
        with pytest.raises(ValueError, match="epoch must be"):
            Frame("c", 1, 0.0, np.zeros((2, 2, 3), np.uint8), epoch=epoch)  # type: ignore[arg-type]
    bad = msgpack.packb({"t": "frame", "v": 2, "b": {"camera_id": "c", "seq": 1,
                        "captured_at": 0.0, "image": "not an array", "epoch": "e"}})  # fmt: skip
    with pytest.raises(MessageDecodeError, match="image must be"):
        decode(bad)


def test_decode_as_the_wrong_class() -> None:
    data = FrameResult("c", 1, 0.0, 0, 0, 0, 0.0).encode()
    with pytest.raises(MessageDecodeError, match="expected a 'frame' message"):
        Frame.decode(data)


def test_frame_result_carries_a_store_error_and_defaults_to_none() -> None:
    ok = FrameResult.decode(FrameResult("c", 1, 0.0, 1, 1, 1, 0.0).encode())
    assert ok.store_error is None
    held = FrameResult("c", 2, 0.0, 1, 1, 1, 0.0, store_error="alert store unavailable: disk full")
    assert FrameResult.decode(held.encode()).store_error == "alert store unavailable: disk full"


def test_sighting_ids_differ_between_camera_runs_and_repeat_within_one() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    first = Frame("cam", 1, 0.0, image, epoch="run1")
    again = Frame.decode(first.encode())  # the same frame, resent
    restarted = Frame("cam", 1, 5.0, image, epoch="run2")  # seq starts at 1 again
    assert sighting_id(first, 0, "e1") == sighting_id(again, 0, "e1") == "cam:run1:1:0:e1"
    assert sighting_id(restarted, 0, "e1") != sighting_id(first, 0, "e1")
    assert sighting_id(first, 1, "e1") != sighting_id(first, 0, "e1")
    assert sighting_id(first, 0, "e2") != sighting_id(first, 0, "e1")
