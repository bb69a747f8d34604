"""The reconciliation sweeps as RQ jobs: one run at a time per sweep, then the next period's run.

Triggers (the schedule, ``POST /admin/reconcile``) land here with ``{"sweep": <name>}``. A run takes the sweep's
non-blocking lock; a run that finds it taken ends at once as ``skipped`` (the run holding it does the same work).
The run's job id is its identity: an RQ retry of an interrupted run resumes where it stopped. Each period's job
gets a Sentry cron check-in, so a period without a run (the chain broken, no worker) is noticed.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job

from integration.errors import ServiceUnavailable
from integration.locks import hold, sweep_lock
from integration.observability import cron_checkin
from integration.queueing import JOB_TIMEOUT
from integration.worklane import BULK

from .. import runtime
from ..schedule import reconcile_periodic, schedule_next
from ..workflows.reconcile import SWEEP_FUNCTIONS, SweepContext, run_sweep
from ._entry import entrypoint

__all__ = ["LOCK_TTL", "handle_reconcile", "run_reconcile"]

log = logging.getLogger(__name__)

LOCK_TTL = JOB_TIMEOUT + 60  # seconds; RQ stops a run at JOB_TIMEOUT, so a live run never loses its lock


def handle_reconcile(payload: dict[str, Any], *, ctx: SweepContext) -> dict[str, Any]:
    """Run the sweep the payload names, unless another run of it holds its lock (then ``skipped``)."""
    sweep = str(payload.get("sweep"))
    if sweep not in SWEEP_FUNCTIONS:
        return {"outcome": "ignored", "reason": f"no sweep named {sweep!r}"}
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold(ctx.connection, sweep_lock(sweep), ttl=LOCK_TTL, wait=0))
        except ServiceUnavailable:
            log.info("%s sweep skipped: another run holds its lock", sweep)
            return {"outcome": "skipped", "sweep": sweep, "reason": "another run of this sweep is going on"}
        report = run_sweep(sweep, ctx)
    return {"outcome": "swept", **report.as_dict()}


@entrypoint("reconcile.sweep", work=BULK)  # sweeps yield to charges in the shared budgets
def run_reconcile(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint: keep the periodic chain going, wire real clients, then delegate."""
    settings, connection = runtime.settings(), runtime.redis_connection()
    sweep = str(payload.get("sweep"))
    scheduled = payload.get("trigger") == "schedule" and sweep in SWEEP_FUNCTIONS
    period = payload.get("period_start")
    if scheduled:  # first, so a run that fails or is skipped still leaves the next period's run in place
        schedule_next(settings, connection, periodic=reconcile_periodic(sweep),
                      period_of_run=period if isinstance(period, int) else None)
    job = get_current_job()
    run_id = job.id if job is not None else f"reconcile-{sweep}-{datetime.now(UTC).timestamp():.0f}"
    ctx = SweepContext.from_settings(
        settings, zoho=runtime.zoho_client(), attio=runtime.attio_client(), braintree=runtime.braintree_client(),
        connection=connection, now=datetime.now(UTC), run_id=run_id,
        tag=f"r{period}" if isinstance(period, int) else run_id.rsplit("-", 1)[-1],
    )
    checkin: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if scheduled and settings.reconcile_interval_minutes:
        checkin = cron_checkin(f"reconcile-{sweep}", interval_minutes=settings.reconcile_interval_minutes,
                               max_runtime_minutes=JOB_TIMEOUT // 60)
    with checkin:
        return handle_reconcile(payload, ctx=ctx)
