"""Attio record events and payment-page submissions → the activation of a subscription (workflow 2).

A payment method saved through the payment page also retries, at once, every open invoice of that customer that
is in dunning (declined, or never charged for want of a card): one follow-up collection each (``workers.dunning``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import redis

from integration.clients.braintree import customer_id_for_company
from integration.errors import PayloadInvalid, ServiceRejected
from integration.paylinks import PaymentLinks

from .. import runtime
from ..dunning import Dunning
from ..followups import enqueue_collection
from ..providers import AttioLike, BraintreeVault, ZohoAccounts
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


VAULTED_TTL = 7 * 24 * 3600  # seconds a vaulted nonce is remembered (a nonce lives three hours)
CONSUMED_NONCE = "93107"  # Braintree: "Cannot use a payment_method_nonce more than once" (vaulting)


def handle_payment_method_submitted(
    payload: dict[str, Any], *, braintree: BraintreeVault, retry_schedule: Sequence[int] = (), **deps: Any
) -> dict[str, Any]:
    """Vault the nonce from the payment page as the customer's default method, resume the activation, and retry
    the customer's invoices in dunning."""
    customer_id, nonce = str(payload["customer_id"]), str(payload["nonce"])
    connection: redis.Redis = deps["connection"]
    dunning = Dunning(connection)
    in_dunning = dunning.of_customer(customer_id)
    vaulted = f"vaulted-nonce:{hashlib.sha256(nonce.encode()).hexdigest()}"
    # A retry after the vault succeeded (answer lost) must not vault the consumed nonce again. A customer in dunning
    # has a default method already (the declined one): the new one replaces it.
    if not connection.exists(vaulted) and (in_dunning or braintree.default_payment_method(customer_id) is None):
        try:
            braintree.add_payment_method(customer_id, nonce)
        except ServiceRejected as exc:
            if exc.code != CONSUMED_NONCE:
                raise
            # Vaulted by an earlier attempt whose answer was lost (a nonce is single-use): the card is on file.
            log.info("payment method for %s: nonce already used, taken as vaulted", customer_id)
        connection.set(vaulted, b"1", ex=VAULTED_TTL)
    result = activate(
        str(payload["subscription_id"]), braintree=braintree, customer_id_for_company=customer_id_for_company,
        resume=True, **deps,
    ).to_dict()
    retried = []
    for entry in in_dunning:
        job_id = enqueue_collection(
            connection, entry.invoice_id, tag=f"card{entry.declines}", source="pay", retry_schedule=retry_schedule,
            extra={"dunning_attempt": entry.declines},
        )
        log.info("new payment method for %s: invoice %s retried (%s)", customer_id, entry.invoice_id, job_id)
        retried.append(entry.invoice_id)
    return {**result, "dunning_retried": retried}


def _deps() -> dict[str, Any]:
    settings = runtime.settings()
    connection: redis.Redis = runtime.redis_connection()
    # Typed here: the real clients must be what ``activate`` needs (the dict below is ``Any`` to mypy).
    attio: AttioLike = runtime.attio_client()
    zoho: ZohoAccounts = runtime.zoho_client()
    braintree: BraintreeVault = runtime.braintree_client()
    return {
        "attio": attio,
        "zoho": zoho,
        "braintree": braintree,
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
    return handle_payment_method_submitted(payload, braintree=braintree,
                                           retry_schedule=runtime.settings().retry_schedule_seconds, **deps)
