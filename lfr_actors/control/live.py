"""What a running deployment knows: the state the controller's parts share.

One :class:`Live` per :class:`lfr_actors.control.Deployment`, created with it and
changed only by the controller's own parts (registration, the reconcile loop, the
lifecycle); the status reads it. Nothing here talks to Ray or the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lfr_actors.control.totals import CameraTotals
from lfr_actors.models.pipeline import FacePipeline
from lfr_actors.store.db import Database
from lfr_actors.store.records import Enrolled, StaleEntry


@dataclass
class Live:
    """The running deployment's state, from the API's bind to the last drain."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to drain and stop (a signal, ``lfr down``, every file source ended)."""
    runner: web.AppRunner | None = None
    api_url: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    """The tasks :meth:`Deployment.run` starts once every actor is up (empty before)."""
    reconciler: asyncio.Task[None] | None = None
    """The reconcile loop (:mod:`lfr_actors.control.follow`), running from the API's bind."""
    started_at: float = field(default_factory=time.time)
    pipeline: FacePipeline | None = None
    enroller: Callable[[bytes, str], Enrolled] | None = None
    db: Database | None = None
    indexed: set[str] = field(default_factory=set)
    local_token_id: str | None = None
    revision: int = -1
    """The watchlist revision the index was last brought in line with."""
    threshold_revision: int = -1
    """The store's revision when the thresholds were last given to the actors."""
    actors_started: bool = False
    """Every actor is started: the reconcile loop follows the store for them."""
    cameras_wanted: bool = False
    """Set by :meth:`Deployment.run`: the cameras are to run (``serve`` runs none)."""
    closing: bool = False
    closed: bool = False
    threshold: float | None = None
    entry_thresholds: dict[str, float] = field(default_factory=dict)
    counted: tuple[int, int, int] = (0, 0, 0)
    """Frames, faces and tracks the store's record already has from this run's cameras."""
    camera_totals: CameraTotals = field(default_factory=CameraTotals)
    damaged: dict[str, str] = field(default_factory=dict)
    stale: tuple[StaleEntry, ...] = ()
    """Active entries left out of the index: approved too long ago (``store.freshness``)."""
    next_stale_at: float | None = None
    """When the next indexed entry goes stale (Unix seconds): the index is reloaded then."""
    webhooks: Callable[[], list[dict[str, Any]]] | None = None
    """Each webhook's delivery state for the status (:mod:`lfr_actors.control.webhooks`)."""
    alert_outputs: Callable[[], list[dict[str, Any]]] | None = None
    """How stdout's alerts and the ``--alerts-jsonl`` file fare (:mod:`...jsonl_sink`)."""
