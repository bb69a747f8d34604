"""A payment's statuses (data-model.md, ``payments.status``) and the moves between them that can happen.

Every write of a status goes through ``records.upsert_payment``, which keeps a record where it is when
``TRANSITIONS`` does not list the move. The table is not a ranking: Braintree's settlement and dispute events do not
say what to write, their handlers re-read the transaction (and its disputes) and write ``status_of`` it, the status
Braintree has now, so the order in which Braintree delivers them cannot matter (it does not order them, and for ACH
a settlement decline may follow ``transaction_settled``). The table refuses only moves that cannot happen, which is
what a late write from an older read looks like: the collection's ``Submitted`` landing after a settlement, Zoho's
``payment_thankyou`` delivered after its ``payment_refunded``, a settled sale after its settlement was declined.

A refund is a transaction of its own (a ``credit``) with its own status: it may be voided, or its settlement
declined (ACH), and the sale keeps its id in ``refund_ids`` all the same. So a sale counts as refunded, and no
longer as the charge of its invoice, only when refunds that really moved money cover its whole amount, each read
by id (``refunds_of``; no call for a sale without refunds). A partially refunded sale still took money for its
invoice: it stays charged, and keeps its own status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

__all__ = [
    "CHARGED",
    "DISPUTE_STATUSES",
    "Finder",
    "TRANSITIONS",
    "PaymentStatus",
    "can_move",
    "dispute_status",
    "fully_refunded",
    "is_charged",
    "refund_undecided",
    "refunded_amount",
    "refunds_of",
    "status_of",
]

Finder = Callable[[str], Any]  # a transaction by id, or None (``BraintreeClient.find_transaction``)


class PaymentStatus(StrEnum):
    """The values of the ``payments.status`` select."""

    SUBMITTED = "Submitted"  # the sale took the money; Braintree has not settled it yet
    SETTLED = "Settled"
    DECLINED = "Declined"  # the processor or gateway refused the sale: no money moved, ever
    FAILED = "Failed"  # no charge could be made, or the settlement was declined (or the sale voided)
    DISPUTED = "Disputed"
    DISPUTE_WON = "Dispute won"
    DISPUTE_LOST = "Dispute lost"
    REFUNDED = "Refunded"


_S = PaymentStatus
DISPUTE_STATUSES = frozenset({_S.DISPUTED, _S.DISPUTE_WON, _S.DISPUTE_LOST})

# current status → the statuses it can move to. A status is never listed as its own successor: writing the status
# a record already has is not a move, and is always allowed (its other fields may still change).
TRANSITIONS: Mapping[PaymentStatus, frozenset[PaymentStatus]] = {
    # Settlement or its decline (a voided sale too), or any later fate whose earlier steps were never written
    # (cards get no settlement webhook: a dispute or refund may be the first news after the sale).
    _S.SUBMITTED: frozenset({_S.SETTLED, _S.FAILED, _S.REFUNDED, *DISPUTE_STATUSES}),
    # An ACH debit may be returned after it settled (Settled → Failed); refunds and disputes follow settlement.
    _S.SETTLED: frozenset({_S.FAILED, _S.REFUNDED, *DISPUTE_STATUSES}),
    # Final: a refused sale never moves money; a declined settlement or a voided sale is never settled or disputed.
    _S.DECLINED: frozenset(),
    _S.FAILED: frozenset(),
    # A customer may dispute a sale that was refunded (the chargeback then decides, not the refund). A refund may
    # be voided or its settlement declined after it was written (the sale is Settled again), and an ACH sale may be
    # returned by the bank after its refund (Failed: its money never arrived).
    _S.REFUNDED: frozenset({_S.SETTLED, _S.FAILED, *DISPUTE_STATUSES}),
    _S.DISPUTED: frozenset({_S.DISPUTE_WON, _S.DISPUTE_LOST}),
    # A won dispute may be followed by another one on the same sale (pre-arbitration, a second chargeback).
    _S.DISPUTE_WON: frozenset({_S.DISPUTED, _S.DISPUTE_LOST}),
    # The money went back to the card holder for good.
    _S.DISPUTE_LOST: frozenset(),
}


def can_move(current: str | None, new: str) -> bool:
    """Whether a record whose status is ``current`` may be written ``new``: always for a record without a status
    (or one this table does not know, typed in Attio by hand), or when the status stays; else as ``TRANSITIONS``
    lists."""
    if not current or current == new or current not in PaymentStatus.__members__.values():
        return True
    return new in TRANSITIONS[PaymentStatus(current)]


# Braintree ``Transaction.Status`` → our status (a sale's; disputes and refunds are read first, see ``status_of``).
_SUBMITTED = ("authorizing", "authorized", "submitted_for_settlement", "settlement_pending", "settling")
_SETTLED = ("settled", "settlement_confirmed")
_FAILED = ("settlement_declined", "settlement_failed", "voided", "authorization_expired")
_DECLINED = ("processor_declined", "gateway_rejected", "failed")
_BY_TRANSACTION_STATUS: Mapping[str, PaymentStatus] = {
    **dict.fromkeys(_SUBMITTED, _S.SUBMITTED), **dict.fromkeys(_SETTLED, _S.SETTLED),
    **dict.fromkeys(_FAILED, _S.FAILED), **dict.fromkeys(_DECLINED, _S.DECLINED),
}
# A sale in one of these took (or is taking) the money: it is its invoice's charge unless refunded in full.
CHARGED = frozenset(_SUBMITTED + _SETTLED)
# A refund (credit) in one of these never moved money back: it does not count.
_NO_REFUND = frozenset({*_FAILED, *_DECLINED})
# Braintree ``Dispute.Status`` → our status. An accepted or expired dispute is lost (the money went back).
_BY_DISPUTE_STATUS: Mapping[str, PaymentStatus] = {
    "open": _S.DISPUTED, "under_review": _S.DISPUTED, "disputed": _S.DISPUTED,
    "won": _S.DISPUTE_WON, "lost": _S.DISPUTE_LOST, "accepted": _S.DISPUTE_LOST, "auto_accepted": _S.DISPUTE_LOST,
    "expired": _S.DISPUTE_LOST,
}


def dispute_status(dispute: Any) -> PaymentStatus:
    """Our status for one Braintree dispute (an object or a mapping); a status Braintree adds later is Disputed."""
    raw = dispute.get("status") if isinstance(dispute, Mapping) else getattr(dispute, "status", None)
    return _BY_DISPUTE_STATUS.get(str(raw or ""), _S.DISPUTED)


def status_of(txn: Any, find: Finder | None = None) -> PaymentStatus | None:
    """The status a Braintree sale (as ``transaction.find`` returns it) has now: its newest dispute's, else
    Refunded when it took the money and refunds cover it in full (``fully_refunded``: ``find`` reads them), else
    its own status's; None for a status this table does not map. A sale whose settlement was declined or that was
    voided is Failed whatever its refunds: its money never arrived (its Zoho payment must go)."""
    disputes = list(getattr(txn, "disputes", None) or [])
    if disputes:
        newest = max(enumerate(disputes), key=lambda d: (str(_when(d[1])), d[0]))[1]
        return dispute_status(newest)
    own = _BY_TRANSACTION_STATUS.get(str(getattr(txn, "status", "")))
    if own in (_S.SUBMITTED, _S.SETTLED) and fully_refunded(txn, find):
        return _S.REFUNDED
    return own


def is_charged(txn: Any, find: Finder | None = None) -> bool:
    """Whether a sale took its invoice's money and keeps it: a charged status, not refunded in full."""
    return str(getattr(txn, "status", "")) in CHARGED and not fully_refunded(txn, find)


