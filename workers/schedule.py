"""Periodic jobs (the catalog reconcile), enqueued once per period however many workers run.

Time is cut into periods of ``CATALOG_SYNC_INTERVAL_MINUTES`` (0 turns the schedule off), aligned on the epoch.
The run of the period starting at ``T`` is the RQ job ``catalog-sync-<T>``, created with RQ's ``unique=True``,
an atomic check-and-save in Redis: however many workers try, one job per period exists, and a second attempt
gets ``DuplicateJobError`` and does nothing. Its result is kept for at least two periods, so a worker starting
later in the same period still finds it.

``install_schedule`` (every worker start) makes sure the current period's run exists (queued now) and the next
one's (scheduled at its start, for RQ's scheduler). Every run then makes sure the period after it has its job,
so the chain goes on as long as any worker runs; a run still going when the next is due is not doubled, because
the job takes a non-blocking lock (``workers.jobs.catalog``).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rq.exceptions import DuplicateJobError

from integration.config import Settings
from integration.queueing import FAILURE_TTL, JOB_TIMEOUT, RESULT_TTL, make_queue, retry_policy
from integration.routing import CATALOG_QUEUE, CATALOG_SYNC

__all__ = ["JOB_PREFIX", "install_schedule", "period_job_id", "period_start", "schedule_next"]

log = logging.getLogger(__name__)

JOB_PREFIX = "catalog-sync-"


def _period(settings: Settings) -> int:
    """The period in seconds (0 = off)."""
    return max(0, settings.catalog_sync_interval_minutes) * 60


def period_start(moment: float, period: int) -> int:
    """The start (epoch seconds) of the period holding ``moment``."""
    return int(moment // period) * period


def period_job_id(start: int) -> str:
    """The job id of the period starting at ``start`` (RQ allows only ``[A-Za-z0-9_-]``)."""
    return f"{JOB_PREFIX}{start}"


def _ensure(settings: Settings, connection: redis.Redis, start: int, *, now: float) -> str | None:
    """Create the run of the period starting at ``start`` unless it exists; its id when this call created it."""
    period = _period(settings)
    queue = make_queue(CATALOG_QUEUE, connection)
    job_id = period_job_id(start)
    payload: dict[str, Any] = {
        "source": "schedule",
        "event_type": "catalog_sync",
        "event_id": job_id,
        "trigger": "schedule",
        "period_start": start,
    }
    job = queue.create_job(
        CATALOG_SYNC.job,
        args=(payload,),
        job_id=job_id,
        timeout=JOB_TIMEOUT,
        result_ttl=max(RESULT_TTL, 2 * period),  # the id must outlive its period: it is the "already done" mark
        failure_ttl=FAILURE_TTL,
        ttl=None,
        retry=retry_policy(settings.retry_schedule_seconds),
        description=f"scheduled catalog sync {datetime.fromtimestamp(start, UTC).isoformat()}",
        meta={"source": "schedule", "event_type": "catalog_sync", "event_id": job_id},
    )
    try:
        if start <= now:
            queue.enqueue_job(job, unique=True)
        else:
            queue.schedule_job(job, datetime.fromtimestamp(start, UTC), unique=True)
    except DuplicateJobError:
        return None
    log.info("catalog sync %s %s", job_id, "queued" if start <= now else "scheduled")
    return job_id


def install_schedule(settings: Settings, connection: redis.Redis, *, now: float | None = None) -> list[str]:
    """Make sure the current period's catalog sync exists (queued now) and the next one's (scheduled).

    Returns the ids of the jobs this call created (none when another worker already did, or the schedule is off).
    """
    period = _period(settings)
    if period == 0:
        return []
    moment = time.time() if now is None else now
    current = period_start(moment, period)
    created = [_ensure(settings, connection, start, now=moment) for start in (current, current + period)]
    return [job_id for job_id in created if job_id is not None]


def schedule_next(
    settings: Settings, connection: redis.Redis, *, period_of_run: int | None = None, now: float | None = None
) -> list[str]:
    """From a run: make sure the next period has its job (the one after ``period_of_run`` and after now)."""
    period = _period(settings)
    if period == 0:
        return []
    moment = time.time() if now is None else now
    starts = {period_start(moment, period) + period}
    if period_of_run is not None and period_of_run % period == 0 and period_of_run + period > moment:
        starts.add(period_of_run + period)  # a run started a little early (clock skew) still chains on
    created = [_ensure(settings, connection, start, now=moment) for start in sorted(starts)]
    return [job_id for job_id in created if job_id is not None]
