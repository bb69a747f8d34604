"""Zoho ``invoice_created`` → one Braintree charge → a Zoho payment → Attio (workflow 3); also every follow-up
collection (a sweep's, a dunning retry, a saved card's), which arrive in the same shape.

A soft decline's next attempt is scheduled here, at the time its dunning entry names (``workers.dunning``); the
invoices sweep enqueues any due retry whose job went missing, under the same job id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from integration.errors import PayloadInvalid

from .. import runtime
from ..followups import enqueue_dunning_retry
from ..providers import AttioLike, BraintreeCharger, ZohoBooks
from ..records import event_instant
from ..workflows.collection import DEFAULT_POLICY, Policy, collect_invoice
from ._entry import entrypoint

__all__ = ["handle_invoice_created", "run_invoice_created", "schedule_retry"]


def handle_invoice_created(
    payload: dict[str, Any], *, zoho: ZohoBooks, braintree: BraintreeCharger, attio: AttioLike, connection: redis.Redis,
    policy: Policy = DEFAULT_POLICY, retry_schedule: Sequence[int] = (),
) -> dict[str, Any]:
    """Collect the invoice the event names (re-read from Zoho: the event itself is never trusted for money).

    The charge's identity is the invoice, not this delivery: every delivery and retry for one invoice goes through
    the same lock, intent and request key (``workers.workflows.collection``)."""
    invoice = (payload.get("event", {}).get("data") or {}).get("invoice") or {}
    invoice_id = invoice.get("invoice_id")
    if not invoice_id:
        raise PayloadInvalid("invoice_created without an invoice id")
    attempt = payload.get("dunning_attempt")
    result = collect_invoice(
        str(invoice_id), zoho=zoho, braintree=braintree, attio=attio, connection=connection,
        event_time=event_instant(payload.get("event") or {}), policy=policy,
        dunning_attempt=attempt if isinstance(attempt, int) else None,
    )
    if result.dunning is not None and result.dunning.next_at is not None:
        schedule_retry(connection, str(invoice_id), result.dunning.declines, result.dunning.next_at,
                       retry_schedule=retry_schedule)
    return result.to_dict()


def schedule_retry(
    connection: redis.Redis, invoice_id: str, declines: int, due: float, *, retry_schedule: Sequence[int]
) -> str | None:
    """The dunning retry answering the ``declines``-th decline, at ``due`` (once: its id names the decline)."""
    return enqueue_dunning_retry(connection, invoice_id, declines, retry_schedule=retry_schedule,
                                 at=datetime.fromtimestamp(due, UTC))


@entrypoint("collection.invoice_created")
def run_invoice_created(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for ``invoice_created`` and follow-up collections."""
    settings = runtime.settings()
    return handle_invoice_created(
        payload,
        zoho=runtime.zoho_client(),
        braintree=runtime.braintree_client(),
        attio=runtime.attio_client(),
        connection=runtime.redis_connection(),
        policy=Policy.from_settings(settings),
        retry_schedule=settings.retry_schedule_seconds,
    )
