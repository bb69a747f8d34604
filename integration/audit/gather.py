"""The audit's reads, list calls first, each through ``Patience`` (bounded waits), with progress on ``say``.

Calls, for a window of N invoices (Zoho invoices dated or created since ``since``, plus those named by sales
created since then) and P Attio payments records:

- Braintree: one search for every sale created since ``since`` (the SDK fetches 50 per request); one more search
  over [oldest invoice's creation, ``since``] when some invoice predates ``since`` (a sale cannot be older than its
  invoice, so this finds every older sale of those invoices, e.g. the first sale of a double charge); per
  invoice only for an invoice Zoho does not know (a search by ``order_id``) and per Zoho card payment whose
  reference is not among the invoice's sales (a ``find``).
- Zoho (the tight budget): ``ceil(invoices since / 200)`` list pages, newest first, stopping at the first page that
  ends before ``since``; then **one** ``GET /invoices/{id}`` per invoice that has a sale or shows a payment (the
  list rows do not carry payments), none for an untouched open invoice; **one** ``GET /payments/{id}`` only when a
  payment applied less than its sale (to compare the payment's own amount), or for every payment of a sale with
  ``every_payment`` (a payment larger than its sale but applied in full is only seen that way); for an open, stale
  invoice with no attempt, its ``GET /invoices/{id}`` (for the subscription) and one ``GET /subscriptions/{id}`` per
  subscription.
- Attio: ``ceil(P / 500)`` pages of ``payments``; pages of ``subscriptions`` and ``companies`` only when some
  stale open invoice needs the "managed" test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from ..clients.attio_values import record_id, value
from .model import AttioPayment, Invoice, Sale
from .patience import Patience

__all__ = ["Gathered", "gather"]

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_CLOCK_MARGIN = timedelta(days=1)  # Zoho's created_time and Braintree's created_at come from different clocks
_PROGRESS_EVERY = 10


@dataclass
class Gathered:
    """Everything the checks read."""

    invoices: dict[str, Invoice] = field(default_factory=dict)
    sales: dict[str, list[Sale]] = field(default_factory=dict)  # invoice id → its sales (any status, any age)
    attio: dict[str, AttioPayment] = field(default_factory=dict)  # external_id → record
    attempted: set[str] = field(default_factory=set)  # invoice ids some Attio payments record mentions
    elsewhere: dict[str, Sale | None] = field(default_factory=dict)
    payment_amounts: dict[str, Decimal] = field(default_factory=dict)
    unattempted: list[Invoice] = field(default_factory=list)  # open, stale, managed, nothing tried


def gather(
    *, braintree: Any, zoho: Any, attio: Any, since: datetime, now: datetime, stale_after: timedelta,
    patience: Patience, say: Callable[[str], None], every_payment: bool = False,
) -> Gathered:
    """Read the three systems for the window (see the module docstring for the calls it costs)."""
    got = Gathered()
    say(f"braintree: sales created since {since.isoformat()}")
    recent = patience.call("braintree", "search sales since", lambda: braintree.search_sales(since=since))
    for txn in recent:
        _add_sale(got, Sale.of(txn))
    say(f"braintree: {len(recent)} sale(s) since {since.date().isoformat()}")

    _list_invoices(got, zoho, since, patience, say)
    for order_id in list(got.sales):
        got.invoices.setdefault(order_id, Invoice(order_id, paid_something=True))
    _read_attio_payments(got, attio, patience, say)
    _read_invoices(got, zoho, patience, say)
    _older_sales(got, braintree, since, patience, say)
    for invoice in got.invoices.values():
        if invoice.payments is None and invoice.invoice_id in got.sales:  # a sale found only by the older search
            _read_invoice(invoice, zoho, patience)
    _payment_backing(got, braintree, zoho, patience, every_payment)
    _unattempted(got, zoho, attio, now - stale_after, patience, say)
    return got


def _add_sale(got: Gathered, sale: Sale) -> None:
    if not sale.order_id:
        return  # not one of ours: the service always names the invoice
    mine = got.sales.setdefault(sale.order_id, [])
    if all(s.id != sale.id for s in mine):
        mine.append(sale)


def _list_invoices(got: Gathered, zoho: Any, since: datetime, patience: Patience, say: Callable[[str], None]) -> None:
    """Zoho invoices in the window, page by page; when Zoho says the list is newest first (its default order,
    ``page_context`` ``created_time``/``D``), paging stops at the first page that ends before ``since``."""
    page = 1
    while True:
        rows, context = patience.call("zoho", f"invoices page {page}", partial(zoho.list_invoices_page, page))
        oldest = None
        for row in rows:
            invoice = Invoice.of_row(row)
            if invoice.created is not None and (oldest is None or invoice.created < oldest):
                oldest = invoice.created
            if invoice.in_window(since):
                got.invoices[invoice.invoice_id] = invoice
        say(f"zoho: invoices page {page}: {len(rows)} row(s), {len(got.invoices)} in the window so far")
        newest_first = context.get("sort_column") == "created_time" and context.get("sort_order") == "D"
        if not rows or not context.get("has_more_page"):
            return
        if newest_first and oldest is not None and oldest < since - _CLOCK_MARGIN:
            return
        page += 1


def _read_attio_payments(got: Gathered, attio: Any, patience: Patience, say: Callable[[str], None]) -> None:
    records = patience.call("attio", "payments records", lambda: attio.query_records("payments"))
    for record in records:
        external = str(value(record, "external_id") or "")
        invoice_id = value(record, "zoho_invoice_id")
        amount = value(record, "amount")
        got.attio[external] = AttioPayment(record_id(record), external, value(record, "status"),
                                           Decimal(str(amount)) if amount is not None else None,
                                           str(invoice_id) if invoice_id else None)
        if invoice_id:
            got.attempted.add(str(invoice_id))
        if external.startswith("zoho-invoice:"):
            got.attempted.add(external.split(":")[1])
    say(f"attio: {len(records)} payments record(s)")


def _read_invoices(got: Gathered, zoho: Any, patience: Patience, say: Callable[[str], None]) -> None:
    """Read each invoice whose payments matter: it has a sale, or its row shows a payment."""
    wanted = [inv for inv in got.invoices.values() if inv.invoice_id in got.sales or inv.paid_something]
    for n, invoice in enumerate(sorted(wanted, key=lambda i: i.invoice_id), start=1):
        _read_invoice(invoice, zoho, patience)
        if n % _PROGRESS_EVERY == 0 or n == len(wanted):
            say(f"zoho: read {n}/{len(wanted)} invoice(s)")


def _read_invoice(invoice: Invoice, zoho: Any, patience: Patience) -> None:
    full = patience.call("zoho", f"invoice {invoice.invoice_id}", lambda: zoho.get_invoice(invoice.invoice_id))
    if full is None:
        invoice.found, invoice.payments = False, []
    else:
        invoice.complete(full)


def _older_sales(got: Gathered, braintree: Any, since: datetime, patience: Patience,
                 say: Callable[[str], None]) -> None:
    """Sales older than ``since`` of the window's invoices: one range search, or per invoice when its age is unknown."""
    older = [inv for inv in got.invoices.values() if inv.found and (inv.created is None or inv.created < since)]
    dated = [inv.created for inv in older if inv.created is not None]
    if dated:
        start = min(dated) - _CLOCK_MARGIN
        say(f"braintree: sales created {start.date().isoformat()} … {since.isoformat()} (older sales of "
            f"{len(dated)} invoice(s))")
        for txn in patience.call("braintree", "search older sales",
                                 lambda: braintree.search_sales(since=start, until=since)):
            sale = Sale.of(txn)
            if sale.order_id in got.invoices:
                _add_sale(got, sale)
    unknown = [inv for inv in got.invoices.values() if not inv.found or inv.created is None]
    for invoice in unknown:
        for txn in patience.call("braintree", f"sales of {invoice.invoice_id}",
                                 partial(braintree.search_sales, since=_EPOCH, order_id_prefix=invoice.invoice_id)):
            sale = Sale.of(txn)
            if sale.order_id == invoice.invoice_id:
                _add_sale(got, sale)


