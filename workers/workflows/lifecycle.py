"""Workflow 4: Zoho subscription and payment events and Braintree settlement and dispute events → Attio.

Each handler re-reads the resource its event names (the Zoho subscription or payment; the Braintree transaction, its
disputes and refunds), except a Zoho subscription event newer than anything applied, which is written from the
subscription it carries (``sync_subscription``); then it writes through ``workers.records``, so a duplicate is
harmless and an older event never undoes a newer one:

- ``subscriptions`` carry ``last_event_at`` (``set_subscription``); a Zoho subscription event is applied from the
  subscription it carries, with no re-read, only when it is newer than every state Attio holds (``_carried_state``);
- a Braintree notification writes the status the transaction has now (``payments.status_of``), whatever the order
  of the deliveries; every ``payments`` write moves only as ``payments.TRANSITIONS`` allows (``upsert_payment``).

Missing counterparts are outcomes, not failures: a Zoho subscription nobody requested in Attio, a Braintree
transaction the service never charged. They are logged and the job succeeds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import sentry_sdk

from integration import runbook
from integration.clients.attio_values import record_id, value

from ..payments import DISPUTE_STATUSES, PaymentStatus, can_move, status_of
from ..providers import AttioLike, BraintreeReader, ZohoBooks, ZohoReader
from ..records import (
    ZOHO_TO_ATTIO_STATUS,
    amount,
    event_instant,
    find_company_by_zoho_customer,
    find_one,
    find_subscription_by_zoho_id,
    is_stale,
    iso,
    parse_time,
    ref,
    sale_key,
    set_subscription,
    upsert_payment,
)
from .collection import unbook_sale

__all__ = [
    "DISPUTE_KINDS",
    "PAYMENT_STATUS",
    "TRANSACTION_KINDS",
    "apply_dispute_event",
    "apply_transaction",
    "apply_transaction_event",
    "mirror_payment",
    "reopen_invoice",
    "reopening",
    "sync_subscription",
]

log = logging.getLogger(__name__)

# Zoho payment event → the status of the mirrored ``payments`` record. ``payment_thankyou`` is money received
# (offline payments are recorded after the fact; Zoho's own gateway reports it once charged), hence Settled.
PAYMENT_STATUS = {"payment_thankyou": "Settled", "payment_declined": "Declined", "payment_refunded": "Refunded"}
# Braintree's settlement and dispute notifications: each only names the transaction whose status is re-read.
TRANSACTION_KINDS = ("transaction_settled", "transaction_settlement_declined")
DISPUTE_KINDS = ("dispute_opened", "dispute_won", "dispute_lost", "dispute_accepted", "dispute_auto_accepted",
                 "dispute_expired")

_HEALTHY = ("Active", "Trial")  # statuses after which an earlier "why it is Past due" no longer applies
_SUPERSEDE_DECLINES = ("Cancelled", "Expired")  # Zoho's word that ends a subscription outranks a standing decline
# How far our clock (a Zoho read's time) may be from Zoho's (an event's created_time) when the two are compared.
_CLOCK_MARGIN = timedelta(minutes=5)
_BRAINTREE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what could be a transaction id; anything else is not ours
# A declined payment's reason: Zoho's payment object carries it in ``autotransaction.gateway_error_message``
# (payments.yml of Zoho's published OpenAPI files, the ``autotransaction`` object of a payment); the top-level keys
# are kept as a fallback for hand-made or older payloads.
_DECLINE_KEYS = ("gateway_error_message", "failure_reason", "error_message", "description")


# -- Zoho subscription_* --------------------------------------------------------------------------------------
def sync_subscription(
    event: Mapping[str, Any], *, zoho: ZohoReader, attio: AttioLike, marks: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """Set the Attio subscription's status and next billing date from the Zoho subscription: the one the event
    carries when it is newer than what Attio holds (``_carried_state``), else the one re-read from Zoho.

    An event older than the subscription's ``last_event_at`` is skipped before any Zoho call. ``marks(record_id)``
    gives the subscription's ``DeclineMarks``: while a declined invoice of ours stands, Zoho's ``live`` (Zoho does
    not collect these subscriptions, so it never learns of the decline) leaves ``Past due`` as it is; a
    cancellation or expiry supersedes the decline. Without ``marks`` every event re-reads."""
    hint = (event.get("data") or {}).get("subscription") or {}
    sub_id = hint.get("subscription_id")
    if not sub_id:
        log.warning("zoho %s without a subscription id", event.get("event_type"))
        return {"outcome": "no_subscription"}
    sub_id = str(sub_id)
    # Our activation sets reference_id to the Attio record id when it creates the subscription, so every event of
    # ours carries it; a subscription made in Zoho may carry any text there (``records.subscription_by_reference``
    # looks up only a record id). Only an event without the key needs Zoho to say which record it is for.
    current: Mapping[str, Any] | None = None
    record = find_subscription_by_zoho_id(attio, sub_id, str(hint.get("reference_id") or "") or None)
    if record is None and "reference_id" not in hint:
        current = zoho.get_subscription(sub_id)
        if current is None:
            return _not_in_zoho(sub_id)
        record = find_subscription_by_zoho_id(attio, sub_id, str(current.get("reference_id") or "") or None)
    if record is None:
        log.info("zoho subscription %s has no Attio subscription (created in Zoho directly): skipped", sub_id)
        return {"outcome": "not_in_attio", "zoho_subscription_id": sub_id}
    event_time = event_instant(event)
    if is_stale(record, event_time):  # before any Zoho call: an older event costs nothing
        log.info("zoho %s for %s is older than the last applied event: skipped", event.get("event_type"), sub_id)
        return {"outcome": "stale", "record_id": record_id(record)}
    decline_marks = marks(record_id(record)) if marks is not None else None
    read_at: datetime | None = None
    if current is None and not _carried_state(event, hint, record, decline_marks):
        current = zoho.get_subscription(sub_id)
        if current is None:
            return _not_in_zoho(sub_id)
    if current is not None:
        read_at = datetime.now(UTC)
    state = current if current is not None else hint

    changes: dict[str, Any] = {}
    zoho_status = str(state.get("status") or "")
    status = ZOHO_TO_ATTIO_STATUS.get(zoho_status)
    if status is None:
        log.warning("zoho subscription %s has unmapped status %r: status left as is", sub_id, zoho_status)
    else:
        changes["status"] = status
        if status in _HEALTHY:
            changes["status_detail"] = ""
    next_billing = state.get("next_billing_at")
    changes["next_billing_date"] = str(next_billing) if next_billing else []  # [] clears (cancelled, expired)
    if value(record, "zoho_subscription_id") is None:  # found through reference_id, before activation wrote it
        changes["zoho_subscription_id"] = sub_id

    if decline_marks is not None and status is not None:
        if status in _SUPERSEDE_DECLINES:
            decline_marks.clear_declines()
        elif status != "Past due" and decline_marks.declined():
            log.info("subscription %s: a declined invoice still stands; %s leaves Past due as it is", sub_id, status)
            changes.pop("status", None)
            changes.pop("status_detail", None)
    written = set_subscription(attio, record, changes, event_time=event_time)
    if decline_marks is not None and read_at is not None:
        decline_marks.note_read(read_at)  # Attio now holds Zoho's state as of read_at, newer than older events'
    if decline_marks is not None and event_time is not None:
        # Written or not (nothing is when Attio already holds it, not even last_event_at): an older event delivered
        # later must not be applied from what it carries.
        decline_marks.note_event(event_time)
    return {"outcome": "updated" if written else "unchanged", "record_id": record_id(record), "status": status,
            "source": "zoho" if current is not None else "event"}


def _carried_state(
    event: Mapping[str, Any], hint: Mapping[str, Any], record: Mapping[str, Any], decline_marks: Any
) -> bool:
    """Whether the subscription the event carries may be written as it is, with no Zoho read.

    Zoho's default payload carries the whole subscription object as it was when the event was raised (a captured
    delivery: PipedreamHQ/pipedream ``components/zoho_subscriptions/sources/subscription-created/test-event.mjs``),
    and ``created_time`` is that instant. The carried state is newer than Attio's when the event's instant is
    strictly after every state Attio holds: ``last_event_at`` (the newest event applied), the newest event handled
    (``DeclineMarks.event_at``: one that found Attio as it says writes no ``last_event_at``), and the last copy of a
    Zoho read (``DeclineMarks.read_at``: the subscriptions sweep's repair or a re-read, which write no
    ``last_event_at``; our clock, hence ``_CLOCK_MARGIN``). Otherwise Zoho is re-read:

    - no ``status``, ``next_billing_at`` or ``created_time`` (only ``event_time``, a date: every event of a day ties);
    - the instant ties with ``last_event_at``: two events of one second cannot be ordered by it;
    - Zoho's ``unpaid``/``dunning``: Zoho does not collect these subscriptions, so its word may predate a payment
      the service has made since (the collection's ``Active`` writes no ``last_event_at``);
    - no ``marks`` (no Redis): nothing says whether a Zoho read was copied after the event was raised.

    With no ``last_event_at`` yet (the first event after the activation), the carried state is applied: the
    activation wrote the state Zoho answered at creation, and every event is raised at or after it. An event
    delivered late whose newer successors were lost leaves Attio behind until the subscriptions sweep repairs it,
    as a lost event always did."""
    if decline_marks is None:
        return False
    status, next_billing = hint.get("status"), hint.get("next_billing_at")
    if not isinstance(status, str) or not status or not isinstance(next_billing, str):  # "" clears: still carried
        return False
    if ZOHO_TO_ATTIO_STATUS.get(status) == "Past due":
        return False
    instant = parse_time(event.get("created_time"))
    if instant is None:
        return False
    for applied in (parse_time(value(record, "last_event_at")), decline_marks.event_at()):
        if applied is not None and instant <= applied:
            return False
    read_at = decline_marks.read_at()
    return read_at is None or instant > read_at + _CLOCK_MARGIN


def _not_in_zoho(sub_id: str) -> dict[str, Any]:
    log.warning("zoho subscription %s not found (deleted since the event?)", sub_id)
    return {"outcome": "not_in_zoho", "zoho_subscription_id": sub_id}


# -- Zoho payment_* -------------------------------------------------------------------------------------------
def mirror_payment(
    event: Mapping[str, Any], *, zoho: ZohoReader, braintree: BraintreeReader, attio: AttioLike
) -> dict[str, Any]:
    """Mirror a Zoho payment the service did not make into ``payments``, one record per invoice it pays."""
    event_type = str(event.get("event_type"))
    status = PAYMENT_STATUS.get(event_type)
    hint = (event.get("data") or {}).get("payment") or {}
    payment_id = hint.get("payment_id")
    if status is None or not payment_id:
        log.warning("zoho %s: not a payment event this workflow mirrors", event_type)
        return {"outcome": "ignored"}
    payment = zoho.get_payment(str(payment_id))
    if payment is None:
        # A failed attempt may never become a retrievable payment: go on with what the event said.
        log.info("zoho payment %s not found; using the event's own fields", payment_id)
        payment = dict(hint)

    paid, refunded = amount(payment.get("amount")), amount(payment.get("amount_refunded"))
    if status == "Settled" and paid and refunded is not None and refunded >= paid:
        # A thank-you delivered after the payment's refund (Zoho does not order its deliveries): the payment, read
        # now, is refunded. (A refunded payment may become Settled again, when Braintree says its refund gave
        # nothing back: a late event must not look like that.)
        status = "Refunded"
    reference = str(payment.get("reference_number") or "").strip()
    if reference and _made_by_service(reference, attio=attio, braintree=braintree):
        if status == "Refunded":
            # Finance refunded our payment in Zoho: the sale's own record says so (it is the one the CRM sees).
            upsert_payment(attio, sale_key(reference), {"status": "Refunded"})
            log.info("zoho payment %s of Braintree transaction %s refunded: marked Refunded", payment_id, reference)
            return {"outcome": "own_payment_refunded", "transaction_id": reference, "status": "Refunded"}
        log.info("zoho payment %s records Braintree transaction %s (ours): not mirrored", payment_id, reference)
        return {"outcome": "own_payment", "transaction_id": reference}

    invoices = [i for i in payment.get("invoices") or [] if isinstance(i, Mapping) and i.get("invoice_id")]
    if not invoices:
        log.info("zoho payment %s is applied to no invoice: not mirrored", payment_id)
        return {"outcome": "no_invoice", "zoho_payment_id": payment_id}
    customer_id = payment.get("customer_id") or hint.get("customer_id")
    company = find_company_by_zoho_customer(attio, str(customer_id)) if customer_id else None
    if company is None:
        log.info("zoho customer %s has no Attio company; payment %s mirrored without one", customer_id, payment_id)
    reason = _decline_reason(payment) if status == "Declined" else ""
    occurred = _payment_time(payment, event)

    written = []
    for item in invoices:
        invoice_id = str(item["invoice_id"])
        invoice = zoho.get_invoice(invoice_id) or {}
        subscription = _subscription_of(attio, invoice)
        fields: dict[str, Any] = {
            "company": ref("companies", record_id(company) if company else None),
            "subscription": ref("subscriptions", record_id(subscription) if subscription else None),
            "zoho_invoice_id": invoice_id,
            "zoho_invoice_number": str(item.get("invoice_number") or invoice.get("number") or ""),
            "status": status,
            "failure_reason": reason,
        }
        paid = amount(item.get("amount_applied"))
        if paid is None and len(invoices) == 1:
            paid = amount(payment.get("amount"))
        if paid is not None:
            fields["amount"] = str(paid)
        if occurred is not None:
            fields["occurred_at"] = iso(occurred)
        external_id = f"zoho-invoice:{invoice_id}:{payment_id}"
        upsert_payment(attio, external_id, fields)
        written.append(external_id)
    return {"outcome": "mirrored", "status": status, "external_ids": written}


def _made_by_service(reference: str, *, attio: AttioLike, braintree: BraintreeReader) -> bool:
    """Whether a Zoho payment's reference is a Braintree transaction of ours (so workflow 3 owns its record)."""
    if not _BRAINTREE_ID.match(reference):
        return False
    if find_one(attio, "payments", "external_id", sale_key(reference)) is not None:
        return True
    # No record yet (the collection job may be between its Zoho and Attio writes): ask Braintree.
    return braintree.find_transaction(reference) is not None


def _subscription_of(attio: AttioLike, invoice: Mapping[str, Any]) -> dict[str, Any] | None:
    for item in invoice.get("subscriptions") or []:
        sub_id = item.get("subscription_id") if isinstance(item, Mapping) else None
        if sub_id:
            return find_subscription_by_zoho_id(attio, str(sub_id))
    return None


def _decline_reason(payment: Mapping[str, Any]) -> str:
    auto = payment.get("autotransaction")
    text = str((auto.get("gateway_error_message") if isinstance(auto, Mapping) else None) or "").strip()
    if text:
        return text
    for key in _DECLINE_KEYS:
        text = str(payment.get(key) or "").strip()
        if text:
            return text
    return "Payment declined in Zoho Billing"


def _payment_time(payment: Mapping[str, Any], event: Mapping[str, Any]) -> datetime | None:
    """When the payment happened: Zoho's created_time, else its date, else when the event was raised."""
    for raw in (payment.get("created_time"), payment.get("date")):
        moment = parse_time(str(raw)) if raw else None
        if moment is not None:
            return moment
    return event_instant(event)


# -- Braintree transaction_* and dispute_* --------------------------------------------------------------------
def apply_transaction_event(
    event: Mapping[str, Any], *, attio: AttioLike, braintree: BraintreeReader
) -> dict[str, Any]:
    """Write the status the notified transaction has now in Braintree to its payment (``apply_transaction``).

    The notification only says which transaction to read: Braintree does not order its deliveries, and for ACH a
    settlement decline may follow ``transaction_settled``, so whichever arrives last, the record ends where
    Braintree is."""
    kind = str(event.get("kind"))
    txn_id = (event.get("transaction") or {}).get("id")
    if kind not in TRANSACTION_KINDS or not txn_id:
        log.warning("braintree %s: not a transaction event this workflow applies", kind)
        return {"outcome": "ignored"}
    txn = braintree.find_transaction(str(txn_id))
    if txn is None:
        log.info("braintree %s for unknown transaction %s: nothing to update", kind, txn_id)
        return {"outcome": "unknown_transaction", "transaction_id": str(txn_id)}
    return apply_transaction(txn, attio=attio, braintree=braintree, kind=kind)


def apply_transaction(
    txn: Any, *, attio: AttioLike, braintree: BraintreeReader, kind: str, status: PaymentStatus | None = None
) -> dict[str, Any]:
    """Write a Braintree transaction's status now (``payments.status_of``, or ``status`` when the caller has just
    read it from this same ``txn``) to its payment record.

    A declined settlement (or a voided sale) means the money never arrived: the result names the sale's invoice as
    ``reopen_invoice`` (``reopening``), and the caller then takes the sale's payment off that Zoho invoice
    (``reopen_invoice``: under the invoice's lock, after this one's is released; idempotent, so every delivery and
    sweep that finds the sale Failed may ask), so Zoho never shows an invoice paid by nothing."""
    if str(getattr(txn, "type", "sale")) == "credit":
        return _refund_event(attio, braintree, kind, txn)
    txn_id = str(txn.id)
    if status is None:
        status = status_of(txn, braintree.find_transaction)
    if status is None:
        log.warning("braintree %s: transaction %s has unmapped status %r: left as is", kind, txn_id,
                    getattr(txn, "status", None))
        return {"outcome": "ignored", "transaction_id": txn_id}
    reopen = reopening(txn, status)
    external_id = sale_key(txn_id)
    record = find_one(attio, "payments", "external_id", external_id)
    if record is None:
        return {**_unrecorded(attio, kind, txn, status, external_id), **reopen}
    changed = _write(attio, record, external_id, status, txn)
    return {"outcome": "updated" if changed else "unchanged", "transaction_id": txn_id, "status": status.value,
            **reopen}


def reopening(txn: Any, status: PaymentStatus | None) -> dict[str, str]:
    """``{"reopen_invoice": invoice id, "transaction_id": ...}`` when ``txn`` is a sale of ours whose money never
    arrived (its ``status_of`` is Failed: settlement declined, voided), else ``{}``: what ``reopen_invoice`` acts on."""
    if str(getattr(txn, "type", "sale")) == "credit" or status is not PaymentStatus.FAILED:
        return {}
    order_id = getattr(txn, "order_id", None)
    return {"reopen_invoice": str(order_id), "transaction_id": str(txn.id)} if order_id else {}


def reopen_invoice(result: dict[str, Any], *, zoho: ZohoBooks, connection: redis.Redis) -> dict[str, Any]:
    """Take a sale whose money never arrived off its Zoho invoice (``collection.unbook_sale``: the invoice's lock,
    idempotent) when ``result`` names one (``reopening``, ``apply_transaction``); returns ``result`` with
    ``zoho_payment_deleted``. The one way both the settlement webhook's job and the settlements sweep unbook, taken
    with no transaction lock held (collection takes the invoice's lock first)."""
    if result.get("reopen_invoice"):
        result["zoho_payment_deleted"] = unbook_sale(str(result["reopen_invoice"]), str(result["transaction_id"]),
                                                     zoho=zoho, connection=connection)
    return result


def _refund_event(attio: AttioLike, braintree: BraintreeReader, kind: str, credit: Any) -> dict[str, Any]:
    """A credit (a refund) carries its sale's ``order_id`` but is money going out: it is never recorded as a payment.
    Its notification re-reads the refunded sale, whose record then shows the sale's status now (Refunded)."""
    credit_id, refunded = str(credit.id), getattr(credit, "refunded_transaction_id", None)
    sale = braintree.find_transaction(str(refunded)) if refunded else None
    record = find_one(attio, "payments", "external_id", sale_key(str(refunded))) if sale is not None else None
    if sale is None or record is None:
        log.info("braintree %s for credit %s: the refunded sale %s has no Attio payment: nothing to change", kind,
                 credit_id, refunded)
        return {"outcome": "refund_ignored", "transaction_id": credit_id}
    status = status_of(sale, braintree.find_transaction)
    if status is None:
        return {"outcome": "refund_ignored", "transaction_id": credit_id}
    changed = _write(attio, record, sale_key(str(refunded)), status, sale)
    return {"outcome": "refunded" if changed else "unchanged", "transaction_id": str(refunded), "status": status.value}


def _unrecorded(attio: AttioLike, kind: str, txn: Any, status: PaymentStatus, external_id: str) -> dict[str, Any]:
    """A notification about a transaction Attio has no payment for yet.

    A sale of ours carries the invoice id as ``order_id``; its notification can arrive before the collection wrote
    the payment (the collection job may be waiting for a retry). Dropping it would lose the event, so the record
    is created here with what Braintree says; the collection's later write fills in the company and subscription
    and cannot move the status back (``upsert_payment``). A transaction without an order id is not one of ours:
    logged, nothing created.
    """
    txn_id = str(txn.id)
    order_id = getattr(txn, "order_id", None)
    if not order_id:
        log.info("braintree %s for unknown transaction %s: nothing to update", kind, txn_id)
        return {"outcome": "unknown_transaction", "transaction_id": txn_id}
    fields: dict[str, Any] = {"status": status.value, "zoho_invoice_id": str(order_id)}
    sold = amount(getattr(txn, "amount", None))
    if sold is not None:
        fields["amount"] = str(sold)
    if status is PaymentStatus.FAILED:
        fields["failure_reason"] = _settlement_reason(txn)
    upsert_payment(attio, external_id, fields)
    log.info("braintree %s for transaction %s (invoice %s) before its collection was recorded: created %s",
             kind, txn_id, order_id, status.value)
    return {"outcome": "created", "transaction_id": txn_id, "status": status.value}


def apply_dispute_event(event: Mapping[str, Any], *, attio: AttioLike, braintree: BraintreeReader) -> dict[str, Any]:
    """Write the disputed transaction's status now (its newest dispute's, re-read with it) to its payment; an
    opened dispute also warns on-call through Sentry unless the payment already shows a dispute."""
    kind = str(event.get("kind"))
    dispute = event.get("dispute") or {}
    txn_id = (dispute.get("transaction") or {}).get("id")
    if kind not in DISPUTE_KINDS or not txn_id:
        log.warning("braintree %s: not a dispute event this workflow applies", kind)
        return {"outcome": "ignored"}
    txn = braintree.find_transaction(str(txn_id))
    status = status_of(txn, braintree.find_transaction) if txn is not None else None
    if txn is None or status is None:
        log.warning("braintree %s: transaction %s not found in Braintree (or unmapped): nothing to update", kind,
                    txn_id)
        return {"outcome": "unknown_transaction", "transaction_id": str(txn_id)}
    external_id = sale_key(txn_id)
    record = find_one(attio, "payments", "external_id", external_id)
    current = value(record, "status") if record is not None else None
    if kind == "dispute_opened" and current not in DISPUTE_STATUSES:
        # Warn before writing: a retry after a failed write warns again (Sentry groups it), never not at all.
        _warn_dispute(dispute, str(txn_id), known=record is not None)
    if record is None:
        return _unrecorded(attio, kind, txn, status, external_id)
    changed = _write(attio, record, external_id, status, txn)
    return {"outcome": "updated" if changed else "unchanged", "transaction_id": txn_id, "status": status.value}


def _write(attio: AttioLike, record: Mapping[str, Any], external_id: str, status: PaymentStatus, txn: Any) -> bool:
    """Move a payment to ``status`` if it is not there and the move can happen; returns whether it changed."""
    current = value(record, "status")
    if current == status.value:
        return False
    if not can_move(current, status.value):
        log.info("payment %s is %s; Braintree says %s: not a move a payment can make, left as is", external_id,
                 current, status.value)
        return False
    fields: dict[str, Any] = {"status": status.value}
    if status is PaymentStatus.FAILED:
        fields["failure_reason"] = _settlement_reason(txn)
    upsert_payment(attio, external_id, fields)
    return True


def _settlement_reason(txn: Any) -> str:
    """Why a sale's money never arrived, in the processor's words when it gave some."""
    text = str(getattr(txn, "processor_settlement_response_text", None) or "").strip()
    if text:
        return text
    return "Voided in Braintree" if str(getattr(txn, "status", "")) == "voided" else "Settlement declined"


def _warn_dispute(dispute: Mapping[str, Any], txn_id: str, *, known: bool) -> None:
    """A Sentry warning naming the transaction and amount (ids and amounts only: no customer or card data)."""
    txn = dispute.get("transaction") or {}
    amount = dispute.get("amount") or txn.get("amount") or "unknown amount"
    message = f"Braintree dispute opened on transaction {txn_id} for {amount}"
    tags = {
        "braintree.transaction_id": str(txn_id),
        "braintree.dispute_id": str(dispute.get("id") or ""),
        "braintree.dispute_reason": str(dispute.get("reason") or ""),
        "dispute.amount": str(amount),
        "attio.payment": "found" if known else "missing",
        "runbook": runbook.link("dispute-opened"),
    }
    log.warning("%s (reason %s)", message, dispute.get("reason"))
    sentry_sdk.capture_message(message, level="warning", tags=tags)
