"""The audit's invariants as pure functions over what was gathered (no I/O): one invoice and its sales at a time.

For one invoice and every sale whose ``order_id`` is that invoice:

1. at most one successful (charged) sale;
2. each charged sale applied by exactly one Zoho payment (``reference_number`` = transaction id) whose ``amount``
   equals the sale (``amount_applied`` may be less: the rest stays as customer credit);
3. each Zoho card payment on the invoice backed by a sale of this invoice that is still charged;
4. each sale that charged (even if voided or declined at settlement since) has its Attio ``payments`` record
   ``braintree:<id>`` with the sale's amount and a status consistent with Braintree's; a declined sale's record,
   when there is one, says Declined or Failed;
5. an open invoice of a managed subscription, older than the threshold, with no attempt at all (decided while
   gathering, which needs calls) is reported as never attempted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .model import UNCHARGED_AFTER_CHARGE, AttioPayment, Invoice, Sale, Violation, ZohoPayment

__all__ = ["Facts", "check_invoice", "expected_attio_statuses", "never_attempted"]

_CHARGED_STATUSES = frozenset({"Submitted", "Settled", "Disputed", "Dispute won", "Dispute lost"})
_VOIDABLE = frozenset({"authorizing", "authorized", "submitted_for_settlement", "settlement_pending"})


@dataclass
class Facts:
    """What the checks read besides the invoice and its sales."""

    attio: Mapping[str, AttioPayment]  # external_id → record
    elsewhere: Mapping[str, Sale | None] = field(default_factory=dict)  # card payment reference → its transaction
    payment_amounts: Mapping[str, Decimal] = field(default_factory=dict)  # Zoho payment id → the payment's amount
    jobs: Callable[[str], Sequence[str]] = lambda invoice_id: ()  # failed collection jobs of an invoice


def expected_attio_statuses(sale: Sale) -> frozenset[str]:
    """The Attio statuses consistent with the sale's Braintree status."""
    if sale.charged:
        return _CHARGED_STATUSES | ({"Refunded"} if sale.refunded else set())
    if sale.status in UNCHARGED_AFTER_CHARGE:
        return frozenset({"Failed"})
    return frozenset({"Declined", "Failed"})


