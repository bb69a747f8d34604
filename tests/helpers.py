"""Small test helpers: counting jobs in Redis, signing requests with the test secrets."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import braintree
from rq import Queue

from integration.clients.gateway import make_gateway
from integration.samples import attio_delivery, attio_event, braintree_notification, zoho_delivery

from .conftest import SECRETS


def job_count(queues: dict[str, Queue]) -> int:
    """Jobs waiting in every queue."""
    return sum(q.count for q in queues.values())


def signed_attio(n_events: int = 1, *, key: str | None = None, event_type: str = "record.updated",
                 secret: str | None = None, record_id: str | None = None) -> Any:
    """A signed Attio delivery of n record events."""
    events = [
        attio_event(event_type, object_id="obj-subscriptions", record_id=record_id or f"rec-{i}",
                    attribute_id="attr-status")
        for i in range(n_events)
    ]
    return attio_delivery(events, secret=secret or SECRETS["attio_webhook_secret"], idempotency_key=key)


def signed_zoho(event_type: str = "invoice_created", *, event_id: str = "90300000005337",
                data: dict[str, Any] | None = None, secret: str | None = None, encoding: str = "hex",
                query: dict[str, str] | None = None, form: bool = False, created_time: str | None = None) -> Any:
    """A signed Zoho Billing event."""
    payload = data if data is not None else {"invoice": {"invoice_id": "903000000079426", "number": "INV-1"}}
    return zoho_delivery(event_type, payload, secret=secret or SECRETS["zoho_webhook_secret"], event_id=event_id,
                         encoding=encoding, query=query, form=form,
                         **({"created_time": created_time} if created_time else {}))


def test_gateway(public: str | None = None, private: str | None = None) -> braintree.BraintreeGateway:
    """A gateway holding the test keys (for the SDK's webhook_testing)."""
    return make_gateway("sandbox", "test-merchant", public or SECRETS["braintree_public_key"],
                        private or SECRETS["braintree_private_key"])


test_gateway.__test__ = False  # type: ignore[attr-defined]


def signed_braintree(kind: str = "transaction_settled", subject_id: str = "txn1", **keys: str) -> dict[str, str]:
    """bt_signature / bt_payload built by the SDK's webhook_testing."""
    return braintree_notification(test_gateway(**keys), kind, subject_id)


def braintree_sign(public_key: str, private_key: str, payload: str) -> str:
    """Braintree's signature of a payload: ``public|hex(HMAC-SHA1(sha1(private), payload))``."""
    key = hashlib.sha1(private_key.encode()).digest()
    return f"{public_key}|" + hmac.new(key, payload.encode(), hashlib.sha1).hexdigest()
