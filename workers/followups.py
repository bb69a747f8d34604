"""Jobs started by other jobs (a sweep, a decline, a saved card): a collection of an invoice, an activation of a
subscription, on the webhook queue, through the very handlers the webhooks use.

A follow-up's job id is deterministic (``collect-<invoice>-<tag>``, ``activate-<record>-<tag>``) and created with
RQ's ``unique=True``: the same follow-up asked for twice (two sweeps of one period, a retried job) exists once.
The money path does not rely on it: whatever the job id, the invoice's lock and charge intent allow one sale per
charge generation (``workers.workflows.collection``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from rq.exceptions import DuplicateJobError

from integration.queueing import FAILURE_TTL, JOB_TIMEOUT, RESULT_TTL, make_queue, retry_policy
from integration.routing import WEBHOOK_QUEUE, route_for

__all__ = ["collection_job_id", "enqueue_activation", "enqueue_collection", "enqueue_dunning_retry"]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# The handlers the webhooks of these events run (the routing table is the one place that names them).
_COLLECTION = route_for("zoho", "invoice_created").job  # type: ignore[union-attr]
_ACTIVATION = route_for("attio", "record.updated").job  # type: ignore[union-attr]


def collection_job_id(invoice_id: str, tag: str) -> str:
    """The id of a follow-up collection of ``invoice_id`` (``tag`` names why: a sweep's period, a retry)."""
    return _UNSAFE.sub("_", f"collect-{invoice_id}-{tag}")[:120]


def enqueue_collection(
    connection: redis.Redis,
    invoice_id: str,
    *,
    tag: str,
    source: str,
    retry_schedule: Sequence[int],
    at: datetime | None = None,
    event_time: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str | None:
    """Queue (or schedule ``at``) the collection of an invoice, as its ``invoice_created`` would; the job id, or
    None when that follow-up already exists."""
    job_id = collection_job_id(invoice_id, tag)
    event = {"event_type": "invoice_created", "data": {"invoice": {"invoice_id": invoice_id}}}
    if event_time:
        event["event_time"] = event_time
    return _enqueue(connection, _COLLECTION, job_id, source, "invoice_created", {"event": event, **(extra or {})},
                    retry_schedule, at)


def enqueue_dunning_retry(
    connection: redis.Redis, invoice_id: str, declines: int, *, retry_schedule: Sequence[int],
    at: datetime | None = None,
) -> str | None:
    """The dunning retry answering the ``declines``-th decline (one job whoever asks: its id names the decline),
    queued now or scheduled ``at``."""
    return enqueue_collection(connection, invoice_id, tag=f"dunning{declines}", source="dunning",
                              retry_schedule=retry_schedule, at=at, extra={"dunning_attempt": declines})


def enqueue_activation(
    connection: redis.Redis, record_id: str, *, tag: str, source: str, retry_schedule: Sequence[int]
) -> str | None:
    """Queue the activation of an Attio subscription, as its ``record.updated`` would; the job id, or None."""
    job_id = _UNSAFE.sub("_", f"activate-{record_id}-{tag}")[:120]
    event = {"event_type": "record.updated", "id": {"record_id": record_id}}
    return _enqueue(connection, _ACTIVATION, job_id, source, "record.updated", {"event": event}, retry_schedule, None)


def _enqueue(
    connection: redis.Redis, func: str, job_id: str, source: str, event_type: str, body: dict[str, Any],
    retry_schedule: Sequence[int], at: datetime | None,
) -> str | None:
    queue = make_queue(WEBHOOK_QUEUE, connection)
    payload = {"source": source, "event_type": event_type, "event_id": job_id,
               "received_at": datetime.now(UTC).isoformat(), **body}
    job = queue.create_job(
        func, args=(payload,), job_id=job_id, timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
        ttl=None, retry=retry_policy(retry_schedule), description=f"{source} {event_type} {job_id}",
        meta={"source": source, "event_type": event_type, "event_id": job_id},
    )
    try:
        if at is None:
            queue.enqueue_job(job, unique=True)
        else:
            queue.schedule_job(job, at, unique=True)
    except DuplicateJobError:
        return None
    log.info("%s: %s %s", source, job_id, "queued" if at is None else f"scheduled at {at.isoformat()}")
    return job_id