def refunds_of(txn: Any, find: Finder | None) -> list[Any]:
    """The sale's refunds as Braintree has them now, each read by id; no call for a sale without refunds. A refund
    id Braintree does not know is left out."""
    ids = [str(i) for i in getattr(txn, "refund_ids", None) or []]
    if not ids:
        return []
    if find is None:
        raise ValueError(f"transaction {getattr(txn, 'id', '?')} has refunds: its status needs them read (find)")
    return [r for r in map(find, ids) if r is not None]


def refunded_amount(refunds: Sequence[Any]) -> Decimal:
    """The money the refunds moved back: those not voided, failed or declined (at the processor or settlement)."""
    return sum((_money(r) for r in refunds if str(getattr(r, "status", "")) not in _NO_REFUND), Decimal(0))


def fully_refunded(txn: Any, find: Finder | None) -> bool:
    """Whether refunds that really moved money cover the sale's whole amount (a partial refund does not)."""
    back = refunded_amount(refunds_of(txn, find))
    return back > 0 and back >= _money(txn)


def refund_undecided(txn: Any, find: Finder | None) -> bool:
    """Whether the sale counts as refunded in full only through refunds not settled yet: any of them may still be
    voided (or, for ACH, declined at settlement) and give nothing back, so whether the sale keeps its invoice's money
    is not known yet."""
    refunds = refunds_of(txn, find)
    final = sum((_money(r) for r in refunds if str(getattr(r, "status", "")) in _SETTLED), Decimal(0))
    return bool(refunds) and refunded_amount(refunds) >= _money(txn) > final


def _money(txn: Any) -> Decimal:
    try:
        return Decimal(str(getattr(txn, "amount", None) or 0))
    except InvalidOperation:
        return Decimal(0)


def _when(dispute: Any) -> Any:
    if isinstance(dispute, Mapping):
        return dispute.get("created_at") or dispute.get("received_date") or ""
    return getattr(dispute, "created_at", None) or getattr(dispute, "received_date", None) or ""
