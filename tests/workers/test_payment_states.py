"""The payment state machine (``workers.payments``): every pair of statuses, through ``records.upsert_payment`` into
the Attio simulator, and the status a Braintree transaction has now (``status_of``)."""

from __future__ import annotations

import itertools
from decimal import Decimal
from types import SimpleNamespace

import pytest
import redis

from integration.clients.attio import build_attio_client
from tests.conftest import Stack
from workers.payments import TRANSITIONS, PaymentStatus, can_move, is_charged, status_of
from workers.records import upsert_payment

S = PaymentStatus
# Written out here, not derived from TRANSITIONS: a change of the table must change this list too.
ALLOWED = {
    (S.SUBMITTED, S.SETTLED), (S.SUBMITTED, S.FAILED), (S.SUBMITTED, S.REFUNDED), (S.SUBMITTED, S.DISPUTED),
    (S.SUBMITTED, S.DISPUTE_WON), (S.SUBMITTED, S.DISPUTE_LOST),
    (S.SETTLED, S.FAILED), (S.SETTLED, S.REFUNDED), (S.SETTLED, S.DISPUTED), (S.SETTLED, S.DISPUTE_WON),
    (S.SETTLED, S.DISPUTE_LOST),
    (S.REFUNDED, S.SETTLED), (S.REFUNDED, S.FAILED),  # a refund voided or declined; an ACH sale returned after it
    (S.REFUNDED, S.DISPUTED), (S.REFUNDED, S.DISPUTE_WON), (S.REFUNDED, S.DISPUTE_LOST),
    (S.DISPUTED, S.DISPUTE_WON), (S.DISPUTED, S.DISPUTE_LOST),
    (S.DISPUTE_WON, S.DISPUTED), (S.DISPUTE_WON, S.DISPUTE_LOST),
}  # fmt: skip
PAIRS = [(a, b) for a, b in itertools.product(PaymentStatus, repeat=2) if a != b]


def test_the_table_lists_every_status_and_exactly_the_allowed_moves() -> None:
    assert set(TRANSITIONS) == set(PaymentStatus)
    assert {(a, b) for a, nexts in TRANSITIONS.items() for b in nexts} == ALLOWED


