"""Image decoding, the session builder and the embedder's declared conventions.

The operator-declared embedder path is tested with a small ONNX model built here: an
ArcFace-style convention (112x112 float input scaled (x - 127.5) / 127.5, NCHW, BGR,
512-d, cosine).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lfr_actors.errors import ImageError, ModelError, ProviderUnavailableError
from lfr_actors.models.embedder import Embedder, distances
from lfr_actors.models.images import decode_image, load_image
from lfr_actors.models.runtime import RuntimeConfig, build_session
from lfr_actors.models.spec import ARCFACE_TEMPLATE_112, EmbedderSpec

RNG = np.random.default_rng(11)
PROJECTION = RNG.standard_normal((3 * 112 * 112, 512)).astype(np.float32) * 0.01


def _arcface_like(path: Path, *, dim: int = 512, layout: str = "NCHW") -> Path:
    """Flatten -> MatMul to ``dim``: a stand-in with ArcFace-style input conventions."""
    shape = [None, 3, 112, 112] if layout == "NCHW" else [None, 112, 112, 3]
    proj = PROJECTION[:, :dim]
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input.1"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["683"]),
        ],
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [None, dim])],
        [numpy_helper.from_array(proj, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _spec(path: Path, **over: object) -> EmbedderSpec:
    fields: dict[str, object] = dict(
        name="arcface_test",
        version="0",
        path=path,
        input_name="input.1",
        output_name="683",
        input_dtype="float32",
        input_layout="NCHW",
        colour_order="BGR",
        input_mean=127.5,
        input_std=127.5,
        chip_size=112,
        template=ARCFACE_TEMPLATE_112,
        dimension=512,
        metric="cosine",
        l2_normalise=True,
        default_threshold=0.6,
        max_batch=4,
    )
    fields.update(over)
    return EmbedderSpec.model_validate(fields)


def test_declared_embedder_applies_its_conventions(tmp_path: Path) -> None:
    spec = _spec(_arcface_like(tmp_path / "m.onnx"))
    embedder = Embedder.from_spec(spec, RuntimeConfig())
    chips = RNG.integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)  # RGB, as aligned
    out = embedder.embed(chips)  # 6 chips with max_batch 4: two runs
    bgr = chips[..., ::-1].astype(np.float32)
    expected = ((bgr - 127.5) / 127.5).transpose(0, 3, 1, 2).reshape(6, -1) @ PROJECTION
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embedder.report.active == ("CPUExecutionProvider",)


def test_io_binding_path_gives_the_same_answer(tmp_path: Path) -> None:
    spec = _spec(_arcface_like(tmp_path / "m.onnx"))
    session, report = build_session(spec.path, RuntimeConfig(), name="t")  # type: ignore[arg-type]
    plain = Embedder(session, spec, report, use_io_binding=False)
    bound = Embedder(session, spec, report, use_io_binding=True)
    chips = RNG.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(plain.embed(chips), bound.embed(chips), atol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dimension": 256}, "output dimension 512, declared 256"),
        ({"input_name": "data"}, "no input named 'data'"),
        ({"output_name": "fc1"}, "no output named 'fc1'"),
        ({"input_dtype": "uint8"}, "declared uint8"),
        ({"input_layout": "NHWC"}, "does not fit declared"),
        ({"chip_size": 120}, "does not fit declared"),
    ],
)
def test_a_model_that_contradicts_its_declaration_is_refused(
    tmp_path: Path, override: dict[str, object], message: str
) -> None:
    spec = _spec(_arcface_like(tmp_path / "m.onnx"), **override)
    with pytest.raises(ModelError, match=message):
        Embedder.from_spec(spec, RuntimeConfig())


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="l2_normalise"):
        _spec(Path("x.onnx"), l2_normalise=False)
    with pytest.raises(ValueError, match="extra"):
        EmbedderSpec.model_validate({**_spec(Path("x")).model_dump(), "guess_from_shape": True})


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Embedder.from_spec(_spec(tmp_path / "absent.onnx"), RuntimeConfig())


def test_embed_rejects_wrong_chips(tmp_path: Path) -> None:
    embedder = Embedder.from_spec(_spec(_arcface_like(tmp_path / "m.onnx")), RuntimeConfig())
    with pytest.raises(ValueError, match=r"\[N, 112, 112, 3\] uint8"):
        embedder.embed(np.zeros((1, 150, 150, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((1, 112, 112, 3), np.float32))  # type: ignore[arg-type]


def test_gpu_demanded_but_absent_is_an_error(tmp_path: Path) -> None:
    path = _arcface_like(tmp_path / "m.onnx")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is installed here; covered by the gpu-marked tests")
    with pytest.raises(ProviderUnavailableError, match="demands a GPU"):
        build_session(path, RuntimeConfig(device="gpu"), name="m")
    # auto falls back to the CPU and says so in its report
    _, report = build_session(path, RuntimeConfig(device="auto"), name="m")
    assert report.active[0] == "CPUExecutionProvider" and not report.on_gpu


def test_corrupt_model_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match=r"bad\.onnx"):
        build_session(bad, RuntimeConfig(), name="bad")


def test_distances() -> None:
    a = np.array([[0, 0], [3, 4]], np.float32)
    np.testing.assert_allclose(distances(a, a, "euclidean"), [[0, 5], [5, 0]], atol=1e-5)
    c = distances(np.array([[1, 0]], np.float32), np.array([[0, 2], [3, 0]], np.float32), "cosine")
    np.testing.assert_allclose(c, [[1, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="unknown metric"):
        distances(a, a, "manhattan")


def test_decode_image_kinds(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    np.testing.assert_array_equal(decode_image(png.tobytes(), name="x.png"), rgb)
    grey = rgb[..., 0]
    ok, png_grey = cv2.imencode(".png", grey)
    assert decode_image(png_grey.tobytes(), name="g.png").shape == (20, 30, 3)
    rgba = np.dstack([rgb[..., ::-1], np.full((20, 30), 7, np.uint8)])
    ok, png_rgba = cv2.imencode(".png", rgba)
    np.testing.assert_array_equal(decode_image(png_rgba.tobytes(), name="a.png"), rgb)
    deep = (rgb.astype(np.uint16) * 257)[..., ::-1]
    ok, png16 = cv2.imencode(".png", deep)
    np.testing.assert_array_equal(decode_image(png16.tobytes(), name="d.png"), rgb)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a....", "not a supported image"),
        (b"%PDF-1.4 hello", "not a supported image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "corrupt or truncated"),
    ],
)
def test_decode_image_errors_name_the_file(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=f"upload.jpg: .*{message}"):
        decode_image(data, name="upload.jpg")


def test_truncated_jpeg(tmp_path: Path) -> None:
    _, jpg = cv2.imencode(".jpg", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpg.tobytes()[:200])
    with pytest.raises(ImageError, match=r"cut\.jpg"):
        load_image(path)


def test_load_image_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    # A 20000 x 20000 PNG of zeros compresses to ~400 kB; decoding it would take 400 MB.
    # OpenCV reads its cap when it loads, so the check runs in a fresh interpreter that
    # imports lfr_actors first, as every entry point does.
    side = 20_000
    rows = zlib.compress(b"".join(b"\x00" + bytes(side) for _ in range(side)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )
    assert len(bomb) < 1_000_000
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    # The header is read first (no pixel decoded); OpenCV's own cap stays behind it.
    script = (
        "import sys, lfr_actors, cv2, numpy as np\n"
        "from lfr_actors.models.images import load_image\n"
        "try:\n"
        "    load_image(__import__('pathlib').Path(sys.argv[1]))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "try:\n"
        "    cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR)\n"
        "except cv2.error as exc:\n"
        "    print('opencv cap' if 'CV_IO_MAX_IMAGE_PIXELS' in str(exc) else 'opencv other')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert done.stdout.startswith("ImageTooLargeError "), done.stdout + done.stderr
    assert "20000x20000 is 400,000,000 pixels, over the 50,000,000 accepted" in done.stdout
    assert done.stdout.splitlines()[-1] == "opencv cap"
