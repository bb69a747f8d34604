"""``flask … explain``: after a happy collection, a decline, a lost answer and a failed job, each invoice shows
its objects in the three systems, the jobs that touched it and the audit's verdict."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integration import create_app

from ..conftest import Stack, run_worker
from ..workers.test_collection import Books, deliver, drain


@pytest.fixture
def web(stack: Stack, redis_conn: Any) -> Any:
    from ..conftest import LiveServer

    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


def explain(stack: Stack, *args: str) -> Any:
    result = create_app(stack.settings()).test_cli_runner().invoke(args=["explain", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_happy_collection_is_explained_by_id_and_by_number(stack, web, redis_conn):
    books = Books(stack)
    invoice_id = books.invoice(50.0)
    deliver(web.url, invoice_id, "ev-x1")
    run_worker(redis_conn)
    [sale] = stack.braintree.sales_for_order(invoice_id)
    text = explain(stack, "invoice", invoice_id)
    number = stack.zoho.invoice(invoice_id)["number"]
    assert f"Zoho invoice {number} ({invoice_id}): paid" in text
    assert f"{sale['id']}: sale 50.00 submitted_for_settlement" in text
    assert f"braintree:{sale['id']}: Submitted" in text
    assert "charge intent: generation 0, charged" in text
    assert "invoice_created finished charged, 1 attempt(s)" in text and "audit: clean" in text
    data = json.loads(explain(stack, "invoice", number, "--format", "json"))
    assert data["invoice_id"] == invoice_id and data["audit"] == [] and len(data["jobs"]) == 1
    assert data["jobs"][0]["outcome"] == "charged"


def test_a_decline_a_lost_answer_and_a_failed_job_are_explained(stack, web, redis_conn, queues):
    books = Books(stack, card="declining")
    declined = books.invoice(20.0)
    deliver(web.url, declined, "ev-x2")
    run_worker(redis_conn)
    assert "finished declined" in explain(stack, "invoice", declined)

    books = Books(stack)
    lost = books.invoice(30.0)
    stack.zoho.faults.add("POST", "/billing/v1/payments", after=503, times=1)
    deliver(web.url, lost, "ev-x3")
    run_worker(redis_conn)
    text = explain(stack, "invoice", lost)
    assert "scheduled" in text and "ServiceUnavailable" in text, text  # waiting for its retry, the error named
    drain(redis_conn)
    assert "finished already_charged, 2 attempt(s)" in explain(stack, "invoice", lost)

    failed = books.invoice(40.0)
    stack.braintree.faults.add("POST", "/merchants/*/transactions", after=503, times=1)
    deliver(web.url, failed, "ev-x4")
    run_worker(redis_conn)
    stack.zoho.void_invoice(failed)  # the sale was made; the invoice went away: escalated
    drain(redis_conn)
    text = explain(stack, "invoice", failed)
    assert "failed" in text and "SaleNotApplied" in text
    assert "audit: missing_zoho_payment" in text
    events = explain(stack, "event", "zoho", "ev-x4")
    assert "1 job(s)" in events and "failed" in events
