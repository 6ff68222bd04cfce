"""Every ``web.AppKey`` of the API: what the application holds, typed, in one place.

:func:`lfr_actors.api.app.create_app` and its ``cleanup_ctx`` fill them; handlers read
them. The types are imported for type checking only, so any module of the API can import
its keys from here without importing the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from lfr_actors.api.status import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from lfr_actors.api.status import StatusCache, StatusSource, StoreHealth
    from lfr_actors.enrolment import Enroller
    from lfr_actors.store.adjudications import Adjudications
    from lfr_actors.store.alerts import AlertStore
    from lfr_actors.store.audit import AuditLog
    from lfr_actors.store.deployments import Deployments
    from lfr_actors.store.monitoring import MonitoringCategories
    from lfr_actors.store.retention import Holds
    from lfr_actors.store.tokens import TokenStore


@dataclass(frozen=True)
class ApiSettings:
    """What the application was built with."""

    store_path: Path
    poll_interval_s: float = 0.2
    heartbeat_s: float = 15.0
    status_interval_s: float = DEFAULT_INTERVAL_S


SETTINGS: web.AppKey[ApiSettings] = web.AppKey("settings")
"""What the application was built with."""
STORE: web.AppKey[AlertStore] = web.AppKey("store")
"""The alert store, read-only (the alert actor writes alerts)."""
TOKENS: web.AppKey[TokenStore] = web.AppKey("tokens")
"""API tokens, over the API's writing connection."""
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")
"""The audit log, over the API's writing connection."""
ADJUDICATIONS: web.AppKey[Adjudications] = web.AppKey("adjudications")
"""Adjudications, over the API's writing connection."""
HOLDS: web.AppKey[Holds] = web.AppKey("holds")
"""Evidential holds, over the API's writing connection."""
DEPLOYMENTS: web.AppKey[Deployments] = web.AppKey("deployments")
"""Deployments and their watchlists, over the API's writing connection."""
MONITORING: web.AppKey[MonitoringCategories] = web.AppKey("monitoring")
"""The equality-monitoring category lists, over the API's writing connection."""
STORE_HEALTH: web.AppKey[StoreHealth] = web.AppKey("store_health")
"""The API's own view of whether the store can be written."""
STATUS: web.AppKey[StatusSource | None] = web.AppKey("status")
"""Where the deployment's status comes from (None: no deployment attached)."""
STATUS_CACHE: web.AppKey[StatusCache] = web.AppKey("status_cache")
"""The status as last gathered in the background."""
METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics")
"""The application's own Prometheus registry."""
ENROLLER: web.AppKey[Enroller | None] = web.AppKey("enroller")
"""Turns uploaded images into watchlist templates (None: uploads answer 503)."""
ENROL_SLOTS: web.AppKey[asyncio.Semaphore] = web.AppKey("enrol_slots")
"""How many uploads may be enrolled at once."""
AUTH_ENABLED: web.AppKey[bool] = web.AppKey("auth_enabled")
"""Whether requests need a bearer token (off in tests and benchmarks only)."""
