"""The Zoho → Attio catalog reconcile (workflow 1) as an RQ job: one run at a time, then the next period's run.

Triggers (schedule, ``POST /admin/sync/services``, Zoho ``plan_*``/``addon_*``/``product_*`` events) all land
here. Runs never overlap: a run takes a non-blocking Redis lock, and a scheduled or admin run that finds it
taken ends at once as ``skipped`` (the run holding it reads the same catalogue). A run started by a Zoho event
instead retries later, and is skipped if a complete run started after its event arrived, so a burst of events
costs one or two reads of the catalogue (Zoho's budget is shared with collection). A failure
(``ServiceUnavailable``) propagates, so RQ retries the job; the re-run converges (``workers.workflows.catalog``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from integration.errors import LockBusy
from integration.locks import catalog_lock, hold
from integration.observability import cron_checkin
from integration.queueing import JOB_TIMEOUT
from integration.worklane import BULK

from .. import runtime
from ..schedule import schedule_next
from ..workflows.catalog import WRITERS, AttioServices, ZohoCatalog, sync_services
from ._entry import entrypoint

__all__ = ["LOCK_NAME", "LOCK_TTL", "MONITOR_SLUG", "handle_catalog_sync", "run_catalog_sync"]

log = logging.getLogger(__name__)

LOCK_NAME = catalog_lock()
MONITOR_SLUG = "catalog-sync"  # Sentry cron monitor of the scheduled runs
LOCK_TTL = JOB_TIMEOUT + 60  # seconds; RQ stops a run at JOB_TIMEOUT, so a live run never loses its lock
LAST_RUN_KEY = "catalog-sync:last-run-started"  # epoch seconds when the last complete run began reading
LAST_RUN_TTL = 7 * 24 * 3600  # seconds
CLOCK_SKEW = 5.0  # seconds between the web's and the workers' clocks that a skip must allow for


def handle_catalog_sync(
    payload: dict[str, Any],
    *,
    zoho: ZohoCatalog,
    attio: AttioServices,
    redis: Redis,
    now: datetime,
    writers: Sequence[AttioServices] = (),
) -> dict[str, Any]:
    """Reconcile Attio ``services`` with Zoho, one run at a time.

    A run that finds the lock taken is ``skipped``, except one started by a Zoho event, which retries (the run
    in progress may have read the catalogue before the event's change); an event's run is ``skipped`` too when
    a complete run started after the event arrived.

    ``writers``: more Attio clients to write through in parallel (``sync_services``).
    """
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold(redis, LOCK_NAME, ttl=LOCK_TTL, wait=0))
        except LockBusy:
            if _received_at(payload) is not None:
                # The running sync may have read Zoho before this event's change: retry once it is done (the
                # check below then skips this run if that one started late enough to have seen the change).
                raise
            log.info("catalog sync skipped: another run holds the lock (trigger=%s)", payload.get("trigger"))
            return {"outcome": "skipped", "reason": "another catalog sync is running"}
        if _covered(payload, redis):
            log.info("catalog sync skipped: a later run already read the catalogue")
            return {"outcome": "skipped", "reason": "a run that started after this event already synced"}
        summary = sync_services(zoho=zoho, attio=attio, now=now, writers=writers)
        redis.set(LAST_RUN_KEY, now.timestamp(), ex=LAST_RUN_TTL)
    return {"outcome": "synced", **summary.as_dict()}


def _received_at(payload: Mapping[str, Any]) -> float | None:
    """When the webhook behind this job arrived (epoch seconds); None for the schedule, the CLI and admin runs."""
    raw = payload.get("received_at")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return None


def _covered(payload: Mapping[str, Any], redis: Redis) -> bool:
    """Whether the last complete run started after this job's event arrived (so it has seen the change)."""
    received = _received_at(payload)
    if received is None:
        return False
    last = redis.get(LAST_RUN_KEY)
    return last is not None and float(last) > received + CLOCK_SKEW


@entrypoint("catalog.sync", work=BULK)
def run_catalog_sync(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint: keep the periodic chain going, wire real clients, then delegate."""
    settings, connection = runtime.settings(), runtime.redis_connection()
    # First, so a run that fails or is skipped still leaves the next period's run in place.
    period = payload.get("period_start")
    schedule_next(settings, connection, period_of_run=period if isinstance(period, int) else None)
    checkin: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if payload.get("trigger") == "schedule" and settings.catalog_sync_interval_minutes:
        # Sentry's cron monitor notices a period without a run: the chain broken, or no worker running
        checkin = cron_checkin(
            MONITOR_SLUG,
            interval_minutes=settings.catalog_sync_interval_minutes,
            max_runtime_minutes=JOB_TIMEOUT // 60,
        )
    with checkin:
        return handle_catalog_sync(
            payload,
            zoho=runtime.zoho_client(),
            attio=runtime.attio_client(),
            redis=connection,
            now=datetime.now(UTC),
            writers=[runtime.attio_client() for _ in range(WRITERS)],
        )
