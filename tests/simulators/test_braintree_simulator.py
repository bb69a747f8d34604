"""Tests of the Braintree simulator, through the real ``braintree`` SDK over loopback HTTP."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import braintree
import pytest
from braintree import Transaction
from braintree import TransactionSearch as TS
from braintree.exceptions import (
    AuthenticationError,
    InvalidSignatureError,
    NotFoundError,
    ServerError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from braintree.exceptions.http.timeout_error import ReadTimeoutError

from simulators.braintree import BraintreeSimulator

CHARGED = [Transaction.Status.Authorized, Transaction.Status.SubmittedForSettlement, Transaction.Status.Settled]


@pytest.fixture(scope="module")
def server() -> Iterator[BraintreeSimulator]:
    sim = BraintreeSimulator()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: BraintreeSimulator) -> BraintreeSimulator:
    """The shared simulator, fresh for each test (stopping one takes ~0.5 s, so it is started once)."""
    server.reset()
    server.duplicate_checking = False
    return server


@pytest.fixture
def gw(sim: BraintreeSimulator) -> braintree.BraintreeGateway:
    return sim.gateway()


def sale(gw: braintree.BraintreeGateway, amount: str = "10.00", **params: Any) -> Any:
    """A sale submitted for settlement unless ``options`` says otherwise; returns the SDK's result."""
    params.setdefault("options", {"submit_for_settlement": True})
    return gw.transaction.sale({"amount": amount, **params})


# -- customers --------------------------------------------------------------------------------------------------


