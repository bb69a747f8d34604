"""The payments audit: checks the invariants of workflow 3 across Braintree, Zoho Billing and Attio.

- at most one successful Braintree sale per invoice (``order_id``);
- every successful sale recorded as a Zoho payment on its invoice (``reference_number`` = transaction id);
- every successful sale recorded as an Attio ``payments`` record (``braintree:<transaction id>``).

Read-only; each violation names the ids needed to fix it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["CHARGED", "Violation", "audit_payments"]

CHARGED = {"authorizing", "authorized", "submitted_for_settlement", "settlement_pending", "settling", "settled",
           "settlement_confirmed"}


@dataclass(frozen=True)
class Violation:
    """One broken invariant."""

    kind: str  # double_charge | missing_zoho_payment | missing_attio_payment
    invoice_id: str
    transaction_ids: tuple[str, ...]
    detail: str

    def line(self) -> str:
        """A line for the terminal."""
        return f"{self.kind}: invoice={self.invoice_id} transactions={','.join(self.transaction_ids)} — {self.detail}"


def audit_payments(
    *, braintree: Any, zoho: Any, attio: Any, since: datetime, progress: Callable[[int], None] | None = None
) -> tuple[list[Violation], int]:
    """Every violation among the sales created since ``since``, and how many successful sales were checked."""
    by_invoice: dict[str, list[Any]] = defaultdict(list)
    for txn in braintree.search_sales(since=since):
        if str(getattr(txn, "status", "")) in CHARGED and getattr(txn, "order_id", None):
            by_invoice[str(txn.order_id)].append(txn)
    attio_ids = {_external_id(record) for record in attio.query_records("payments")}
    violations: list[Violation] = []
    checked = 0
    for invoice_id, sales in sorted(by_invoice.items()):
        ids = tuple(sorted(str(t.id) for t in sales))
        if len(sales) > 1:
            violations.append(Violation("double_charge", invoice_id, ids,
                                        f"{len(sales)} successful sales for one invoice"))
        invoice = zoho.get_invoice(invoice_id) or {}
        references = {str(p.get("reference_number")) for p in invoice.get("payments") or []}
        for txn_id in ids:
            checked += 1
            if not invoice:
                violations.append(Violation("missing_zoho_payment", invoice_id, (txn_id,),
                                            "the invoice is not in Zoho Billing"))
            elif txn_id not in references:
                violations.append(Violation("missing_zoho_payment", invoice_id, (txn_id,),
                                            "no Zoho payment with this reference_number on the invoice"))
            if f"braintree:{txn_id}" not in attio_ids:
                violations.append(Violation("missing_attio_payment", invoice_id, (txn_id,),
                                            f"no Attio payments record braintree:{txn_id}"))
        if progress is not None:
            progress(1)
    return violations, checked


def _external_id(record: dict[str, Any]) -> str:
    from .clients.attio_values import value

    return str(value(record, "external_id") or "")
