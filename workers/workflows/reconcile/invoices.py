"""The invoices sweep: open Zoho invoices the webhooks missed → their collection; due dunning retries → queued.

Open invoices (``filter_by=Status.Unpaid``: sent, overdue, unpaid, partially paid) with a balance, older than
``RECONCILE_GRACE_MINUTES``, of a customer an Attio company maps to (the card is the company's), of subscriptions
the service manages (``collection.scope``), with no recent attempt, not in dunning, no collection running → a
collection of the invoice (``workers.followups``), which the invoice's lock and charge intent make one charge
whatever else runs. A sale charged but never booked in Zoho (its job gave up) is booked by that same collection,
never charged again. An invoice found not managed is not read again for a day.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from integration.clients.attio_values import value
from integration.locks import invoice_lock, is_held

from ...dunning import Dunning
from ...followups import enqueue_collection, enqueue_dunning_retry
from ...intents import ChargeIntents
from ...providers import AttioLike
from ...records import parse_time
from ..collection import OPEN_STATUSES, scope
from .base import SweepContext, SweepReport, follow_up, money, sort_time, walk

__all__ = ["UNMANAGED_TTL", "sweep_invoices"]

log = logging.getLogger(__name__)

UNMANAGED_TTL = 24 * 3600  # seconds an invoice found not managed is left alone


def sweep_invoices(ctx: SweepContext) -> SweepReport:
    """Queue the collection of every open managed invoice the webhooks missed; queue due dunning retries."""
    report = SweepReport("invoices", dry_run=ctx.dry_run)
    intents, dunning = ChargeIntents(ctx.connection), Dunning(ctx.connection, ctx.dunning_days)
    for entry in dunning.due(ctx.now.timestamp()):
        report.looked_at += 1
        follow_up(ctx, report, f"retry invoice {entry.invoice_number or entry.invoice_id} (decline {entry.declines})",
                  partial(enqueue_dunning_retry, ctx.connection, entry.invoice_id, entry.declines,
                          retry_schedule=ctx.retry_schedule))

    cutoff = ctx.now - ctx.grace
    rows = ctx.zoho.list_invoices(status="Unpaid")  # Zoho's Unpaid: every open status, one paged list
    companies: dict[str, dict[str, Any]] | None = None  # Zoho customer id → Attio company, read once if needed

    def look(row: Mapping[str, Any]) -> None:
        nonlocal companies
        report.looked_at += 1
        invoice_id, customer_id = str(row.get("invoice_id")), str(row.get("customer_id"))
        reason = _why_not_collect(ctx, row, intents, dunning, cutoff)
        if reason is None:
            if companies is None:
                companies = _mapped_companies(ctx.attio)
            if customer_id not in companies:
                # The card is the company's: an invoice of a customer no company maps to cannot be charged.
                reason = "its customer is no Attio company's"
        if reason is None:
            invoice = ctx.zoho.get_invoice(invoice_id)  # the list row carries neither subscriptions nor payments
            if invoice is None or not scope(ctx.zoho, ctx.attio, invoice, (companies or {}).get(customer_id))[0]:
                if not ctx.dry_run:
                    ctx.connection.set(_unmanaged_key(invoice_id), b"1", ex=UNMANAGED_TTL)
                reason = "not managed"
        if reason is not None:
            log.debug("invoices sweep: %s skipped (%s)", invoice_id, reason)
            report.skipped += 1
            return
        follow_up(ctx, report, f"collect invoice {row.get('number') or invoice_id} ({invoice_id})",
                  lambda: enqueue_collection(ctx.connection, invoice_id, tag=ctx.tag, source="reconcile",
                                             retry_schedule=ctx.retry_schedule, event_time=row.get("created_time")))

    keyed = [(f"{sort_time(r.get('created_time'))}|{r.get('invoice_id')}", r) for r in rows]
    walk(ctx, "invoices", keyed, look).finish(report)
    return report


def _why_not_collect(
    ctx: SweepContext, row: Mapping[str, Any], intents: ChargeIntents, dunning: Dunning, cutoff: datetime
) -> str | None:
    """Why an open invoice's row needs no collection from the sweep (None: it may)."""
    invoice_id = str(row.get("invoice_id"))
    if row.get("status") not in OPEN_STATUSES or money(row.get("balance")) <= 0:
        return "not open"
    created = parse_time(str(row.get("created_time") or ""))
    if created is None or created > cutoff:
        return "younger than the grace period"
    intent = intents.load(invoice_id)
    # A charged intent on an invoice still open past the grace is a sale whose Zoho payment was never recorded (its
    # job gave up): the collection is queued again, and books that sale (it finds it by id) without a new one.
    if intent is not None and ctx.now.timestamp() - intent.at < ctx.grace.total_seconds():
        return "an attempt is recent"
    if dunning.load(invoice_id) is not None:
        return "in dunning"
    if intent is not None and intent.state == "closed" and intent.response_type:
        return "declined before dunning: waits for a new payment method"
    if ctx.connection.exists(_unmanaged_key(invoice_id)):
        return "not managed"
    if is_held(ctx.connection, invoice_lock(invoice_id)):
        return "a collection is running"
    return None


def _mapped_companies(attio: AttioLike) -> dict[str, dict[str, Any]]:
    """Every Attio company mapped to a Zoho customer, by Zoho customer id (one paged query)."""
    rows = attio.query_records("companies", {"zoho_customer_id": {"$not_empty": True}})
    return {str(value(c, "zoho_customer_id")): c for c in rows if value(c, "zoho_customer_id")}


def _unmanaged_key(invoice_id: str) -> str:
    return f"reconcile:unmanaged:{invoice_id}"