def _payment_backing(got: Gathered, braintree: Any, zoho: Any, patience: Patience, every_payment: bool) -> None:
    """Transactions named by card payments that are not among the invoice's sales; the amount of each payment
    applied partly (or of every payment of a sale, ``every_payment``: the invoice shows only what was applied)."""
    for invoice in got.invoices.values():
        sales = {s.id: s for s in got.sales.get(invoice.invoice_id, [])}
        for payment in invoice.payments or []:
            sale = sales.get(payment.reference)
            if payment.by_card and sale is None and payment.reference not in got.elsewhere:
                txn = patience.call("braintree", f"transaction {payment.reference}",
                                    partial(braintree.find_transaction, payment.reference))
                found = Sale.of(txn) if txn is not None and _is_sale(txn) else None
                got.elsewhere[payment.reference] = found
                if found is not None and found.order_id == invoice.invoice_id:
                    # A sale of this invoice the searches did not return (Braintree's search index lags behind a
                    # new sale): it is checked like the others, for a double charge and its Attio record too.
                    _add_sale(got, found)
                    sales[found.id] = sale = found
            if sale is not None and sale.charged and (every_payment or payment.applied != sale.amount) \
                    and payment.payment_id not in got.payment_amounts:
                full = patience.call("zoho", f"payment {payment.payment_id}",
                                     partial(zoho.get_payment, payment.payment_id))
                amount = (full or {}).get("amount")
                if amount is not None:
                    got.payment_amounts[payment.payment_id] = Decimal(str(amount))


