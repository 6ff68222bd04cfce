"""``lfr evaluate detect`` without models: the XML reader, matching, bands, styles, errors.

The boxes are synthetic and every overlap below is worked out by hand in a comment; the
command's real run on the shared annotations is tests/integration/test_evaluate_detect.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr_actors.cli.main import main
from lfr_actors.evaluate_detect import (
    RAW_STYLE,
    AnnotatedBox,
    AnnotatedImage,
    BoxStyle,
    DetectionEvaluationError,
    DetectorRun,
    band_of,
    centre_pairs,
    evaluate_detector,
    format_report,
    iou_matrix,
    load_scaled,
    match_one_to_one,
    measure_box_style,
    read_annotations,
    run_detector,
    score_image,
    style_from_run,
    summarise,
    summarise_annotations,
)
from lfr_actors.models.types import Detections, UInt8Array

HEAD = "<?xml version='1.0' encoding='ISO-8859-1'?>\n"


def _photo(folder: Path, name: str, width: int = 64, height: int = 48) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))
    return path


def _xml(folder: Path, body: str, name: str = "faces.xml") -> Path:
    path = folder / name
    path.write_text(HEAD + body, "latin-1")
    return path


def _image(
    *boxes: tuple[float, float, float, float], ignore: tuple[int, ...] = ()
) -> AnnotatedImage:
    return AnnotatedImage(
        Path("x.jpg"),
        "faces.xml:1",
        tuple(AnnotatedBox(*b, line=k + 1, ignore=k in ignore) for k, b in enumerate(boxes)),
    )


# -- the XML reader -------------------------------------------------------------------------


def test_the_reader_takes_boxes_ignores_and_images_without_faces(tmp_path: Path) -> None:
    _photo(tmp_path, "a.jpg")
    _photo(tmp_path, "sub/b.jpg")
    xml = _xml(
        tmp_path,
        """<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>
<dataset>
<name>faces</name>
<images>
  <image file='a.jpg' width='64' height='48'>
    <box top='5' left='10' width='20' height='22'>
      <part name='00' x='12' y='9'/>
    </box>
    <box top='0' left='-3' width='8' height='8' ignore='1'/>
  </image>
  <image file='sub/b.jpg'>
  </image>
</images>
</dataset>
""",
    )
    first, second = read_annotations(xml)
    assert first.path == tmp_path / "a.jpg" and first.where == f"{xml}:6"
    face, ignored = first.boxes
    assert (face.x1, face.y1, face.x2, face.y2, face.height) == (10, 5, 30, 27, 22)
    assert face.line == 7 and not face.ignore
    assert (ignored.x1, ignored.x2, ignored.ignore, ignored.line) == (-3, 5, True, 10)
    assert first.faces == [face] and first.ignored == [ignored]
    assert second.path == tmp_path / "sub" / "b.jpg" and second.boxes == ()


def test_a_missing_or_malformed_file_is_named_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(DetectionEvaluationError, match=r"nope\.xml: no such annotation file"):
        read_annotations(tmp_path / "nope.xml")
    bad = _xml(tmp_path, "<dataset>\n<images>\n  <image file='a.jpg'>\n</images>\n</dataset>\n")
    with pytest.raises(DetectionEvaluationError) as caught:
        read_annotations(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}:5: not well-formed XML (mismatched tag")
    assert "\n" not in message


def test_every_bad_box_and_missing_image_is_reported_at_once(tmp_path: Path) -> None:
    _photo(tmp_path, "a.jpg")
    xml = _xml(
        tmp_path,
        """<dataset><images>
<image file='a.jpg'>
  <box top='1' left='2' width='3'/>
  <box top='1' left='2' width='3.5' height='4'/>
  <box top='1' left='2' width='0' height='4'/>
  <box top='1' left='2' width='3' height='4' ignore='maybe'/>
