"""What the payments audit knows and what it finds: plain views of the providers' objects, violations, the report.

The views (``Sale``, ``Invoice``, ``ZohoPayment``, ``AttioPayment``) are built once from the clients' answers,
so the checks are pure functions over them. Money is ``Decimal``; times are aware UTC datetimes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "CHARGED", "OPEN_INVOICE", "UNCHARGED_AFTER_CHARGE", "AttioPayment", "AuditReport", "Invoice", "Sale",
    "Violation", "ZohoPayment", "is_braintree_id", "money", "zoho_time",
]

# A sale in one of these took (or is taking) the money.
CHARGED = frozenset({"authorizing", "authorized", "submitted_for_settlement", "settlement_pending", "settling",
                     "settled", "settlement_confirmed"})
# Once charged, then not: the money did not move after all (Attio books it Failed).
UNCHARGED_AFTER_CHARGE = frozenset({"voided", "settlement_declined"})
OPEN_INVOICE = frozenset({"sent", "overdue", "unpaid", "partially_paid"})
_BRAINTREE_ID = re.compile(r"^[a-z0-9]{6,36}$")  # Braintree transaction ids: lower-case alphanumerics (8 today)


def is_braintree_id(reference: str) -> bool:
    """Whether a Zoho payment's ``reference_number`` looks like a Braintree transaction id."""
    return bool(_BRAINTREE_ID.match(reference))


def money(raw: Any) -> Decimal | None:
    """A Decimal amount from a provider's number or string; None when absent or unreadable."""
    if raw is None or raw == "" or isinstance(raw, bool):
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def zoho_time(raw: Any) -> datetime | None:
    """A Zoho ``created_time`` (``2016-06-05T17:40:49-0700``) or date (``2016-06-05``) as aware UTC; else None."""
    text = str(raw or "")
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"):
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class Sale:
    """A Braintree sale, as the audit needs it."""

    id: str
    order_id: str
    status: str
    amount: Decimal
    created_at: datetime
    refunded: bool = False

    @property
    def charged(self) -> bool:
        """Whether the money was (or is being) taken."""
        return self.status in CHARGED

    @classmethod
    def of(cls, txn: Any) -> Sale:
        """From an SDK Transaction."""
        created = getattr(txn, "created_at", None) or datetime.min
        created = created.astimezone(UTC) if created.tzinfo else created.replace(tzinfo=UTC)
        return cls(
            id=str(txn.id),
            order_id=str(getattr(txn, "order_id", None) or ""),
            status=str(getattr(txn, "status", "") or ""),
            amount=money(getattr(txn, "amount", None)) or Decimal(0),
            created_at=created,
            refunded=bool(getattr(txn, "refund_ids", None)),  # a full or partial refund (credit) was made
        )


@dataclass(frozen=True)
class ZohoPayment:
    """One payment applied to an invoice (a row of the invoice's ``payments``)."""

    payment_id: str
    mode: str
    reference: str
    applied: Decimal | None

    @property
    def by_card(self) -> bool:
        """A card payment whose reference names a Braintree transaction (ours, or made to look like ours)."""
        return self.mode == "creditcard" and is_braintree_id(self.reference)


@dataclass
class Invoice:
    """A Zoho invoice: the list row, completed by the invoice itself when the audit had to fetch it."""

    invoice_id: str
    number: str = ""
    status: str = ""
    balance: Decimal | None = None
    customer_id: str = ""
    created: datetime | None = None  # when Zoho created it (else its date): no sale for it can be older
    dated: datetime | None = None  # its invoice date, midnight UTC
    paid_something: bool = True  # the list row shows a payment (or cannot tell): its payments must be read
    found: bool = True  # False: Zoho has no such invoice (a sale names an invoice that does not exist)
    payments: list[ZohoPayment] | None = None  # None until the invoice itself was read
    subscription_id: str | None = None

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Invoice:
        """From a list row (or a full invoice)."""
        dated = zoho_time(row.get("invoice_date") or row.get("date"))
        paid = money(row.get("payment_made"))
        total, balance = money(row.get("total")), money(row.get("balance"))
        shows_payment = (paid is None or paid > 0 or str(row.get("status")) in ("paid", "partially_paid")
                         or (total is not None and balance is not None and balance < total))
        invoice = cls(
            invoice_id=str(row["invoice_id"]),
            number=str(row.get("number") or row.get("invoice_number") or ""),
            status=str(row.get("status") or ""),
            balance=balance,
            customer_id=str(row.get("customer_id") or ""),
            created=zoho_time(row.get("created_time")) or dated,
            dated=dated,
            paid_something=shows_payment,
        )
        invoice.subscription_id = _subscription_of(row)
        return invoice

    def complete(self, full: dict[str, Any]) -> None:
        """Fill in what only the invoice itself carries: its payments and subscription."""
        row = Invoice.of_row(full)
        self.number = row.number or self.number
        self.status, self.balance, self.customer_id = row.status, row.balance, row.customer_id or self.customer_id
        self.created, self.dated = row.created or self.created, row.dated or self.dated
        self.subscription_id = row.subscription_id or self.subscription_id
        self.payments = [
            ZohoPayment(str(p.get("payment_id") or ""), str(p.get("payment_mode") or ""),
                        str(p.get("reference_number") or ""), money(p.get("amount")))
            for p in full.get("payments") or [] if isinstance(p, dict)
        ]

    def in_window(self, since: datetime) -> bool:
        """Dated on or after ``since``'s day, or created since ``since`` (or Zoho did not say when)."""
        if self.created is None and self.dated is None:
            return True
        return bool((self.dated and self.dated.date() >= since.date()) or (self.created and self.created >= since))

    @property
    def open(self) -> bool:
        """Open for collection: sent, overdue, unpaid or partially paid, with a balance left."""
        return self.status in OPEN_INVOICE and (self.balance is None or self.balance > 0)

    @property
    def label(self) -> str:
        """The invoice number, or its id when the number is unknown."""
        return self.number or self.invoice_id


