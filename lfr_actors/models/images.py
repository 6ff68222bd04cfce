"""Reading images into RGB uint8 arrays, with errors that name the file and the reason.

Every decode first reads the image's dimensions from its header (:func:`image_size`,
a few dozen bytes; no pixel is decoded) and refuses an image over its pixel budget
before any memory is spent on it: a 150 KB PNG may declare 49 megapixels, which decoded
is 150 MB per copy and gigabytes in the face detector. OpenCV's own cap
(:data:`MAX_PIXELS`) stays behind it for a header this module cannot read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from lfr_actors.errors import ImageError
from lfr_actors.models.types import UInt8Array

MAX_PIXELS = 50_000_000
"""The largest image decoded; also OpenCV's cap (set in ``lfr_actors/__init__.py``)."""

# What OpenCV decodes and we accept, by magic bytes (the suffix is not trusted).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"RIFF", "WebP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """The image format named by ``data``'s first bytes, or None if it is not one we read."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            if name == "WebP" and data[8:12] != b"WEBP":
                return None
            return name
    return None


class ImageTooLargeError(ImageError):
    """An image declares more pixels than the budget it is decoded under."""

    def __init__(self, name: str, width: int, height: int, max_pixels: int) -> None:
        super().__init__(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the "
            f"{max_pixels:,} accepted; downscale it first"
        )
        self.width = width
        self.height = height
        self.max_pixels = max_pixels


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the image's header declares them, or None if it cannot be read.

    Reads only the header of the formats :func:`sniff_format` names (for TIFF, the first
    image's): nothing is decoded, so this costs microseconds whatever the image claims.
    """
    try:
        kind = sniff_format(data)
        if kind == "PNG":
            if data[12:16] != b"IHDR":
                return None
            return _positive(*struct.unpack(">II", data[16:24]))
        if kind == "JPEG":
            return _jpeg_size(data)
        if kind == "BMP":
            (header,) = struct.unpack("<I", data[14:18])
            if header == 12:  # the old OS/2 header: 16-bit sides
                return _positive(*struct.unpack("<HH", data[18:22]))
            width, height = struct.unpack("<ii", data[18:26])
            return _positive(width, abs(height))  # negative: stored top-down
        if kind == "WebP":
            return _webp_size(data)
        if kind == "TIFF":
            return _tiff_size(data)
    except struct.error:  # too short for what its header says
        return None
    return None


def check_pixels(data: bytes, *, name: str, max_pixels: int, strict: bool = False) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels.

    Raises :class:`ImageTooLargeError` over the budget; with ``strict``, also
    :class:`ImageError` when the header cannot be read (for uploads: an image whose size
    cannot be known is not decoded). Without ``strict`` such an image is left to OpenCV's
    own cap, :data:`MAX_PIXELS`.
    """
    size = image_size(data)
    if size is None:
        if strict:
            raise ImageError(
                f"{name}: the {sniff_format(data) or 'image'} header does not say its width "
                "and height, or is damaged"
            )
        return
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(name, width, height, max_pixels)


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


_JPEG_FRAMES = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)}) | {
    0xCD,
    0xCE,
    0xCF,
}
"""The start-of-frame markers (baseline, progressive, lossless, arithmetic) that carry
the image's dimensions; 0xC4, 0xC8 and 0xCC are other segments in that range."""


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length follows
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return _positive(width, height)  # height 0: defined later (DNL), not accepted
        if marker in (0xD9, 0xDA) or length < 2:  # end, or scan data before any frame
            return None
        at += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: a key frame's 14-bit sides after its start code
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return _positive(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":  # lossless: 14-bit sides minus one, packed after 0x2f
        if data[20] != 0x2F:
            return None
        (bits,) = struct.unpack("<I", data[21:25])
        return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":  # extended: a 24-bit canvas, sides minus one
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return (width, height)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag in (256, 257):
            if kind == 3:  # SHORT
                (found[tag],) = struct.unpack(order + "H", data[at + 8 : at + 10])
            elif kind == 4:  # LONG
                (found[tag],) = struct.unpack(order + "I", data[at + 8 : at + 12])
    if 256 not in found or 257 not in found:
        return None
    return _positive(found[256], found[257])


def decode_image(data: bytes, *, name: str, max_pixels: int = MAX_PIXELS) -> UInt8Array:
    """Decode an encoded image to an ``H x W x 3`` RGB uint8 array.

    Greyscale is expanded to three channels, alpha is dropped, 16-bit is scaled to 8-bit and
    EXIF orientation is applied. ``name`` appears in every error message. An image whose
    header declares more than ``max_pixels`` (at most :data:`MAX_PIXELS`) is refused with
    :class:`ImageTooLargeError` before anything is decoded.
    """
    if not data:
        raise ImageError(f"{name}: the file is empty")
    kind = sniff_format(data)
    if kind is None:
        raise ImageError(
            f"{name}: not a supported image (JPEG, PNG, BMP, WebP or TIFF expected; "
            f"the file starts with {data[:8]!r})"
        )
    max_pixels = min(max_pixels, MAX_PIXELS)
    check_pixels(data, name=name, max_pixels=max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ImageError(
                f"{name}: the {kind} declares more than {MAX_PIXELS:,} pixels; downscale it first"
            ) from None
        raise ImageError(f"{name}: the {kind} data cannot be decoded") from None
    if decoded is None:
        raise ImageError(f"{name}: the {kind} data is corrupt or truncated and cannot be decoded")
    image = np.asarray(decoded)
    if image.dtype == np.uint16:
        image = (image.astype(np.uint16) >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"{name}: unexpected decoded shape {image.shape}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageTooLargeError(name, image.shape[1], image.shape[0], max_pixels)
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def encode_jpeg(image: UInt8Array, quality: int = 95) -> bytes:
    """An RGB image as JPEG; what is kept of a photo carries no EXIF data (no location)."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ImageError("the image could not be encoded as JPEG")
    return bytes(encoded.tobytes())


def release_freed_memory() -> None:
    """Give memory freed by large decodes back to the operating system, where glibc kept it.

    glibc's allocator keeps freed heap pages for reuse; after a burst of large images that
    can be hundreds of megabytes the process holds for nothing. ``malloc_trim(0)`` returns
    them. Does nothing on a C library without it.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _find_malloc_trim()


def load_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> UInt8Array:
    """Read and decode an image file to RGB uint8 (see :func:`decode_image`)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a folder, not an image file") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return decode_image(data, name=str(path), max_pixels=max_pixels)
