"""Messages: round trips, arrays as (dtype, shape, bytes), and every malformed input refused."""

from __future__ import annotations

import msgpack
import msgspec
import numpy as np
import pytest

from lfr_actors.messages import (
    EnrolVectors,
    Frame,
    FrameResult,
    MessageDecodeError,
    RemoveEntry,
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
    hits = [[("e1", 0.3), ("e2", 0.5)], []]
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


def _array_ext(dtype: str, shape: list[int], payload: bytes) -> msgpack.ExtType:
    header = msgpack.packb((dtype, shape))
    return msgpack.ExtType(1, len(header).to_bytes(2, "little") + header + payload)


_FRAME_FIELDS = {
    "camera_id": "c",
    "seq": 1,
    "captured_at": 0.0,
    "image": _array_ext("|u1", [1, 1, 3], b"abc"),
    "epoch": "e",
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a msgpack message"),
        (b"\xc1", "not a msgpack message"),
        (msgpack.packb([1, 2, 3]), "not a message envelope"),
        (msgpack.packb({"t": "nope", "v": 1}), "unknown message type 'nope'"),
        (msgpack.packb({"v": 1, "entry_id": "e"}), "unknown message type None"),
        (msgpack.packb({"t": "frame", "v": 99}), "version 99; this build reads 3"),
        (
            msgpack.packb({"t": "frame", **_FRAME_FIELDS, "v": 99}),
            "'frame' message version 99; this build reads 3",
        ),
        # A frame of the version before the run epoch: refused by its version, not guessed.
        (
            msgpack.packb(
                {"t": "frame", "v": 1, **{k: v for k, v in _FRAME_FIELDS.items() if k != "epoch"}}
            ),
            "'frame' message version 1",
        ),
        # A frame of the version before the media position: refused by its version too.
        (msgpack.packb({"t": "frame", **_FRAME_FIELDS, "v": 2}), "'frame' message version 2"),
        (
            msgpack.packb({"t": "frame", "v": 3, **{**_FRAME_FIELDS, "media_index": -1}}),
            r"Expected `int` >= 0 - at `\$.media_index`",
        ),
        (
            msgpack.packb(
                {"t": "frame", "v": 3, **{k: v for k, v in _FRAME_FIELDS.items() if k != "epoch"}}
            ),
            "'frame' message: Object missing required field `epoch`",
        ),
        (
            msgpack.packb({"t": "frame_result", "v": 3, "camera_id": "c"}),
            "missing required field",
        ),
        (
            msgpack.packb({"t": "remove", "v": 1, "entry_id": "e", "extra": 1}),
            "unknown field `extra`",
        ),
        # The envelope of the msgpack-dataclass messages before msgspec is not read either.
        (
            msgpack.packb({"t": "remove", "v": 1, "b": {"entry_id": "e"}}),
            "unknown field `b`",
        ),
        (
            msgpack.packb({"t": "frame", "v": 3, **{**_FRAME_FIELDS, "seq": "1"}}),
            r"'frame' message: Expected `int`, got `str` - at `\$.seq`",
        ),
        (
            msgpack.packb(
                {"t": "search", "v": 1, "vectors": _array_ext("<f4", [1, 1], b"abcd"), "k": 0}
            ),
            r"'search' message: Expected `int` >= 1 - at `\$.k`",
        ),
        (
            msgpack.packb(
                {"t": "search", "v": 1, "vectors": _array_ext("<f4", [1, 1], b"abcd"), "k": True}
            ),
            r"Expected `int`, got `bool` - at `\$.k`",
        ),
        (
            msgpack.packb({"t": "search_result", "v": 1, "hits": [[["e1", "near"]]]}),
            r"Expected `float`, got `str` - at `\$.hits\[0\]\[0\]\[1\]`",
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
    bad = msgpack.packb({"t": "search", "v": 1, "vectors": _array_ext("|O", [1], b"x" * 8)})
    with pytest.raises(MessageDecodeError, match="not allowed"):
        decode(bad)


def test_wrong_types_are_refused() -> None:
    with pytest.raises(ValueError, match="image must be a 3-d uint8 array"):
        Frame("c", 1, 0.0, np.zeros((2, 2), np.uint8), epoch="e")
    for epoch in ("", "a:b", 7):
        with pytest.raises(ValueError, match="epoch must be"):
            Frame("c", 1, 0.0, np.zeros((2, 2, 3), np.uint8), epoch=epoch)  # type: ignore[arg-type]
    bad = msgpack.packb({"t": "frame", "v": 3, **{**_FRAME_FIELDS, "image": "not an array"}})
    with pytest.raises(
        MessageDecodeError, match=r"Expected `numpy.ndarray`, got `str` - at `\$.image`"
    ):
        decode(bad)
    flat = msgpack.packb(
        {"t": "frame", "v": 3, **{**_FRAME_FIELDS, "image": _array_ext("|u1", [1, 3], b"abc")}}
    )
    with pytest.raises(MessageDecodeError, match="image must be a 3-d uint8 array"):
        decode(flat)


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


def test_one_decode_returns_each_type_and_a_typed_decode_refuses_the_others() -> None:
    vectors = np.ones((2, 4), np.float32)
    samples = [
        Frame("c", 1, 0.0, np.zeros((2, 2, 3), np.uint8), epoch="e"),
        FrameResult("c", 1, 0.0, 0, 0, 0, 0.0),
        SearchRequest(vectors, k=2),
        SearchResult([[("e1", 0.25)]]),
        EnrolVectors("e1", vectors),
        RemoveEntry("e1"),
        _sighting(3),
        SightingBatch.of([_sighting(4)]),
    ]
    for sample in samples:
        data = sample.encode()
        back = decode(data)
        assert type(back) is type(sample) and back.v == type(sample).VERSION
        assert decode(memoryview(data), type=type(sample)).TAG == sample.TAG
        for other in samples:
            if type(other) is not type(sample):
                with pytest.raises(MessageDecodeError, match=f"expected a '{other.TAG}' message"):
                    decode(data, type=type(other))


def test_messages_are_frozen() -> None:
    result = FrameResult("c", 1, 0.0, 0, 0, 0, 0.0)
    with pytest.raises(AttributeError):
        result.seq = 2  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        object.__setattr__(result, "seq", 2)
    assert result.seq == 1 and hash(result) == hash(FrameResult("c", 1, 0.0, 0, 0, 0, 0.0))


def test_a_malformed_sighting_in_a_batch_is_named_and_spoils_no_other() -> None:
    bad = msgspec.structs.replace(_sighting(2), distance="near")
    empty_id = msgspec.structs.replace(_sighting(3), camera_id="")
    endless = msgspec.structs.replace(_sighting(4), captured_at=float("nan"))
    short_box = msgspec.structs.replace(_sighting(5), box=[1.0, 2.0])
    batch = SightingBatch.decode(
        SightingBatch.of([_sighting(1), bad, empty_id, endless, short_box]).encode()
    )
    checked = batch.checked()
    assert checked[0] == _sighting(1)
    problems = [str(item) for item in checked[1:]]
    assert all(isinstance(item, MessageDecodeError) for item in checked[1:])
    assert problems[0] == (
        "'sightings' item 1: 'sighting' message: Expected `float`, got `str` - at `$.distance`"
    )
    assert "at `$.camera_id`" in problems[1] and "at `$.captured_at`" in problems[2]
    assert "at `$.box`" in problems[3]
    assert "near" not in " ".join(problems)
    with pytest.raises(MessageDecodeError, match="'sightings' item 1"):
        batch.items()


def test_numpy_scalars_and_strided_arrays_encode_as_plain_values() -> None:
    strided = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    result = SearchResult([[("e1", np.float32(0.5))]])  # type: ignore[list-item]
    assert SearchResult.decode(result.encode()).hits == [[("e1", 0.5)]]
    back = EnrolVectors.decode(EnrolVectors("e", strided).encode())
    np.testing.assert_array_equal(back.vectors, strided)
    assert not back.vectors.flags.writeable  # a view of the message's bytes


def test_only_bytes_are_messages() -> None:
    with pytest.raises(MessageDecodeError, match="must be bytes, got str"):
        decode("frame")  # type: ignore[arg-type]


def test_decoded_arrays_are_aligned_and_frames_share_the_message_bytes() -> None:
    for entry_id in ("e", "ee", "eee", "eeee"):  # shifts the payload's offset in the message
        back = EnrolVectors.decode(EnrolVectors(entry_id, np.ones((2, 3), np.float32)).encode())
        assert back.vectors.flags.aligned and not back.vectors.flags.writeable
        assert memoryview(back.vectors).format == "f"  # what usearch accepts
    data = Frame("c", 1, 0.0, np.full((4, 4, 3), 7, np.uint8), epoch="e").encode()
    image = Frame.decode(data).image
    assert np.shares_memory(image, np.frombuffer(data, np.uint8))
