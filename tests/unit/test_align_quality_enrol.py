"""Alignment, quality figures and enrolment rules, on synthetic inputs (no models)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lfr_actors.errors import EnrolmentRejectedError
from lfr_actors.models.align import align_faces, similarity_transform
from lfr_actors.models.enrol import EnrolmentConfig, choose_enrolment_face
from lfr_actors.models.quality import FaceQuality, QualityConfig, assess, pose, sharpness
from lfr_actors.models.spec import DLIB_MTCNN_TEMPLATE_150
from lfr_actors.models.types import Detections

TEMPLATE = np.array(DLIB_MTCNN_TEMPLATE_150, dtype=np.float32)


def _rotate_scale(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]):
    a = np.radians(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * scale
    return (points @ r.T + np.array(shift)).astype(np.float32)


def test_similarity_transform_recovers_a_known_transform() -> None:
    src = _rotate_scale(TEMPLATE, 17.0, 2.5, (300.0, 120.0))
    m = similarity_transform(src, TEMPLATE)
    mapped = np.c_[src, np.ones(5)] @ m.T
    np.testing.assert_allclose(mapped, TEMPLATE, atol=1e-3)


def test_similarity_transform_never_reflects() -> None:
    mirrored = TEMPLATE.copy()
    mirrored[:, 0] = 150 - mirrored[:, 0]
    m = similarity_transform(mirrored, TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0


def test_similarity_transform_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="matching"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def _marker_image(points: np.ndarray, size: tuple[int, int], radius: int) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for i, (x, y) in enumerate(points):
        colour = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)][i]
        cv2.circle(image, (round(x), round(y)), radius, colour, -1)
    return image


@pytest.mark.parametrize("scale", [0.6, 1.0, 4.0, 9.0])
def test_align_puts_landmarks_on_the_template(scale: float) -> None:
    points = _rotate_scale(TEMPLATE - 75, -12.0, scale, (700.0, 500.0))
    image = _marker_image(points, (1400, 1000), max(2, round(4 * scale)))
    chips = align_faces(image, points[None], TEMPLATE, 150)
    assert chips.shape == (1, 150, 150, 3) and chips.dtype == np.uint8
    chip = chips[0].astype(np.int32)
    for i, (x, y) in enumerate(TEMPLATE):
        channel_colour = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)][i]
        px = chip[round(y), round(x)]
        assert np.abs(px - np.array(channel_colour)).max() < 90, (i, px)


def test_align_large_face_is_anti_aliased() -> None:
    # A fine checkerboard face region 8x larger than the chip: direct bilinear sampling
    # aliases into a high-contrast pattern; area-shrinking first averages it to grey.
    points = _rotate_scale(TEMPLATE - 75, 0.0, 8.0, (800.0, 800.0))
    yy, xx = np.mgrid[0:1600, 0:1600]
    board = (((yy // 3) + (xx // 3)) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[:, :, None], 3, axis=2)
    chip = align_faces(image, points[None], TEMPLATE, 150)[0]
    centre = chip[30:120, 30:120].astype(np.float32)
    assert abs(centre.mean() - 127.5) < 20
    assert centre.std() < 40


def test_align_faces_near_the_border_pads_with_black() -> None:
    points = _rotate_scale(TEMPLATE - 75, 0.0, 1.0, (20.0, 20.0))
    image = np.full((200, 200, 3), 200, np.uint8)
    chip = align_faces(image, points[None], TEMPLATE, 150)[0]
    assert (chip[0, 0] == 0).all()
    assert (chip[-1, -1] == 200).all()


def test_align_many_faces_and_none() -> None:
    image = np.zeros((300, 300, 3), np.uint8)
    pts = np.stack([_rotate_scale(TEMPLATE - 75, 0.0, 1.0, (150.0, 150.0))] * 3)
    assert align_faces(image, pts, TEMPLATE, 112).shape == (3, 112, 112, 3)
    assert align_faces(image, np.zeros((0, 5, 2), np.float32), TEMPLATE, 150).shape[0] == 0
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        align_faces(image[:, :, 0], pts, TEMPLATE, 150)


def test_sharpness_orders_sharp_above_blurred() -> None:
    rng = np.random.default_rng(3)
    sharp = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    values = sharpness(np.stack([sharp, blurred]))
    assert values[0] > 20 * values[1]


def test_pose_frontal_and_turned() -> None:
    frontal = TEMPLATE[None]
    turned = TEMPLATE.copy()
    turned[2, 0] += 30  # nose far towards one eye: a face turned to the side
    f, yaw, roll = pose(np.stack([frontal[0], turned]))
    assert f[0] > 0.95 and abs(yaw[0]) < 0.05 and abs(roll[0]) < 1
    assert f[1] < 0.3
    rolled = _rotate_scale(TEMPLATE - 75, 30.0, 1.0, (75.0, 75.0))
    assert pose(rolled[None])[2][0] == pytest.approx(30.0, abs=0.5)


def _detections(sizes: list[float], scores: list[float] | None = None) -> Detections:
    boxes, marks = [], []
    x = 0.0
    for s in sizes:
        boxes.append([x, 0, x + s, s])
        marks.append(TEMPLATE / 150 * s + np.array([x, 0]))
        x += s + 10
    return Detections(
        np.array(boxes, np.float32),
        np.array(scores or [0.99] * len(sizes), np.float32),
        np.array(marks, np.float32).reshape(-1, 5, 2),
    )


def _quality(size: float, score: float = 0.99, sharp: float = 200.0, frontal: float = 1.0):
    return FaceQuality(size, score, sharp, frontal, 0.0, 0.0)


def test_enrol_one_good_face() -> None:
    det = _detections([200])
    assert choose_enrolment_face(det, [_quality(200)], EnrolmentConfig()) == 0


@pytest.mark.parametrize(
    ("sizes", "quality", "reason"),
    [
        ([], [], "no_face"),
        ([200, 180], [_quality(200), _quality(180)], "multiple_faces"),
        ([30], [_quality(30)], "face_too_small"),
        ([200], [_quality(200, sharp=2.0)], "face_too_blurred"),
        ([200], [_quality(200, frontal=0.1)], "pose_not_frontal"),
        ([200], [_quality(200, score=0.5)], "low_detection_score"),
    ],
)
def test_enrol_rejections(sizes: list[float], quality: list[FaceQuality], reason: str) -> None:
    det = _detections(sizes) if sizes else Detections.empty()
    with pytest.raises(EnrolmentRejectedError) as info:
        choose_enrolment_face(det, quality, EnrolmentConfig())
    assert info.value.reason == reason


def test_enrol_picks_a_clearly_dominant_face() -> None:
    det = _detections([60, 220, 50])
    q = [_quality(60), _quality(220), _quality(50)]
    assert choose_enrolment_face(det, q, EnrolmentConfig()) == 1


def test_enrol_ignores_low_confidence_competitors() -> None:
    det = _detections([200, 190], [0.99, 0.5])
    q = [_quality(200), _quality(190, score=0.5)]
    assert choose_enrolment_face(det, q, EnrolmentConfig()) == 0


def test_assess_reports_every_figure() -> None:
    det = _detections([100, 20])
    chips = align_faces(np.zeros((200, 300, 3), np.uint8), det.landmarks, TEMPLATE, 150)
    q = assess(det, chips)
    assert [round(x.size_px) for x in q] == [100, 20]
    assert q[1].failures(QualityConfig(min_face_px=40))[0] == "face_too_small"
    figures = {"size_px", "score", "sharpness", "frontal", "yaw_ratio", "roll_deg"}
    assert set(q[0].as_dict()) == figures
    with pytest.raises(ValueError, match="detections but"):
        assess(det, chips[:1])
