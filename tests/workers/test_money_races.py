"""The money path's locks under real contention: threads running the job handlers at once with their own real
clients, short lock TTLs that really lapse, and simulators slow enough to open the windows a guard must close.

Each test here is what kills one mutant of ``scripts/mutants``: remove the guard and the test fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from integration.clients.attio import build_attio_client
from integration.clients.braintree import build_braintree_client
from integration.clients.zoho import build_zoho_client
from integration.errors import LockLost
from integration.paylinks import PaymentLinks
from workers.intents import ChargeIntents
from workers.jobs.activation import handle_record_event
from workers.jobs.collection import handle_invoice_created
from workers.jobs.lifecycle import run_subscription_event
from workers.workflows.collection import Policy

from ..conftest import Stack
from .test_activation import CRM
from .test_collection import Books, assert_booked_once

pytestmark = pytest.mark.parametrize("merchant_kind", ["keys", "no-keys"])


@pytest.fixture
def world(stack: Stack, redis_conn: redis.Redis, merchant_kind: str) -> Stack:
    stack.braintree.configure_merchant(merchant_kind, search_lag_seconds=1.0, duplicate_window_seconds=2.0)
    ChargeIntents(redis_conn).learn_request_keys(merchant_kind == "keys")
    yield stack
    stack.braintree.configure_merchant("keys")
    stack.braintree.duplicate_checking = False


def clients(stack: Stack, conn: redis.Redis) -> dict[str, Any]:
    """A job's own clients, as a forked work horse builds them."""
    settings = stack.settings()
    return {"zoho": build_zoho_client(settings, conn), "braintree": build_braintree_client(settings, conn),
            "attio": build_attio_client(settings, conn), "connection": conn}


def invoice_payload(invoice_id: str, event_id: str, event_time: str = "2026-11-30T10:00:00+0000") -> dict[str, Any]:
    return {"source": "zoho", "event_type": "invoice_created", "event_id": event_id,
            "event": {"event_id": event_id, "event_type": "invoice_created", "event_time": event_time,
                      "data": {"invoice": {"invoice_id": invoice_id}}}}


def race(*jobs: Callable[[], Any], stagger: float = 0.0) -> list[Any]:
    """Run the jobs in threads at once (``stagger`` seconds apart); their results or the exceptions they raised."""
    results: list[Any] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i: int, job: Callable[[], Any]) -> None:
        barrier.wait()
        time.sleep(i * stagger)
        try:
            results[i] = job()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def collect(stack: Stack, conn: redis.Redis, invoice_id: str, event_id: str, policy: Policy) -> Callable[[], Any]:
    return lambda: handle_invoice_created(invoice_payload(invoice_id, event_id), policy=policy,
                                          **clients(stack, conn))


def no_errors(results: list[Any]) -> None:
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors


# -- collection ---------------------------------------------------------------------------------------------
def test_two_deliveries_at_once_take_turns_on_the_invoice_lock(world, redis_conn):
    """Two deliveries of one invoice at once, the sale slow: the second waits for the first and finds the charge
    booked (without the lock it meets the first's sale in flight: a keyed merchant's replay races it, any other
    merchant's job has to wait for Braintree's search)."""
    books = Books(world)
    invoice_id = books.invoice(50.0)
    world.braintree.faults.add("POST", "/merchants/*/transactions", delay=1.5, times=1)
    policy = Policy(search_lag_seconds=3.0, duplicate_window_seconds=2.0)
    # The second starts while the first's sale is surely in flight (0.4 s in, of 1.5 s).
    results = race(collect(world, redis_conn, invoice_id, "ev-r1", policy),
                   collect(world, redis_conn, invoice_id, "ev-r2", policy), stagger=0.4)
    no_errors(results)
    assert [r["outcome"] for r in results] == ["charged", "already_charged"]
    assert_booked_once(world, invoice_id)


def test_the_lock_outlives_its_ttl_while_its_job_runs(world, redis_conn):
    """A 1 s lock and a 2.5 s sale: the heartbeat keeps it, so the second delivery waits instead of meeting a
    sale in flight (without the heartbeat the lock lapses mid-sale and both jobs act on one invoice)."""
    books = Books(world)
    invoice_id = books.invoice(51.0)
    world.braintree.faults.add("POST", "/merchants/*/transactions", delay=2.5, times=1)
    policy = Policy(search_lag_seconds=3.0, duplicate_window_seconds=2.0, lock_ttl=1.0)
    results = race(collect(world, redis_conn, invoice_id, "ev-h1", policy),
                   collect(world, redis_conn, invoice_id, "ev-h2", policy), stagger=0.3)
    no_errors(results)
    assert [r["outcome"] for r in results] == ["charged", "already_charged"]
    assert_booked_once(world, invoice_id)


