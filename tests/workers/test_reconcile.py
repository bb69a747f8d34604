"""The reconciliation sweeps end to end (workflows.md §5): a webhook that never came is made good within one run,
by the very job the webhook would have started; a webhook arriving after the sweep acted does nothing twice.

Real Redis, the three simulators over HTTP, the sweeps run as the RQ jobs the schedule and ``POST /admin/reconcile``
create (in-process workers), the money cases for both kinds of merchant (``merchant`` from ``test_collection``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from integration import create_app
from integration.queueing import enqueue_job, make_queue
from integration.routing import CATALOG_QUEUE, RECONCILE
from integration.samples import zoho_delivery
from integration.sweeps import last_run_key
from workers.dunning import Dunning
from workers.intents import ChargeIntents
from workers.workflows.reconcile import run_sweep

from ..conftest import SECRETS, Stack
from .test_activation import CRM, send_event
from .test_collection import (  # noqa: F401 - fixtures
    BOUND,
    SEARCH_LAG,
    WINDOW,
    Books,
    assert_booked_once,
    deliver,
    drain,
    merchant,
    payment_record,
    sale_posts,
    web,
)


def configure(stack: Stack, **overrides: Any) -> None:
    """Jobs in this process use these settings: the merchant's bounds, no grace, settlement checked at once."""
    from workers import runtime

    base: dict[str, Any] = dict(sale_search_lag_seconds=BOUND, braintree_duplicate_window_seconds=WINDOW,
                                reconcile_grace_minutes=0, settlement_check_after_hours=0)
    runtime.use_settings(stack.settings(**{**base, **overrides}))


def sweep(redis_conn: Any, name: str, *, seconds: float = 20.0) -> dict[str, Any]:
    """Run one sweep as its job (as ``POST /admin/reconcile`` enqueues it), then whatever it queued; its result."""
    queue = make_queue(CATALOG_QUEUE, redis_conn)
    job_id = enqueue_job(queue, RECONCILE.job, {"trigger": "admin", "sweep": name}, retry_schedule=(1, 2, 4))
    drain(redis_conn, seconds=seconds)
    result = queue.fetch_job(job_id).return_value()
    assert result is not None, "the sweep job did not finish"
    return result


# -- invoices -----------------------------------------------------------------------------------------------------
def test_a_lost_invoice_created_is_collected_once_and_the_late_webhook_does_nothing_more(stack, merchant, web,
                                                                                        redis_conn, queues):
    configure(stack)
    books = Books(stack)
    invoice_id = books.invoice(50.0)  # its invoice_created never reaches the service
    result = sweep(redis_conn, "invoices")
    assert result["enqueued"] == 1 and result["looked_at"] == 1
    sale = assert_booked_once(stack, invoice_id)
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Active"

    assert sweep(redis_conn, "invoices")["enqueued"] == 0  # paid: no longer open
    assert deliver(web.url, invoice_id, "ev-late").status_code == 202  # the webhook, days late
    drain(redis_conn)
    assert assert_booked_once(stack, invoice_id)["id"] == sale["id"]
    assert sale_posts(stack) == 1
    assert queues["webhooks"].failed_job_registry.count == 0


def test_an_invoice_created_as_draft_and_sent_later_is_collected_by_the_sweep(stack, merchant, web, redis_conn):
    """Zoho raises invoice_created for the draft (nothing to charge yet) and no event when it is sent."""
    configure(stack)
    books = Books(stack)
    draft = stack.zoho.raise_invoice(books.zoho_customer, 80.0, subscription_id=books.zoho_subscription,
                                     status="draft")
    invoice_id = str(draft["invoice_id"])
    deliver(web.url, invoice_id, "ev-draft")
    drain(redis_conn)
    assert sweep(redis_conn, "invoices")["looked_at"] == 0  # a draft is not open
    with stack.zoho._lock:  # finance sends it (Invoices → Send): no webhook
        stack.zoho.invoices[invoice_id].update(status="sent", balance=80.0)
    assert sweep(redis_conn, "invoices")["enqueued"] == 1
    assert_booked_once(stack, invoice_id)


def test_a_webhook_arriving_while_the_sweeps_collection_waits_makes_one_sale(stack, merchant, web, redis_conn):
    configure(stack)
    books = Books(stack)
    invoice_id = books.invoice(70.0)
    enqueue_job(make_queue(CATALOG_QUEUE, redis_conn), RECONCILE.job, {"trigger": "admin", "sweep": "invoices"},
                retry_schedule=(1,))
    from ..conftest import run_worker

    run_worker(redis_conn, max_jobs=1)  # the sweep only: its collection is queued, not run
    deliver(web.url, invoice_id, "ev-race")  # the webhook turns up now: two jobs, one invoice
    drain(redis_conn)
    assert_booked_once(stack, invoice_id)
    assert sale_posts(stack) == 1


