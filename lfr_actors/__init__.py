"""lfr_actors: live facial recognition for authorised deployments, on an actor microkernel."""

import os

__version__ = "0.1.0"

# OpenCV reads its image-size cap when it loads, and checks each image's declared size
# against it before allocating pixels: a small file claiming to be a huge image (a
# decompression bomb) is then refused cheaply. Set here, before any module imports cv2.
# The value is lfr_actors.models.images.MAX_PIXELS.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")
