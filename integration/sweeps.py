"""The reconciliation sweeps' names and the record of each one's last completed run (written by the sweeps in
the workers, read by ``/readyz`` and the CLI): the web side never imports worker code."""

from __future__ import annotations

import json
from typing import Any

import redis

from .routing import SWEEPS

__all__ = ["LAST_RUN_TTL", "SWEEPS", "last_run_key", "last_runs"]

LAST_RUN_TTL = 30 * 24 * 3600  # seconds


def last_run_key(sweep: str) -> str:
    """The Redis key holding a sweep's last completed run (its summary and ``finished_at``)."""
    return f"reconcile:{sweep}:last-run"


def last_runs(connection: redis.Redis) -> dict[str, dict[str, Any] | None]:
    """Each sweep's last completed run, or None when it never completed one."""
    raw = connection.mget([last_run_key(s) for s in SWEEPS])
    return {sweep: (json.loads(item) if item else None) for sweep, item in zip(SWEEPS, raw, strict=True)}
