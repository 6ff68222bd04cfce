"""MTCNN without torch: the legacy torch reader, the ONNX converter and the detector."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import lfr_actors.models.detector as detector_module
from lfr_actors.errors import ModelError, ModelFormatError
from lfr_actors.models.convert.mtcnn import convert_mtcnn
from lfr_actors.models.convert.torch_legacy import load_legacy_state_dict
from lfr_actors.models.detector import DetectorConfig, MtcnnDetector
from lfr_actors.models.runtime import RuntimeConfig
from lfr_actors.models.sources import MTCNN_ONET, MTCNN_PNET, MTCNN_RNET, SourceMember
from lfr_actors.models.types import Detections
from tests.fixtures import make_mtcnn_golden as golden_maker

TESTS = Path(__file__).resolve().parents[1]

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GOLDEN = TESTS / "fixtures" / "mtcnn_golden.json"
NETS = ("pnet", "rnet", "onet")


@pytest.fixture(scope="module")
def raw_files(read_source: Callable[[SourceMember], bytes]) -> dict[str, bytes]:
    members = {"pnet": MTCNN_PNET, "rnet": MTCNN_RNET, "onet": MTCNN_ONET}
    return {net: read_source(members[net]) for net in NETS}


@pytest.fixture(scope="module")
def state_dicts(raw_files: dict[str, bytes]) -> dict[str, dict[str, np.ndarray]]:
    return {net: load_legacy_state_dict(data) for net, data in raw_files.items()}


@pytest.fixture(scope="module")
def models(state_dicts: dict[str, dict[str, np.ndarray]]) -> dict[str, onnx.ModelProto]:
    return convert_mtcnn(state_dicts["pnet"], state_dicts["rnet"], state_dicts["onet"])


@pytest.fixture(scope="module")
def sessions(models: dict[str, onnx.ModelProto]) -> dict[str, ort.InferenceSession]:
    return {
        net: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        for net, m in models.items()
    }


@pytest.fixture(scope="module")
def detector(models: dict[str, onnx.ModelProto]) -> MtcnnDetector:
    return MtcnnDetector.from_models(
        {net: m.SerializeToString() for net, m in models.items()}, RuntimeConfig()
    )


@pytest.fixture(scope="module")
def shared_data() -> Path:
    if not (SHARED_DATA / "faces" / "people").is_dir():
        pytest.skip(f"real test photos not found at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --- hand-built legacy torch files --------------------------------------------------------
# Pickle opcodes written out by hand, so the tests need neither torch nor a fake torch.

MAGIC = 0x1950A86A20F9469CFC6C


def p_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def p_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def p_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def p_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def p_tensor(
    key: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> bytes:
    storage = p_tuple(
        p_str("storage"), p_global("torch", "FloatStorage"), p_str(key), p_str("cpu"),
        p_int(numel), b"N",
    ) + b"Q"  # fmt: skip
    hooks = p_global("collections", "OrderedDict") + b")R"
    args = p_tuple(
        storage, p_int(offset), p_tuple(*map(p_int, size)), p_tuple(*map(p_int, stride)),
        b"\x89", hooks,
    )  # fmt: skip
    return p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def legacy_file(body: bytes, storages: dict[str, np.ndarray]) -> bytes:
    """A legacy torch file around the state-dict pickle ``body`` (opcodes, no PROTO/STOP)."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    head = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, sys_info))
    keys = pickle.dumps(list(storages), protocol=2)
    data = b"".join(
        struct.pack("<q", a.size) + a.astype("<f4").tobytes() for a in storages.values()
    )
    return head + b"\x80\x02" + body + b"." + keys + data


def state_dict_body(entries: list[tuple[str, bytes]]) -> bytes:
    items = b"".join(p_str(name) + tensor for name, tensor in entries)
    return p_global("collections", "OrderedDict") + b")R(" + items + b"u"


# --- legacy reader --------------------------------------------------------------------------


