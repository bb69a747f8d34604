"""``/healthz`` (the process is up, no Redis) and ``/readyz`` (Redis answers; queue depths, failed counts)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from redis.exceptions import RedisError

from ..extensions import queues, redis_conn
from ..sweeps import last_runs

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process runs; never touches Redis."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """200 with queue figures when Redis answers, else 503."""
    try:
        redis_conn().ping()
        figures = {
            name: {
                "queued": q.count,
                "started": q.started_job_registry.count,
                "scheduled": q.scheduled_job_registry.count,
                "failed": q.failed_job_registry.count,
            }
            for name, q in queues().items()
        }
        sweeps = last_runs(redis_conn())  # each sweep's last completed run (None: none yet)
    except RedisError as exc:
        return {"status": "unavailable", "redis": type(exc).__name__}, 503
    return {"status": "ready", "redis": "ok", "queues": figures, "sweeps": sweeps}, 200
