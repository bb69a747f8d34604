"""Periodic jobs (the catalog reconcile, the reconciliation sweeps), each enqueued once per period however many
workers run.

Each periodic job (a ``Periodic``) cuts time into periods of its own interval setting
(``CATALOG_SYNC_INTERVAL_MINUTES``, ``RECONCILE_INTERVAL_MINUTES``; 0 turns it off), aligned on the epoch. The run
of the period starting at ``T`` is the RQ job ``<name>-<T>`` (``catalog-sync-<T>``, ``reconcile-invoices-<T>``),
created with RQ's ``unique=True``, an atomic check-and-save in Redis: however many workers try, one job per period
exists, and a second attempt gets ``DuplicateJobError`` and does nothing. Its result is kept for at least two
periods, so a worker starting later in the same period still finds it.

``install_schedule`` (every worker start) makes sure each periodic job has its current period's run (queued now)
and the next one's (scheduled at its start, for RQ's scheduler). Every run then makes sure the period after it has
its job (``schedule_next``), so each chain goes on as long as any worker runs; a run still going when the next is
due is not doubled, because every periodic job takes a non-blocking lock (``workers.jobs.catalog``,
``workers.jobs.reconcile``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq.exceptions import DuplicateJobError

from integration.config import Settings
from integration.queueing import FAILURE_TTL, JOB_TIMEOUT, RESULT_TTL, make_queue, retry_policy
from integration.routing import CATALOG_SYNC, RECONCILE, SWEEPS, Route

__all__ = [
    "CATALOG",
    "PERIODIC",
    "Periodic",
    "install_schedule",
    "period_job_id",
    "period_start",
    "reconcile_periodic",
    "schedule_next",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    """A job run once per period: its name (the job id prefix and Sentry monitor slug), route and interval."""

    name: str
    route: Route
    event_type: str
    interval_setting: str  # the Settings field holding the period in minutes
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """The job id prefix of its runs."""
        return f"{self.name}-"

    def minutes(self, settings: Settings) -> int:
        """The interval in minutes (0 = off)."""
        return max(0, int(getattr(settings, self.interval_setting)))


CATALOG = Periodic("catalog-sync", CATALOG_SYNC, "catalog_sync", "catalog_sync_interval_minutes")
_SWEEPS = tuple(
    Periodic(f"reconcile-{sweep}", RECONCILE, "reconcile", "reconcile_interval_minutes", {"sweep": sweep})
    for sweep in SWEEPS
)
PERIODIC: tuple[Periodic, ...] = (CATALOG, *_SWEEPS)


def reconcile_periodic(sweep: str) -> Periodic:
    """The periodic job of one sweep."""
    return next(p for p in _SWEEPS if p.payload["sweep"] == sweep)


def period_start(moment: float, period: int) -> int:
    """The start (epoch seconds) of the period holding ``moment``."""
    return int(moment // period) * period


def period_job_id(start: int, periodic: Periodic = CATALOG) -> str:
    """The job id of the period starting at ``start`` (RQ allows only ``[A-Za-z0-9_-]``)."""
    return f"{periodic.prefix}{start}"


def _ensure(settings: Settings, connection: redis.Redis, periodic: Periodic, start: int, *, now: float) -> str | None:
    """Create the run of the period starting at ``start`` unless it exists; its id when this call created it."""
    period = periodic.minutes(settings) * 60
    queue = make_queue(periodic.route.queue, connection)
    job_id = period_job_id(start, periodic)
    payload: dict[str, Any] = {
        "source": "schedule",
        "event_type": periodic.event_type,
        "event_id": job_id,
        "trigger": "schedule",
        "period_start": start,
        **periodic.payload,
    }
    job = queue.create_job(
        periodic.route.job,
        args=(payload,),
        job_id=job_id,
        timeout=JOB_TIMEOUT,
        result_ttl=max(RESULT_TTL, 2 * period),  # the id must outlive its period: it is the "already done" mark
        failure_ttl=FAILURE_TTL,
        ttl=None,
        retry=retry_policy(settings.retry_schedule_seconds),
        description=f"scheduled {periodic.name} {datetime.fromtimestamp(start, UTC).isoformat()}",
        meta={"source": "schedule", "event_type": periodic.event_type, "event_id": job_id},
    )
    try:
        if start <= now:
            queue.enqueue_job(job, unique=True)
        else:
            queue.schedule_job(job, datetime.fromtimestamp(start, UTC), unique=True)
    except DuplicateJobError:
        return None
    log.info("%s %s %s", periodic.name, job_id, "queued" if start <= now else "scheduled")
    return job_id


def install_schedule(
    settings: Settings, connection: redis.Redis, *, now: float | None = None, jobs: tuple[Periodic, ...] = PERIODIC
) -> list[str]:
    """Make sure each periodic job has its current period's run (queued now) and the next one's (scheduled).

    Returns the ids of the jobs this call created (none when another worker already did, or a schedule is off).
    """
    moment = time.time() if now is None else now
    created: list[str | None] = []
    for periodic in jobs:
        period = periodic.minutes(settings) * 60
        if period == 0:
            continue
        current = period_start(moment, period)
        created += [_ensure(settings, connection, periodic, start, now=moment) for start in (current, current + period)]
    return [job_id for job_id in created if job_id is not None]


def schedule_next(
    settings: Settings,
    connection: redis.Redis,
    *,
    periodic: Periodic = CATALOG,
    period_of_run: int | None = None,
    now: float | None = None,
) -> list[str]:
    """From a run: make sure the next period has its job (the one after ``period_of_run`` and after now)."""
    period = periodic.minutes(settings) * 60
    if period == 0:
        return []
    moment = time.time() if now is None else now
    starts = {period_start(moment, period) + period}
    if period_of_run is not None and period_of_run % period == 0 and period_of_run + period > moment:
        starts.add(period_of_run + period)  # a run started a little early (clock skew) still chains on
    created = [_ensure(settings, connection, periodic, start, now=moment) for start in sorted(starts)]
    return [job_id for job_id in created if job_id is not None]
