"""Zoho Billing webhook events: ``{"event_id", "event_type", "created_time", "event_time", "data": {<resource>: ...}}``.

As Zoho delivers them (a real captured event: PipedreamHQ/pipedream,
``components/zoho_subscriptions/sources/subscription-created/test-event.mjs``), ``event_time`` is a *date*
(``"2023-08-02"``) and the instant is ``created_time`` (``"2023-08-02T15:28:59-0400"``, no colon in the offset),
with ``event_time_formatted`` (``"02 Aug 2023"``) and ``event_source`` (``"user"``) beside them: jobs order
events by ``created_time`` when present (``workers.records.event_instant``).

Only what the jobs use is kept: the ids, which the jobs re-read from Zoho before acting, and a subscription's
``status`` and ``next_billing_at``, which the lifecycle job writes as they are when the event is newer than what
Attio holds (``workers.workflows.lifecycle.sync_subscription``). Third-party
handlers report the resource sometimes at the top level instead of under ``data``, and payments as
``customerpayment``: both are folded into ``data``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, post_load, pre_load, validate

from .base import BoundedList, Identifier, Inbound

__all__ = ["ZohoEventSchema"]

_RESOURCES = ("invoice", "subscription", "payment", "customer", "plan", "addon", "product")


class _InvoiceRef(Inbound):
    invoice_id = Identifier(required=True)
    number = fields.String(load_default=None, allow_none=True)
    customer_id = Identifier(load_default=None, allow_none=True)


class _Carried(fields.Field[str | None]):
    """A short text the job may use as it is; anything else (a number, a list, a long text) loads as None, which
    the job treats as absent: it re-reads, and the event is never refused for a field it can do without."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        return value if isinstance(value, str) and len(value) <= 64 else None


class _SubscriptionRef(Inbound):
    subscription_id = Identifier(required=True)
    customer_id = Identifier(load_default=None, allow_none=True)
    # No load_default: an event without these keys is told from one that carries them empty (the job re-reads
    # Zoho only when they are absent; ``lifecycle.sync_subscription``).
    reference_id = fields.String(allow_none=True)
    status = _Carried(allow_none=True)
    next_billing_at = _Carried(allow_none=True)


class _PaymentInvoice(Inbound):
    invoice_id = Identifier(required=True)


class _Autotransaction(Inbound):
    # Where Zoho puts a declined charge's reason (payments.yml of Zoho's OpenAPI files); kept because a failed
    # attempt may never become a payment Zoho lets the job re-read.
    gateway_error_message = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))


class _PaymentRef(Inbound):
    payment_id = Identifier(required=True)
    autotransaction = fields.Nested(_Autotransaction, load_default=None)
    reference_number = fields.String(load_default=None, allow_none=True)
    customer_id = Identifier(load_default=None, allow_none=True)
    invoices = BoundedList(_PaymentInvoice, load_default=list, max_length=1000)  # jobs re-read it


class _CustomerRef(Inbound):
    customer_id = Identifier(required=True)


class _CatalogRef(Inbound):
    plan_code = fields.String(load_default=None, allow_none=True)
    addon_code = fields.String(load_default=None, allow_none=True)
    product_id = Identifier(load_default=None, allow_none=True)


class _Data(Inbound):
    invoice = fields.Nested(_InvoiceRef, load_default=None)
    subscription = fields.Nested(_SubscriptionRef, load_default=None)
    payment = fields.Nested(_PaymentRef, load_default=None)
    customer = fields.Nested(_CustomerRef, load_default=None)
    plan = fields.Nested(_CatalogRef, load_default=None)
    addon = fields.Nested(_CatalogRef, load_default=None)
    product = fields.Nested(_CatalogRef, load_default=None)


class ZohoEventSchema(Inbound):
    """A Zoho Billing webhook event."""

    event_id = Identifier(required=True)
    event_type = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$"))
    event_time = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))  # a date
    created_time = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))  # the instant
    event_time_formatted = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    event_source = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    data = fields.Nested(_Data, load_default=dict)

    @pre_load
    def _fold_resources(self, raw: Any, **_: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        data = raw.get("data")
        data = dict(data) if isinstance(data, dict) else {}
        if "customerpayment" in data and "payment" not in data:
            data["payment"] = data.pop("customerpayment")
        for key in (*_RESOURCES, "customerpayment"):
            target = "payment" if key == "customerpayment" else key
            if key in raw and target not in data:
                data[target] = raw[key]
        return {**raw, "data": data}

    @post_load
    def _drop_empty(self, event: dict[str, Any], **_: Any) -> dict[str, Any]:
        event["data"] = {k: v for k, v in (event.get("data") or {}).items() if v is not None}
        return event