def test_reads_the_real_files(state_dicts: dict[str, dict[str, np.ndarray]]) -> None:
    pnet, rnet, onet = (state_dicts[n] for n in NETS)
    assert list(pnet)[:3] == ["conv1.weight", "conv1.bias", "prelu1.weight"]
    assert len(pnet) == 13 and len(rnet) == 16 and len(onet) == 21
    assert pnet["conv1.weight"].shape == (10, 3, 3, 3)
    assert pnet["conv4_2.weight"].shape == (4, 32, 1, 1)
    assert rnet["dense4.weight"].shape == (128, 576)
    assert onet["dense5.weight"].shape == (256, 1152)
    assert onet["dense6_3.bias"].shape == (10,)
    for state in state_dicts.values():
        for value in state.values():
            assert value.dtype == np.float32 and value.flags.c_contiguous
            assert np.all(np.isfinite(value))
    # PReLU slopes of a trained net: mostly small positive numbers, not garbage.
    assert 0 < float(np.median(onet["prelu1.weight"])) < 1


def test_offsets_strides_and_shared_storage() -> None:
    data = np.arange(12, dtype=np.float32)
    body = state_dict_body([
        ("transposed", p_tensor("s0", 12, 2, (2, 3), (1, 2))),
        ("window", p_tensor("s0", 12, 4, (2, 2), (2, 1))),
        ("scalar", p_tensor("s1", 1, 0, (), ())),
    ])  # fmt: skip
    state = load_legacy_state_dict(legacy_file(body, {"s0": data, "s1": np.array([7.0])}))
    np.testing.assert_array_equal(state["transposed"], [[2, 4, 6], [3, 5, 7]])
    np.testing.assert_array_equal(state["window"], [[4, 5], [6, 7]])
    assert state["scalar"].shape == () and float(state["scalar"]) == 7.0
    state["window"][0, 0] = -1  # copies, not views of one buffer
    assert state["transposed"][1, 0] == 3


def test_refuses_code_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: object) -> int:
        raise AssertionError("os.system was called")

    monkeypatch.setattr(os, "system", forbidden)
    body = p_global("os", "system") + p_tuple(p_str("echo owned")) + b"R"
    with pytest.raises(ModelFormatError, match=r"os\.system"):
        load_legacy_state_dict(legacy_file(body, {}))
    # Even the header pickles resolve no names at all.
    evil_magic = b"\x80\x02" + p_global("builtins", "eval") + p_tuple(p_str("1")) + b"R."
    with pytest.raises(ModelFormatError, match=r"builtins\.eval"):
        load_legacy_state_dict(evil_magic)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_zip_bytes(), "zip serialisation"),
        (pickle.dumps(1234, protocol=2), "magic number"),
        (b"", "magic number"),
    ],
)
def test_refuses_other_files(data: bytes, message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        load_legacy_state_dict(data)


def test_refuses_truncated_and_inconsistent_files(raw_files: dict[str, bytes]) -> None:
    with pytest.raises(ModelFormatError, match="truncated"):
        load_legacy_state_dict(raw_files["pnet"][:-10])
    with pytest.raises(ModelFormatError):
        load_legacy_state_dict(raw_files["pnet"][:1000])
    outside = state_dict_body([("w", p_tensor("s0", 4, 2, (2, 2), (2, 1)))])
    with pytest.raises(ModelFormatError, match="past the end"):
        load_legacy_state_dict(legacy_file(outside, {"s0": np.zeros(4)}))
    not_a_tensor = p_global("collections", "OrderedDict") + b")R(" + p_str("w") + p_int(3) + b"u"
    with pytest.raises(ModelFormatError, match="not a tensor"):
        load_legacy_state_dict(legacy_file(not_a_tensor, {}))


# --- converter --------------------------------------------------------------------------


def test_graphs_follow_the_documented_conventions(models: dict[str, onnx.ModelProto]) -> None:
    assert set(models) == set(NETS)
    for net, model in models.items():
        onnx.checker.check_model(model)
        assert model.producer_name == "lfr_actors"
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
        assert [i.name for i in model.graph.input] == ["image"]
        outputs = [o.name for o in model.graph.output]
        assert outputs == (["prob", "reg", "landmarks"] if net == "onet" else ["prob", "reg"])
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_outputs_match_facenet_pytorch(sessions: dict[str, ort.InferenceSession]) -> None:
    golden = json.loads(GOLDEN.read_text())["cases"]
    assert set(golden) == set(golden_maker.CASES)
    for name, case in golden.items():
        pixels = golden_maker.synthetic_pixels(tuple(case["shape"]), case["seed"])
        assert float(pixels.sum(dtype=np.float64)) == case["input_sum"], name
        session = sessions[case["net"]]
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(None, {"image": pixels}), strict=True))
        for output, want in case["outputs"].items():
            np.testing.assert_allclose(got[output], np.array(want), atol=1e-4, err_msg=name)


