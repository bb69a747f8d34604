"""Zoho subscription/payment events and Braintree settlement/dispute events mirrored into Attio (workflow 4).

``handle_*`` take the job payload (``{"source", "event_type", "event_id", "received_at", "event"}``) and the
clients; ``run_*`` are the RQ entrypoints, which build the clients from the environment and delegate.

Each ``run_*`` holds a lock on the Attio record its event is about (the Zoho subscription, the Zoho payment, the
Braintree transaction) for the whole job. The handlers read the record, and for subscriptions Zoho too, and then
write. Without the lock, two jobs for one record interleave when Attio answers slowly, and the older write lands
last: a ``dispute_won`` overwritten by ``transaction_settled``, or ``Past due`` from an older ``subscription_unpaid``
written over the ``Non-renewing`` of the newer event, whose own job had already run (found by the chaos suite).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis

from integration.locks import hold, payment_lock, subscription_lock, transaction_lock

from .. import runtime
from ..intents import DeclineMarks
from ..providers import AttioLike, BraintreeReader, ZohoReader
from ..workflows.lifecycle import (
    apply_dispute_event,
    apply_transaction_event,
    mirror_payment,
    reopen_invoice,
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


def handle_subscription_event(
    payload: dict[str, Any], *, zoho: ZohoReader, attio: AttioLike, connection: redis.Redis | None = None
) -> dict[str, Any]:
    """Apply a Zoho ``subscription_*`` event to the Attio subscription (keeping a standing decline's Past due)."""
    marks = (lambda record_id: DeclineMarks(connection, record_id)) if connection is not None else None
    return sync_subscription(payload["event"], zoho=zoho, attio=attio, marks=marks)


def handle_payment_event(
    payload: dict[str, Any], *, zoho: ZohoReader, braintree: BraintreeReader, attio: AttioLike
) -> dict[str, Any]:
    """Mirror a Zoho ``payment_*`` event the service did not cause into Attio ``payments``."""
    return mirror_payment(payload["event"], zoho=zoho, braintree=braintree, attio=attio)


def handle_transaction_event(
    payload: dict[str, Any], *, attio: AttioLike, braintree: BraintreeReader
) -> dict[str, Any]:
    """Write the notified transaction's status, re-read from Braintree, to its Attio payment."""
    return apply_transaction_event(payload["event"], attio=attio, braintree=braintree)


def handle_dispute_event(payload: dict[str, Any], *, attio: AttioLike, braintree: BraintreeReader) -> dict[str, Any]:
    """Write the disputed transaction's status, re-read from Braintree, to its Attio payment (an opened dispute also
    warns Sentry)."""
    return apply_dispute_event(payload["event"], attio=attio, braintree=braintree)


LOCK_TTL = 120.0  # seconds; a job makes a few calls, each bounded by the HTTP timeouts; a dead holder's lock lapses
LOCK_WAIT = 15.0  # seconds to wait for another job on the same record before retrying later


@contextlib.contextmanager
def _one_job_per_record(name: str | None) -> Iterator[None]:
    """Hold the lock ``name`` for the block (nothing to hold when the event names no record)."""
    if not name:
        yield
        return
    with hold(runtime.redis_connection(), name, ttl=LOCK_TTL, wait=LOCK_WAIT):
        yield


def _event(payload: dict[str, Any]) -> dict[str, Any]:
    return payload.get("event") or {}


@entrypoint("lifecycle.subscription_event")
def run_subscription_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Zoho ``subscription_*``."""
    sub_id = ((_event(payload).get("data") or {}).get("subscription") or {}).get("subscription_id")
    # The lock collection takes to write this subscription's outcome: a cancellation and an Active never interleave.
    with _one_job_per_record(subscription_lock(str(sub_id)) if sub_id else None):
        return handle_subscription_event(payload, zoho=runtime.zoho_client(), attio=runtime.attio_client(),
                                         connection=runtime.redis_connection())


@entrypoint("lifecycle.payment_event")
def run_payment_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Zoho ``payment_thankyou`` / ``payment_declined`` / ``payment_refunded``."""
    payment_id = ((_event(payload).get("data") or {}).get("payment") or {}).get("payment_id")
    with _one_job_per_record(payment_lock(str(payment_id)) if payment_id else None):
        return handle_payment_event(
            payload, zoho=runtime.zoho_client(), braintree=runtime.braintree_client(), attio=runtime.attio_client()
        )


@entrypoint("lifecycle.transaction_event")
def run_transaction_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Braintree ``transaction_settled`` / ``transaction_settlement_declined``."""
    txn_id = (_event(payload).get("transaction") or {}).get("id")
    with _one_job_per_record(transaction_lock(str(txn_id)) if txn_id else None):
        result = handle_transaction_event(payload, attio=runtime.attio_client(), braintree=runtime.braintree_client())
    # The invoice's lock is taken after the transaction's is released: collection takes them the other way round.
    return reopen_invoice(result, zoho=runtime.zoho_client(), connection=runtime.redis_connection())


@entrypoint("lifecycle.dispute_event")
def run_dispute_event(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entrypoint for Braintree ``dispute_opened`` / ``dispute_won`` / ``dispute_lost`` / ``dispute_accepted`` /
    ``dispute_auto_accepted`` / ``dispute_expired``."""
    txn_id = ((_event(payload).get("dispute") or {}).get("transaction") or {}).get("id")
    with _one_job_per_record(transaction_lock(str(txn_id)) if txn_id else None):  # the settlement's record too
        return handle_dispute_event(payload, attio=runtime.attio_client(), braintree=runtime.braintree_client())
