"""Zoho subscription/payment events and Braintree settlement/dispute events mirrored into Attio (workflow 4).

``handle_*`` take the job payload (``{"source", "event_type", "event_id", "received_at", "event"}``) and the
clients; ``run_*`` are the RQ entrypoints, which build the clients from the environment and delegate.
"""

from __future__ import annotations

from typing import Any

from .. import runtime
from ..crm import AttioLike
from ..workflows.lifecycle import (
    BraintreeReader,
    ZohoReader,
    apply_dispute_event,
    apply_transaction_event,
    mirror_payment,
    sync_subscription,
)
from ._entry import entrypoint

__all__ = [
    "handle_dispute_event",
    "handle_payment_event",
    "handle_subscription_event",
    "handle_transaction_event",
    "run_dispute_event",
    "run_payment_event",
    "run_subscription_event",
    "run_transaction_event",
]


def handle_subscription_event(payload: dict[str, Any], *, zoho: ZohoReader, attio: AttioLike) -> dict[str, Any]:
    """Apply a Zoho ``subscription_*`` event to the Attio subscription."""
    return sync_subscription(payload["event"], zoho=zoho, attio=attio)


def handle_payment_event(
    payload: dict[str, Any], *, zoho: ZohoReader, braintree: BraintreeReader, attio: AttioLike
) -> dict[str, Any]:
    """Mirror a Zoho ``payment_*`` event the service did not cause into Attio ``payments``."""
    return mirror_payment(payload["event"], zoho=zoho, braintree=braintree, attio=attio)


def handle_transaction_event(payload: dict[str, Any], *, attio: AttioLike) -> dict[str, Any]:
    """Apply a Braintree settlement outcome to the transaction's Attio payment."""
    return apply_transaction_event(payload["event"], attio=attio)


def handle_dispute_event(payload: dict[str, Any], *, attio: AttioLike) -> dict[str, Any]:
    """Apply a Braintree dispute to the transaction's Attio payment (an opened one also warns Sentry)."""
    return apply_dispute_event(payload["event"], attio=attio)


@entrypoint("lifecycle.subscription_event")
def run_subscription_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Zoho ``subscription_*``."""
    return handle_subscription_event(payload, zoho=runtime.zoho_client(), attio=runtime.attio_client())


@entrypoint("lifecycle.payment_event")
def run_payment_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Zoho ``payment_thankyou`` / ``payment_declined`` / ``payment_refunded``."""
    return handle_payment_event(
        payload, zoho=runtime.zoho_client(), braintree=runtime.braintree_client(), attio=runtime.attio_client()
    )


@entrypoint("lifecycle.transaction_event")
def run_transaction_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Braintree ``transaction_settled`` / ``transaction_settlement_declined``."""
    return handle_transaction_event(payload, attio=runtime.attio_client())


@entrypoint("lifecycle.dispute_event")
def run_dispute_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Braintree ``dispute_opened`` / ``dispute_won`` / ``dispute_lost``."""
    return handle_dispute_event(payload, attio=runtime.attio_client())
