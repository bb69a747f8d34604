"""A tiny month-start billing run (``bench.billing_run``, 50 invoices) through the real web and two worker
processes: the service's own per-operation counters agree with what the simulators saw, each collected invoice costs
2 Zoho calls (the invoice read and the payment), nothing is charged twice and no provider answers 429."""

from __future__ import annotations

import argparse

from bench import billing_run
from tests.conftest import TEST_REDIS_URL


def test_a_small_billing_run_counts_its_calls_and_charges_each_invoice_once() -> None:
    args = argparse.Namespace(invoices=50, workers=2, scale=60, attio_writes_per_second=25, timeout=60.0, json=False)
    result = billing_run.run(args, redis_url=TEST_REDIS_URL)
    assert result["collected"] == 50, result
    per_invoice = result["calls_per_invoice"]
    assert per_invoice["zoho"] == 2.0  # GET /invoices/{id}, POST /payments: the floor of the invariants
    assert per_invoice["braintree"] == 3.0  # order search, the customer's card, the sale
    seen = result["simulator_calls_per_invoice"]
    assert seen["attio"] == per_invoice["attio"] and seen["braintree"] == per_invoice["braintree"]
    assert result["zoho_429"] == result["attio_429"] == 0
    assert result["double_charges"] == result["unbooked_sales"] == result["audit_violations"] == 0
    assert result["ratio"] < 2.5  # goal 1.15 at full size; a 50-invoice run on a shared machine is noisy
