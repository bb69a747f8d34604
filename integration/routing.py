"""Which job handles which (source, event type): the one table the webhook routes consult.

Jobs are named by dotted path, so web code never imports worker code. Anything not in the table is answered
``200 ignored`` and logged.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CATALOG_QUEUE",
    "QUEUES",
    "RECONCILE",
    "SWEEPS",
    "Route",
    "WEBHOOK_QUEUE",
    "job_modules",
    "route_for",
    "routed_event_types",
]

WEBHOOK_QUEUE = "webhooks"
CATALOG_QUEUE = "catalog"
QUEUES = (WEBHOOK_QUEUE, CATALOG_QUEUE)  # the order a worker serves them in


@dataclass(frozen=True)
class Route:
    """The job for an event: a dotted function path and the queue it runs on."""

    job: str
    queue: str = WEBHOOK_QUEUE


_ATTIO_RECORD = Route("workers.jobs.activation.run_record_event")
_ZOHO_SUBSCRIPTION = Route("workers.jobs.lifecycle.run_subscription_event")
_ZOHO_PAYMENT = Route("workers.jobs.lifecycle.run_payment_event")
_BRAINTREE_TRANSACTION = Route("workers.jobs.lifecycle.run_transaction_event")
_BRAINTREE_DISPUTE = Route("workers.jobs.lifecycle.run_dispute_event")
CATALOG_SYNC = Route("workers.jobs.catalog.run_catalog_sync", queue=CATALOG_QUEUE)
# The reconciliation sweeps (workflows.md §5): bulk work, so on the queue served after the webhooks.
RECONCILE = Route("workers.jobs.reconcile.run_reconcile", queue=CATALOG_QUEUE)
SWEEPS = ("invoices", "activations", "settlements", "subscriptions")

_TABLE: dict[tuple[str, str], Route] = {
    ("attio", "record.created"): _ATTIO_RECORD,
    ("attio", "record.updated"): _ATTIO_RECORD,
    ("zoho", "invoice_created"): Route("workers.jobs.collection.run_invoice_created"),
    **{
        ("zoho", f"subscription_{kind}"): _ZOHO_SUBSCRIPTION
        for kind in (
            "created",
            "activation",
            "renewed",
            "upgraded",
            "downgraded",
            "unpaid",
            "cancelled",
            "reactivated",
            "cancellation_scheduled",
            "expired",
        )
    },
    ("zoho", "payment_thankyou"): _ZOHO_PAYMENT,
    ("zoho", "payment_declined"): _ZOHO_PAYMENT,
    ("zoho", "payment_refunded"): _ZOHO_PAYMENT,
    ("braintree", "transaction_settled"): _BRAINTREE_TRANSACTION,
    ("braintree", "transaction_settlement_declined"): _BRAINTREE_TRANSACTION,
    ("braintree", "dispute_opened"): _BRAINTREE_DISPUTE,
    ("braintree", "dispute_won"): _BRAINTREE_DISPUTE,
    ("braintree", "dispute_lost"): _BRAINTREE_DISPUTE,
    # An accepted (by us or automatically) or expired dispute is lost: the money went back to the card holder.
    ("braintree", "dispute_accepted"): _BRAINTREE_DISPUTE,
    ("braintree", "dispute_auto_accepted"): _BRAINTREE_DISPUTE,
    ("braintree", "dispute_expired"): _BRAINTREE_DISPUTE,
}

# Zoho sends no catalogue events by default; a Zoho workflow can (workflows.md §1).
_PREFIXES: dict[str, tuple[tuple[str, Route], ...]] = {
    "zoho": (("plan_", CATALOG_SYNC), ("addon_", CATALOG_SYNC), ("product_", CATALOG_SYNC)),
}


def route_for(source: str, event_type: str) -> Route | None:
    """The route of an event, or None when the service does not act on it."""
    route = _TABLE.get((source, event_type))
    if route is not None:
        return route
    for prefix, prefixed in _PREFIXES.get(source, ()):
        if event_type.startswith(prefix):
            return prefixed
    return None


def job_modules() -> list[str]:
    """Every module that holds a routed job (workers import them once, before forking)."""
    routes = [*_TABLE.values(), CATALOG_SYNC, RECONCILE, *(r for prefixed in _PREFIXES.values() for _, r in prefixed)]
    return sorted({route.job.rsplit(".", 1)[0] for route in routes} | {"workers.jobs.activation"})


def routed_event_types(source: str) -> list[str]:
    """Every exact event type routed for a source (for ``webhooks send --help``)."""
    return sorted(event for src, event in _TABLE if src == source)
