"""Periodic jobs (the catalog reconcile), enqueued once per period however many workers run."""

from __future__ import annotations

import redis

from integration.config import Settings

__all__ = ["install_schedule"]


def install_schedule(settings: Settings, connection: redis.Redis) -> None:
    """Register the periodic catalog sync (built with workflow 1)."""
    return None
