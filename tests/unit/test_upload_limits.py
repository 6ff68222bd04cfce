"""Bounded uploads: pixel budget from the header, part cap, short refusals, two at a time."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import FormData
from pytest_aiohttp import AiohttpClient

from lfr_actors.api.app import create_app
from lfr_actors.api.watchlist import MAX_CONCURRENT_ENROLMENTS, MAX_LISTED_PROBLEMS, MAX_PARTS
from lfr_actors.control.paths import DeploymentError
from lfr_actors.control.registration import enrol_watchlist
from lfr_actors.enrolment import (
    MAX_ENROL_PIXELS,
    WORKING_PIXELS,
    enrol_image,
    pipeline_enroller,
    working_copy,
)
from lfr_actors.errors import ImageError
from lfr_actors.models.images import (
    ImageTooLargeError,
    check_pixels,
    decode_image,
    image_size,
)
from lfr_actors.store.audit import Actor
from lfr_actors.store.db import Database
from lfr_actors.store.deployments import Deployments
from lfr_actors.store.records import Enrolled
from lfr_actors.testing.declarations import make_deployment
from lfr_actors.topology.loader import load_watchlist
from tests.api_helpers import problem
from tests.topology_files import watchlist_entry, write_watchlist

FIELDS = {
    "display_name": "A Person",
    "category": "wanted",
    "legal_basis": "PACE 1984 s.24",
    "source": "custody record",
    "image_date": "2025-11-02",
}


def encoded(ext: str, shape: tuple[int, ...], params: list[int] | None = None) -> bytes:
    rng = np.random.default_rng(7)
    image = (rng.random(shape) * 255).astype(np.uint8)
    ok, data = cv2.imencode(ext, image, params or [])
    assert ok
    return bytes(data.tobytes())


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header (and one tiny IDAT) declaring ``width`` x ``height``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


FORMATS = [
    (".png", []),
    (".jpg", []),
    (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    (".bmp", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless
    (".tiff", []),
]
SHAPES = [(37, 53, 3), (301, 17), (20, 30, 4)]


@pytest.mark.parametrize(
    ("ext", "params", "shape"),
    [
        (ext, params, shape)
        for ext, params in FORMATS
        for shape in SHAPES
        if not (ext == ".jpg" and shape[-1] == 4)  # JPEG has no alpha channel
    ],
)
def test_the_header_gives_the_size_opencv_decodes(
    ext: str, params: list[int], shape: tuple[int, ...]
) -> None:
    data = encoded(ext, shape, params)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image_size(data) == (decoded.shape[1], decoded.shape[0]) == (shape[1], shape[0])


def test_real_photos_headers_match_their_pixels(shared_data: Path) -> None:
    checked = 0
    for path in sorted(shared_data.rglob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif"):
            continue
        data = path.read_bytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image_size(data) == (decoded.shape[1], decoded.shape[0]), path
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00",  # cut inside the header
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,  # no frame before the data ends
        b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20,  # scan data before any frame
        b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20,  # no key-frame start code
        b"II*\x00\x08\x00\x00\x00\x00\x00",  # a TIFF directory without sides
        b"not an image at all",
    ],
)
def test_a_header_that_does_not_say_its_size_gives_none(data: bytes) -> None:
    assert image_size(data) is None
    check_pixels(data, name="x", max_pixels=100)  # left to OpenCV's cap when not strict
    with pytest.raises(ImageError, match="header does not say its width and height"):
        check_pixels(data, name="x", max_pixels=100, strict=True)


def test_a_small_file_declaring_many_pixels_is_refused_before_decoding() -> None:
    bomb = png_declaring(7000, 7000)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(bomb, name="bomb.png", max_pixels=MAX_ENROL_PIXELS)
    assert (caught.value.width, caught.value.height) == (7000, 7000)
    assert str(caught.value) == (
        "bomb.png: 7000x7000 is 49,000,000 pixels, over the 24,000,000 accepted; downscale it first"
    )


def test_a_large_photo_is_scaled_down_to_find_the_face_and_kept_whole() -> None:
    image = np.zeros((4000, 6000, 3), np.uint8)
    copy = working_copy(image)
    assert copy.shape[0] * copy.shape[1] <= WORKING_PIXELS
    assert abs(copy.shape[1] / copy.shape[0] - 1.5) < 0.01
    small = np.zeros((100, 80, 3), np.uint8)
    assert working_copy(small) is small

    class Pipeline:
        seen: tuple[int, ...] = ()

        def enrol(self, picture: np.ndarray) -> Any:
            self.seen = picture.shape
            raise ImageError("stop here: the shape is what is under test")

    pipeline = Pipeline()
    with pytest.raises(ImageError, match="stop here"):
        enrol_image(pipeline, image)  # type: ignore[arg-type]
    assert pipeline.seen == copy.shape


def test_the_enroller_refuses_from_the_header_and_an_unknown_size() -> None:
    class Pipeline:
        def enrol(self, picture: np.ndarray) -> Any:
            raise AssertionError("never reached")

    enrol = pipeline_enroller(Pipeline())  # type: ignore[arg-type]
    with pytest.raises(ImageTooLargeError):
        enrol(png_declaring(5000, 5000), "big.png")
    with pytest.raises(ImageError, match="header does not say"):
        enrol(b"\xff\xd8\xff\xe0" + b"\x00" * 40, "odd.jpg")


# -- through the API ---------------------------------------------------------------------


class CountingEnroller:
    """A deterministic enroller that records how many run at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, data: bytes, name: str) -> Enrolled:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return Enrolled(
            image=data,
            image_type="image/jpeg",
            embeddings=np.ones((1, 128), np.float32),
            quality={},
        )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.sqlite3"
    now = time.time()
    with Database(path) as store:
        Deployments(store).create(
            make_deployment(
                "dep1", now - 60, now + 3600, authorised_by="Supt Baker", location="Stratford"
            ),
            actor=Actor("cli:test"),
        )
    return path


