"""Zoho ``invoice_created`` → one Braintree charge → a Zoho payment → Attio (workflow 3)."""

from __future__ import annotations

from typing import Any

import redis

from integration.errors import PayloadInvalid

from .. import runtime
from ..crm import event_instant
from ..workflows.collection import Policy, collect_invoice
from ._entry import entrypoint

__all__ = ["handle_invoice_created", "run_invoice_created"]


def handle_invoice_created(
    payload: dict[str, Any], *, zoho: Any, braintree: Any, attio: Any, connection: redis.Redis,
    policy: Policy = Policy(),
) -> dict[str, Any]:
    """Collect the invoice the event names (re-read from Zoho: the event itself is never trusted for money).

    The charge's identity is the invoice, not this delivery: every delivery and retry for one invoice goes through
    the same lock, intent and request key (``workers.workflows.collection``)."""
    invoice = (payload.get("event", {}).get("data") or {}).get("invoice") or {}
    invoice_id = invoice.get("invoice_id")
    if not invoice_id:
        raise PayloadInvalid("invoice_created without an invoice id")
    result = collect_invoice(
        str(invoice_id), zoho=zoho, braintree=braintree, attio=attio, connection=connection,
        event_time=event_instant(payload.get("event") or {}), policy=policy,
    )
    return result.to_dict()


@entrypoint("collection.invoice_created")
def run_invoice_created(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for ``invoice_created``."""
    return handle_invoice_created(
        payload,
        zoho=runtime.zoho_client(),
        braintree=runtime.braintree_client(),
        attio=runtime.attio_client(),
        connection=runtime.redis_connection(),
        policy=Policy.from_settings(runtime.settings()),
    )
