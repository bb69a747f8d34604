"""The Zoho → Attio catalog reconcile (workflow 1) as an RQ job: one run at a time, then the next period's run.

Triggers (schedule, ``POST /admin/sync/services``, Zoho ``plan_*``/``addon_*``/``product_*`` events) all land
here. Runs never overlap: a run takes a non-blocking Redis lock, and a run that finds it taken ends at once as
``skipped`` (the run holding it reads the same catalogue). A failure (``ServiceUnavailable``) propagates, so RQ
retries the job; the re-run converges (``workers.workflows.catalog``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from integration.errors import ServiceUnavailable
from integration.locks import hold
from integration.queueing import JOB_TIMEOUT

from .. import runtime
from ..schedule import schedule_next
from ..workflows.catalog import WRITERS, AttioServices, ZohoCatalog, sync_services
from ._entry import entrypoint

__all__ = ["LOCK_NAME", "LOCK_TTL", "handle_catalog_sync", "run_catalog_sync"]

log = logging.getLogger(__name__)

LOCK_NAME = "catalog-sync"
LOCK_TTL = JOB_TIMEOUT + 60  # seconds; RQ stops a run at JOB_TIMEOUT, so a live run never loses its lock


def handle_catalog_sync(
    payload: dict[str, Any],
    *,
    zoho: ZohoCatalog,
    attio: AttioServices,
    redis: Redis,
    now: datetime,
    writers: Sequence[AttioServices] = (),
) -> dict[str, Any]:
    """Reconcile Attio ``services`` with Zoho unless another run holds the lock (then ``skipped``).

    ``writers``: more Attio clients to write through in parallel (``sync_services``).
    """
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold(redis, LOCK_NAME, ttl=LOCK_TTL, wait=0))
        except ServiceUnavailable:
            log.info("catalog sync skipped: another run holds the lock (trigger=%s)", payload.get("trigger"))
            return {"outcome": "skipped", "reason": "another catalog sync is running"}
        summary = sync_services(zoho=zoho, attio=attio, now=now, writers=writers)
    return {"outcome": "synced", **summary.as_dict()}


@entrypoint("catalog.sync")
def run_catalog_sync(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint: keep the periodic chain going, wire real clients, then delegate."""
    settings, connection = runtime.settings(), runtime.redis_connection()
    # First, so a run that fails or is skipped still leaves the next period's run in place.
    period = payload.get("period_start")
    schedule_next(settings, connection, period_of_run=period if isinstance(period, int) else None)
    return handle_catalog_sync(
        payload,
        zoho=runtime.zoho_client(),
        attio=runtime.attio_client(),
        redis=connection,
        now=datetime.now(UTC),
        writers=[runtime.attio_client() for _ in range(WRITERS)],
    )