def test_a_sale_whose_booking_gave_up_is_booked_by_the_sweep_not_charged_again(stack, merchant, web, redis_conn,
                                                                                queues):
    configure(stack)
    books = Books(stack)
    invoice_id = books.invoice(45.0)
    stack.zoho.faults.add("POST", "/billing/v1/payments", status=503, times=100)  # Zoho down for the job's retries
    deliver(web.url, invoice_id, "ev-unbooked")
    drain(redis_conn, seconds=30)
    stack.zoho.faults.clear()
    assert queues["webhooks"].failed_job_registry.count == 1  # charged, not booked: the job gave up
    assert len(stack.braintree.sales_for_order(invoice_id)) == 1 and stack.zoho.payments_for_invoice(invoice_id) == []
    assert sweep(redis_conn, "invoices")["enqueued"] == 1
    assert_booked_once(stack, invoice_id)
    assert sale_posts(stack) == 1


def test_young_foreign_and_declined_invoices_are_left_alone(stack, redis_conn, queues):
    configure(stack, reconcile_grace_minutes=30)
    books = Books(stack)
    books.invoice(10.0)  # younger than the grace period: the webhook's to handle
    result = sweep(redis_conn, "invoices")
    assert (result["looked_at"], result["enqueued"], result["skipped"]) == (1, 0, 1)

    configure(stack)
    stranger = stack.zoho.add_customer("Nobody", "nobody@example.com")
    stack.zoho.raise_invoice(stranger, 20.0)  # a customer no Attio company maps to
    unmanaged = Books(stack)
    stack.zoho.raise_invoice(unmanaged.zoho_customer, 30.0)  # a one-off invoice: finance collects it
    result = sweep(redis_conn, "invoices")
    assert result["enqueued"] == 1  # only the first invoice, now old enough
    stack.zoho.calls.clear()
    assert sweep(redis_conn, "invoices")["enqueued"] == 0
    assert stack.zoho.calls_to("GET", "*/invoices/*") == []  # the one-off is known not to be managed: not re-read
    assert len(stack.braintree.calls_to("POST", "/merchants/*/transactions")) == 1


def test_an_invoice_or_subscription_being_worked_on_is_not_queued_again(stack, redis_conn, queues):
    from integration.locks import activation_lock, hold, invoice_lock

    configure(stack)
    books = Books(stack)
    invoice_id = books.invoice(15.0)
    crm = CRM(stack, card=True)
    crm.request()
    with hold(redis_conn, invoice_lock(invoice_id), ttl=30, wait=0), \
            hold(redis_conn, activation_lock(crm.subscription), ttl=30, wait=0):
        for name in ("invoices", "activations"):
            assert run_sweep(name, context(redis_conn)).skipped == 1
    assert queues["webhooks"].count == 0  # a collection and an activation were running: nothing added


def context(redis_conn: Any, **kw: Any) -> Any:
    """A sweep's context as the job builds it, with the clients of the jobs in this process."""
    from datetime import UTC, datetime

    from workers import runtime
    from workers.workflows.reconcile import SweepContext

    base: dict[str, Any] = dict(zoho=runtime.zoho_client(), attio=runtime.attio_client(),
                                braintree=runtime.braintree_client(), connection=redis_conn, now=datetime.now(UTC),
                                run_id="test-run", tag="t")
    return SweepContext.from_settings(runtime.settings(), **{**base, **kw})


def test_an_interrupted_sweep_resumes_after_the_last_invoice_it_did(stack, redis_conn):
    """A run's position is kept under its id: its retry skips what it did (and would have queued again)."""
    from workers.workflows.reconcile import sweep_invoices

    configure(stack)
    books = Books(stack)
    first, second = books.invoice(11.0), books.invoice(12.0)

    class Interrupted(Exception):
        pass

    class Flaky:
        def __init__(self, zoho: Any) -> None:
            self.zoho, self.gets = zoho, 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.zoho, name)

        def get_invoice(self, invoice_id: str) -> Any:
            self.gets += 1
            if invoice_id == second and self.gets == 2:
                raise Interrupted
            return self.zoho.get_invoice(invoice_id)

    from workers import runtime

    ctx = context(redis_conn, zoho=Flaky(runtime.zoho_client()), run_id="run-1")
    with pytest.raises(Interrupted):
        sweep_invoices(ctx)
    queued = make_queue("webhooks", redis_conn).get_job_ids()
    assert [j for j in queued if first in j] and not [j for j in queued if second in j]
    report = sweep_invoices(ctx)  # the retry of the same run
    assert report.looked_at == 1 and report.enqueued == 1  # only the second invoice
    assert redis_conn.get("reconcile:invoices:cursor") is None and redis_conn.get(last_run_key("invoices"))