@pytest.mark.parametrize(("current", "new"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_move_is_written_or_refused_as_the_table_says(
    stack: Stack, redis_conn: redis.Redis, current: PaymentStatus, new: PaymentStatus
) -> None:
    attio = build_attio_client(stack.settings(), redis_conn)
    record = stack.attio.add_record("payments", {"external_id": "braintree:t1", "status": current.value,
                                                 "failure_reason": "before"})
    upsert_payment(attio, "braintree:t1", {"status": new.value, "failure_reason": "after", "zoho_invoice_id": "inv"})
    allowed = (current, new) in ALLOWED
    assert can_move(current.value, new.value) is allowed
    assert stack.attio.value("payments", record, "status") == (new.value if allowed else current.value)
    # A refused status takes its failure reason with it; the other fields are written either way.
    assert stack.attio.value("payments", record, "failure_reason") == ("after" if allowed else "before")
    assert stack.attio.value("payments", record, "zoho_invoice_id") == "inv"
    assert len(stack.attio.records("payments")) == 1


def test_a_record_without_a_status_or_with_an_unknown_one_takes_any() -> None:
    assert all(can_move(None, s.value) and can_move("", s.value) and can_move("Typed by hand", s.value)
               for s in PaymentStatus)
    assert all(can_move(s.value, s.value) for s in PaymentStatus)  # not a move: other fields may still change


# Refunds by id, as ``transaction.find`` reads them: a credit with its own status and amount.
REFUNDS = {
    "full": SimpleNamespace(id="full", type="credit", status="settled", amount=Decimal("49.00")),
    "pending": SimpleNamespace(id="pending", type="credit", status="submitted_for_settlement", amount=Decimal("49.00")),
    "part": SimpleNamespace(id="part", type="credit", status="settled", amount=Decimal("20.00")),
    "rest": SimpleNamespace(id="rest", type="credit", status="submitted_for_settlement", amount=Decimal("29.00")),
    **{s: SimpleNamespace(id=s, type="credit", status=s, amount=Decimal("49.00"))
       for s in ("voided", "settlement_declined", "processor_declined", "gateway_rejected", "failed")},
}


def _txn(status: str, *, refunds: tuple[str, ...] = (), disputes: tuple[tuple[str, str], ...] = ()) -> object:
    return SimpleNamespace(status=status, amount=Decimal("49.00"), refund_ids=list(refunds),
                           disputes=[SimpleNamespace(status=s, created_at=at) for s, at in disputes])


@pytest.mark.parametrize(("txn", "expected"), [
    (_txn("submitted_for_settlement"), S.SUBMITTED),
    (_txn("settling"), S.SUBMITTED),
    (_txn("settled"), S.SETTLED),
    (_txn("settlement_confirmed"), S.SETTLED),
    (_txn("settlement_declined"), S.FAILED),
    (_txn("voided"), S.FAILED),
    (_txn("processor_declined"), S.DECLINED),
    (_txn("gateway_rejected"), S.DECLINED),
    (_txn("settled", refunds=("full",)), S.REFUNDED),  # a refunded sale stays settled in Braintree
    (_txn("settled", refunds=("pending",)), S.REFUNDED),  # on its way back
    (_txn("settling", refunds=("full",)), S.REFUNDED),
    (_txn("settled", refunds=("part",)), S.SETTLED),  # a partial refund: the sale still paid its invoice
    (_txn("settled", refunds=("part", "rest")), S.REFUNDED),  # ... until the refunds cover it
    (_txn("settled", refunds=("part", "rest", "ghost")), S.REFUNDED),  # an id Braintree does not know counts 0
    (_txn("settled", refunds=("voided",)), S.SETTLED),  # refunds that gave nothing back
    (_txn("settled", refunds=("settlement_declined",)), S.SETTLED),
    (_txn("settled", refunds=("processor_declined", "gateway_rejected", "failed", "part")), S.SETTLED),
    (_txn("settled", refunds=("voided", "full")), S.REFUNDED),  # refunded again after a void
    (_txn("settlement_declined", refunds=("full",)), S.FAILED),  # an ACH sale returned after its refund
    (_txn("settled", disputes=(("open", "2026-01-01"),)), S.DISPUTED),
    (_txn("settled", refunds=("full",), disputes=(("won", "2026-01-01"),)), S.DISPUTE_WON),
    (_txn("settled", disputes=(("accepted", "2026-01-01"),)), S.DISPUTE_LOST),
    (_txn("settled", disputes=(("won", "2026-01-01"), ("open", "2026-03-01"))), S.DISPUTED),  # the newest counts
    (_txn("settled", disputes=(("open", "2026-03-01"), ("lost", "2026-01-01"))), S.DISPUTED),
    (_txn("something_new"), None),
])  # fmt: skip
def test_the_status_a_transaction_has_now(txn: object, expected: PaymentStatus | None) -> None:
    assert status_of(txn, lambda i: REFUNDS.get(i)) == expected


@pytest.mark.parametrize(("txn", "expected"), [
    (_txn("settled"), True),
    (_txn("submitted_for_settlement", refunds=("voided",)), True),
    (_txn("settled", refunds=("part",)), True),
    (_txn("settled", refunds=("settlement_declined",)), True),
    (_txn("settled", refunds=("full",)), False),
    (_txn("settled", refunds=("part", "rest")), False),
    (_txn("settlement_declined"), False),
    (_txn("voided"), False),
    (_txn("processor_declined"), False),
])  # fmt: skip
def test_a_sale_is_its_invoices_charge_unless_refunds_that_moved_money_cover_it(txn: object, expected: bool) -> None:
    assert is_charged(txn, lambda i: REFUNDS.get(i)) is expected


def test_a_sale_without_refunds_needs_no_call_and_one_with_refunds_cannot_be_read_without_them() -> None:
    def find(txn_id: str) -> object:
        raise AssertionError("no call for a sale without refunds")

    assert status_of(_txn("settled"), find) == S.SETTLED and is_charged(_txn("settled"), find)
    with pytest.raises(ValueError, match="refunds"):
        status_of(_txn("settled", refunds=("full",)))
