"""Collections through real forking worker processes: concurrency, and a worker killed with ``kill -9``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from integration import create_app

from ..conftest import LiveServer, Stack
from ..processes import WorkerProcess, queues_idle, wait_until
from .test_collection import Books, deliver, payment_record

pytestmark = pytest.mark.slow


@pytest.fixture
def web(stack: Stack) -> Any:
    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


def test_ten_deliveries_two_workers_one_sale(stack, web, redis_conn, tmp_path: Path):
    books = Books(stack)
    invoice_id = books.invoice(80.0)
    settings = stack.settings()
    workers = [WorkerProcess(settings, tmp_path, name=f"w{i}") for i in range(2)]
    try:
        # Five redeliveries of one event and five distinct events (operator retries, resends) for one invoice.
        event_ids = ["ev-same"] * 5 + [f"ev-{n}" for n in range(5)]
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(lambda e: deliver(web.url, invoice_id, e).status_code, event_ids))
        assert statuses.count(202) == 6 and statuses.count(200) == 4
        wait_until(lambda: queues_idle(redis_conn), timeout=90, message="all collection jobs to finish")
    finally:
        for w in workers:
            w.stop()
    assert len(stack.braintree.sales_for_order(invoice_id)) == 1
    assert len(stack.zoho.payments_for_invoice(invoice_id)) == 1
    [sale] = stack.braintree.sales_for_order(invoice_id)
    assert payment_record(stack, sale["id"]) is not None


def test_worker_killed_mid_collection_recovers_with_one_sale(stack, web, redis_conn, queues, tmp_path: Path):
    books = Books(stack)
    invoice_id = books.invoice(45.0)
    settings = stack.settings(retry_schedule_seconds=(1, 2, 4))
    # The Zoho payment hangs long enough to kill the worker after the charge and before the books are written.
    stack.zoho.faults.add("POST", "/billing/v1/payments", delay=4.0, times=1)
    first = WorkerProcess(settings, tmp_path, name="first")
    try:
        deliver(web.url, invoice_id, "ev-kill")
        wait_until(lambda: len(stack.braintree.sales_for_order(invoice_id)) == 1, timeout=30, message="the sale")
        first.kill9()
    finally:
        first.stop()
    killed_at = time.monotonic()
    assert queues["webhooks"].started_job_registry.count == 1  # the job is not forgotten
    assert stack.zoho.payments_for_invoice(invoice_id) == [] or len(stack.zoho.payments_for_invoice(invoice_id)) == 1

    second = WorkerProcess(settings, tmp_path, name="second")
    try:
        # The Zoho payment alone is no sign of recovery: the killed worker's request may still land after the kill.
        wait_until(lambda: any(p["reference_number"] for p in stack.zoho.payments_for_invoice(invoice_id))
                   and any(payment_record(stack, s["id"]) for s in stack.braintree.sales_for_order(invoice_id))
                   and queues_idle(redis_conn), timeout=180, interval=0.5, message="recovery")
    finally:
        second.stop()
    recovered_after = time.monotonic() - killed_at
    assert recovered_after < 150, f"recovered after {recovered_after:.0f}s"
    [sale] = stack.braintree.sales_for_order(invoice_id)
    assert [p["reference_number"] for p in stack.zoho.payments_for_invoice(invoice_id)] == [sale["id"]]
    assert payment_record(stack, sale["id"]) is not None
    assert queues["webhooks"].failed_job_registry.count == 0
