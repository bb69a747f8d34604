"""Braintree notifications, after the SDK verified and parsed them, as the plain dict a job receives."""

from __future__ import annotations

import datetime as dt
from typing import Any

import braintree
from marshmallow import fields, validate

from .base import Identifier, Inbound

__all__ = ["BraintreeEventSchema", "notification_to_dict"]


class _Transaction(Inbound):
    id = Identifier(required=True)
    status = fields.String(load_default=None, allow_none=True)
    amount = fields.String(load_default=None, allow_none=True)
    order_id = fields.String(load_default=None, allow_none=True)
    processor_response_text = fields.String(load_default=None, allow_none=True)
    processor_settlement_response_text = fields.String(load_default=None, allow_none=True)
    type = fields.String(load_default=None, allow_none=True)  # sale | credit (a refund: never income)
    refunded_transaction_id = fields.String(load_default=None, allow_none=True)


class _Dispute(Inbound):
    id = Identifier(required=True)
    status = fields.String(load_default=None, allow_none=True)
    reason = fields.String(load_default=None, allow_none=True)
    amount = fields.String(load_default=None, allow_none=True)
    transaction = fields.Nested(_Transaction, load_default=None, allow_none=True)


class BraintreeEventSchema(Inbound):
    """What a Braintree job needs of a notification."""

    kind = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$"))
    timestamp = fields.String(required=True)
    transaction = fields.Nested(_Transaction, load_default=None, allow_none=True)
    dispute = fields.Nested(_Dispute, load_default=None, allow_none=True)
    subject_id = fields.String(load_default=None, allow_none=True)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _timestamp(value: Any) -> str | None:
    """ISO text of the notification's datetime; "" when absent, None (refused by the schema) when not a date."""
    if not value:
        return ""
    return value.isoformat() if isinstance(value, dt.date) else None


def _transaction(txn: Any) -> dict[str, Any] | None:
    if txn is None or not getattr(txn, "id", None):
        return None
    return {
        "id": txn.id,
        "status": _text(getattr(txn, "status", None)),
        "amount": _text(getattr(txn, "amount", None)),
        "order_id": _text(getattr(txn, "order_id", None)),
        "processor_response_text": _text(getattr(txn, "processor_response_text", None)),
        "processor_settlement_response_text": _text(getattr(txn, "processor_settlement_response_text", None)),
        "type": _text(getattr(txn, "type", None)),
        "refunded_transaction_id": _text(getattr(txn, "refunded_transaction_id", None)),
    }


def notification_to_dict(n: braintree.WebhookNotification) -> dict[str, Any]:
    """The parts of a parsed notification the jobs use, as JSON-able values."""
    # A signed payload is still the sender's input: any attribute may be missing or of another type (the SDK
    # sets only what the XML holds), and what is unusable must reach the schema (400), not raise here (500).
    dispute = getattr(n, "dispute", None)
    event: dict[str, Any] = {
        "kind": getattr(n, "kind", None),
        "timestamp": _timestamp(getattr(n, "timestamp", None)),
        "transaction": _transaction(getattr(n, "transaction", None)),
        "dispute": None,
    }
    if dispute is not None and getattr(dispute, "id", None):
        event["dispute"] = {
            "id": dispute.id,
            "status": _text(getattr(dispute, "status", None)),
            "reason": _text(getattr(dispute, "reason", None)),
            "amount": _text(getattr(dispute, "amount", None)),
            "transaction": _transaction(getattr(dispute, "transaction", None)),
        }
    subject = getattr(n, "subject", None)
    subject = subject if isinstance(subject, dict) else {}
    for value in subject.values():
        if isinstance(value, dict) and value.get("id"):
            event["subject_id"] = str(value["id"])
            break
    return event