URL = "/v1/deployments/dep1/entries"


def upload(entry_id: str, *images: bytes, extra: int = 0) -> FormData:
    form = FormData(default_to_multipart=True)
    form.add_field("id", entry_id)
    for name, value in FIELDS.items():
        form.add_field(name, value)
    for i in range(extra):
        form.add_field(f"junk{i}", "x")
    for image in images:
        form.add_field("image", image, filename="p.jpg", content_type="image/jpeg")
    return form


async def test_an_image_over_the_pixel_budget_is_refused_before_the_enroller(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    enroller = CountingEnroller()
    client = await aiohttp_client(create_app(db, auth=False, enroller=enroller))
    body = await problem(await client.post(URL, data=upload("E1", png_declaring(7000, 7000))), 422)
    assert body["reason"] == "too_many_pixels"
    assert (body["width"], body["height"], body["max_pixels"]) == (7000, 7000, 24_000_000)
    assert "7000x7000, 49,000,000 pixels" in body["detail"]
    odd = await problem(await client.post(URL, data=upload("E1", b"\xff\xd8\xff\xe0" * 4)), 422)
    assert odd["reason"] == "unreadable"
    assert enroller.calls == 0
    ok = await client.post(URL, data=upload("E1", encoded(".jpg", (64, 48, 3))))
    assert ok.status == 201, await ok.text()
    assert enroller.calls == 1


async def test_too_many_parts_are_refused_early_with_a_short_answer(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await aiohttp_client(create_app(db, auth=False, enroller=CountingEnroller()))
    boundary = "b0undary"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\nv\r\n'.encode()
    body = part * 150_000 + f"--{boundary}--\r\n".encode()
    started = time.perf_counter()
    resp = await client.post(
        URL, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    raw = await resp.read()
    seconds = time.perf_counter() - started
    assert resp.status == 413, raw[:300]
    assert len(raw) < 1000
    found = await resp.json(content_type=None)
    assert found["max_parts"] == MAX_PARTS
    assert f"more than {MAX_PARTS} parts" in found["detail"]
    assert seconds < 5.0  # main took 12.7 s; the refusal comes after 17 parts, not 150,000


async def test_a_refusal_lists_at_most_ten_problems_and_counts_the_rest(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    client = await aiohttp_client(create_app(db, auth=False, enroller=CountingEnroller()))
    form = FormData(default_to_multipart=True)
    for i in range(MAX_PARTS):  # as many parts as accepted, every one unknown
        form.add_field(f"junk{i}", "x")
    body = await problem(await client.post(URL, data=form), 422)
    # 16 unknown parts and the missing image: 17 problems, 10 listed.
    assert len(body["invalid_params"]) == MAX_LISTED_PROBLEMS
    assert body["more_invalid_params"] == MAX_PARTS + 1 - MAX_LISTED_PROBLEMS
    assert body["invalid_params"][0]["name"] == "junk0"


async def test_at_most_two_uploads_are_enrolled_at_once(
    aiohttp_client: AiohttpClient, db: Path
) -> None:
    enroller = CountingEnroller(seconds=0.3)
    client = await aiohttp_client(create_app(db, auth=False, enroller=enroller))
    image = encoded(".jpg", (64, 48, 3))
    answers = await asyncio.gather(
        *(client.post(URL, data=upload(f"E{i}", image, image)) for i in range(6))
    )
    assert [a.status for a in answers] == [201] * 6
    assert enroller.calls == 12
    assert enroller.most == MAX_CONCURRENT_ENROLMENTS == 2


def test_a_watchlist_file_photo_over_the_budget_stops_up_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "huge.png").write_bytes(png_declaring(7000, 7000))
    write_watchlist(tmp_path / "w.yaml", watchlist_entry("e1", [str(tmp_path / "huge.png")]))

    class Pipeline:
        def enrol(self, picture: np.ndarray) -> Any:
            raise AssertionError("a refused photo is never decoded nor enrolled")

    with pytest.raises(DeploymentError) as caught:
        enrol_watchlist(load_watchlist(tmp_path / "w.yaml"), Pipeline())  # type: ignore[arg-type]
    assert f"  e1: {tmp_path / 'huge.png'}: 7000x7000 is 49,000,000 pixels, over the " in str(
        caught.value
    )