def test_customer_create_with_custom_id_then_duplicate(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    r = gw.customer.create({"id": "acme_42", "email": "ap@acme.test", "first_name": "Ada"})
    assert r.is_success and r.customer.id == "acme_42" and r.customer.email == "ap@acme.test"
    assert r.customer.payment_methods == [] and (sim.customer("acme_42") or {})["first_name"] == "Ada"
    again = gw.customer.create({"id": "acme_42"})
    assert not again.is_success
    assert [(e.code, e.attribute) for e in again.errors.for_object("customer").on("id")] == [("91609", "id")]


@pytest.mark.parametrize(("customer_id", "code"), [("bad id!", "91610"), ("x" * 37, "91612"), ("all", "91611")])
def test_customer_create_rejects_bad_ids(gw: braintree.BraintreeGateway, customer_id: str, code: str) -> None:
    r = gw.customer.create({"id": customer_id})
    assert not r.is_success and r.transaction is None
    assert [e.code for e in r.errors.deep_errors] == [code]


def test_customer_generated_id_update_and_delete(gw: braintree.BraintreeGateway) -> None:
    created = gw.customer.create({"first_name": "Gen"}).customer
    assert created.id.isdigit()
    updated = gw.customer.update(created.id, {"last_name": "Erated", "payment_method_nonce": "fake-valid-nonce"})
    assert updated.is_success and updated.customer.last_name == "Erated"
    assert updated.customer.credit_cards[0].default
    gw.customer.delete(created.id)
    with pytest.raises(NotFoundError):
        gw.customer.find(created.id)


def test_find_customer_with_default_card(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    r = gw.customer.create({"id": "cust-1", "payment_method_nonce": "fake-valid-nonce"})
    first = r.customer.credit_cards[0]
    assert first.default and first.last_4 == "1111" and first.card_type == "Visa"
    second = gw.payment_method.create({"customer_id": "cust-1", "payment_method_nonce": "fake-valid-mastercard-nonce",
                                       "options": {"make_default": True}}).payment_method
    found = gw.customer.find("cust-1")
    assert [(c.token, c.default) for c in found.credit_cards] == [(first.token, False), (second.token, True)]
    assert [m.token for m in found.payment_methods if m.default] == [second.token]
    assert found.credit_cards[1].masked_number == "555555******4444"
    assert (sim.customer("cust-1") or {})["default_token"] == second.token
    with pytest.raises(NotFoundError):
        gw.customer.find("nobody")


def test_customer_search(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("a-1", email="one@example.com")
    sim.add_customer("a-2", email="two@example.com", card=None)
    found = gw.customer.search(braintree.CustomerSearch.email.ends_with("two@example.com"))
    assert [c.id for c in found.items] == ["a-2"]


# -- payment methods --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nonce", "card_type", "last_4"),
    [
        ("fake-valid-nonce", "Visa", "1111"),
        ("fake-valid-visa-nonce", "Visa", "1111"),
        ("fake-valid-mastercard-nonce", "MasterCard", "4444"),
        ("fake-processor-declined-visa-nonce", "Visa", "1115"),
    ],
)
def test_payment_method_from_nonce(
    gw: braintree.BraintreeGateway, sim: BraintreeSimulator, nonce: str, card_type: str, last_4: str
) -> None:
    sim.add_customer("pm-cust", card=None)
    r = gw.payment_method.create({"customer_id": "pm-cust", "payment_method_nonce": nonce})
    assert r.is_success and isinstance(r.payment_method, braintree.CreditCard)
    card = r.payment_method
    assert (card.card_type, card.last_4, card.default, card.customer_id) == (card_type, last_4, True, "pm-cust")
    assert gw.payment_method.find(card.token).token == card.token
    gw.payment_method.delete(card.token)
    with pytest.raises(NotFoundError):
        gw.payment_method.find(card.token)


@pytest.mark.parametrize(
    ("customer_id", "nonce", "code", "message"),
    [
        ("pm-cust", "fake-consumed-nonce", "93107", "Cannot use a payment_method_nonce more than once."),
        ("pm-cust", "fake-made-up-nonce", "93108", "Unknown or expired payment_method_nonce."),
        ("ghost", "fake-valid-nonce", "91705", "Customer ID is invalid."),
    ],
)
def test_payment_method_errors(
    gw: braintree.BraintreeGateway, sim: BraintreeSimulator, customer_id: str, nonce: str, code: str, message: str
) -> None:
    sim.add_customer("pm-cust", card=None)
    r = gw.payment_method.create({"customer_id": customer_id, "payment_method_nonce": nonce})
    assert not r.is_success and r.message == message
    assert [e.code for e in r.errors.deep_errors] == [code]


def test_deleting_the_default_promotes_another(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    first = sim.add_customer("two-cards")["default_token"]
    gw.payment_method.create({"customer_id": "two-cards", "payment_method_nonce": "fake-valid-mastercard-nonce"})
    gw.payment_method.delete(first)
    assert [c.default for c in gw.customer.find("two-cards").credit_cards] == [True]


# -- client token -----------------------------------------------------------------------------------------------


def test_client_token(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.seed_sample_data()
    token = json.loads(base64.b64decode(gw.client_token.generate({"customer_id": "demo-customer"})))
    assert token["version"] == 2 and token["customerId"] == "demo-customer"
    assert token["merchantId"] == "test-merchant" and token["environment"] == "development"
    assert token["authorizationFingerprint"] and token["configUrl"].startswith(sim.url)
    assert "customerId" not in json.loads(base64.b64decode(gw.client_token.generate()))
    with pytest.raises(ValueError, match="does not exist"):
        gw.client_token.generate({"customer_id": "nobody"})


# -- sales ------------------------------------------------------------------------------------------------------


def test_sale_success(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    r = sale(gw, "49.99", customer_id="payer", order_id="inv-1")
    assert r.is_success
    t = r.transaction
    assert (t.status, t.type, t.amount, t.order_id) == ("submitted_for_settlement", "sale", Decimal("49.99"), "inv-1")
    assert (t.processor_response_code, t.processor_response_text, t.processor_response_type) == (
        "1000", "Approved", "approved")
    assert t.gateway_rejection_reason is None and t.currency_iso_code == "USD"
    assert t.customer_details.id == "payer" and t.credit_card_details.last_4 == "1111"
    assert t.credit_card_details.token == (sim.customer("payer") or {})["default_token"]
    assert isinstance(t.created_at, datetime) and [s.status for s in t.status_history] == [
        "authorized", "submitted_for_settlement"]
    assert gw.transaction.find(t.id).status == "submitted_for_settlement"
    [record] = sim.transactions
    assert (record["id"], record["amount"], record["customer_id"]) == (t.id, "49.99", "payer")

    auth = gw.transaction.sale({"amount": Decimal("5"), "payment_method_nonce": "fake-valid-nonce"})
    assert auth.is_success and auth.transaction.status == "authorized" and auth.transaction.amount == Decimal("5.00")


@pytest.mark.parametrize(
    ("amount", "code", "text", "kind"),
    [
        ("2000.00", "2000", "Do Not Honor", "soft_declined"),
        ("2001.00", "2001", "Insufficient Funds", "soft_declined"),
        ("2015.00", "2015", "Transaction Not Allowed", "hard_declined"),
        ("2999.99", "2999", "Declined", "soft_declined"),
    ],
)
def test_decline_by_amount(
    gw: braintree.BraintreeGateway, sim: BraintreeSimulator, amount: str, code: str, text: str, kind: str
) -> None:
    sim.add_customer("payer")
    r = sale(gw, amount, customer_id="payer", order_id="inv-d")
    assert not r.is_success and r.message == text and len(r.errors) == 0
    t = r.transaction
    assert (t.status, t.processor_response_code, t.processor_response_text, t.processor_response_type) == (
        "processor_declined", code, text, kind)
    assert sim.sales_for_order("inv-d") == [] and len(sim.sales_for_order("inv-d", successful_only=False)) == 1


def test_decline_by_card_and_failure(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("broke", card="declining")
    declined = sale(gw, customer_id="broke")
    assert declined.transaction.status == "processor_declined" and declined.message == "Do Not Honor"
    sim.add_customer("payer")
    failed = sale(gw, "3000.00", customer_id="payer")
    assert not failed.is_success and failed.transaction.status == "failed"
    assert failed.transaction.processor_response_code == "3000"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"customer_id": "ghost"}, "91510"),
        ({"customer_id": "cardless"}, "91511"),
        ({"payment_method_token": "nope"}, "91518"),
        ({"payment_method_nonce": "fake-consumed-nonce"}, "91564"),
        ({}, "91508"),
    ],
)
def test_sale_validation_errors(
    gw: braintree.BraintreeGateway, sim: BraintreeSimulator, params: dict[str, str], code: str
) -> None:
    sim.add_customer("cardless", card=None)
    r = sale(gw, **params)
    assert not r.is_success and r.transaction is None
    assert [e.code for e in r.errors.for_object("transaction")] == [code]
    assert sim.transactions == []


def test_api_request_key_replay(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    first = sale(gw, customer_id="payer", order_id="inv-7", api_request_key="charge:inv-7")
    again = sale(gw, customer_id="payer", order_id="inv-7", api_request_key="charge:inv-7")
    assert again.is_success and again.transaction.id == first.transaction.id
    assert len(sim.transactions) == 1 and sim.transactions[0]["api_request_key"] == "charge:inv-7"
    other = sale(gw, "11.00", customer_id="payer", order_id="inv-7", api_request_key="charge:inv-7")
    assert not other.is_success and [e.code for e in other.errors.deep_errors] == ["915232"]
    assert len(sim.transactions) == 1


def test_duplicate_checking(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.duplicate_checking = True
    sim.add_customer("payer")
    assert sale(gw, customer_id="payer", order_id="inv-9").is_success
    dup = sale(gw, customer_id="payer", order_id="inv-9")
    assert not dup.is_success and dup.message == "Gateway Rejected: duplicate"
    assert (dup.transaction.status, dup.transaction.gateway_rejection_reason) == ("gateway_rejected", "duplicate")
    assert sale(gw, customer_id="payer", order_id="inv-10").is_success
    assert len(sim.sales_for_order("inv-9")) == 1


def test_settle_void_and_refund(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    auth = gw.transaction.sale({"amount": "20.00", "customer_id": "payer"}).transaction
    assert gw.transaction.submit_for_settlement(auth.id).transaction.status == "submitted_for_settlement"
    too_early = gw.transaction.refund(auth.id)
    assert [e.code for e in too_early.errors.deep_errors] == ["91506"]
    assert sim.settle(auth.id)["status"] == "settled"
    refund = gw.transaction.refund(auth.id, "5.00")
    assert refund.is_success and refund.transaction.type == "credit"
    assert refund.transaction.refunded_transaction_id == auth.id and refund.transaction.amount == Decimal("5.00")
    assert gw.transaction.find(auth.id).refund_ids == [refund.transaction.id]
    other = sale(gw, customer_id="payer")
    assert gw.transaction.void(other.transaction.id).transaction.status == "voided"
    assert not gw.transaction.void(other.transaction.id).is_success


def test_a_refund_is_a_transaction_that_can_be_voided_or_declined(gw: braintree.BraintreeGateway,
                                                                   sim: BraintreeSimulator) -> None:
    """A refund has its own status; one that gave nothing back stays listed on the sale, and its amount may be
    refunded again."""
    sim.add_customer("payer")
    sold = sale(gw, "20.00", customer_id="payer", order_id="inv-r").transaction
    sim.settle(sold.id)
    first = gw.transaction.refund(sold.id).transaction
    assert (first.status, first.order_id) == ("submitted_for_settlement", "inv-r")
    assert [e.code for e in gw.transaction.refund(sold.id, "1.00").errors.deep_errors] == ["91512"]  # all refunded
    assert gw.transaction.void(first.id).transaction.status == "voided"
    second = gw.transaction.refund(sold.id).transaction  # the voided refund gave nothing back
    assert sim.decline_settlement(second.id)["status"] == "settlement_declined"  # an ACH refund the bank refused
    third = gw.transaction.refund(sold.id, "5.00").transaction
    assert gw.transaction.find(sold.id).refund_ids == [first.id, second.id, third.id]
    assert [gw.transaction.find(r).status for r in (first.id, second.id, third.id)] == [
        "voided", "settlement_declined", "submitted_for_settlement"]


def test_the_search_index_may_lag_behind_a_status_change(gw: braintree.BraintreeGateway,
                                                         sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    sim.configure_merchant("keys", status_lag_seconds=0.6)
    sold = sale(gw, "20.00", customer_id="payer", order_id="inv-lag").transaction
    sim.settle(sold.id)
    refund = gw.transaction.refund(sold.id).transaction
    [hit] = gw.transaction.search([TS.order_id == "inv-lag", TS.type == "sale"]).items
    assert (hit.status, hit.refund_ids) == ("submitted_for_settlement", [])  # as it was when it was made
    assert gw.transaction.search([TS.order_id == "inv-lag", TS.status == "settled"]).ids == []
    found = gw.transaction.find(sold.id)
    assert (found.status, found.refund_ids) == ("settled", [refund.id])  # find is immediate
    time.sleep(0.7)
    [hit] = gw.transaction.search([TS.order_id == "inv-lag", TS.type == "sale"]).items
    assert (hit.status, hit.refund_ids) == ("settled", [refund.id])


# -- search -----------------------------------------------------------------------------------------------------


def test_search_by_order_id_and_status_across_pages(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    ids = {sale(gw, f"{n + 1}.00", customer_id="payer", order_id="inv-many").transaction.id for n in range(120)}
    sale(gw, "2000.00", customer_id="payer", order_id="inv-many")  # declined: filtered out by status
    sale(gw, customer_id="payer", order_id="inv-other")
    found = gw.transaction.search([TS.order_id == "inv-many", TS.status.in_list(CHARGED)])
    assert len(found.ids) == 120
    items = list(found.items)
    assert {t.id for t in items} == ids and all(t.order_id == "inv-many" for t in items)
    assert len(sim.calls_to("POST", "/merchants/*/transactions/advanced_search")) == 3  # pages of 50, 50, 20


def test_search_criteria(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    sim.add_customer("other")
    before = datetime.now(UTC) - timedelta(seconds=2)
    a = sale(gw, customer_id="payer", order_id="inv-2024-001").transaction.id
    b = sale(gw, "2001.00", customer_id="other", order_id="inv-2024-002").transaction.id

    def ids(*criteria: Any) -> set[str]:
        return set(gw.transaction.search(list(criteria)).ids)

    assert ids(TS.order_id.starts_with("inv-2024")) == {a, b}
    assert ids(TS.order_id.contains("-002")) == {b}
    assert ids(TS.order_id != "inv-2024-001") == {b}
    assert ids(TS.customer_id == "payer", TS.type == "sale") == {a}
    assert ids(TS.ids.in_list([b]), TS.created_at >= before) == {b}
    assert ids(TS.created_at <= before) == set()
    assert ids(TS.status == "processor_declined") == {b}


# -- faults, auth and timeouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [(500, ServerError), (503, ServiceUnavailableError)])
def test_answer_lost_after_the_sale(
    gw: braintree.BraintreeGateway, sim: BraintreeSimulator, status: int, error: type[Exception]
) -> None:
    sim.add_customer("payer")
    sim.faults.add("POST", "/merchants/*/transactions", after=status)
    with pytest.raises(error):
        sale(gw, customer_id="payer", order_id="inv-lost", api_request_key="charge:inv-lost")
    [made] = sim.sales_for_order("inv-lost")
    found = gw.transaction.search([TS.order_id == "inv-lost", TS.status.in_list(CHARGED)])
    assert [t.id for t in found.items] == [made["id"]]
    retry = sale(gw, customer_id="payer", order_id="inv-lost", api_request_key="charge:inv-lost")
    assert retry.is_success and retry.transaction.id == made["id"] and len(sim.transactions) == 1


def test_rate_limited(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    sim.faults.add("POST", "/merchants/*/transactions", status=429)
    with pytest.raises(TooManyRequestsError):
        sale(gw, customer_id="payer")
    assert sim.transactions == []


def test_slow_answer_times_out_but_the_sale_happens(sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    sim.faults.add("POST", "/merchants/*/transactions", delay=0.5)
    with pytest.raises(ReadTimeoutError):
        sale(sim.gateway(timeout=0.2), customer_id="payer", order_id="inv-slow")
    deadline = time.monotonic() + 3
    while not sim.transactions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sim.sales_for_order("inv-slow")) == 1


def test_auth_and_merchant_checks(sim: BraintreeSimulator) -> None:
    with pytest.raises(AuthenticationError):
        sim.gateway(private_key="wrong").customer.create({})
    with pytest.raises(AuthenticationError):
        sim.gateway(public_key="wrong").transaction.find("abc")
    with pytest.raises(NotFoundError):
        sim.gateway(merchant_id="someone-else").customer.create({})


# -- webhooks ---------------------------------------------------------------------------------------------------


def test_notifications_about_real_transactions(gw: braintree.BraintreeGateway, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    txn = sale(gw, "25.00", customer_id="payer", order_id="inv-w").transaction
    sim.settle(txn.id)
    n = sim.notification("transaction_settled", txn.id)
    parsed = gw.webhook_notification.parse(n["bt_signature"], n["bt_payload"])
    assert parsed.kind == "transaction_settled" and parsed.transaction.id == txn.id
    assert parsed.transaction.status == "settled" and parsed.transaction.order_id == "inv-w"

    other = sale(gw, "26.00", customer_id="payer").transaction
    sim.decline_settlement(other.id)
    n = sim.notification("transaction_settlement_declined", other.id)
    assert gw.webhook_notification.parse(n["bt_signature"], n["bt_payload"]).transaction.status == (
        "settlement_declined")

    for kind, status in [("dispute_opened", "open"), ("dispute_won", "won"), ("dispute_lost", "lost")]:
        n = sim.notification(kind, txn.id)
        dispute = gw.webhook_notification.parse(n["bt_signature"], n["bt_payload"]).dispute
        assert (dispute.status, dispute.transaction.id, dispute.amount) == (status, txn.id, Decimal("25.00"))

    with pytest.raises(InvalidSignatureError):
        sim.gateway(private_key="other").webhook_notification.parse(n["bt_signature"], n["bt_payload"])