def test_pnet_takes_any_size(sessions: dict[str, ort.InferenceSession]) -> None:
    for shape in [(1, 3, 12, 12), (2, 3, 40, 57), (1, 3, 13, 100)]:
        prob, reg = sessions["pnet"].run(None, {"image": np.full(shape, 100, np.float32)})
        h, w = ((s - 2 + 1) // 2 - 4 for s in shape[2:])  # conv 3x3, ceil pool /2, 2 conv 3x3
        assert prob.shape == (shape[0], 2, h, w) and reg.shape == (shape[0], 4, h, w)
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)


def test_converter_names_bad_entries(state_dicts: dict[str, dict[str, np.ndarray]]) -> None:
    good = state_dicts
    missing = {k: v for k, v in good["rnet"].items() if k != "dense4.bias"}
    with pytest.raises(ModelFormatError, match=r"rnet.*missing dense4\.bias"):
        convert_mtcnn(good["pnet"], missing, good["onet"])
    misshapen = dict(good["onet"], **{"conv2.weight": np.zeros((64, 32, 5, 5), np.float32)})
    with pytest.raises(ModelFormatError, match=r"conv2\.weight has shape \(64, 32, 5, 5\)"):
        convert_mtcnn(good["pnet"], good["rnet"], misshapen)
    with pytest.raises(ModelFormatError, match=r"pnet.*unexpected"):
        convert_mtcnn(good["rnet"], good["rnet"], good["onet"])


# --- detector without photos ---------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((1, 64, 64, 3), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
        [[[0, 0, 0]]],
    ],
)
def test_detect_rejects_bad_input(detector: MtcnnDetector, image: object) -> None:
    with pytest.raises(ValueError, match="detect"):
        detector.detect(image)  # type: ignore[arg-type]


def test_no_faces_in_flat_or_tiny_images(detector: MtcnnDetector) -> None:
    for image in [np.full((240, 320, 3), 128, np.uint8), np.zeros((10, 300, 3), np.uint8)]:
        found = detector.detect(image)
        assert len(found) == 0
        assert found.boxes.shape == (0, 4) and found.landmarks.shape == (0, 5, 2)


def test_detector_checks_its_sessions(sessions: dict[str, ort.InferenceSession]) -> None:
    with pytest.raises(ModelError, match="onet"):
        MtcnnDetector({"pnet": sessions["pnet"], "rnet": sessions["rnet"]})
    with pytest.raises(ModelError, match="rnet session"):
        MtcnnDetector(
            {"pnet": sessions["pnet"], "rnet": sessions["onet"], "onet": sessions["onet"]}
        )
    with pytest.raises(ModelError, match="no model given for rnet"):
        MtcnnDetector.from_models({"pnet": b"", "onet": b""}, RuntimeConfig())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_face_px": 0},
        {"scale_factor": 1.0},
        {"thresholds": (0.6, 0.7, 1.5)},
        {"nms_thresholds": (0.5, 0.0, 0.7)},
        {"max_faces": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DetectorConfig(**kwargs)  # type: ignore[arg-type]


def _naive_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, use_min: bool) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            iw = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1)
            ih = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1)
            ai = (boxes[i, 2] - boxes[i, 0] + 1) * (boxes[i, 3] - boxes[i, 1] + 1)
            aj = (boxes[j, 2] - boxes[j, 0] + 1) * (boxes[j, 3] - boxes[j, 1] + 1)
            inter = iw * ih
            overlap = inter / min(ai, aj) if use_min else inter / (ai + aj - inter)
            if overlap > threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


@pytest.fixture(params=["pairwise", "incremental"])
def nms_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "incremental":
        monkeypatch.setattr(detector_module, "_NMS_MATRIX_MAX", 0)
    yield request.param


