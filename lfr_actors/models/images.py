"""Reading images into RGB uint8 arrays, with errors that name the file and the reason."""

from __future__ import annotations

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


def decode_image(data: bytes, *, name: str) -> UInt8Array:
    """Decode an encoded image to an ``H x W x 3`` RGB uint8 array.

    Greyscale is expanded to three channels, alpha is dropped, 16-bit is scaled to 8-bit and
    EXIF orientation is applied. ``name`` appears in every error message.
    """
    if not data:
        raise ImageError(f"{name}: the file is empty")
    kind = sniff_format(data)
    if kind is None:
        raise ImageError(
            f"{name}: not a supported image (JPEG, PNG, BMP, WebP or TIFF expected; "
            f"the file starts with {data[:8]!r})"
        )
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
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(
            f"{name}: {image.shape[1]}x{image.shape[0]} is over {MAX_PIXELS:,} pixels; "
            "downscale it first"
        )
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def encode_jpeg(image: UInt8Array, quality: int = 95) -> bytes:
    """An RGB image as JPEG; what is kept of a photo carries no EXIF data (no location)."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ImageError("the image could not be encoded as JPEG")
    return bytes(encoded.tobytes())


def load_image(path: Path) -> UInt8Array:
    """Read and decode an image file to RGB uint8 (see :func:`decode_image`)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a folder, not an image file") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return decode_image(data, name=str(path))
