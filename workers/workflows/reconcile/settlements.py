"""The settlements sweep: card payments ``Submitted`` for ``SETTLEMENT_CHECK_AFTER_HOURS`` → what Braintree says.

Braintree sends ``transaction_settled`` / ``transaction_settlement_declined`` webhooks only for ACH and SEPA
direct debit, never for cards: this sweep is how a card payment becomes ``Settled``, or ``Failed`` when its
settlement was declined or the sale voided (or Refunded, Disputed: whatever Braintree says now, as
``payments.status_of`` reads it). Each transaction is read by id (Braintree's search index may show a status as it
was a while ago), and read again under the transaction's lock before it is applied through the settlement event's
own code (a webhook's job may have written a newer status meanwhile; one found failed only then is left
``Submitted`` for the next run, which unbooks it first); a sale whose money never arrived is
first taken off its Zoho invoice as that event's job does (``lifecycle.reopen_invoice``, once however many sweeps
and late webhooks find it), so the invoices sweep collects the invoice again. A payment still
``Submitted`` after ``SETTLEMENT_GIVE_UP_DAYS`` is no longer looked up (one warning).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from integration.clients.attio_values import value
from integration.locks import hold, transaction_lock

from ...payments import PaymentStatus, status_of
from ...records import parse_time, sale_of
from ..lifecycle import apply_transaction, reopen_invoice, reopening
from .base import SweepContext, SweepReport, walk

__all__ = ["SETTLEMENT_GIVE_UP_DAYS", "sweep_settlements"]

log = logging.getLogger(__name__)

SETTLEMENT_GIVE_UP_DAYS = 30


def sweep_settlements(ctx: SweepContext) -> SweepReport:
    """Move card payments ``Submitted`` past the threshold to the status Braintree has now (``status_of``)."""
    report = SweepReport("settlements", dry_run=ctx.dry_run)
    cutoff, give_up = ctx.now - ctx.settlement_after, ctx.now - timedelta(days=SETTLEMENT_GIVE_UP_DAYS)
    records = ctx.attio.query_records("payments", {"status": "Submitted"})
    candidates: list[tuple[str, dict[str, Any]]] = []
    for record in records:
        report.looked_at += 1
        external_id = str(value(record, "external_id") or "")
        txn_id = sale_of(external_id)
        since = parse_time(value(record, "occurred_at")) or parse_time(str(record.get("created_at") or ""))
        if txn_id is None or since is None or since > cutoff:
            report.skipped += 1
        elif since < give_up:
            log.warning("payment %s is still Submitted %s days after %s: no longer looked up in Braintree",
                        external_id, SETTLEMENT_GIVE_UP_DAYS, since.date())
            report.skipped += 1
        else:
            candidates.append((external_id, record))

    def settle(record: dict[str, Any]) -> None:
        txn_id = str(sale_of(str(value(record, "external_id"))))
        txn = ctx.braintree.find_transaction(txn_id)  # by id: a search hit's status may lag Braintree's own
        if txn is None:
            log.warning("payment braintree:%s is Submitted but Braintree has no such transaction", txn_id)
            report.unrepaired += 1
            return
        status = status_of(txn, ctx.braintree.find_transaction)
        if status in (None, PaymentStatus.SUBMITTED):
            report.skipped += 1  # submitted_for_settlement, settling, settlement_pending: not decided yet
            return
        reopen = reopening(txn, status)
        if ctx.dry_run:
            unbook = f" (its Zoho payment on invoice {reopen['reopen_invoice']} deleted)" if reopen else ""
            report.planned.append(f"payment braintree:{txn_id} → {status}{unbook}")
            report.repaired += 1
            return
        # Unbooked before Failed is written: the sweep finds only Submitted payments, so were the order reversed, a
        # Zoho outage after the write would leave the invoice paid by nothing for good. Redone, it deletes nothing.
        unbooked = reopen_invoice(reopen, zoho=ctx.zoho, connection=ctx.connection).get("zoho_payment_deleted")
        with hold(ctx.connection, transaction_lock(txn_id), ttl=60.0, wait=15.0):  # as the webhook's job
            txn = ctx.braintree.find_transaction(txn_id) or txn  # what a job that held the lock may have written
            status = status_of(txn, ctx.braintree.find_transaction)
            if reopening(txn, status) and not reopen:
                # Its settlement declined since the first read: Failed written now would leave its Zoho payment for
                # good (the sweep reads only Submitted payments); the next run unbooks first, then writes.
                log.info("payment braintree:%s failed while the sweep waited: left for the next run", txn_id)
                report.skipped += 1
                return
            outcome = apply_transaction(txn, attio=ctx.attio, braintree=ctx.braintree, kind="settlements sweep",
                                        status=status)
        if outcome.get("outcome") in ("updated", "created") or unbooked:
            report.repaired += 1
        else:
            report.skipped += 1

    walk(ctx, "settlements", candidates, settle).finish(report)
    return report
