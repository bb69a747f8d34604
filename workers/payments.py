"""A payment's statuses (data-model.md, ``payments.status``) and the moves between them that can happen.

Every write of a status goes through ``records.upsert_payment``, which keeps a record where it is when
``TRANSITIONS`` does not list the move. The table is not a ranking: Braintree's settlement and dispute events do not
say what to write, their handlers re-read the transaction (and its disputes) and write ``status_of`` it, the status
Braintree has now, so the order in which Braintree delivers them cannot matter (it does not order them, and for ACH
a settlement decline may follow ``transaction_settled``). The table refuses only moves that cannot happen, which is
what a late write from an older read looks like: the collection's ``Submitted`` landing after a settlement, Zoho's
``payment_thankyou`` delivered after its ``payment_refunded``, a settled sale after its settlement was declined.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = [
    "DISPUTE_STATUSES",
    "TRANSITIONS",
    "PaymentStatus",
    "can_move",
    "dispute_status",
    "status_of",
]


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
_DISPUTE_OUTCOMES = frozenset({_S.DISPUTED, _S.DISPUTE_WON, _S.DISPUTE_LOST})
DISPUTE_STATUSES = _DISPUTE_OUTCOMES

# current status → the statuses it can move to. A status is never listed as its own successor: writing the status
# a record already has is not a move, and is always allowed (its other fields may still change).
TRANSITIONS: Mapping[PaymentStatus, frozenset[PaymentStatus]] = {
    # Settlement or its decline (a voided sale too), or any later fate whose earlier steps were never written
    # (cards get no settlement webhook: a dispute or refund may be the first news after the sale).
    _S.SUBMITTED: frozenset({_S.SETTLED, _S.FAILED, _S.REFUNDED, *_DISPUTE_OUTCOMES}),
    # An ACH debit may be returned after it settled (Settled → Failed); refunds and disputes follow settlement.
    _S.SETTLED: frozenset({_S.FAILED, _S.REFUNDED, *_DISPUTE_OUTCOMES}),
    # Final: a refused sale never moves money; a declined settlement or a voided sale is never settled or disputed.
    _S.DECLINED: frozenset(),
    _S.FAILED: frozenset(),
    # A customer may dispute a sale that was refunded (the chargeback then decides, not the refund).
    _S.REFUNDED: frozenset(_DISPUTE_OUTCOMES),
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


def status_of(txn: Any) -> PaymentStatus | None:
    """The status a Braintree sale (as ``transaction.find`` or a search returns it) has now: its newest dispute's,
    else Refunded when it has refunds, else its own status's; None for a status this table does not map."""
    disputes = list(getattr(txn, "disputes", None) or [])
    if disputes:
        newest = max(enumerate(disputes), key=lambda d: (str(_when(d[1])), d[0]))[1]
        return dispute_status(newest)
    if list(getattr(txn, "refund_ids", None) or []):
        return _S.REFUNDED
    return _BY_TRANSACTION_STATUS.get(str(getattr(txn, "status", "")))


def _when(dispute: Any) -> Any:
    if isinstance(dispute, Mapping):
        return dispute.get("created_at") or dispute.get("received_date") or ""
    return getattr(dispute, "created_at", None) or getattr(dispute, "received_date", None) or ""
