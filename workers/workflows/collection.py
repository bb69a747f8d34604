"""Workflow 3: an open Zoho invoice → at most one Braintree sale → one Zoho payment → Attio.

At most one charge per invoice, by construction:

1. one collection at a time per invoice (a Redis lock that expires, so a killed worker cannot wedge it);
2. before any sale, Braintree is searched for a successful sale with ``order_id`` = the invoice id, and a found
   one is reused — so a sale whose answer was lost (timeout, 5xx after the gateway acted) is found on retry,
   never repeated blindly;
3. the sale itself carries that ``order_id`` and a deterministic ``api_request_key`` (the invoice and the
   delivery that asked for the charge), so even a replay of the very same request is one transaction.

At most one Zoho payment per transaction: the invoice is re-read right before ``POST /payments`` and the
payment is skipped when one with that ``reference_number`` is already applied. The Zoho payment is recorded
before Attio is written, so an Attio outage never leaves a charge unrecorded in the books.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis

from integration.clients.attio_values import record_id, value
from integration.locks import hold

from ..crm import (
    AttioLike,
    find_company_by_zoho_customer,
    find_subscription_by_zoho_id,
    is_stale,
    iso,
    ref,
    set_subscription,
    upsert_payment,
)

__all__ = ["OPEN_STATUSES", "Collection", "collect_invoice"]

log = logging.getLogger(__name__)

OPEN_STATUSES = ("sent", "overdue", "partially_paid", "unpaid")
_DESCRIPTION = "Braintree transaction "
LOCK_TTL = 60.0  # seconds; refreshed before each step (every step is bounded by HTTP timeouts well below it), so
# only a dead holder lets it lapse — and it lapses before RQ notices the dead worker, so the retry is not blocked


@dataclass(frozen=True)
class Collection:
    """What one collection run did."""

    outcome: str  # charged | already_charged | declined | no_payment_method | nothing_to_charge | not_found
    invoice_id: str
    transaction_id: str | None = None
    zoho_payment_recorded: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the job result."""
        return {
            "outcome": self.outcome,
            "invoice_id": self.invoice_id,
            "transaction_id": self.transaction_id,
            "zoho_payment_recorded": self.zoho_payment_recorded,
            "detail": self.detail,
        }


