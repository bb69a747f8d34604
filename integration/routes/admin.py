"""``/admin``: operator actions; ``POST /admin/sync/services`` enqueues a catalog reconcile, ``POST /admin/reconcile``
the reconciliation sweeps (one job per sweep).

Basic auth is enforced app-wide for the prefix (``auth.require_auth_under``), unknown paths and methods included;
a request another site's page sends (basic auth is replayed by the browser) is refused 403 (``auth.cross_site``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from ..auth import cross_site
from ..extensions import queues, settings
from ..queueing import enqueue_job
from ..routing import CATALOG_QUEUE, CATALOG_SYNC, RECONCILE, SWEEPS

__all__ = ["bp"]

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def _same_site_only() -> Response | None:
    return cross_site()


@bp.post("/sync/services")
def sync_services() -> tuple[dict[str, Any], int]:
    """Enqueue a full Zoho → Attio catalog reconcile; 202 with the job id."""
    job_id = enqueue_job(
        queues()[CATALOG_QUEUE],
        CATALOG_SYNC.job,
        {"trigger": "admin"},
        retry_schedule=settings().retry_schedule_seconds,
        meta={"source": "admin", "event_type": "sync_services"},
        description="admin sync services",
    )
    return {"status": "accepted", "jobs": [job_id]}, 202


@bp.post("/reconcile")
def reconcile() -> tuple[dict[str, Any], int]:
    """Enqueue every reconciliation sweep (``all``); 202 with the job ids."""
    job_ids = [
        enqueue_job(
            queues()[RECONCILE.queue],
            RECONCILE.job,
            {"trigger": "admin", "sweep": sweep},
            retry_schedule=settings().retry_schedule_seconds,
            meta={"source": "admin", "event_type": "reconcile"},
            description=f"admin reconcile {sweep}",
        )
        for sweep in SWEEPS
    ]
    return {"status": "accepted", "jobs": job_ids}, 202
