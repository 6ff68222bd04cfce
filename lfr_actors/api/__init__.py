"""The HTTP API (aiohttp): alerts (list, get, crop, live stream), health and status."""

from __future__ import annotations

from lfr_actors.api.app import create_app

__all__ = ["create_app"]
