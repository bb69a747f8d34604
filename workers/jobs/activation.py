"""Attio record events and payment-page submissions → the activation of a subscription (workflow 2)."""

from __future__ import annotations

import logging
from typing import Any

import redis

from integration.clients.braintree import customer_id_for_company
from integration.errors import PayloadInvalid
from integration.paylinks import PaymentLinks

from .. import runtime
from ..workflows.activation import activate
from ._entry import entrypoint

__all__ = [
    "handle_payment_method_submitted",
    "handle_record_event",
    "run_payment_method_submitted",
    "run_record_event",
]

log = logging.getLogger(__name__)


def handle_record_event(payload: dict[str, Any], **deps: Any) -> dict[str, Any]:
    """Re-read the record the event names and activate it if it is a ``Requested`` subscription."""
    ids = (payload.get("event") or {}).get("id") or {}
    record = ids.get("record_id")
    if not record:
        raise PayloadInvalid("Attio event without a record id")
    # Events name objects by UUID only; a record of another object simply is not found as a subscription.
    return activate(str(record), customer_id_for_company=customer_id_for_company, **deps).to_dict()


def handle_payment_method_submitted(payload: dict[str, Any], *, braintree: Any, **deps: Any) -> dict[str, Any]:
    """Vault the nonce from the payment page as the customer's default method, then resume the activation."""
    customer_id = str(payload["customer_id"])
    # A retry after the vault succeeded (answer lost) must not vault the consumed nonce again.
    if braintree.default_payment_method(customer_id) is None:
        braintree.add_payment_method(customer_id, str(payload["nonce"]))
    return activate(
        str(payload["subscription_id"]), braintree=braintree, customer_id_for_company=customer_id_for_company,
        resume=True, **deps,
    ).to_dict()


def _deps() -> dict[str, Any]:
    settings = runtime.settings()
    connection: redis.Redis = runtime.redis_connection()
    return {
        "attio": runtime.attio_client(),
        "zoho": runtime.zoho_client(),
        "braintree": runtime.braintree_client(),
        "connection": connection,
        "links": PaymentLinks(settings.link_secret, ttl_days=settings.payment_link_ttl_days, connection=connection),
        "public_base_url": settings.public_base_url,
    }


@entrypoint("activation.record_event")
def run_record_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Attio ``record.created`` / ``record.updated``."""
    return handle_record_event(payload, **_deps())


@entrypoint("activation.payment_method_submitted")
def run_payment_method_submitted(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for a payment method submitted on the payment page."""
    deps = _deps()
    braintree = deps.pop("braintree")
    return handle_payment_method_submitted(payload, braintree=braintree, **deps)