def test_a_lock_lost_during_the_sale_stops_the_job_before_it_books(world, redis_conn):
    """The lock is taken over while the sale is in flight (Redis failover, a frozen process): the job notices
    before its next write and books nothing (without fencing it would book while another holds the lock)."""
    books = Books(world)
    invoice_id = books.invoice(52.0)
    world.braintree.faults.add("POST", "/merchants/*/transactions", delay=1.5, times=1)
    policy = Policy(search_lag_seconds=3.0, duplicate_window_seconds=2.0)

    def thief() -> None:
        time.sleep(0.5)
        redis_conn.set(f"lock:collect:{invoice_id}", b"someone-else", ex=60)

    [result, _] = race(collect(world, redis_conn, invoice_id, "ev-f1", policy), thief)
    assert isinstance(result, LockLost), result
    assert world.zoho.payments_for_invoice(invoice_id) == []


# -- activation -----------------------------------------------------------------------------------------------
def activation(stack: Stack, conn: redis.Redis, record_id: str) -> Callable[[], Any]:
    settings = stack.settings()
    deps = clients(stack, conn)
    deps["links"] = PaymentLinks(settings.link_secret, ttl_days=7, connection=conn)
    deps["public_base_url"] = settings.public_base_url
    payload = {"source": "attio", "event_type": "record.updated", "event_id": f"ev-{record_id}",
               "event": {"event_type": "record.updated", "id": {"record_id": record_id}}}
    return lambda: handle_record_event(payload, **deps)


def test_two_subscriptions_of_one_company_requested_together_make_one_zoho_customer(world, redis_conn):
    crm = CRM(world, card=True)
    second = world.attio.add_record("subscriptions", {
        "name": "Acme Basic 2", "status": "Requested",
        "service": {"target_object": "services", "target_record_id": crm.service},
        "company": {"target_object": "companies", "target_record_id": crm.company}})
    crm.request()
    world.zoho.faults.add("POST", "/billing/v1/customers", delay=1.0, times=1)
    results = race(activation(world, redis_conn, crm.subscription), activation(world, redis_conn, second))
    no_errors(results)
    assert [r["outcome"] for r in results] == ["active", "active"]
    customers = [c for c in world.zoho.customers.values() if c["email"] == "billing@acme.example"]
    assert len(customers) == 1
    assert {s["customer_id"] for s in world.zoho.subscriptions.values()} == {customers[0]["customer_id"]}


def test_two_activations_of_one_subscription_at_once_make_one_zoho_subscription(world, redis_conn):
    crm = CRM(world, card=True)
    crm.request()
    world.zoho.faults.add("POST", "/billing/v1/subscriptions", delay=1.0, times=1)
    results = race(activation(world, redis_conn, crm.subscription), activation(world, redis_conn, crm.subscription),
                   stagger=0.2)
    no_errors(results)
    assert sorted(r["outcome"] for r in results) == ["active", "ignored"]
    assert len(world.zoho.subscriptions) == 1


# -- collection and lifecycle on one subscription ------------------------------------------------------------
def test_a_cancellation_applied_during_a_collection_is_not_overwritten(world, redis_conn):
    """The collection reads the subscription, a newer cancellation is applied, the collection writes: the
    shared subscription lock makes the cancellation wait, so Cancelled is what stays (without it, Active)."""
    books = Books(world)
    zsub = world.zoho.subscriptions
    from integration.clients.zoho import build_zoho_client as zoho_client

    created = zoho_client(world.settings(), redis_conn).create_subscription(
        books.zoho_customer, "basic-monthly", books.subscription, auto_collect=False)
    world.attio.set_values("subscriptions", books.subscription,
                           {"zoho_subscription_id": created["subscription_id"], "status": "Trial"})
    invoice_id = str(world.zoho.raise_invoice(books.zoho_customer, 20.0,
                                              subscription_id=created["subscription_id"])["invoice_id"])
    world.zoho.set_subscription_status(created["subscription_id"], "cancelled")
    assert zsub[created["subscription_id"]]["status"] == "cancelled"
    # The collection's read of the subscription answers late: what it read is old when it arrives.
    world.attio.faults.add("GET", f"/v2/objects/subscriptions/records/{books.subscription}", delay_after=1.5, times=1)
    cancel = {"source": "zoho", "event_type": "subscription_cancelled", "event_id": "ev-cancel",
              "event": {"event_id": "ev-cancel", "event_type": "subscription_cancelled",
                        "event_time": "2026-11-30T11:00:00+0000",
                        "data": {"subscription": {"subscription_id": created["subscription_id"]}}}}

    def lifecycle() -> Any:
        time.sleep(0.6)  # the collection is inside its slow read by now
        return run_subscription_event(cancel)  # the RQ entrypoint, with the lock it takes

    policy = Policy(search_lag_seconds=3.0, duplicate_window_seconds=2.0)
    results = race(collect(world, redis_conn, invoice_id, "ev-c1", policy), lifecycle)
    no_errors(results)
    assert world.attio.value("subscriptions", books.subscription, "status") == "Cancelled"
