"""Workflow 3 end to end: signed invoice_created → worker → one sale, one Zoho payment, Attio records."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import requests

from integration import create_app
from integration.clients.braintree import customer_id_for_company
from integration.clients.breaker import make_breaker
from integration.samples import zoho_delivery

from ..conftest import SECRETS, Stack, run_until_idle, run_worker


class Books:
    """A customer known to all three systems, with a Zoho subscription whose first invoice is open."""

    def __init__(self, stack: Stack, *, card: str | None = "valid", price: float = 50.0) -> None:
        self.stack = stack
        zoho, attio = stack.zoho, stack.attio
        if "basic-monthly" not in zoho.plans:
            zoho.add_plan("basic-monthly", "Basic", price)
        self.zoho_customer = zoho.add_customer("Acme Ltd", "billing@acme.example")
        self.company = attio.add_record("companies", {"name": "Acme Ltd", "billing_email": "billing@acme.example",
                                                      "zoho_customer_id": self.zoho_customer})
        self.bt_customer = customer_id_for_company(self.company)
        attio_patch = {"braintree_customer_id": self.bt_customer}
        stack.braintree.add_customer(self.bt_customer, email="billing@acme.example", card=card)
        attio.set_values("companies", self.company, attio_patch)
        self.subscription = attio.add_record("subscriptions", {
            "name": "Acme Basic", "status": "Active",
            "company": {"target_object": "companies", "target_record_id": self.company},
        })

    def invoice(self, amount: float) -> str:
        """Raise an open invoice for the customer; returns its id."""
        inv = self.stack.zoho.raise_invoice(self.zoho_customer, amount)
        return str(inv["invoice_id"])


def deliver(url: str, invoice_id: str, event_id: str) -> requests.Response:
    req = zoho_delivery("invoice_created", {"invoice": {"invoice_id": invoice_id}},
                        secret=SECRETS["zoho_webhook_secret"], event_id=event_id)
    return requests.post(f"{url}/webhooks/zoho", data=req.body, headers=req.headers, timeout=10)


@pytest.fixture
def web(stack: Stack, redis_conn: Any) -> Any:
    from ..conftest import LiveServer

    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


def payment_record(stack: Stack, txn_id: str) -> dict[str, Any] | None:
    ids = stack.attio.find("payments", "external_id", f"braintree:{txn_id}")
    return stack.attio.get_record("payments", ids[0]) if ids else None


def test_happy_path_charges_once_and_records_everywhere(stack, web, redis_conn, queues):
    books = Books(stack)
    invoice_id = books.invoice(50.0)
    assert deliver(web.url, invoice_id, "ev-1").status_code == 202
    run_worker(redis_conn)

    [sale] = stack.braintree.sales_for_order(invoice_id)
    assert sale["amount"] == "50.00" and sale["status"] == "submitted_for_settlement"
    assert sale["customer_id"] == books.bt_customer
    invoice = stack.zoho.invoice(invoice_id)
    assert invoice["status"] == "paid" and invoice["balance"] == 0
    [payment] = stack.zoho.payments_for_invoice(invoice_id)
    assert payment["reference_number"] == sale["id"] and payment["payment_mode"] == "creditcard"
    record = payment_record(stack, sale["id"])
    assert record is not None
    assert stack.attio.value("payments", record["id"]["record_id"], "status") == "Submitted"
    assert Decimal(str(stack.attio.value("payments", record["id"]["record_id"], "amount"))) == Decimal("50")
    assert queues["webhooks"].failed_job_registry.count == 0


@pytest.mark.parametrize(("amount", "card", "text"), [(2000.0, "valid", "Do Not Honor"),
                                                      (75.0, "declining", "Do Not Honor")])
def test_decline_is_an_outcome_not_a_failure(stack, web, redis_conn, queues, amount, card, text):
    books = Books(stack, card=card)
    invoice_id = books.invoice(amount)
    deliver(web.url, invoice_id, "ev-d")
    run_worker(redis_conn)
    assert stack.braintree.sales_for_order(invoice_id) == []
    declined = [t for t in stack.braintree.transactions if t["order_id"] == invoice_id]
    assert len(declined) == 1 and declined[0]["status"] == "processor_declined"
    record = payment_record(stack, declined[0]["id"])
    assert record is not None
    rid = record["id"]["record_id"]
    assert stack.attio.value("payments", rid, "status") == "Declined"
    assert text in stack.attio.value("payments", rid, "failure_reason")
    assert stack.zoho.payments_for_invoice(invoice_id) == []
    q = queues["webhooks"]
    assert q.failed_job_registry.count == 0 and q.scheduled_job_registry.count == 0


def test_no_payment_method_records_failed_and_past_due(stack, web, redis_conn, queues):
    books = Books(stack, card=None)
    invoice_id = books.invoice(20.0)
    deliver(web.url, invoice_id, "ev-np")
    run_worker(redis_conn)
    assert stack.braintree.transactions == []
    [rid] = stack.attio.find("payments", "external_id", f"zoho-invoice:{invoice_id}:ev-np")
    assert stack.attio.value("payments", rid, "status") == "Failed"
    assert stack.attio.value("payments", rid, "failure_reason") == "no payment method on file"


def test_paid_invoice_makes_no_call_to_braintree(stack, web, redis_conn):
    books = Books(stack)
    invoice_id = books.invoice(10.0)
    from integration.clients.zoho import build_zoho_client

    zoho = build_zoho_client(stack.settings(), redis_conn)
    zoho.record_payment(customer_id=books.zoho_customer, invoice_id=invoice_id, amount=Decimal("10"),
                        reference_number="cheque-17", date=date.today(), description="cheque")  # paid by someone else
    stack.braintree.reset()
    deliver(web.url, invoice_id, "ev-paid")
    run_worker(redis_conn)
    assert stack.braintree.calls == []


def test_an_open_breaker_longer_than_the_schedule_defers_then_charges(stack, web, redis_conn, queues):
    """Braintree's circuit is open for six runs of the job, twice its schedule of three retries: each run is
    deferred (no attempt used, no failed job); once the circuit closes, the invoice is charged once (issue 16)."""
    books = Books(stack)
    invoice_id = books.invoice(40.0)
    breaker = make_breaker(redis_conn, "braintree")
    breaker.open()
    deliver(web.url, invoice_id, "ev-open")
    q = queues["webhooks"]
    for _ in range(6):
        run_until_idle(redis_conn, rounds=1)
    [job_id] = q.scheduled_job_registry.get_job_ids()
    job = q.fetch_job(job_id)
    assert job.meta["deferrals"] == 6 and q.failed_job_registry.count == 0
    assert stack.braintree.transactions == []
    breaker.close()
    run_until_idle(redis_conn)
    job = q.fetch_job(job_id)
    assert job.get_status() == "finished" and job.retries_left == 3
    assert len(stack.braintree.sales_for_order(invoice_id)) == 1
    assert q.failed_job_registry.count == 0


def test_lost_sale_answer_is_resolved_by_search_not_a_second_sale(stack, web, redis_conn, queues):
    books = Books(stack)
    invoice_id = books.invoice(30.0)
    stack.braintree.faults.add("POST", "/merchants/*/transactions", after=503, times=1)
    deliver(web.url, invoice_id, "ev-lost")
    run_worker(redis_conn)  # the sale happened, the answer was lost: the job is scheduled for a retry
    assert len(stack.braintree.sales_for_order(invoice_id)) == 1
    assert queues["webhooks"].scheduled_job_registry.count == 1
    # Another delivery for the invoice (a new event id, so a new api_request_key) must find the sale, not repeat it.
    deliver(web.url, invoice_id, "ev-lost-again")
    run_until_idle(redis_conn)
    [sale] = stack.braintree.sales_for_order(invoice_id)
    assert [p["reference_number"] for p in stack.zoho.payments_for_invoice(invoice_id)] == [sale["id"]]
    assert payment_record(stack, sale["id"]) is not None


def test_lost_zoho_payment_answer_does_not_record_twice(stack, web, redis_conn):
    books = Books(stack)
    invoice_id = books.invoice(40.0)
    stack.zoho.faults.add("POST", "/billing/v1/payments", after=503, times=1)
    deliver(web.url, invoice_id, "ev-zp")
    run_until_idle(redis_conn)
    assert len(stack.braintree.sales_for_order(invoice_id)) == 1
    assert len(stack.zoho.payments_for_invoice(invoice_id)) == 1


def test_attio_down_after_the_charge_still_records_zoho_then_attio(stack, web, redis_conn, queues):
    books = Books(stack)
    invoice_id = books.invoice(60.0)
    stack.attio.faults.add("PUT", "/v2/objects/payments/records", status=503, times=None)
    deliver(web.url, invoice_id, "ev-attio")
    run_worker(redis_conn)
    [sale] = stack.braintree.sales_for_order(invoice_id)
    assert len(stack.zoho.payments_for_invoice(invoice_id)) == 1  # the books are right before Attio is
    assert payment_record(stack, sale["id"]) is None
    assert queues["webhooks"].scheduled_job_registry.count == 1
    stack.attio.faults.clear()
    run_until_idle(redis_conn)
    assert payment_record(stack, sale["id"]) is not None
    assert len(stack.braintree.sales_for_order(invoice_id)) == 1
    assert len(stack.zoho.payments_for_invoice(invoice_id)) == 1


def test_redelivery_and_new_events_for_a_paid_invoice_charge_nothing_more(stack, web, redis_conn):
    books = Books(stack)
    invoice_id = books.invoice(12.5)
    deliver(web.url, invoice_id, "ev-a")
    assert deliver(web.url, invoice_id, "ev-a").json()["status"] == "duplicate"
    deliver(web.url, invoice_id, "ev-b")  # another delivery id for the same invoice
    run_until_idle(redis_conn)
    assert len(stack.braintree.sales_for_order(invoice_id)) == 1
    assert len(stack.zoho.payments_for_invoice(invoice_id)) == 1


def _audit(stack: Stack) -> Any:
    return create_app(stack.settings()).test_cli_runner().invoke(args=["audit", "payments"])


def test_audit_is_clean_after_collections_and_finds_planted_violations(stack, web, redis_conn):
    books = Books(stack)
    paid = [books.invoice(10.0 + i) for i in range(3)]
    for n, invoice_id in enumerate(paid):
        deliver(web.url, invoice_id, f"ev-audit-{n}")
    run_until_idle(redis_conn)
    clean = _audit(stack)
    assert clean.exit_code == 0, clean.output
    assert "3 successful sale(s)" in clean.output and "0 violation(s)" in clean.output

    # Plant: a second sale for an invoice, and a sale recorded nowhere.
    gw = stack.braintree.gateway()
    double = gw.transaction.sale({"amount": "10.00", "customer_id": books.bt_customer, "order_id": paid[0],
                                  "options": {"submit_for_settlement": True}})
    orphan_invoice = books.invoice(99.0)
    orphan = gw.transaction.sale({"amount": "99.00", "customer_id": books.bt_customer, "order_id": orphan_invoice,
                                  "options": {"submit_for_settlement": True}})
    assert double.is_success and orphan.is_success
    dirty = _audit(stack)
    assert dirty.exit_code == 1
    assert f"double_charge: invoice={paid[0]}" in dirty.output
    assert f"missing_zoho_payment: invoice={orphan_invoice} transactions={orphan.transaction.id}" in dirty.output
    assert f"missing_attio_payment: invoice={orphan_invoice} transactions={orphan.transaction.id}" in dirty.output


def test_settlement_arriving_before_the_collection_is_recorded_is_not_lost(stack, web, redis_conn, queues):
    import requests as http

    books = Books(stack)
    invoice_id = books.invoice(33.0)
    stack.attio.faults.add("PUT", "/v2/objects/payments/records", status=503, times=None)
    deliver(web.url, invoice_id, "ev-early")
    run_worker(redis_conn)  # charged and recorded in Zoho; the Attio write failed: the job waits for a retry
    [sale] = stack.braintree.sales_for_order(invoice_id)
    assert queues["webhooks"].scheduled_job_registry.count == 1
    stack.attio.faults.clear()
    stack.braintree.settle(sale["id"])
    fields = stack.braintree.notification("transaction_settled", sale["id"])
    assert http.post(f"{web.url}/webhooks/braintree", data=fields, timeout=10).status_code == 202
    run_worker(redis_conn)  # only the settlement is queued now
    record = payment_record(stack, sale["id"])
    assert record is not None
    rid = record["id"]["record_id"]
    assert stack.attio.value("payments", rid, "status") == "Settled"
    run_until_idle(redis_conn)  # the collection's retry fills in the rest and does not move the status back
    assert stack.attio.value("payments", rid, "status") == "Settled"
    assert stack.attio.value("payments", rid, "company") == books.company
    assert len(stack.attio.find("payments", "external_id", f"braintree:{sale['id']}")) == 1


# -- the subscription: its status follows the collection, unless a newer event has been applied --------------------
# zoho_delivery's events are raised at 2026-11-30T10:00:00+0000.
@pytest.mark.parametrize(
    ("card", "amount", "status_after"),
    [("valid", 50.0, "Active"), ("declining", 75.0, "Past due")],
)
def test_the_collection_sets_the_subscription_status(stack, web, redis_conn, card, amount, status_after):
    books = Books(stack, card=card)
    stack.attio.set_values("subscriptions", books.subscription, {
        "zoho_subscription_id": "sub-collect-1", "status": "Trial", "last_event_at": "2026-11-30T09:00:00.000000Z"})
    invoice_id = stack.zoho.raise_invoice(books.zoho_customer, amount, subscription_id="sub-collect-1")["invoice_id"]
    assert deliver(web.url, invoice_id, "ev-s1").status_code == 202
    run_worker(redis_conn)

    attio = stack.attio
    assert attio.value("subscriptions", books.subscription, "status") == status_after
    # Only lifecycle events move the mark: one raised before the invoice (subscription_created) still applies.
    assert attio.value("subscriptions", books.subscription, "last_event_at").startswith("2026-11-30T09:00:00")
    paid_at = attio.value("subscriptions", books.subscription, "last_payment_at")
    assert (paid_at is not None) == (status_after == "Active")


@pytest.mark.parametrize(("card", "amount"), [("valid", 50.0), ("declining", 75.0)])
def test_a_subscription_changed_by_a_newer_event_keeps_its_status(stack, web, redis_conn, card, amount):
    """Cancelled at 11:00 (a lifecycle event), then the collection of a 10:00 invoice runs (say a retry): the
    charge and its records happen as always, the payment time is written, the status stays Cancelled."""
    books = Books(stack, card=card)
    stack.attio.set_values("subscriptions", books.subscription, {
        "zoho_subscription_id": "sub-collect-2", "status": "Cancelled",
        "last_event_at": "2026-11-30T11:00:00.000000Z"})
    invoice_id = stack.zoho.raise_invoice(books.zoho_customer, amount, subscription_id="sub-collect-2")["invoice_id"]
    assert deliver(web.url, invoice_id, "ev-s2").status_code == 202
    run_worker(redis_conn)

    attio = stack.attio
    [txn] = [t for t in stack.braintree.transactions if t["order_id"] == invoice_id]
    record = payment_record(stack, txn["id"])
    assert record is not None
    expected = "Submitted" if card == "valid" else "Declined"
    assert attio.value("payments", record["id"]["record_id"], "status") == expected
    assert attio.value("subscriptions", books.subscription, "status") == "Cancelled"
    assert attio.value("subscriptions", books.subscription, "last_event_at").startswith("2026-11-30T11:00:00")
    paid_at = attio.value("subscriptions", books.subscription, "last_payment_at")
    assert (paid_at is not None) == (card == "valid")