</image>
<image file='gone.jpg'/>
<image/>
</images></dataset>
""",
    )
    with pytest.raises(DetectionEvaluationError) as caught:
        read_annotations(xml)
    assert str(caught.value).splitlines() == [
        f"{xml}:4: <box> needs whole-number top, left, width and height; height missing or "
        "not whole numbers",
        f"{xml}:5: <box> needs whole-number top, left, width and height; width missing or "
        "not whole numbers",
        f"{xml}:6: <box> width and height must be positive, got 0x4",
        f"{xml}:7: <box> ignore must be 1 or 0, got 'maybe'",
        f"{xml}:9: image 'gone.jpg' not found (looked at {tmp_path / 'gone.jpg'})",
        f"{xml}:10: <image> has no file attribute",
    ]


def test_a_file_that_is_not_imglab_or_declares_entities_is_refused(tmp_path: Path) -> None:
    other = _xml(tmp_path, "<annotation><object/></annotation>", "voc.xml")
    with pytest.raises(DetectionEvaluationError, match=r"voc\.xml:2: not a dlib imglab file"):
        read_annotations(other)
    empty = _xml(tmp_path, "<dataset><images></images></dataset>", "empty.xml")
    with pytest.raises(DetectionEvaluationError, match=r"empty\.xml: no <image>"):
        read_annotations(empty)
    laughs = _xml(
        tmp_path,
        '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'
        "<dataset><name>&b;</name></dataset>",
        "laughs.xml",
    )
    with pytest.raises(DetectionEvaluationError, match="entity declarations are not accepted"):
        read_annotations(laughs)


# -- overlaps, bands and one-to-one matching -----------------------------------------------------


def test_iou_by_hand() -> None:
    a = [[0, 0, 10, 10]]
    others = [
        [0, 0, 10, 10],  # the same box: 1
        [5, 0, 15, 10],  # half shifted: 50 / (100 + 100 - 50) = 1/3
        [0, 0, 10, 5],  # the top half: 50 / 100 = 0.5
        [20, 20, 30, 30],  # apart: 0
        [2, 2, 8, 8],  # inside: 36 / 100
        [5, 5, 5, 5],  # no area: 0, not a division by zero
    ]
    np.testing.assert_allclose(iou_matrix(a, others), [[1, 1 / 3, 0.5, 0, 0.36, 0]])
    assert iou_matrix(np.zeros((0, 4)), a).shape == (0, 1)


@pytest.mark.parametrize(
    ("height", "band"),
    [(0, "<20"), (19.9, "<20"), (20, "20-40"), (39, "20-40"), (40, "40-80"), (80, ">80")],
)
def test_bands_are_half_open(height: float, band: str) -> None:
    assert band_of(height) == band


def test_a_negative_height_has_no_band() -> None:
    with pytest.raises(ValueError, match="face height must be >= 0"):
        band_of(-1)


def test_matching_finds_the_most_pairs_where_greedy_would_lose_one() -> None:
    faces = [[0, 0, 10, 10], [4, 0, 14, 10]]  # A and B overlap each other
    # d1 = [1, 0, 11, 10]: A 90/110 = 0.818, B 70/130 = 0.538.
    # d2 = [-3, 0, 7, 10]: A 70/130 = 0.538, B 30/170 = 0.176.
    # Greedy by IoU gives d1 to A and leaves d2 nothing; the optimum finds both faces.
    detections = [[1, 0, 11, 10], [-3, 0, 7, 10]]
    iou = iou_matrix(detections, faces)
    np.testing.assert_allclose(iou, [[90 / 110, 70 / 130], [70 / 130, 30 / 170]])
    assert sorted(match_one_to_one(iou >= 0.4, iou)) == [(0, 1), (1, 0)]
    score = score_image(detections, _image(*map(tuple, faces)))  # type: ignore[arg-type]
    assert score.found == (True, True) and score.false_detections == 0


def test_among_as_many_pairs_the_larger_overlaps_win() -> None:
    iou = np.array([[0.9, 0.5], [0.5, 0.45]])
    assert sorted(match_one_to_one(iou >= 0.4, iou)) == [(0, 0), (1, 1)]
    assert match_one_to_one(np.zeros((2, 2), bool), iou) == []
    assert match_one_to_one(np.zeros((0, 3), bool), np.zeros((0, 3))) == []


def test_a_detection_finds_one_face_and_a_face_is_found_once() -> None:
    # One wide detection over two faces finds one of them; two detections of one face
    # find it once, the other is false.
    two_faces = _image((0, 0, 10, 10), (10, 0, 20, 10))
    wide = score_image([[0, 0, 20, 10]], two_faces)  # 100/200 = 0.5 with each face
    assert sum(wide.found) == 1 and wide.false_detections == 0
    twice = score_image([[0, 0, 10, 10], [1, 0, 11, 10]], _image((0, 0, 10, 10)))
    assert twice.found == (True,) and twice.false_detections == 1


def test_a_detection_on_an_ignored_box_is_neither_found_nor_false() -> None:
    image = _image((0, 0, 30, 30), (100, 100, 110, 110), ignore=(1,))
    score = score_image([[0, 0, 30, 30], [100, 100, 110, 111], [200, 200, 220, 220]], image)
    assert score.bands == ("20-40",)  # the ignored box is in no band
    assert score.found == (True,) and score.excused == 1 and score.false_detections == 1
    assert score.detections == 3


def test_below_the_threshold_is_not_found() -> None:
    # [0,0,10,10] against [6,0,16,10]: 40 / 160 = 0.25.
    score = score_image([[6, 0, 16, 10]], _image((0, 0, 10, 10)))
    assert score.found == (False,) and score.false_detections == 1
    assert score.found_centre == (False,)  # its centre (11, 5) is outside the face


def test_the_summary_adds_up_by_band() -> None:
    image = _image((0, 0, 10, 15), (50, 50, 80, 80), (100, 0, 150, 50), (0, 100, 90, 190))
    # Heights 15, 30, 50, 90: one face per band; the 30-px face is missed, one detection
    # is false.
    detections = [[0, 0, 10, 15], [100, 0, 150, 50], [0, 100, 90, 190], [300, 300, 310, 310]]
    summary = summarise([score_image(detections, image), score_image([], _image())])
    assert summary["bands"] == {
        "<20": {"faces": 1, "found": 1, "recall": 1.0},
        "20-40": {"faces": 1, "found": 0, "recall": 0.0},
        "40-80": {"faces": 1, "found": 1, "recall": 1.0},
        ">80": {"faces": 1, "found": 1, "recall": 1.0},
    }
    assert summary["faces"] == 4 and summary["found"] == 3 and summary["recall"] == 0.75
    assert summary["false_detections"] == 1 and summary["precision"] == 0.75
    empty = summarise([score_image([], _image())])
    assert empty["precision"] is None and empty["bands"]["<20"]["recall"] is None


# -- the annotation style ---------------------------------------------------------------------


def test_a_style_measured_on_pairs_maps_detections_onto_the_annotations() -> None:
    # Detections half as wide, twice as tall and shifted up by a tenth of the face height:
    # raw, IoU = 10*20 / (400 + 400 - 200) = 1/3 < 0.4; mapped back, the face itself.
    faces = [np.array([x, 0, x + 20, 20], np.float64) for x in range(0, 200, 40)]
    detections = [np.array([f[0] + 5, -12, f[0] + 15, 28], np.float64) for f in faces]
    style = measure_box_style(list(zip(detections, faces, strict=True)), "train.xml")
    assert (style.width_ratio, style.height_ratio) == pytest.approx((0.5, 2.0))
    assert (style.shift_x, style.shift_y) == pytest.approx((0.0, -0.1))
    assert style.pairs == 5 and style.source == "train.xml"
    np.testing.assert_allclose(style.apply(detections), faces, atol=1e-9)
    image = _image(*(tuple(f) for f in faces))  # type: ignore[arg-type]
    raw = score_image(detections, image, RAW_STYLE)
    styled = score_image(detections, image, style)
    assert sum(raw.found) == 0 and sum(styled.found) == 5
    assert styled.found_raw == raw.found and sum(styled.found_centre) == 5
    assert styled.side_ratios[0] == pytest.approx((0.5, 2.0))  # measured on raw boxes


def test_a_style_needs_enough_pairs() -> None:
    pair = (np.array([0, 0, 10, 10]), np.array([0, 0, 10, 10]))
    with pytest.raises(DetectionEvaluationError, match="only 4 face"):
        measure_box_style([pair] * 4, "few.xml")


def test_the_centre_rule_pairs_one_to_one_nearest_first() -> None:
    faces = [[0, 0, 20, 20], [100, 0, 120, 20]]
    detections = [[2, 2, 20, 20], [0, -10, 10, 30], [300, 0, 310, 10]]
    # Both first detections have their centre in face 0; the nearer (11, 11) is taken.
    assert centre_pairs(detections, faces) == [(0, 0)]


# -- running a detector ---------------------------------------------------------------------------


class _Detector:
    """A detector double that finds the same boxes on every image and counts its calls."""

    def __init__(self, boxes: list[list[float]]) -> None:
        self.boxes = np.array(boxes, np.float32).reshape(-1, 4)
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image: UInt8Array) -> Detections:
        self.shapes.append(image.shape)
        n = len(self.boxes)
        return Detections(self.boxes, np.ones(n, np.float32), np.zeros((n, 5, 2), np.float32))


def test_a_run_times_each_image_after_an_untimed_first_call(tmp_path: Path) -> None:
    _photo(tmp_path, "a.jpg", 64, 48)
    _photo(tmp_path, "b.jpg", 32, 32)
    xml = _xml(
        tmp_path,
        "<dataset><images><image file='a.jpg'><box top='10' left='10' width='20' "
        "height='20'/></image><image file='b.jpg'/></images></dataset>",
    )
    images = read_annotations(xml)
    detector = _Detector([[10, 10, 30, 30]])
    run = run_detector(detector.detect, images, repeat=2)
    assert detector.shapes == [(48, 64, 3)] * 3 + [(32, 32, 3)] * 2
    assert run.ms_per_image is not None and run.ms_per_image >= 0
    assert [b.tolist() for b in run.boxes] == [[[10, 10, 30, 30]]] * 2
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        run_detector(detector.detect, images, repeat=0)
    report = evaluate_detector(detector.detect, images)
    assert report["found"] == 1 and report["false_detections"] == 1  # b.jpg has no face
    assert report["box_style"] is None and report["precision"] == 0.5


def test_a_rescaled_image_is_loaded_and_scored_at_that_size(tmp_path: Path) -> None:
    _photo(tmp_path, "a.jpg", 64, 48)
    xml = _xml(
        tmp_path,
        "<dataset><images><image file='a.jpg'><box top='8' left='20' width='24' "
        "height='24'/></image></images></dataset>",
    )
    (image,) = (i.rescaled(0.5) for i in read_annotations(xml))
    assert image.scale == 0.5 and image.boxes[0].as_array().tolist() == [10, 4, 22, 16]
    assert load_scaled(image).shape == (24, 32, 3)
    summary = summarise_annotations(xml, [image], 0.5)
    assert summary["scale"] == 0.5 and summary["faces"] == 1


def test_a_photo_that_does_not_decode_is_named_with_its_xml_line(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"not a picture")
    xml = _xml(tmp_path, "<dataset><images>\n<image file='a.jpg'/></images></dataset>")
    with pytest.raises(DetectionEvaluationError) as caught:
        run_detector(_Detector([]).detect, read_annotations(xml))
    assert str(caught.value).startswith(f"{xml}:3: {tmp_path / 'a.jpg'}")


def test_a_style_comes_from_a_run_over_another_file() -> None:
    faces = [(float(x), 0.0, x + 20.0, 20.0) for x in range(0, 200, 40)]
    image = _image(*faces)
    run_boxes = np.array([[x + 5, -12, x + 15, 28] for x, *_ in faces], np.float64)
    style = style_from_run(DetectorRun([run_boxes], 1.0), [image], "train.xml")
    assert style.height_ratio == pytest.approx(2.0) and style.pairs == 5
    assert BoxStyle().apply([[1, 2, 3, 4]]).tolist() == [[1, 2, 3, 4]]


def test_the_text_report_has_a_row_per_detector() -> None:
    image = _image((0, 0, 30, 30))
    report = summarise_annotations(Path("t.xml"), [image])
    found = summarise([score_image([[0, 0, 30, 30]], image)])
    report["detectors"] = {"mtcnn": {**found, "ms_per_image": 12.5, "box_style": None}}
    text = format_report(report).splitlines()
    assert text[0] == "t.xml: 1 images, 1 faces (0 ignored); a face is found at IoU >= 0.4"
    assert text[2].split() == ["mtcnn", "0/0", "-", "1/1", "1.00", "0/0", "-", "0/0", "-",
                               "1.00", "0", "12.5"]  # fmt: skip
    assert text[3] == "mtcnn: raw boxes; found 1, with raw boxes 1, by the centre rule 1"


# -- the command's errors, before any model is loaded -------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--detector", "yolo"], "unknown detector 'yolo'; known: mtcnn, centerface, all"),
        (["--centerface-input", "640"], "--centerface-input must be WIDTHxHEIGHT"),
        (["--centerface-input", "650x384"], "input_width must be a multiple of 32"),
        (["--min-face-px", "0"], "min_face_px must be >= 1, got 0"),
        (["--scale", "0"], "--scale must be from 0.05 to 4.0, got 0.0"),
        (["--repeat", "0"], "--repeat must be 1 or more, got 0"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    _photo(tmp_path, "a.jpg")
    xml = _xml(tmp_path, "<dataset><images><image file='a.jpg'/></images></dataset>")
    argv = ["evaluate", "detect", str(xml), "--home", str(tmp_path / "home"), "--offline"]
    assert main([*argv, *extra]) == 2
    err = capfd.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_annotations_exit_2_before_the_models(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    base = ["evaluate", "detect", "--home", str(home), "--offline"]
    assert main([*base, str(tmp_path / "missing.xml")]) == 2
    assert (
        capfd.readouterr().err
        == f"lfr: error: {tmp_path / 'missing.xml'}: no such annotation file\n"
    )
    bad = _xml(tmp_path, "<dataset>\n<images>\n</dataset>\n")
    assert main([*base, str(bad)]) == 2
    assert f"{bad}:4: not well-formed XML (mismatched tag, column 3)" in capfd.readouterr().err
    gone = _xml(tmp_path, "<dataset><images>\n<image file='gone.jpg'/></images></dataset>", "g.xml")
    assert main([*base, str(gone)]) == 2
    assert f"{gone}:3: image 'gone.jpg' not found" in capfd.readouterr().err
    style = _xml(tmp_path, "<dataset/>", "style.xml")
    _photo(tmp_path, "a.jpg")
    ok = _xml(tmp_path, "<dataset><images><image file='a.jpg'/></images></dataset>", "ok.xml")
    assert main([*base, str(ok), "--box-style-from", str(style)]) == 2
    assert "style.xml: no <image>" in capfd.readouterr().err
    assert not (home / "models").exists()  # nothing was prepared
