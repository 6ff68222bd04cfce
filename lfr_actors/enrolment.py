"""Turning watchlist photos into what an entry keeps, for the API and for ``lfr up`` alike.

A photo goes through the face pipeline's enrolment rules (:meth:`FacePipeline.enrol`); what
an entry keeps of it is its embedding (a template) and, of its first photo, the image
re-encoded as JPEG, so no EXIF data (a GPS position, say) is stored. Both the API's upload
route and the watchlist file's enrolment at start-up go through :func:`enrol_image`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from lfr_actors.errors import LfrError
from lfr_actors.models.images import decode_image, encode_jpeg
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.models.types import UInt8Array
from lfr_actors.store.deployments import Enrolled

Enroller = Callable[[bytes, str], Enrolled]
"""Turns an encoded photo (bytes, a name for errors) into one template and its image;
raises :class:`~lfr_actors.errors.ImageError` or
:class:`~lfr_actors.errors.EnrolmentRejectedError`."""


class EnrolmentUnavailableError(LfrError):
    """The enrolment models are not loaded (yet); the API answers 503."""


def enrol_image(pipeline: FacePipeline, image: UInt8Array) -> Enrolled:
    """One decoded RGB photo as an entry keeps it: one template and the JPEG."""
    face = pipeline.enrol(image)
    return Enrolled(
        image=encode_jpeg(image),
        image_type="image/jpeg",
        embeddings=face.embedding.reshape(1, -1),
        quality=face.quality.as_dict(),
    )


def pipeline_enroller(pipeline: FacePipeline) -> Enroller:
    """An :data:`Enroller` over a face pipeline (one enrolment at a time)."""
    lock = threading.Lock()

    def enrol(data: bytes, name: str) -> Enrolled:
        image = decode_image(data, name=name)
        with lock:
            return enrol_image(pipeline, image)

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
