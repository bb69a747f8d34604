"""``/healthz`` (the process is up, no Redis) and ``/readyz`` (Redis answers; queue figures for operators).

``/readyz`` is public (a load balancer polls it): without credentials it says only whether Redis answers. With
the operator's basic auth (throttled as ``/rq`` is) it adds today's provider calls by operation with Zoho against its
daily quota (``integration.clients.quota``, counters only), queue depths and registry counts, read as they are:
RQ's registry ``count`` runs the registry's cleanup, which fails abandoned jobs without the worker's exception
handler (no Sentry alert), and that must stay the workers' maintenance pass's job, not any caller's.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from redis.exceptions import RedisError

from ..auth import refusal
from ..clients.quota import usage, zoho_ledger
from ..extensions import queues, redis_conn, settings
from ..sweeps import last_runs

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process runs; never touches Redis."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int] | Response:
    """200 when Redis answers (with queue figures for an operator), else 503."""
    operator = request.authorization is not None
    if operator:
        refused = refusal(settings())
        if refused is not None:
            return refused
    try:
        redis_conn().ping()
        if not operator:
            return {"status": "ready"}, 200
        figures = {
            name: {
                "queued": q.count,
                "started": q.started_job_registry.get_job_count(cleanup=False),
                "scheduled": q.scheduled_job_registry.get_job_count(cleanup=False),
                "failed": q.failed_job_registry.get_job_count(cleanup=False),
            }
            for name, q in queues().items()
        }
        sweeps = last_runs(redis_conn())  # each sweep's last completed run (None: none yet)
        quota = usage(redis_conn(), zoho_ledger(settings(), redis_conn()))  # today's calls, from counters only
    except RedisError:
        return {"status": "unavailable"}, 503
    return {"status": "ready", "redis": "ok", "queues": figures, "sweeps": sweeps, "quota": quota}, 200