def _is_sale(txn: Any) -> bool:
    return str(getattr(txn, "type", "sale")) == "sale"  # a credit (refund) is never a sale


def _unattempted(got: Gathered, zoho: Any, attio: Any, stale_before: datetime, patience: Patience,
                 say: Callable[[str], None]) -> None:
    """Open invoices older than the threshold that nothing tried to collect, of subscriptions the service manages."""
    candidates = [inv for inv in got.invoices.values()
                  if inv.found and inv.open and inv.created is not None and inv.created < stale_before
                  and inv.invoice_id not in got.sales and inv.invoice_id not in got.attempted]
    if not candidates:
        return
    say(f"zoho: {len(candidates)} stale open invoice(s) without an attempt: checking their subscriptions")
    managed = _Managed(zoho, attio, patience)
    for invoice in candidates:
        if invoice.payments is None:
            _read_invoice(invoice, zoho, patience)  # the list rows do not name the subscription
        if invoice.found and invoice.open and managed(invoice):
            got.unattempted.append(invoice)


class _Managed:
    """Whether an invoice's subscription is one the service collects (read lazily, once)."""

    def __init__(self, zoho: Any, attio: Any, patience: Patience) -> None:
        self._zoho, self._attio, self._patience = zoho, attio, patience
        self._subs: dict[str, dict[str, Any] | None] = {}
        self._attio_ids: tuple[set[str], set[str], set[str]] | None = None

    def __call__(self, invoice: Invoice) -> bool:
        sub_id = invoice.subscription_id
        if not sub_id:
            return False  # a one-off invoice: not the collection's
        if sub_id not in self._subs:
            self._subs[sub_id] = self._patience.call("zoho", f"subscription {sub_id}",
                                                     lambda: self._zoho.get_subscription(sub_id))
        sub = self._subs[sub_id] or {}
        records, zoho_subs, customers = self._ids()
        if str(sub.get("reference_id") or "") in records or sub_id in zoho_subs:
            return True
        customer = str(sub.get("customer_id") or invoice.customer_id)
        return sub.get("auto_collect") is False and customer in customers

    def _ids(self) -> tuple[set[str], set[str], set[str]]:
        if self._attio_ids is None:
            subs = self._patience.call("attio", "subscriptions records",
                                       lambda: self._attio.query_records("subscriptions"))
            companies = self._patience.call("attio", "companies records",
                                            lambda: self._attio.query_records("companies"))
            self._attio_ids = (
                {record_id(r) for r in subs},
                {str(value(r, "zoho_subscription_id")) for r in subs if value(r, "zoho_subscription_id")},
                {str(value(r, "zoho_customer_id")) for r in companies if value(r, "zoho_customer_id")},
            )
        return self._attio_ids
