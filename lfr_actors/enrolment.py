"""Turning watchlist photos into what an entry keeps, for the API and for ``lfr up`` alike.

A photo goes through the face pipeline's enrolment rules (:meth:`FacePipeline.enrol`); what
an entry keeps of it is its embedding (a template) and, of its first photo, the image
re-encoded as JPEG, so no EXIF data (a GPS position, say) is stored. Both the API's upload
route and the watchlist file's enrolment at start-up go through :func:`enrol_image`.

Two budgets bound what a photo costs, because a small file may decode to a huge image
(a 150 KB PNG can declare 49 megapixels) and the face detector's memory grows with the
pixels it is given (measured: 1.4 GB more at 24 MP, and ONNX Runtime keeps it):

- :data:`MAX_ENROL_PIXELS` (24 MP): a photo whose header declares more is refused before
  it is decoded. That is a full-resolution 6000 x 4000 photo from a 24-megapixel camera;
  a custody photo is one to five megapixels, and no face photo needs more.
- :data:`WORKING_PIXELS` (2 MP, 1732 x 1155 at 3:2): a larger photo is scaled down to
  this before the face is found and aligned, so the detector's memory stays that of a
  2 MP photo (measured: the process settles about 110 MB above its size after small
  photos, instead of growing by 1.4 GB). A portrait's face is then still hundreds of
  pixels wide, far above the 60 pixels enrolment asks for and the 150-pixel chip the
  default embedder aligns to; a face that falls below the minimum only after scaling was
  under 210 pixels wide in a 24 MP photo (3.5 % of its width), too small a part of the
  photo to enrol from anyway. The image kept (re-encoded as JPEG) is the photo as
  uploaded, and the quality figures stored with a template are measured on the working
  copy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from lfr_actors.errors import LfrError
from lfr_actors.models.images import (
    check_pixels,
    decode_image,
    encode_jpeg,
    release_freed_memory,
    sniff_format,
)
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.types import UInt8Array
from lfr_actors.store.records import Enrolled

Enroller = Callable[[bytes, str], Enrolled]
"""Turns an encoded photo (bytes, a name for errors) into one template and its image;
raises :class:`~lfr_actors.errors.ImageError` or
:class:`~lfr_actors.errors.EnrolmentRejectedError`."""


class EnrolmentUnavailableError(LfrError):
    """The enrolment models are not loaded (yet); the API answers 503."""


MAX_ENROL_PIXELS = 24_000_000
"""The most pixels an enrolment photo may declare (see the module docstring)."""
WORKING_PIXELS = 2_000_000
"""Photos larger than this are scaled down to it to find and align the face."""
_TRIM_ABOVE_PIXELS = 4_000_000
"""After a photo this large, freed memory is handed back to the system."""


def working_copy(image: UInt8Array, max_pixels: int = WORKING_PIXELS) -> UInt8Array:
    """``image``, scaled down (aspect kept, area-averaged) to at most ``max_pixels``."""
    height, width = image.shape[:2]
    if height * width <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (height * width))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def enrol_image(pipeline: FacePipeline, image: UInt8Array) -> Enrolled:
    """One decoded RGB photo as an entry keeps it: one template and the JPEG.

    The face is found and aligned on :func:`working_copy`; the JPEG is of ``image``.
    """
    face = pipeline.enrol(working_copy(image))
    return Enrolled(
        image=encode_jpeg(image),
        image_type="image/jpeg",
        embeddings=face.embedding.reshape(1, -1),
        quality=face.quality.as_dict(),
    )


def pipeline_enroller(pipeline: FacePipeline) -> Enroller:
    """An :data:`Enroller` over a face pipeline (one enrolment at a time).

    Photos over :data:`MAX_ENROL_PIXELS` are refused from their header
    (:class:`~lfr_actors.models.images.ImageTooLargeError`), and one whose header does not
    say its size is not decoded. Callers bound how many run at once (the API: two).
    """
    lock = threading.Lock()

    def enrol(data: bytes, name: str) -> Enrolled:
        if sniff_format(data) is not None:  # else decode_image says what it is not
            check_pixels(data, name=name, max_pixels=MAX_ENROL_PIXELS, strict=True)
        image = decode_image(data, name=name, max_pixels=MAX_ENROL_PIXELS)
        pixels = image.shape[0] * image.shape[1]
        try:
            with lock:
                return enrol_image(pipeline, image)
        finally:
            del image
            if pixels > _TRIM_ABOVE_PIXELS:
                release_freed_memory()

    return enrol


def combine(photos: Sequence[Enrolled]) -> Enrolled:
    """Several photos of one person as one entry: every template, the first photo shown."""
    if not photos:
        raise ValueError("an entry needs at least one photo")
    first = photos[0]
    return Enrolled(
        image=first.image,
        image_type=first.image_type,
        embeddings=np.concatenate([p.embeddings for p in photos]).astype(np.float32),
        quality=first.quality,
    )