def check_invoice(invoice: Invoice, sales: Sequence[Sale], facts: Facts) -> list[Violation]:
    """Every violation of invariants 1–4 for one invoice."""
    found: list[Violation] = []

    def report(kind: str, txns: Sequence[str], detail: str, fix: str) -> None:
        found.append(Violation(kind, invoice.invoice_id, tuple(txns), detail, fix, invoice.number))

    charged = sorted((s for s in sales if s.charged), key=lambda s: (s.created_at, s.id))
    payments = invoice.payments or []
    by_reference: dict[str, list[ZohoPayment]] = {}
    for payment in payments:
        by_reference.setdefault(payment.reference, []).append(payment)
    retry = _retry_hint(facts.jobs(invoice.invoice_id))

    if len(charged) > 1:
        keep = next((s for s in charged if s.id in by_reference), charged[0])
        extras = [s for s in charged if s is not keep]
        undo = "; ".join(
            f"{'void' if s.status in _VOIDABLE else 'refund'} the {_nth(charged.index(s) + 1)} sale {s.id} "
            f"({s.amount}, {s.created_at:%Y-%m-%d %H:%M}) in Braintree"
            + "".join(f" and delete its Zoho payment {p.payment_id}" for p in by_reference.get(s.id, []))
            for s in extras
        )
        booked = ", the one booked in Zoho" if keep.id in by_reference else ""
        report("double_charge", [s.id for s in charged], f"{len(charged)} successful sales for one invoice",
               f"{undo} (keep {keep.id}{booked})")

    for sale in charged:
        mine = by_reference.get(sale.id, [])
        if not invoice.found:
            report("missing_zoho_payment", [sale.id], f"the sale ({sale.amount}) names invoice {invoice.invoice_id}, "
                   "which is not in Zoho Billing",
                   f"find what sale {sale.id} was for; if nothing, refund it in Braintree")
        elif not mine:
            report("missing_zoho_payment", [sale.id],
                   f"no Zoho payment with reference_number {sale.id} on the invoice (sale {sale.amount}, "
                   f"invoice {invoice.status or 'unknown'}, balance {invoice.balance})",
                   _record_fix(invoice, sale, retry))
        elif len({p.payment_id for p in mine}) > 1:
            ids = sorted({p.payment_id for p in mine})
            report("duplicate_zoho_payment", [sale.id], f"{len(ids)} Zoho payments ({', '.join(ids)}) for one sale",
                   f"delete the Zoho payment(s) {', '.join(ids[1:])} (keep {ids[0]})")
        else:
            payment = mine[0]
            amount = facts.payment_amounts.get(payment.payment_id, payment.applied)
            if amount != sale.amount:
                report("zoho_amount_mismatch", [sale.id],
                       f"Zoho payment {payment.payment_id} is {amount}, the sale {sale.amount}",
                       f"edit Zoho payment {payment.payment_id}: amount {sale.amount} (amount_applied = "
                       f"min(sale, balance))")

    mine_by_id = {s.id: s for s in sales}
    for payment in payments:
        if not payment.by_card:
            continue
        backing = mine_by_id.get(payment.reference) or facts.elsewhere.get(payment.reference)
        if backing is None:
            why = f"no Braintree sale {payment.reference}"
        elif backing.order_id != invoice.invoice_id:
            why = f"Braintree sale {payment.reference} is for order {backing.order_id or '(none)'}, not this invoice"
        elif not backing.charged:
            why = f"Braintree sale {payment.reference} is {backing.status}: no money was taken"
        else:
            continue
        report("unbacked_zoho_payment", [payment.reference], f"Zoho payment {payment.payment_id} ({payment.applied}): "
               f"{why}", f"delete (or refund) Zoho payment {payment.payment_id}; the invoice is then open and the "
               "collection charges it again: " + (retry or _send_hint(invoice)))

    for sale in sales:
        record = facts.attio.get(f"braintree:{sale.id}")
        must_exist = sale.charged or sale.status in UNCHARGED_AFTER_CHARGE
        if record is None:
            if must_exist:
                report("missing_attio_payment", [sale.id], f"no Attio payments record braintree:{sale.id} "
                       f"(sale {sale.amount}, {sale.status})",
                       retry or f"create the Attio payments record braintree:{sale.id} (amount {sale.amount}, "
                       f"status {_status_for(sale)})")
            continue
        if must_exist and record.amount != sale.amount:
            report("attio_amount_mismatch", [sale.id], f"Attio braintree:{sale.id} says {record.amount}, "
                   f"the sale {sale.amount}", f"set amount {sale.amount} on Attio payments record {record.record_id}")
        expected = expected_attio_statuses(sale)
        if record.status not in expected:
            report("attio_status_mismatch", [sale.id], f"Attio braintree:{sale.id} is {record.status}, Braintree "
                   f"{sale.status}" + (" (refunded)" if sale.refunded else ""),
                   f"set status {_status_for(sale)} on Attio payments record {record.record_id}")
    return found


def never_attempted(invoice: Invoice, now: datetime, jobs: Sequence[str]) -> Violation:
    """The violation of an open invoice of a managed subscription that nothing ever tried to collect."""
    age = (now - invoice.created).total_seconds() / 3600 if invoice.created else float("nan")
    return Violation(
        "never_attempted", invoice.invoice_id, (),
        f"open ({invoice.status}, balance {invoice.balance}) for {age:.0f} h: no Braintree sale and no Attio "
        f"payments record", _retry_hint(jobs) or _send_hint(invoice), invoice.number,
    )


def _record_fix(invoice: Invoice, sale: Sale, retry: str) -> str:
    if not invoice.open:  # void, written off, paid by something else: the sale cannot be applied to it
        return (f"the invoice is {invoice.status or 'closed'}: refund sale {sale.id} in Braintree, or record it in "
                f"Zoho as a payment of {sale.amount} (reference_number {sale.id}) left as customer credit")
    record = (f"record payment in Zoho: amount {sale.amount}, reference_number {sale.id}, applied to "
              f"{invoice.label} (amount_applied = min(sale, balance))")
    return f"{retry} — or {record}" if retry else record


def _status_for(sale: Sale) -> str:
    if sale.charged:
        return "Refunded" if sale.refunded else ("Settled" if sale.status in ("settled", "settlement_confirmed")
                                                 else "Submitted")
    return "Failed" if sale.status in UNCHARGED_AFTER_CHARGE else "Declined"


def _retry_hint(jobs: Sequence[str]) -> str:
    return f"re-run collection: flask --app integration jobs retry {' '.join(jobs)}" if jobs else ""


def _send_hint(invoice: Invoice) -> str:
    return ("send it to the collection: flask --app integration webhooks send zoho invoice_created "
            f"--id {invoice.invoice_id}")


def _nth(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")