def test_the_sweep_stays_inside_zohos_budget_with_a_thousand_open_invoices(stack, redis_conn):
    stack.zoho.requests_per_minute = 30  # the simulator refuses the 31st call of a minute with a 429
    configure(stack, zoho_requests_per_minute=30)
    try:
        stranger = stack.zoho.add_customer("Walk-in", "walkin@example.com")
        for _ in range(995):
            stack.zoho.raise_invoice(stranger, 5.0)  # open, but of no company: nothing the service can charge
        books = Books(stack)
        lost = [books.invoice(20.0 + i) for i in range(5)]
        stack.zoho.calls.clear()
        result = sweep(redis_conn, "invoices", seconds=150.0)  # a sweep is bulk work: paced, deferred, resumed
        assert result["looked_at"] == 1000 and result["enqueued"] == 5
        for invoice_id in lost:
            assert_booked_once(stack, invoice_id)
        assert stack.zoho.rate_limited == 0
        lists = stack.zoho.calls_to("GET", "*/invoices")
        assert len(lists) == 5  # 1,000 rows, 200 a page
        assert len(stack.zoho.calls_to("GET", "*/invoices/*")) == 5 + 5  # the sweep's look, the collection's read
    finally:
        stack.zoho.requests_per_minute = None


# The reads a dry run makes are metered (budgets, breakers, the token, the daily quota counters): not writes.
METERING = (b"budget", b"zoho:", b"breaker", b"quota:")


