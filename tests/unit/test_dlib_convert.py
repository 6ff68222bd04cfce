"""dlib serialisation reader and the dlib face recognition ResNet → ONNX converter."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lfr_actors.errors import ModelFormatError
from lfr_actors.models.convert.dlib_format import DlibReader
from lfr_actors.models.convert.dlib_resnet import (
    DLIB_RESNET_MEANS,
    ConvLayer,
    DlibResnet,
    FcLayer,
    convert_dlib_resnet,
    parse_dlib_resnet,
)
from lfr_actors.models.sources import DLIB_RESNET_DAT, SourceMember
from tests.fixtures import synthetic_chips

TESTS = Path(__file__).resolve().parents[1]


GOLDEN = TESTS / "fixtures" / "dlib_resnet_golden.json"


# --- an encoder for hand-built inputs, written from dlib's pack_int ----------------------


def enc_int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def enc_float(mantissa: int, exponent: int) -> bytes:
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_tensor(array: np.ndarray) -> bytes:
    dims = array.shape
    head = enc_int(2) + b"".join(enc_int(d) for d in dims)
    return head + array.astype("<f4").tobytes()


# --- reader primitives ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x07", 7),
        (b"\x81\x07", -7),
        (b"\x02\x34\x12", 0x1234),
        (b"\x82\x00\x01", -256),
        (b"\x08" + b"\xff" * 8, 2**64 - 1),
    ],
)
def test_read_int(raw: bytes, value: int) -> None:
    r = DlibReader(raw)
    assert r.read_int() == value
    assert r.offset == len(raw)
    assert r.remaining == 0
    assert enc_int(value) == raw


def test_enc_int_matches_dlib_examples() -> None:
    assert enc_int(0) == b"\x01\x00"
    assert enc_int(-1) == b"\x81\x01"
    assert enc_int(300) == b"\x02\x2c\x01"


@pytest.mark.parametrize(
    ("raw", "max_bytes", "signed", "message"),
    [
        (b"\x00", 8, True, "at byte 2: expected num_filters .*control byte 0x00"),
        (b"\x09" + b"\x00" * 9, 8, True, "at byte 2: .*control byte 0x09"),
        (b"\x03\x01\x02\x03", 2, True, "at byte 2: .*at most 2 bytes"),
        (b"\x81\x01", 8, False, "at byte 2: expected num_filters \\(unsigned"),
        (b"\x04\x01\x02", 8, True, "at byte 3: truncated: num_filters needs 4 bytes"),
        (b"", 8, True, "at byte 2: truncated"),
    ],
)
def test_read_int_errors(raw: bytes, max_bytes: int, signed: bool, message: str) -> None:
    r = DlibReader(b"\x01\x00" + raw, offset=2)
    with pytest.raises(ModelFormatError, match=message):
        r.read_int("num_filters", max_bytes=max_bytes, signed=signed)


def test_read_float_values() -> None:
    raw = enc_float(3, -1) + enc_float(-5, 2) + enc_float(0, 0) + bytes.fromhex("030ad7a3811c")
    r = DlibReader(raw)
    assert r.read_float() == 1.5
    assert r.read_float() == -20.0
    assert r.read_float() == 0.0
    # the loss margin as written in the real file: 0xa3d70a × 2^-28 = float32(0.04)
    assert r.read_float() == float(np.float32(0.04))
    assert r.remaining == 0


def test_read_float_specials() -> None:
    raw = enc_float(1, 32000) + enc_float(1, 32001) + enc_float(0, 32002)
    r = DlibReader(raw)
    assert r.read_float() == math.inf
    assert r.read_float() == -math.inf
    assert math.isnan(r.read_float())


def test_read_float_exponent_is_int16() -> None:
    with pytest.raises(ModelFormatError, match="exponent of margin"):
        DlibReader(enc_int(1) + enc_int(1 << 20)).read_float("margin")


def test_read_bool() -> None:
    r = DlibReader(b"10x")
    assert r.read_bool() is True
    assert r.read_bool() is False
    with pytest.raises(ModelFormatError, match=r"at byte 2: expected use_bias \(bool"):
        r.read_bool("use_bias")


def test_read_string_and_expect_string() -> None:
    r = DlibReader(enc_str("relu_") + enc_str("") + enc_str("con_5"))
    assert r.read_string() == "relu_"
    assert r.read_string() == ""
    with pytest.raises(ModelFormatError, match=r"at byte 9: expected layer name 'con_4'") as info:
        r.expect_string(["con_4"], "layer name")
    assert "found 'con_5'" in str(info.value)


def test_read_string_too_long() -> None:
    with pytest.raises(ModelFormatError, match="at byte 0: expected name"):
        DlibReader(enc_int(1000) + b"abc").read_string("name")


def test_read_tensor_and_alias() -> None:
    values = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2) - 5.5
    raw = enc_tensor(values) + enc_tensor(np.zeros((0, 0, 0, 0))) + enc_int(1)
    raw += b"".join(enc_int(d) for d in (32, 3, 7, 7))
    r = DlibReader(raw)
    got = r.read_tensor()
    assert got.dtype == np.float32
    assert got.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(got, values)
    got.flags.writeable = True  # an owned copy, not a view of the input bytes
    assert r.read_tensor().shape == (0, 0, 0, 0)
    assert r.read_alias_tensor() == (32, 3, 7, 7)
    r.expect_end()


def test_read_tensor_truncated() -> None:
    raw = enc_tensor(np.ones((1, 2, 3, 4), dtype=np.float32))[:-3]
    with pytest.raises(ModelFormatError, match=r"truncated: data of params") as info:
        DlibReader(raw).read_tensor("params")
    assert f"at byte {raw.index(struct.pack('<f', 1.0))}" in str(info.value)


def test_read_tensor_wrong_version() -> None:
    with pytest.raises(ModelFormatError, match="at byte 0: expected version of params 2, found 1"):
        DlibReader(enc_int(1) + enc_int(0) * 4).read_tensor("params")


def test_expect_end() -> None:
    with pytest.raises(ModelFormatError, match="at byte 2: expected end of file, found 1 more"):
        r = DlibReader(b"\x01\x00\x00")
        r.read_int()
        r.expect_end()


# --- the real network ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dat_bytes(read_source: Callable[[SourceMember], bytes]) -> bytes:
    return read_source(DLIB_RESNET_DAT)


@pytest.fixture(scope="module")
def net(dat_bytes: bytes) -> DlibResnet:
    return parse_dlib_resnet(dat_bytes)


@pytest.fixture(scope="module")
def model(dat_bytes: bytes) -> onnx.ModelProto:
    return convert_dlib_resnet(dat_bytes)


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def golden() -> dict[str, object]:
    data: dict[str, object] = json.loads(GOLDEN.read_text())
    return data


def test_structure(net: DlibResnet) -> None:
    assert net.counts() == {
        "con": 29,
        "affine": 29,
        "relu": 29,
        "avg_pool": 5,
        "max_pool": 1,
        "add_prev": 14,
        "tag": 18,
        "skip": 4,
        "fc": 1,
    }
    assert net.dist_thresh == pytest.approx(0.6, abs=1e-6)
    assert net.margin == pytest.approx(0.04, abs=1e-6)
    assert net.input.means == pytest.approx(DLIB_RESNET_MEANS, abs=1e-4)
    assert (net.input.rows, net.input.cols) == (150, 150)
    assert net.source_sha256 == DLIB_RESNET_DAT.sha256


def test_conv_padding_follows_stride(net: DlibResnet) -> None:
    convs = [layer for layer in net.layers if isinstance(layer, ConvLayer)]
    assert convs[0].filters.shape == (32, 3, 7, 7)
    for conv in convs:
        if conv.stride == (2, 2):
            assert conv.padding == (0, 0)
        else:
            assert conv.stride == (1, 1)
            assert conv.padding == (conv.filters.shape[2] // 2, conv.filters.shape[3] // 2)
    assert sum(conv.stride == (2, 2) for conv in convs) == 5
    fc = net.layers[-1]
    assert isinstance(fc, FcLayer)
    assert fc.weights.shape == (256, 128)
    assert fc.bias is None


def test_wrong_loss_name(dat_bytes: bytes) -> None:
    bad = dat_bytes.replace(b"loss_metric_2", b"loss_metric_9", 1)
    with pytest.raises(ModelFormatError, match=r"at byte 2: expected name of the loss layer"):
        parse_dlib_resnet(bad)


def test_wrong_layer_name_names_offset(dat_bytes: bytes) -> None:
    at = dat_bytes.index(b"\x01\x05relu_")
    bad = dat_bytes[:at] + b"\x01\x05relx_" + dat_bytes[at + 7 :]
    with pytest.raises(ModelFormatError) as info:
        parse_dlib_resnet(bad)
    message = str(info.value)
    assert f"at byte {at}:" in message
    assert "layer 3 (relu)" in message
    assert "found 'relx_'" in message


def test_truncated_file(dat_bytes: bytes) -> None:
    with pytest.raises(ModelFormatError, match="truncated"):
        parse_dlib_resnet(dat_bytes[: len(dat_bytes) // 2])
    with pytest.raises(ModelFormatError, match="expected end of file"):
        parse_dlib_resnet(dat_bytes + b"\x00")


def test_not_a_dlib_file() -> None:
    with pytest.raises(ModelFormatError, match="at byte 0"):
        convert_dlib_resnet(b"\x89PNG\r\n\x1a\n")


def test_onnx_contract(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == "lfr_actors"
    assert "dlib_face_recognition_resnet_model_v1.dat" in model.doc_string
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "chips"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    in_dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in in_dims] == ["N", 150, 150, 3]
    assert out.name == "embeddings"
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 128]
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") == 29
    assert "Mul" not in ops[4:]  # the affine layers are folded into the convolutions


def test_golden_chips_match_dlib(session: ort.InferenceSession, golden: dict) -> None:
    assert golden["recipe"] == synthetic_chips.RECIPE
    chips = []
    for entry in golden["chips"]:
        chip = synthetic_chips.synthetic_chip(entry["seed"])
        assert hashlib.sha256(chip.tobytes()).hexdigest() == entry["chip_sha256"]
        chips.append(chip)
    expected = np.array([entry["descriptor"] for entry in golden["chips"]], dtype=np.float32)
    (got,) = session.run(["embeddings"], {"chips": np.stack(chips)})
    assert got.shape == expected.shape
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # dlib's raw descriptor: not L2-normalised
    assert np.all(np.abs(np.linalg.norm(got, axis=1) - 1.0) > 0.1)


def test_batch_dimension(session: ort.InferenceSession) -> None:
    chips = np.stack([synthetic_chips.synthetic_chip(seed) for seed in range(10, 15)])
    (batched,) = session.run(None, {"chips": chips})
    assert batched.shape == (5, 128)
    for i, chip in enumerate(chips):
        (single,) = session.run(None, {"chips": chip[None]})
        assert single.shape == (1, 128)
        np.testing.assert_allclose(single[0], batched[i], rtol=0, atol=1e-5)
