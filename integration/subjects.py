"""What a job is about: the business ids (invoice, subscription, payment, transaction, event) its payload names.

One function, used where a job is described (its RQ description: what rq-dashboard shows) and indexed (``explain``),
so both always agree. Only signed, validated content reaches it, and everything it returns is shown escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["subjects_of"]


def subjects_of(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (kind, id) pairs a job's payload is about: invoices, Zoho subscriptions and payments, Braintree
    transactions, Attio records, and the event itself."""
    event: Mapping[str, Any] = payload["event"] if isinstance(payload.get("event"), Mapping) else {}
    data: Mapping[str, Any] = event["data"] if isinstance(event.get("data"), Mapping) else {}
    found: list[tuple[str, str]] = []

    def add(kind: str, ident: Any) -> None:
        if ident:
            found.append((kind, str(ident)))

    add("event", f"{payload.get('source')}:{payload.get('event_id')}" if payload.get("event_id") else None)
    add("invoice", (data.get("invoice") or {}).get("invoice_id") if isinstance(data.get("invoice"), Mapping) else None)
    if isinstance(data.get("subscription"), Mapping):
        add("subscription", data["subscription"].get("subscription_id"))
    if isinstance(data.get("payment"), Mapping):
        add("payment", data["payment"].get("payment_id"))
        for item in data["payment"].get("invoices") or []:
            if isinstance(item, Mapping):
                add("invoice", item.get("invoice_id"))
    txn: Mapping[str, Any] | None = event["transaction"] if isinstance(event.get("transaction"), Mapping) else None
    dispute: Mapping[str, Any] | None = event["dispute"] if isinstance(event.get("dispute"), Mapping) else None
    if dispute and isinstance(dispute.get("transaction"), Mapping):
        txn = dispute["transaction"]
    if txn:
        add("transaction", txn.get("id"))
        add("invoice", txn.get("order_id"))
    ids: Mapping[str, Any] = event["id"] if isinstance(event.get("id"), Mapping) else {}
    add("subscription", ids.get("record_id"))  # an Attio record event: the subscription it names
    add("subscription", payload.get("subscription_id"))  # a payment-page submission
    return found
