"""The Zoho → Attio catalog sync (workflow 1) as an RQ job: one run at a time, then the next period's run.

Triggers (the schedule's tick, ``POST /admin/sync/services``, Zoho ``plan_*``/``addon_*``/``product_*`` events) all
land here, and cost Zoho calls only in proportion to what changed:

- an event naming its plan, addon or product mirrors that item only (``sync_item``: one Zoho read for a plan or an
  addon, the product's list pages for a product), at once;
- the schedule ticks every ``CATALOG_SYNC_INTERVAL_MINUTES``, and a tick reconciles in full only when the last
  complete full run began ``CATALOG_FULL_SYNC_HOURS`` ago or more (else it ends ``skipped`` without a call): Zoho's
  plan and addon lists cannot be filtered or sorted by modification time (their documented parameters are
  ``filter_by`` and ``product_id``), so there is no cheaper "what changed" read, and the full run is what heals
  an event Zoho never delivered. A tick that finds the full run due after a failed or deferred one retries it
  within a tick, not a day later;
- an admin run, or an event that names no item, reconciles in full.

Runs never overlap: a run takes a non-blocking Redis lock, and a scheduled or admin run that finds it taken ends at
once as ``skipped`` (the run holding it reads the same catalogue). A run started by a Zoho event instead retries
later (the full run holding the lock may have read Zoho before the change, and would otherwise write the old
values last), and is skipped if a complete full run started after its event arrived. A failure
(``ServiceUnavailable``) propagates, so RQ retries the job; the re-run converges (``workers.workflows.catalog``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from redis import Redis

from integration.errors import LockBusy
from integration.locks import catalog_lock, hold
from integration.observability import cron_checkin
from integration.queueing import JOB_TIMEOUT
from integration.worklane import BULK

from .. import runtime
from ..schedule import schedule_next
from ..workflows.catalog import WRITERS, AttioServices, CatalogItem, ZohoCatalog, sync_item, sync_services
from ._entry import entrypoint

__all__ = ["LAST_RUN_KEY", "LOCK_NAME", "LOCK_TTL", "MONITOR_SLUG", "catalog_item", "handle_catalog_sync",
           "run_catalog_sync"]

log = logging.getLogger(__name__)

LOCK_NAME = catalog_lock()
MONITOR_SLUG = "catalog-sync"  # Sentry cron monitor of the scheduled runs
LOCK_TTL = JOB_TIMEOUT + 60  # seconds; RQ stops a run at JOB_TIMEOUT, so a live run never loses its lock
LAST_RUN_KEY = "catalog-sync:last-run-started"  # epoch seconds when the last complete full run began reading
LAST_RUN_TTL = 7 * 24 * 3600  # seconds (at least twice the full period: a missing key only means "due")
_ITEM_KEYS: tuple[tuple[Literal["plan", "addon", "product"], str], ...] = (
    ("plan", "plan_code"), ("addon", "addon_code"), ("product", "product_id"))
CLOCK_SKEW = 5.0  # seconds between the web's and the workers' clocks that a skip must allow for


def handle_catalog_sync(
    payload: dict[str, Any],
    *,
    zoho: ZohoCatalog,
    attio: AttioServices,
    redis: Redis,
    now: datetime,
    writers: Sequence[AttioServices] = (),
    full_sync_hours: float = 0,
    tick_minutes: float = 0,
) -> dict[str, Any]:
    """Mirror an event's item, or reconcile in full when asked or due; one run at a time.

    A run that finds the lock taken is ``skipped``, except one started by a Zoho event, which retries (the run
    in progress may have read the catalogue before the event's change); an event's run is ``skipped`` too when
    a complete full run started after the event arrived. A scheduled tick reconciles only when the last complete
    full run began ``full_sync_hours`` ago (less half a tick, ``tick_minutes``, so a daily run stays daily).

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
        item = catalog_item(payload)
        if item is not None:
            summary = sync_item(item, zoho=zoho, attio=attio, now=now)
            return {"outcome": "mirrored", "item": f"{item[0]} {item[1]}", **summary.as_dict()}
        if payload.get("trigger") == "schedule":
            age = _age_of_last_run(redis, now)
            if age is not None and age + tick_minutes * 30 < full_sync_hours * 3600:
                log.info("catalog sync tick: the last full reconcile began %.1f h ago; next due after %s h",
                         age / 3600, full_sync_hours)
                return {"outcome": "skipped", "reason": f"full reconcile not due (last began {age / 3600:.1f} h "
                                                        f"ago, period {full_sync_hours} h)"}
        summary = sync_services(zoho=zoho, attio=attio, now=now, writers=writers)
        redis.set(LAST_RUN_KEY, now.timestamp(), ex=max(LAST_RUN_TTL, int(2 * full_sync_hours * 3600)))
    return {"outcome": "synced", **summary.as_dict()}


def catalog_item(payload: Mapping[str, Any]) -> CatalogItem | None:
    """The plan, addon or product a Zoho catalogue event names, or None (not an event, or no code in it).

    Zoho sends no catalogue events of its own; a Zoho workflow's webhook does, with a body its author wrote: the
    code is looked for where the default payload puts a resource (``data.plan.plan_code``; the intake schema
    folds a top-level ``plan`` into ``data``).
    """
    if payload.get("source") != "zoho":
        return None
    event_type = str(payload.get("event_type") or "")
    event = payload.get("event")
    data = event.get("data") if isinstance(event, Mapping) else None
    for kind, key in _ITEM_KEYS:
        if event_type.startswith(f"{kind}_"):
            ref = data.get(kind) if isinstance(data, Mapping) else None
            code = ref.get(key) if isinstance(ref, Mapping) else None
            text = str(code).strip() if isinstance(code, str | int) else ""
            return (kind, text) if text else None
    return None


def _age_of_last_run(redis: Redis, now: datetime) -> float | None:
    """Seconds since the last complete full run began, or None when none is on record."""
    raw = redis.get(LAST_RUN_KEY)
    return None if raw is None else now.timestamp() - float(raw)


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
            full_sync_hours=settings.catalog_full_sync_hours,
            tick_minutes=settings.catalog_sync_interval_minutes,
        )