def _subscription_of(row: dict[str, Any]) -> str | None:
    subs = row.get("subscriptions")
    if isinstance(subs, list):
        for sub in subs:
            if isinstance(sub, dict) and sub.get("subscription_id"):
                return str(sub["subscription_id"])
    return str(row["subscription_id"]) if row.get("subscription_id") else None


@dataclass(frozen=True)
class AttioPayment:
    """An Attio ``payments`` record, as the audit needs it."""

    record_id: str
    external_id: str
    status: str | None
    amount: Decimal | None
    invoice_id: str | None


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with the ids needed to find it and what to do about it."""

    kind: str
    invoice_id: str
    transaction_ids: tuple[str, ...]
    detail: str
    fix: str = ""
    invoice_number: str = ""

    def line(self) -> str:
        """Lines for the terminal: what is wrong, then the fix."""
        number = f" ({self.invoice_number})" if self.invoice_number else ""
        head = f"{self.kind}: invoice={self.invoice_id} transactions={','.join(self.transaction_ids) or '-'}{number}"
        return f"{head} — {self.detail}" + (f"\n    fix: {self.fix}" if self.fix else "")

    def as_json(self) -> dict[str, Any]:
        """A JSON-able dict (transaction ids as a list)."""
        data = asdict(self)
        data["transaction_ids"] = list(self.transaction_ids)
        return data


@dataclass
class AuditReport:
    """The outcome: violations, what was checked, and whether the audit got through everything."""

    since: datetime
    violations: list[Violation] = field(default_factory=list)
    invoices: int = 0
    sales: int = 0  # successful sales checked
    zoho_payments: int = 0  # Zoho card payments checked
    calls: dict[str, int] = field(default_factory=dict)  # provider → calls made (pages and look-ups)
    waited_seconds: float = 0.0  # waiting for busy or failing providers (bounded)
    paced_seconds: float = 0.0  # keeping to the audit's own share of a budget
    complete: bool = True
    error: str | None = None  # why it is incomplete

    @property
    def exit_code(self) -> int:
        """0 clean, 1 violations, 2 could not complete."""
        return 2 if not self.complete else (1 if self.violations else 0)

    def summary(self) -> str:
        """One line of counts."""
        state = "" if self.complete else f"INCOMPLETE ({self.error}): "
        return (f"{state}checked {self.invoices} invoice(s), {self.sales} successful sale(s) and "
                f"{self.zoho_payments} Zoho card payment(s) since {_day(self.since)}: "
                f"{len(self.violations)} violation(s)")

    def as_json(self) -> dict[str, Any]:
        """The whole report as one JSON-able document."""
        kinds: dict[str, int] = {}
        for violation in self.violations:
            kinds[violation.kind] = kinds.get(violation.kind, 0) + 1
        return {
            "since": self.since.isoformat(), "complete": self.complete, "error": self.error,
            "violations": [v.as_json() for v in self.violations],
            "counts": {"invoices": self.invoices, "sales": self.sales, "zoho_payments": self.zoho_payments,
                       "violations": len(self.violations), "by_kind": kinds},
            "calls": dict(self.calls), "waited_seconds": round(self.waited_seconds, 1),
            "paced_seconds": round(self.paced_seconds, 1),
        }


def _day(moment: datetime) -> str:
    return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat()