def collect_invoice(
    invoice_id: str,
    *,
    attempt: str,
    zoho: Any,
    braintree: Any,
    attio: AttioLike,
    connection: redis.Redis,
    event_time: datetime | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Collection:
    """Charge an open invoice's balance at most once, record it in Zoho and Attio; idempotent on retry.

    ``event_time`` is when Zoho raised the event that asked for the charge: the subscription's status is left
    alone when a newer event has already been applied to it (see ``_update_subscription``)."""
    with hold(connection, f"collect:{invoice_id}", ttl=LOCK_TTL, wait=15.0) as lock:
        invoice = zoho.get_invoice(invoice_id)
        if invoice is None:
            log.warning("invoice %s not found in Zoho", invoice_id)
            return Collection("not_found", invoice_id)
        balance = Decimal(str(invoice.get("balance") or 0))
        company = find_company_by_zoho_customer(attio, str(invoice.get("customer_id")))
        subscription = _subscription_of(attio, invoice)
        context = _Context(invoice, company, subscription, event_time)
        if invoice.get("status") not in OPEN_STATUSES or balance <= 0:
            # Paid, void or draft: nothing to charge. If our own sale paid it (a retry after a crash between the
            # Zoho payment and Attio), finish the Attio side from the invoice alone — no Braintree call.
            ours = [p for p in invoice.get("payments") or [] if _is_ours(p)]
            for payment in ours:
                _record_success(attio, context, str(payment["reference_number"]),
                                Decimal(str(payment.get("amount") or 0)), now=now(), connection=connection)
            if ours:
                return Collection("already_charged", invoice_id, transaction_id=str(ours[0]["reference_number"]))
            log.info("invoice %s is %s with balance %s: nothing to charge", invoice_id, invoice.get("status"), balance)
            return Collection("nothing_to_charge", invoice_id, detail=str(invoice.get("status")))
        existing = braintree.find_successful_sale(invoice_id)
        lock.refresh()

        if existing is not None:
            txn_id, amount, outcome = existing.id, Decimal(str(existing.amount)), "already_charged"
        else:
            charge = _charge(invoice_id, balance, attempt=attempt, braintree=braintree, company=company)
            lock.refresh()
            if charge.outcome != "charged":
                _record_failure(attio, context, charge, attempt=attempt, now=now())
                return Collection(
                    charge.outcome, invoice_id, transaction_id=charge.transaction_id, detail=charge.message
                )
            txn_id, amount, outcome = str(charge.transaction_id), Decimal(str(charge.amount)), "charged"

        recorded = _record_zoho_payment(zoho, invoice_id, txn_id, amount, now=now())
        lock.refresh()
        _record_success(attio, context, txn_id, amount, now=now(), connection=connection)
        return Collection(outcome, invoice_id, transaction_id=txn_id, zoho_payment_recorded=recorded)


@dataclass(frozen=True)
class _Context:
    invoice: dict[str, Any]
    company: dict[str, Any] | None
    subscription: dict[str, Any] | None
    event_time: datetime | None = None

    def base_fields(self) -> dict[str, Any]:
        invoice = self.invoice
        return {
            "company": ref("companies", record_id(self.company) if self.company else None),
            "subscription": ref("subscriptions", record_id(self.subscription) if self.subscription else None),
            "zoho_invoice_id": str(invoice.get("invoice_id")),
            "zoho_invoice_number": str(invoice.get("number") or ""),
        }


@dataclass(frozen=True)
class _Charge:
    outcome: str  # charged | declined | no_payment_method
    transaction_id: str | None
    amount: Decimal | None
    message: str


def _subscription_of(attio: AttioLike, invoice: dict[str, Any]) -> dict[str, Any] | None:
    for item in invoice.get("subscriptions") or []:
        sub_id = item.get("subscription_id") if isinstance(item, dict) else None
        if sub_id:
            return find_subscription_by_zoho_id(attio, str(sub_id))
    return None


def _charge(invoice_id: str, balance: Decimal, *, attempt: str, braintree: Any, company: Any) -> _Charge:
    customer_id = value(company, "braintree_customer_id") if company else None
    token = braintree.default_payment_method(customer_id) if customer_id else None
    if not customer_id or not token:
        return _Charge("no_payment_method", None, None, "no payment method on file")
    result = braintree.sale(
        order_id=invoice_id,
        amount=balance,
        customer_id=customer_id,
        payment_method_token=token,
        api_request_key=f"charge-{invoice_id}-{attempt}"[:255],
    )
    if result.outcome == "charged":
        return _Charge("charged", result.transaction_id, result.amount or balance, result.message)
    if result.outcome == "rejected" and "duplicate" in (result.message or "").lower():
        # Braintree's duplicate check saw an earlier sale of this order: find it rather than charge again.
        earlier = braintree.find_successful_sale(invoice_id)
        if earlier is not None:
            return _Charge("charged", earlier.id, Decimal(str(earlier.amount)), "found after duplicate rejection")
    return _Charge("declined", result.transaction_id, result.amount, result.message or result.outcome)


def _is_ours(payment: dict[str, Any]) -> bool:
    """A Zoho payment this service recorded for a Braintree sale (see ``_record_zoho_payment``)."""
    return bool(payment.get("reference_number")) and str(payment.get("description") or "").startswith(_DESCRIPTION)


def _record_zoho_payment(zoho: Any, invoice_id: str, txn_id: str, amount: Decimal, *, now: datetime) -> bool:
    """POST /payments unless the invoice already lists a payment with this reference; returns whether posted."""
    invoice = zoho.get_invoice(invoice_id) or {}
    if any(str(p.get("reference_number")) == txn_id for p in invoice.get("payments") or []):
        return False
    zoho.record_payment(
        customer_id=str(invoice.get("customer_id")),
        invoice_id=invoice_id,
        amount=amount,
        reference_number=txn_id,
        date=now.date(),
        description=f"{_DESCRIPTION}{txn_id}",
    )
    return True


def _record_success(
    attio: AttioLike, ctx: _Context, txn_id: str, amount: Decimal, *, now: datetime, connection: redis.Redis
) -> None:
    # The same lock as the lifecycle jobs of this transaction: a settlement or dispute applied meanwhile must not
    # be overwritten by this read-then-write (upsert_payment never moves a status back, given it reads the latest).
    with hold(connection, f"lifecycle:braintree-transaction:{txn_id}", ttl=60.0, wait=15.0):
        upsert_payment(
            attio,
            f"braintree:{txn_id}",
            {**ctx.base_fields(), "amount": str(amount), "status": "Submitted", "failure_reason": "",
             "occurred_at": iso(now)},
        )
    _update_subscription(attio, ctx, {"status": "Active", "status_detail": ""}, facts={"last_payment_at": iso(now)})


def _record_failure(attio: AttioLike, ctx: _Context, charge: _Charge, *, attempt: str, now: datetime) -> None:
    number = ctx.invoice.get("number") or ctx.invoice.get("invoice_id")
    if charge.outcome == "no_payment_method":
        external_id = f"zoho-invoice:{ctx.invoice.get('invoice_id')}:{attempt}"
        status, reason = "Failed", "no payment method on file"
        detail = f"Invoice {number} could not be charged: no payment method on file."
    else:
        external_id = f"braintree:{charge.transaction_id}" if charge.transaction_id else (
            f"zoho-invoice:{ctx.invoice.get('invoice_id')}:{attempt}"
        )
        status, reason = "Declined", charge.message
        detail = f"The card was declined for invoice {number}: {charge.message}."
    amount = charge.amount if charge.amount is not None else ctx.invoice.get("balance")
    upsert_payment(
        attio,
        external_id,
        {**ctx.base_fields(), "amount": str(amount), "status": status, "failure_reason": reason,
         "occurred_at": iso(now)},
    )
    _update_subscription(attio, ctx, {"status": "Past due", "status_detail": detail})


def _update_subscription(
    attio: AttioLike, ctx: _Context, status: dict[str, Any], *, facts: dict[str, Any] | None = None
) -> None:
    """Write a collection's outcome to the invoice's subscription: ``facts`` (when it was paid) always, ``status``
    only if no event newer than the invoice's has been applied to it. Workflow 4's ordering rule: a collection
    retried hours later must not turn a subscription cancelled meanwhile back to Active or Past due.

    ``last_event_at`` is read, not moved: the lifecycle jobs (which re-read Zoho's subscription) stay its only
    writers, so one raised just before the invoice (``subscription_created``, say) is still applied after it."""
    if ctx.subscription is None:
        return
    # Read again: a lifecycle event may have been applied while the card was being charged.
    record = attio.get_record("subscriptions", record_id(ctx.subscription)) or ctx.subscription
    changes = dict(facts or {})
    if not is_stale(record, ctx.event_time):
        changes.update(status)
    else:
        log.info("subscription %s has an event newer than invoice %s's: status left as is",
                 record_id(record), ctx.invoice.get("invoice_id"))
    set_subscription(attio, record, changes)