@pytest.mark.parametrize("use_min", [False, True])
def test_nms_matches_the_textbook_definition(nms_path: str, use_min: bool) -> None:
    rng = np.random.default_rng(7)
    corner = rng.uniform(0, 200, (300, 2)).astype(np.float32)
    boxes = np.concatenate([corner, corner + rng.uniform(10, 60, (300, 2))], 1).astype(np.float32)
    scores = (rng.permutation(300) / 300).astype(np.float32)  # distinct: order is defined
    got = detector_module._nms(boxes, scores, 0.5, min_overlap=use_min, plus_one=True)
    assert got.tolist() == _naive_nms(boxes, scores, 0.5, use_min)


# --- detector on real photos -----------------------------------------------------------------

# At min_face_px=20, obama.jpg also holds a 55-px false "face" (score ~0.9) near its
# bottom edge, which facenet-pytorch finds as well; portraits are checked at 40 px.
SPURIOUS_SECOND = {"lin_manuel_miranda1.png"}  # see shared/data/README.md


@pytest.fixture(scope="module")
def detector40(models: dict[str, onnx.ModelProto]) -> MtcnnDetector:
    return MtcnnDetector.from_models(
        {net: m.SerializeToString() for net, m in models.items()},
        RuntimeConfig(),
        DetectorConfig(min_face_px=40),
    )


def _check_geometry(found: Detections, where: str) -> None:
    assert found.boxes.dtype == np.float32 and found.landmarks.dtype == np.float32
    assert np.all(np.diff(found.scores) <= 0), f"{where}: not sorted by score"
    for box, marks, score in zip(found.boxes, found.landmarks, found.scores, strict=True):
        assert 0.0 <= score <= 1.0
        x, y = marks[:, 0], marks[:, 1]
        assert np.all((x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])), where
        if score >= 0.95:  # real, upright faces
            assert max(y[0], y[1]) < min(y[3], y[4]), f"{where}: eyes not above the mouth"
            assert x[0] < x[1] and x[3] < x[4], f"{where}: image-left points not first"


@pytest.mark.data
def test_portraits(detector40: MtcnnDetector, shared_data: Path) -> None:
    photos = sorted((shared_data / "faces" / "people").glob("*/*"))
    assert photos
    for photo in photos:
        found = detector40.detect(_rgb(photo))
        if photo.name in SPURIOUS_SECOND:
            assert len(found) >= 1, photo.name
        else:
            assert len(found) == 1, f"{photo.name}: {len(found)} faces, scores {found.scores}"
        assert found.scores[0] > 0.99
        side = found.boxes[0, 2] - found.boxes[0, 0]
        assert side > 100, f"{photo.name}: the face should be large, got {side:.0f} px"
        _check_geometry(found, photo.name)


@pytest.mark.data
@pytest.mark.parametrize(("scene", "at_least"), [("obama_and_biden.jpg", 3), ("two_people.jpg", 2)])
def test_scenes_with_several_faces(
    detector: MtcnnDetector, shared_data: Path, scene: str, at_least: int
) -> None:
    found = detector.detect(_rgb(shared_data / "faces" / "scenes" / scene))
    assert len(found) >= at_least, f"{scene}: scores {found.scores}"
    assert np.sum(found.scores > 0.99) >= at_least - 1
    _check_geometry(found, scene)


@pytest.mark.data
def test_no_faces_on_dogs(detector: MtcnnDetector, shared_data: Path) -> None:
    found = detector.detect(_rgb(shared_data / "detection" / "dogs.jpg"))
    assert len(found) == 0, f"scores {found.scores}"


@pytest.mark.data
def test_small_faces_and_the_face_cap(
    models: dict[str, onnx.ModelProto], shared_data: Path
) -> None:
    image = _rgb(shared_data / "faces" / "scenes" / "obama-240p.jpg")
    blobs = {net: m.SerializeToString() for net, m in models.items()}
    found = MtcnnDetector.from_models(blobs, RuntimeConfig()).detect(image)
    assert len(found) == 1 and 40 < found.boxes[0, 2] - found.boxes[0, 0] < 70
    _check_geometry(found, "obama-240p.jpg")
    crowd = _rgb(shared_data / "detection" / "bald_guys.jpg")
    capped = MtcnnDetector.from_models(blobs, RuntimeConfig(), DetectorConfig(max_faces=3))
    top = capped.detect(crowd)
    assert len(top) == 3 and np.all(top.scores > 0.99)
