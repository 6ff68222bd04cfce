"""A local Ray session for the integration tests that start actors by hand."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ray


@contextlib.contextmanager
def local_ray(namespace: str) -> Iterator[None]:
    """Ray on two CPUs in ``namespace`` for the block, unless a session is already up (it
    is then used, and left running)."""
    started_here = not ray.is_initialized()
    if started_here:
        # "local": a Ray of its own, never one another test process started on this machine.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            namespace=namespace,
            log_to_driver=False,
        )
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()
