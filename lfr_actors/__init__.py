"""lfr_actors: live facial recognition for authorised deployments, on an actor microkernel."""

import os

__version__ = "0.1.0"

# OpenCV reads its image-size cap when it loads, and checks each image's declared size
# against it before allocating pixels: a small file claiming to be a huge image (a
# decompression bomb) is then refused cheaply. Set here, before any module imports cv2.
# The value is lfr_actors.models.images.MAX_PIXELS.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")

# Ray starts a local instance of its own when one of its functions is called before
# ray.init (its "auto connect"). The product starts Ray itself, with its own settings and
# namespace, and a status read while Ray is not (or no longer) running must not start a
# stray one that keeps the process alive. Read by Ray when it loads, so set here first.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