# -- dry run ------------------------------------------------------------------------------------------------------
def test_dry_run_reports_and_writes_nothing(stack, redis_conn, queues):
    configure(stack)
    books = Books(stack)
    books.invoice(40.0)
    crm = CRM(stack, card=True)
    crm.request()
    app = create_app(stack.settings(reconcile_grace_minutes=0, settlement_check_after_hours=0))
    for sim in (stack.attio, stack.zoho, stack.braintree):
        sim.calls.clear()
    before = sorted(k for k in redis_conn.keys("*") if not k.startswith(METERING))
    out = app.test_cli_runner().invoke(args=["reconcile", "all", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "would collect invoice" in out.output and "would activate subscription" in out.output
    assert "invoices: looked at 1, repaired 0, enqueued 1, skipped 0 (dry run: nothing written)" in out.output
    assert all(q.count == 0 for q in queues.values())
    writes = [c for sim in (stack.attio, stack.zoho) for c in sim.calls if c.method in ("POST", "PUT", "PATCH")
              and not c.path.endswith("/query") and "/oauth/" not in c.path]
    assert writes == []
    after = sorted(k for k in redis_conn.keys("*") if not k.startswith(METERING))
    assert after == before


def test_the_command_runs_a_sweep_and_exits_1_when_something_could_not_be_repaired(stack, redis_conn):
    configure(stack)
    app = create_app(stack.settings(reconcile_grace_minutes=0, settlement_check_after_hours=0))
    stack.attio.add_record("payments", {"external_id": "braintree:nosuchtxn", "status": "Submitted",
                                        "occurred_at": "2026-01-01T00:00:00.000000Z"})
    out = app.test_cli_runner().invoke(args=["reconcile", "settlements"])
    assert out.exit_code == 0, out.output  # older than 30 days: a warning, no longer looked up
    stack.attio.add_record("payments", {"external_id": "braintree:ghost", "status": "Submitted",
                                        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())})
    out = app.test_cli_runner().invoke(args=["reconcile", "settlements"])
    assert out.exit_code == 1 and "could not repair 1" in out.output


# -- activations --------------------------------------------------------------------------------------------------
def test_a_requested_subscription_whose_event_was_lost_is_activated_once(stack, redis_conn, queues):
    configure(stack)
    crm = CRM(stack, card=True)
    crm.request()  # the record.updated never arrives
    assert sweep(redis_conn, "activations")["enqueued"] == 1
    assert crm.sub("status") == "Active"
    assert len(stack.zoho.subscriptions) == 1 and len(stack.zoho.customers) == 1
    assert sweep(redis_conn, "activations")["looked_at"] == 0  # no longer Requested

    server = __import__("tests.conftest", fromlist=["LiveServer"]).LiveServer(create_app(stack.settings()))
    try:
        send_event(server.url, crm.subscription)  # the event, late
        drain(redis_conn)
    finally:
        server.stop()
    assert len(stack.zoho.subscriptions) == 1 and len(stack.zoho.customers) == 1
    assert len(stack.braintree.calls_to("POST", "/merchants/*/customers")) <= 1
    assert queues["webhooks"].failed_job_registry.count == 0


def test_a_requested_subscription_younger_than_the_grace_is_left_to_its_event(stack, redis_conn):
    configure(stack, reconcile_grace_minutes=30)
    crm = CRM(stack, card=True)
    crm.request()
    result = sweep(redis_conn, "activations")
    assert (result["looked_at"], result["enqueued"]) == (1, 0)
    assert crm.sub("status") == "Requested"


# -- settlements --------------------------------------------------------------------------------------------------
def _collected(stack: Stack, web: Any, redis_conn: Any, books: Books, amount: float) -> str:
    invoice_id = books.invoice(amount)
    deliver(web.url, invoice_id, f"ev-{invoice_id}")
    drain(redis_conn)
    return str(assert_booked_once(stack, invoice_id)["id"])


def test_a_card_payment_is_settled_by_the_sweep_and_a_voided_sale_fails(stack, merchant, web, redis_conn):
    configure(stack)
    books = Books(stack)
    settled, voided, pending = (_collected(stack, web, redis_conn, books, a) for a in (10.0, 11.0, 12.0))
    stack.braintree.settle(settled)  # cards: Braintree sends no webhook for this
    stack.braintree.void(voided)
    time.sleep(SEARCH_LAG)  # a day later in real life; Braintree's search index may still show them submitted
    stack.braintree.calls.clear()
    result = sweep(redis_conn, "settlements")
    assert (result["looked_at"], result["repaired"], result["skipped"]) == (3, 2, 1)
    # each read by id (the search's statuses lag), the decided ones read again under the transaction's lock
    assert len(stack.braintree.calls_to("POST", "/merchants/*/transactions/advanced_search*")) == 0
    assert len(stack.braintree.calls_to("GET", "/merchants/*/transactions/*")) == 3 + 2
    status = {t: stack.attio.value("payments", payment_record(stack, t)["id"]["record_id"], "status")
              for t in (settled, voided, pending)}
    assert status == {settled: "Settled", voided: "Failed", pending: "Submitted"}
    rid = payment_record(stack, voided)["id"]["record_id"]
    assert "Voided" in stack.attio.value("payments", rid, "failure_reason")
    voided_invoice = str(stack.braintree.transaction(voided)["order_id"])
    assert stack.zoho.payments_for_invoice(voided_invoice) == []  # no money came: the invoice is open again
    assert sweep(redis_conn, "settlements")["repaired"] == 0  # nothing twice
    writes = len(stack.attio.calls_to("P[AU]*", "/v2/objects/payments/records*"))  # PUT (assert), PATCH
    for txn in (settled, voided):  # an ACH-style webhook turning up late after all: nothing more
        kind = "transaction_settled" if txn == settled else "transaction_settlement_declined"
        notification = stack.braintree.notification(kind, txn)
        assert requests.post(f"{web.url}/webhooks/braintree", data=notification, timeout=10).status_code == 202
    drain(redis_conn)
    assert len(stack.attio.calls_to("P[AU]*", "/v2/objects/payments/records*")) == writes
    assert stack.attio.value("payments", payment_record(stack, settled)["id"]["record_id"], "status") == "Settled"
    assert len(zoho_deletes(stack)) == 1  # the voided sale's payment, by the sweep; the late webhook found none


def zoho_deletes(stack: Stack) -> list[Any]:
    return [c for c in stack.zoho.calls if c.method == "DELETE" and "/payments/" in c.path]


def test_a_declined_card_settlement_is_unbooked_by_the_sweep_once_even_when_attio_fails(stack, merchant, web,
                                                                                        redis_conn, queues):
    """Braintree sends no webhook for a card: the sweep is what takes the sale's payment off the Zoho invoice (as the
    webhook's job would), before it writes Failed, so an Attio outage in between loses no unbooking; the sweep run
    again and a late webhook delete nothing more, and the invoices sweep collects the invoice again."""
    configure(stack)
    books = Books(stack)
    txn = _collected(stack, web, redis_conn, books, 19.0)
    invoice_id = str(stack.braintree.transaction(txn)["order_id"])
    stack.braintree.decline_settlement(txn)
    time.sleep(SEARCH_LAG)
    stack.attio.faults.add("PATCH", "/v2/objects/payments/records/*", status=503, times=None)
    stack.attio.faults.add("PUT", "/v2/objects/payments/records*", status=503, times=None)
    with pytest.raises(Exception):  # noqa: B017 - whatever the Attio client raises once its retries are spent
        run_sweep("settlements", context(redis_conn))
    stack.attio.faults.clear()
    record = payment_record(stack, txn)["id"]["record_id"]
    assert stack.attio.value("payments", record, "status") == "Submitted"
    assert stack.zoho.payments_for_invoice(invoice_id) == [] and len(zoho_deletes(stack)) == 1

    result = sweep(redis_conn, "settlements")
    assert (result["looked_at"], result["repaired"]) == (1, 1)
    assert stack.attio.value("payments", record, "status") == "Failed"
    notification = stack.braintree.notification("transaction_settlement_declined", txn)
    assert requests.post(f"{web.url}/webhooks/braintree", data=notification, timeout=10).status_code == 202
    drain(redis_conn)
    assert len(zoho_deletes(stack)) == 1
    assert stack.zoho.invoice(invoice_id)["status"] == "sent"

    assert sweep(redis_conn, "invoices")["enqueued"] == 1
    [again] = stack.braintree.sales_for_order(invoice_id)
    assert again["id"] != txn
    assert [p["reference_number"] for p in stack.zoho.payments_for_invoice(invoice_id)] == [again["id"]]
    assert queues["webhooks"].failed_job_registry.count == 0


def test_settlement_waits_for_the_threshold(stack, merchant, web, redis_conn):
    configure(stack, settlement_check_after_hours=24)
    books = Books(stack)
    txn = _collected(stack, web, redis_conn, books, 10.0)
    stack.braintree.settle(txn)
    result = sweep(redis_conn, "settlements")
    assert (result["looked_at"], result["repaired"]) == (1, 0)
    assert stack.attio.value("payments", payment_record(stack, txn)["id"]["record_id"], "status") == "Submitted"


# -- subscriptions ------------------------------------------------------------------------------------------------
def _zoho_subscription(stack: Stack, books: Books) -> str:
    """A Zoho subscription for the books' customer, made the one Attio knows."""
    zoho = stack.zoho
    with zoho._lock:
        sub = zoho._new_subscription({"customer_id": books.zoho_customer, "plan": {"plan_code": "basic-monthly"},
                                      "auto_collect": False, "reference_id": books.subscription})
    stack.attio.set_values("subscriptions", books.subscription, {"zoho_subscription_id": sub["subscription_id"],
                                                                 "next_billing_date": sub.get("next_billing_at")})
    books.zoho_subscription = str(sub["subscription_id"])  # its invoices are this subscription's
    return books.zoho_subscription


def test_a_lost_status_change_is_repaired_as_the_lifecycle_event_would(stack, web, redis_conn):
    configure(stack)
    books = Books(stack)
    sub_id = _zoho_subscription(stack, books)
    assert sweep(redis_conn, "subscriptions")["repaired"] == 0  # in step
    changed = stack.zoho.set_subscription_status(sub_id, "non_renewing")  # its event is lost
    result = sweep(redis_conn, "subscriptions")
    assert (result["looked_at"], result["repaired"]) == (1, 1)
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Non-renewing"
    assert stack.attio.value("subscriptions", books.subscription, "next_billing_date") == changed["next_billing_at"]
    assert sweep(redis_conn, "subscriptions")["repaired"] == 0
    writes = len(stack.attio.calls_to("PATCH", "/v2/objects/subscriptions/records/*"))
    late = zoho_delivery("subscription_cancellation_scheduled", {"subscription": {"subscription_id": sub_id}},
                         secret=SECRETS["zoho_webhook_secret"], event_id="ev-late-sub")
    requests.post(f"{web.url}/webhooks/zoho", data=late.body, headers=late.headers, timeout=10)
    drain(redis_conn)  # the lost event, delivered late: Attio already says what it would
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Non-renewing"
    assert len(stack.attio.calls_to("PATCH", "/v2/objects/subscriptions/records/*")) <= writes + 1  # last_event_at


def test_a_lost_later_event_is_healed_by_the_sweep_and_an_older_one_late_then_re_reads(stack, web, redis_conn):
    configure(stack)
    books = Books(stack)
    sub_id = _zoho_subscription(stack, books)
    zoho = stack.zoho

    def change(status: str, event_type: str) -> bytes:  # Zoho's event of one change, not delivered by itself
        zoho.advance_clock(1)  # one-second event times: each strictly newer
        zoho.set_subscription_status(sub_id, status, event_type=event_type)
        return next(e for e in reversed(zoho.events) if e["event_type"] == event_type)["payload"].encode()

    def post(body: bytes) -> None:
        headers = {"Content-Type": "application/json",
                   "X-Zoho-Webhook-Signature": zoho.sign(body, SECRETS["zoho_webhook_secret"])}  # fmt: skip
        assert requests.post(f"{web.url}/webhooks/zoho", data=body, headers=headers, timeout=10).status_code == 202
        drain(redis_conn)

    def reads() -> int:
        return len(zoho.calls_to("GET", "/billing/v1/subscriptions/*"))

    applied = change("non_renewing", "subscription_cancellation_scheduled")
    late = change("live", "subscription_reactivated")  # delivered only after the sweep
    change("cancelled", "subscription_cancelled")  # lost
    before = reads()
    post(applied)
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Non-renewing"
    assert reads() == before  # applied from the subscription it carries
    assert sweep(redis_conn, "subscriptions")["repaired"] == 1  # the lost cancellation
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Cancelled"
    before = reads()
    # Newer than the last event applied, older than the sweep's read: what it carries is older than Attio's state.
    post(late)
    assert reads() == before + 1
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Cancelled"


def test_a_standing_decline_keeps_past_due_against_zohos_live(stack, web, redis_conn):
    configure(stack)
    books = Books(stack, card="declining")
    _zoho_subscription(stack, books)
    invoice_id = books.invoice(30.0)
    deliver(web.url, invoice_id, "ev-decl")
    drain(redis_conn)
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Past due"
    assert sweep(redis_conn, "subscriptions")["repaired"] == 0
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Past due"


# -- dunning ------------------------------------------------------------------------------------------------------
TINY = 4 / 86400  # days: 4 s (the drain helper runs a scheduled job up to 2 s early)


def test_a_soft_decline_is_retried_on_the_schedule_and_books_once(stack, merchant, web, redis_conn, queues):
    configure(stack, dunning_schedule_days=(TINY, 2 * TINY))
    books = Books(stack, card="declining")  # 2000 Do Not Honor: a soft decline
    invoice_id = books.invoice(60.0)
    deliver(web.url, invoice_id, "ev-soft")
    from ..conftest import run_worker

    run_worker(redis_conn)
    entry = Dunning(redis_conn).load(invoice_id)
    assert entry is not None and entry.kind == "soft" and entry.next_at is not None
    assert ChargeIntents(redis_conn).load(invoice_id).response_type == "soft_declined"
    assert "Automatic retry 1 of 2" in stack.attio.value("subscriptions", books.subscription, "status_detail")
    stack.braintree.add_card(books.bt_customer, "valid", make_default=True)  # the funds are there now
    result = sweep(redis_conn, "invoices")  # (drains: the retry comes due meanwhile)
    assert (result["looked_at"], result["enqueued"], result["skipped"]) == (1, 0, 1)  # in dunning: not the sweep's
    assert_booked_once(stack, invoice_id)
    attempts = [t for t in stack.braintree.transactions if t["order_id"] == invoice_id]
    assert len(attempts) == 2
    if merchant == "keys":  # the retry is a new charge generation: a new request key
        assert [t["api_request_key"] for t in attempts] == [f"charge-{invoice_id}-g0", f"charge-{invoice_id}-g1"]
    assert Dunning(redis_conn).load(invoice_id) is None
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Active"
    assert queues["webhooks"].failed_job_registry.count == 0


def test_a_retry_made_stale_by_a_newer_attempt_does_nothing(stack, web, redis_conn):
    configure(stack, dunning_schedule_days=(TINY, 2 * TINY))
    books = Books(stack, card="declining")
    invoice_id = books.invoice(63.0)
    deliver(web.url, invoice_id, "ev-stale")
    from ..conftest import run_worker

    run_worker(redis_conn)  # decline 1: retry 1 scheduled in 4 s
    enqueue_job(make_queue("webhooks", redis_conn), "workers.jobs.activation.run_payment_method_submitted",
                {"subscription_id": books.subscription, "customer_id": books.bt_customer,
                 "nonce": "fake-processor-declined-visa-nonce"}, retry_schedule=(1,))
    run_worker(redis_conn)  # another declining card: decline 2, now
    assert Dunning(redis_conn).load(invoice_id).declines == 2
    drain(redis_conn, seconds=20)
    retry_1 = make_queue("webhooks", redis_conn).fetch_job(f"collect-{invoice_id}-dunning1")
    assert retry_1.return_value()["outcome"] == "stale_retry"
    assert len([t for t in stack.braintree.transactions if t["order_id"] == invoice_id]) == 3  # d1, card, retry 2


def test_after_the_last_retry_the_subscription_stays_past_due_saying_so(stack, web, redis_conn):
    configure(stack, dunning_schedule_days=(TINY / 2, TINY))
    books = Books(stack, card="declining")
    invoice_id = books.invoice(61.0)
    deliver(web.url, invoice_id, "ev-exhaust")
    drain(redis_conn, seconds=20)
    attempts = [t for t in stack.braintree.transactions if t["order_id"] == invoice_id]
    assert len(attempts) == 3 and not stack.braintree.sales_for_order(invoice_id)
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Past due"
    assert "No automatic retries left" in stack.attio.value("subscriptions", books.subscription, "status_detail")
    declined = stack.attio.find("payments", "zoho_invoice_id", invoice_id)
    assert len(declined) == 3  # the payments record shows every attempt
    app = create_app(stack.settings())
    out = app.test_cli_runner().invoke(args=["dunning", "status"])
    assert out.exit_code == 0 and "none left: new card" in out.output


def test_a_hard_decline_waits_for_a_new_card_then_is_collected_once(stack, merchant, web, redis_conn, queues):
    configure(stack, dunning_schedule_days=(TINY,))
    books = Books(stack, card="hard-declining")  # 2004 Expired Card
    invoice_id = books.invoice(62.0)
    deliver(web.url, invoice_id, "ev-hard")
    drain(redis_conn)
    entry = Dunning(redis_conn).load(invoice_id)
    assert entry is not None and entry.kind == "hard" and entry.next_at is None
    assert sweep(redis_conn, "invoices")["enqueued"] == 0  # no retry without a new card
    assert len([t for t in stack.braintree.transactions if t["order_id"] == invoice_id]) == 1
    out = create_app(stack.settings()).test_cli_runner().invoke(args=["dunning", "status"])
    assert "after a new card" in out.output

    # The customer saves a card through /pay/<token>: the job it enqueues
    enqueue_job(make_queue("webhooks", redis_conn), "workers.jobs.activation.run_payment_method_submitted",
                {"subscription_id": books.subscription, "customer_id": books.bt_customer, "nonce": "fake-valid-nonce"},
                retry_schedule=(1,))
    drain(redis_conn)
    assert_booked_once(stack, invoice_id)
    assert Dunning(redis_conn).load(invoice_id) is None
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Active"
    assert queues["webhooks"].failed_job_registry.count == 0


# -- schedule, admin, readiness ----------------------------------------------------------------------------------
def test_each_sweep_is_scheduled_once_per_period_whatever_the_workers(stack, redis_conn):
    from workers.schedule import PERIODIC, install_schedule

    settings = stack.settings(reconcile_interval_minutes=60)
    now = 1_800_000_000.0
    created = install_schedule(settings, redis_conn, now=now) + install_schedule(settings, redis_conn, now=now + 1)
    start = int(now // 3600) * 3600
    assert sorted(created) == sorted(f"reconcile-{s}-{t}" for s in ("invoices", "activations", "settlements",
                                                                    "subscriptions") for t in (start, start + 3600))
    assert [p.name for p in PERIODIC][0] == "catalog-sync"


def test_a_scheduled_sweep_chains_its_next_period(stack, redis_conn):
    from workers import runtime
    from workers.schedule import install_schedule, period_job_id, reconcile_periodic

    configure(stack, reconcile_interval_minutes=60)
    settings = runtime.settings()
    now = time.time()
    start = int(now // 3600) * 3600
    install_schedule(settings, redis_conn, now=now)
    queue = make_queue(CATALOG_QUEUE, redis_conn)
    periodic = reconcile_periodic("settlements")
    queue.scheduled_job_registry.remove(period_job_id(start + 3600, periodic), delete_job=True)
    from ..conftest import run_worker

    run_worker(redis_conn)  # this period's four sweeps
    assert queue.fetch_job(period_job_id(start, periodic)).return_value()["outcome"] == "swept"
    assert period_job_id(start + 3600, periodic) in queue.scheduled_job_registry.get_job_ids()  # put back by the run


def test_a_second_run_of_a_sweep_is_skipped_while_one_holds_its_lock(stack, redis_conn):
    from integration.locks import hold, sweep_lock

    configure(stack)
    with hold(redis_conn, sweep_lock("invoices"), ttl=30, wait=0):
        assert sweep(redis_conn, "invoices")["outcome"] == "skipped"


def test_the_command_says_another_run_holds_the_sweep_and_a_busy_record_is_a_stop(stack, redis_conn):
    from integration.locks import hold, sweep_lock, transaction_lock

    configure(stack)
    app = create_app(stack.settings(reconcile_grace_minutes=0, settlement_check_after_hours=0))
    with hold(redis_conn, sweep_lock("settlements"), ttl=30, wait=0):
        out = app.test_cli_runner().invoke(args=["reconcile", "settlements"])
    assert out.exit_code == 1 and "settlements: another run of this sweep is going on" in out.output
    stack.braintree.add_customer("co_busy", email="ap@acme.example")
    txn = str(stack.braintree.gateway().transaction.sale({"amount": "10.00", "customer_id": "co_busy", "options": {
        "submit_for_settlement": True}}).transaction.id)
    stack.braintree.settle(txn)
    stack.attio.add_record("payments", {"external_id": f"braintree:{txn}", "status": "Submitted",
                                        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())})
    with hold(redis_conn, transaction_lock(txn), ttl=60, wait=0):
        out = app.test_cli_runner().invoke(args=["reconcile", "settlements"])
    assert out.exit_code == 1 and "settlements: stopped:" in out.output


def test_admin_reconcile_enqueues_every_sweep_and_readyz_shows_their_last_run(stack, redis_conn):
    configure(stack)
    app = create_app(stack.settings())
    client = app.test_client()
    auth = {"Authorization": "Basic " + __import__("base64").b64encode(
        f"operator:{SECRETS['dashboard_password']}".encode()).decode()}
    assert client.post("/admin/reconcile").status_code == 401
    answer = client.post("/admin/reconcile", headers=auth)
    assert answer.status_code == 202 and len(answer.json["jobs"]) == 4
    drain(redis_conn)
    sweeps = client.get("/readyz", headers=auth).json["sweeps"]  # the figures need the operator
    assert set(sweeps) == {"invoices", "activations", "settlements", "subscriptions"}
    assert all(run and run["finished_at"] for run in sweeps.values())
    assert json.loads(redis_conn.get(last_run_key("invoices")))["looked_at"] == 0


def test_a_card_save_retried_after_its_answer_was_lost_still_retries_the_invoices(stack, web, redis_conn, queues):
    """The first attempt vaulted the card (single-use nonce), its answer was lost: the retry is refused 93107,
    which means the card is on file, not a failure."""
    configure(stack)
    books = Books(stack, card="hard-declining")
    invoice_id = books.invoice(64.0)
    deliver(web.url, invoice_id, "ev-consumed")
    drain(redis_conn)
    enqueue_job(make_queue("webhooks", redis_conn), "workers.jobs.activation.run_payment_method_submitted",
                {"subscription_id": books.subscription, "customer_id": books.bt_customer,
                 "nonce": "fake-consumed-nonce"}, retry_schedule=(1,))
    drain(redis_conn)
    assert queues["webhooks"].failed_job_registry.count == 0
    assert len([t for t in stack.braintree.transactions if t["order_id"] == invoice_id]) == 2  # retried at once


def test_an_invoice_left_unpaid_for_want_of_a_card_is_charged_once_a_card_is_saved(stack, merchant, web, redis_conn,
                                                                                     queues):
    configure(stack)
    books = Books(stack, card=None)
    invoice_id = books.invoice(65.0)
    deliver(web.url, invoice_id, "ev-nocard")
    drain(redis_conn)
    assert Dunning(redis_conn).load(invoice_id).kind == "hard"
    assert "Saving one through the payment link" in stack.attio.value("subscriptions", books.subscription,
                                                                       "status_detail")
    enqueue_job(make_queue("webhooks", redis_conn), "workers.jobs.activation.run_payment_method_submitted",
                {"subscription_id": books.subscription, "customer_id": books.bt_customer, "nonce": "fake-valid-nonce"},
                retry_schedule=(1,))
    drain(redis_conn)
    assert_booked_once(stack, invoice_id)
    assert stack.attio.value("subscriptions", books.subscription, "status") == "Active"
    assert queues["webhooks"].failed_job_registry.count == 0


def test_the_settlements_sweep_writes_what_braintree_has_once_it_holds_the_transactions_lock(
        stack, merchant, web, redis_conn):
    """The sweep reads the sale, then waits for the transaction's lock (a webhook's job holds it): what it writes is
    Braintree's status read again under the lock, never the one it read before waiting (here: refunded meanwhile)."""
    import threading

    from integration.locks import hold, transaction_lock

    configure(stack)
    books = Books(stack)
    txn = _collected(stack, web, redis_conn, books, 10.0)
    stack.braintree.settle(txn)
    time.sleep(SEARCH_LAG)
    results: list[Any] = []
    with hold(redis_conn, transaction_lock(txn), ttl=30.0, wait=1.0):
        sweeper = threading.Thread(target=lambda: results.append(run_sweep("settlements", context(redis_conn))))
        sweeper.start()
        time.sleep(1.5)  # the sweep has read "settled" and waits for the lock
        assert stack.braintree.gateway().transaction.refund(txn).is_success
    sweeper.join(timeout=30)
    assert results, "the sweep did not finish"
    assert stack.attio.value("payments", payment_record(stack, txn)["id"]["record_id"], "status") == "Refunded"


def test_a_settlement_declined_while_the_sweep_waits_for_the_lock_is_unbooked(stack, merchant, web, redis_conn):
    """The sweep reads "settled" (nothing to unbook), then waits for the transaction's lock; meanwhile the bank
    returns the debit (no webhook reaches us). Written Failed under the lock without its Zoho payment deleted, the
    payment would never be looked at again (the sweep reads only Submitted ones): the invoice paid by nothing."""
    import threading

    from integration.locks import hold, transaction_lock

    configure(stack)
    books = Books(stack)
    txn = _collected(stack, web, redis_conn, books, 12.0)
    stack.braintree.settle(txn)
    time.sleep(SEARCH_LAG)
    with hold(redis_conn, transaction_lock(txn), ttl=30.0, wait=1.0):
        sweeper = threading.Thread(target=lambda: run_sweep("settlements", context(redis_conn)))
        sweeper.start()
        time.sleep(1.5)  # the sweep has read "settled" and waits for the lock
        stack.braintree.decline_settlement(txn)
    sweeper.join(timeout=30)
    run_sweep("settlements", context(redis_conn))  # the next run
    invoice_id = stack.braintree.gateway().transaction.find(txn).order_id
    assert txn not in [p["reference_number"] for p in stack.zoho.payments_for_invoice(invoice_id)]
    assert stack.attio.value("payments", payment_record(stack, txn)["id"]["record_id"], "status") == "Failed"
