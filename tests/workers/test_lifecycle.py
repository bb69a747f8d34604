"""Workflow 4 end to end: signed deliveries over real HTTP → the in-process worker → the simulators' Attio state.

Zoho events are the Zoho simulator's own signed webhooks (its state changes emit them) posted to the live app;
Braintree notifications are built both by the SDK's ``webhook_testing`` and by the Braintree simulator about its
real transactions. Nothing of ours is mocked: real Redis, real clients, real HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from integration import Settings
from simulators.zoho import BASE, ORG_HEADER, ZohoSimulator
from tests.conftest import SECRETS, LiveServer, Stack, run_worker
from tests.helpers import signed_braintree, signed_zoho
from workers.intents import DeclineMarks

SUBSCRIPTION_EVENTS = {
    "subscription_created", "subscription_activation", "subscription_unpaid", "subscription_cancelled",
    "subscription_reactivated", "subscription_cancellation_scheduled", "subscription_expired",
}  # fmt: skip
PAYMENT_EVENTS = {"payment_thankyou", "payment_declined", "payment_refunded"}


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture
def settings(stack: Stack) -> Settings:
    """The app's settings point at the simulators too (the worker's come from ``stack`` via runtime)."""
    return stack.settings()


@pytest.fixture
def sims(stack: Stack, live_server: LiveServer) -> Iterator[Stack]:
    """The simulators, with Zoho delivering its lifecycle webhooks to the live app."""
    stack.zoho.webhook_target = (f"{live_server.url}/webhooks/zoho", SECRETS["zoho_webhook_secret"])
    stack.zoho.webhook_events = SUBSCRIPTION_EVENTS | PAYMENT_EVENTS
    yield stack
    stack.zoho.webhook_events = None


# -- helpers ----------------------------------------------------------------------------------------------------
def _drain(conn: redis.Redis, stack: Stack) -> list[dict[str, Any]]:
    """Wait for Zoho's pending webhooks, run every queued job; the results of the jobs that ran (none failed)."""
    assert stack.zoho.flush_webhooks()
    failed = [d for d in stack.zoho.webhook_deliveries if d["status"] not in (200, 202)]
    assert not failed, failed
    worker = run_worker(conn)
    queue = worker.queues[0]
    assert queue.failed_job_registry.count == 0, [
        queue.fetch_job(j).latest_result().exc_string for j in queue.failed_job_registry.get_job_ids()
    ]
    ids = queue.finished_job_registry.get_job_ids()
    done = [queue.fetch_job(j) for j in ids]
    for job in done:
        queue.finished_job_registry.remove(job)  # so the next drain reports only its own jobs
    return [job.return_value() for job in done]


def _post_braintree(server: LiveServer, fields: dict[str, str]) -> requests.Response:
    return requests.post(f"{server.url}/webhooks/braintree", data=fields, timeout=10)


def _post_zoho(server: LiveServer, req: Any) -> requests.Response:
    return requests.post(f"{server.url}/webhooks/zoho", data=req.body, headers=req.headers, timeout=10)


def _zoho_api(zoho: ZohoSimulator, token: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
    """A Zoho Billing call as a person in Zoho's UI would make it (state the service did not cause)."""
    headers = {"Authorization": f"Zoho-oauthtoken {token}", ORG_HEADER: zoho.organization_id}
    resp = requests.request(method, f"{zoho.url}{BASE}{path}", headers=headers, timeout=10, **kw)
    assert resp.ok, resp.text
    return dict(resp.json())


def _zoho_subscription(zoho: ZohoSimulator, customer: str, **extra: Any) -> dict[str, Any]:
    """An offline subscription to a basic plan, created through Zoho's API; Zoho's answer."""
    if "basic-monthly" not in zoho.plans:
        zoho.add_plan("basic-monthly", "Basic", 50)
    body = {"customer_id": customer, "plan": {"plan_code": "basic-monthly"}, "auto_collect": False, **extra}
    return _zoho_api(zoho, zoho.issue_token(), "POST", "/subscriptions", json=body)["subscription"]


def _bt_charge(stack: Stack, amount: str = "49.00", customer: str = "co_bt") -> str:
    """A real submitted-for-settlement sale on the Braintree simulator; its id."""
    if stack.braintree.customer(customer) is None:
        stack.braintree.add_customer(customer, email="ap@acme.example")
    result = stack.braintree.gateway().transaction.sale(
        {"amount": amount, "customer_id": customer, "options": {"submit_for_settlement": True}}
    )
    assert result.is_success
    return str(result.transaction.id)


def _payment_record(stack: Stack, external_id: str, status: str, amount: float = 49.0) -> str:
    return stack.attio.add_record("payments", {"external_id": external_id, "status": status, "amount": amount})


def _values(stack: Stack, obj: str, record: str, *slugs: str) -> tuple[Any, ...]:
    return tuple(stack.attio.value(obj, record, s) for s in slugs)


# -- Zoho subscription_* ----------------------------------------------------------------------------------------
def test_subscription_events_follow_zoho_and_ignore_older_ones(sims: Stack, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    company = attio.add_record("companies", {"name": "Acme"})
    record = attio.add_record("subscriptions", {
        "name": "Acme Basic", "status": "Requested",
        "company": {"target_object": "companies", "target_record_id": company}})  # fmt: skip
    customer = zoho.add_customer("Acme", "billing@acme.example")
    # Created with the Attio record id as reference: the event finds the record before zoho_subscription_id is set.
    sub = _zoho_subscription(zoho, customer, reference_id=record)
    sub_id = sub["subscription_id"]

    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "updated"
    status, next_billing, zoho_id, last_event = _values(
        sims, "subscriptions", record, "status", "next_billing_date", "zoho_subscription_id", "last_event_at"
    )
    assert (status, next_billing, zoho_id) == ("Active", sub["next_billing_at"], sub_id)
    assert last_event is not None

    steps = [
        ("unpaid", None, "Past due"),
        ("live", "2027-02-01", "Active"),
        ("non_renewing", None, "Non-renewing"),
        ("live", None, "Active"),  # reactivated
        ("cancelled", None, "Cancelled"),
    ]
    for zoho_status, next_at, expected in steps:
        zoho.advance_clock(60)  # Zoho's event times have one-second resolution: keep each strictly newer
        zoho.set_subscription_status(sub_id, zoho_status, next_billing_at=next_at)
        [result] = _drain(redis_conn, sims)
        assert attio.value("subscriptions", record, "status") == expected, (zoho_status, result)
        if expected == "Past due":  # as workflow 3 explains a decline; a live subscription no longer needs it
            attio.set_values("subscriptions", record, {"status_detail": "The card was declined."})
    assert attio.value("subscriptions", record, "next_billing_date") == "2027-02-01"
    assert attio.value("subscriptions", record, "status_detail") in (None, "")

    # An older event (Zoho's clock an hour back) after the newer one changes nothing, although Zoho now says live.
    patches = len(attio.calls_to("PATCH", "/v2/objects/subscriptions/records/*"))
    zoho.advance_clock(-3600)
    zoho.set_subscription_status(sub_id, "live")
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "stale"
    assert attio.value("subscriptions", record, "status") == "Cancelled"
    assert len(attio.calls_to("PATCH", "/v2/objects/subscriptions/records/*")) == patches

    # A newer one applies.
    zoho.advance_clock(3600 + 60)
    zoho.set_subscription_status(sub_id, "live", event_type="subscription_activation")
    _drain(redis_conn, sims)
    assert attio.value("subscriptions", record, "status") == "Active"


def test_same_day_events_are_ordered_by_created_time(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    # Zoho's event_time is a date: two events of one day tie on it; created_time orders them.
    attio, zoho = sims.attio, sims.zoho
    customer = zoho.add_customer("Acme", "billing@acme.example")
    sub = _zoho_subscription(zoho, customer)
    record = attio.add_record("subscriptions", {"name": "Acme", "zoho_subscription_id": sub["subscription_id"]})
    _drain(redis_conn, sims)
    sims.zoho.webhook_events = set()  # the two deliveries below arrive out of order
    data = {"subscription": {"subscription_id": sub["subscription_id"]}}
    zoho.set_subscription_status(sub["subscription_id"], "cancelled")
    newer = signed_zoho("subscription_cancelled", event_id="evt-late", data=data,
                        created_time="2031-05-06T15:28:59-0400")
    assert _post_zoho(live_server, newer).status_code == 202
    [applied] = _drain(redis_conn, sims)
    assert applied["outcome"] == "updated" and attio.value("subscriptions", record, "status") == "Cancelled"
    zoho.set_subscription_status(sub["subscription_id"], "live")  # Zoho's state when the older event's job runs
    older = signed_zoho("subscription_activation", event_id="evt-early", data=data,
                        created_time="2031-05-06T09:02:11-0400")
    assert older.body.count(b'"event_time": "2031-05-06"') == 1
    assert _post_zoho(live_server, older).status_code == 202
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "stale"
    assert attio.value("subscriptions", record, "status") == "Cancelled"


def test_form_encoded_deliveries_from_zoho_are_applied(sims: Stack, redis_conn: redis.Redis) -> None:
    sims.zoho.webhook_encoding = "form"  # the webhook's body set to x-www-form-urlencoded: payload=<json>
    try:
        customer = sims.zoho.add_customer("Acme", "billing@acme.example")
        sub = _zoho_subscription(sims.zoho, customer)
        record = sims.attio.add_record("subscriptions", {"name": "Acme", "zoho_subscription_id": sub["subscription_id"]})
        [result] = _drain(redis_conn, sims)
    finally:
        sims.zoho.webhook_encoding = "json"
    assert result["outcome"] == "updated"
    assert sims.attio.value("subscriptions", record, "status") == "Active"


def test_subscription_duplicates_are_harmless(sims: Stack, live_server: LiveServer, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    customer = zoho.add_customer("Acme", "billing@acme.example")
    sub = _zoho_subscription(zoho, customer)
    record = attio.add_record("subscriptions", {"name": "Acme", "zoho_subscription_id": sub["subscription_id"]})
    [first] = _drain(redis_conn, sims)
    assert first["outcome"] == "updated"

    # The same delivery again: acknowledged as a duplicate, no job.
    delivered = next(e for e in reversed(zoho.events) if e["event_type"] == "subscription_created")["payload"].encode()
    headers = {"Content-Type": "application/json",
               "X-Zoho-Webhook-Signature": zoho.sign(delivered, SECRETS["zoho_webhook_secret"])}  # fmt: skip
    again = requests.post(f"{live_server.url}/webhooks/zoho", data=delivered, headers=headers, timeout=10)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # The same fact under a new event id: the job runs and writes nothing.
    writes = len(attio.calls_to("PATCH", "*"))
    zoho.emit_event("subscription_activation", "subscription", zoho.subscription(sub["subscription_id"]))
    [second] = _drain(redis_conn, sims)
    assert second["outcome"] == "unchanged"
    assert len(attio.calls_to("PATCH", "*")) == writes
    assert attio.value("subscriptions", record, "status") == "Active"


def test_subscription_created_in_zoho_directly_is_skipped(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    customer = sims.zoho.add_customer("Walk-in", "walkin@example.com")
    sims.zoho.webhook_events = set()  # delivered below as a sample delivery instead
    sub = _zoho_subscription(sims.zoho, customer)
    resp = _post_zoho(live_server, signed_zoho("subscription_cancelled", event_id="evt-walkin",
                                               data={"subscription": {"subscription_id": sub["subscription_id"]}}))
    assert resp.status_code == 202, resp.text
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "not_in_attio"
    assert sims.attio.records("subscriptions") == []


# -- Zoho subscription_*: the subscription the event carries, or a re-read ----------------------------------------
def _zoho_reads(zoho: ZohoSimulator) -> int:
    return len(zoho.calls_to("GET", f"{BASE}/subscriptions/*"))


def _known_subscription(sims: Stack, redis_conn: redis.Redis) -> tuple[str, str]:
    """A Zoho subscription Attio knows, its subscription_created applied: (Zoho id, Attio record id)."""
    customer = sims.zoho.add_customer("Acme", "billing@acme.example")
    sub = _zoho_subscription(sims.zoho, customer)
    record = sims.attio.add_record("subscriptions", {"name": "Acme", "zoho_subscription_id": sub["subscription_id"]})
    [created] = _drain(redis_conn, sims)
    assert (created["outcome"], created["source"]) == ("updated", "event")  # newer than nothing: no read
    return str(sub["subscription_id"]), record


def _post_event(server: LiveServer, zoho: ZohoSimulator, event: dict[str, Any]) -> None:
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json",
               "X-Zoho-Webhook-Signature": zoho.sign(body, SECRETS["zoho_webhook_secret"])}  # fmt: skip
    assert requests.post(f"{server.url}/webhooks/zoho", data=body, headers=headers, timeout=10).status_code == 202


def test_events_in_order_are_applied_from_the_subscription_they_carry(sims: Stack, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    reads = _zoho_reads(zoho)
    sub_id, record = _known_subscription(sims, redis_conn)
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "non_renewing", next_billing_at="2031-02-01")
    [first] = _drain(redis_conn, sims)
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "cancelled", next_billing_at="")
    [second] = _drain(redis_conn, sims)
    assert [(r["outcome"], r["source"]) for r in (first, second)] == [("updated", "event")] * 2
    assert _values(sims, "subscriptions", record, "status", "next_billing_date") == ("Cancelled", None)
    assert _zoho_reads(zoho) == reads  # three events, no Zoho call


def test_events_in_reverse_order_skip_the_older_with_no_zoho_read(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    attio, zoho = sims.attio, sims.zoho
    sub_id, record = _known_subscription(sims, redis_conn)
    sims.zoho.webhook_events = set()  # delivered below, newest first
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "non_renewing")
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "cancelled")
    older, newer = (json.loads(e["payload"]) for e in zoho.events[-2:])
    reads = _zoho_reads(zoho)
    _post_event(live_server, zoho, newer)
    [applied] = _drain(redis_conn, sims)
    _post_event(live_server, zoho, older)
    [skipped] = _drain(redis_conn, sims)
    assert (applied["outcome"], applied["source"], skipped["outcome"]) == ("updated", "event", "stale")
    assert attio.value("subscriptions", record, "status") == "Cancelled"
    assert _zoho_reads(zoho) == reads


@pytest.mark.parametrize("case", ["no_status", "no_next_billing", "not_text", "date_only", "unpaid"])
def test_an_event_that_cannot_be_trusted_alone_re_reads_zoho(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis, case: str
) -> None:
    attio, zoho = sims.attio, sims.zoho
    sub_id, record = _known_subscription(sims, redis_conn)
    sims.zoho.webhook_events = set()
    zoho.set_subscription_status(sub_id, "non_renewing")  # Zoho's state now; the events below say otherwise
    carried = {"subscription_id": sub_id, "status": "cancelled", "next_billing_at": ""}
    event_type = "subscription_cancelled"
    if case == "no_status":
        del carried["status"]
    elif case == "no_next_billing":
        del carried["next_billing_at"]
    elif case == "unpaid":  # Zoho does not collect these: its unpaid may predate a payment of ours
        event_type, carried["status"] = "subscription_unpaid", "unpaid"
    elif case == "not_text":  # loaded as absent, not refused
        carried["next_billing_at"] = ["2031-06-01"]  # type: ignore[assignment]
    event: dict[str, Any] = {"created_time": "2031-05-06T15:28:59-0400", "event_id": f"evt-{case}",
                             "event_type": event_type, "data": {"subscription": carried}, "event_time": "2031-05-06"}
    if case == "date_only":
        del event["created_time"]  # only a date: events of one day cannot be ordered by it
    reads = _zoho_reads(zoho)
    _post_event(live_server, zoho, event)
    [result] = _drain(redis_conn, sims)
    assert _zoho_reads(zoho) == reads + 1
    assert result["source"] == "zoho"
    assert attio.value("subscriptions", record, "status") == "Non-renewing"  # what Zoho says, not the event


def test_an_event_tied_with_the_last_applied_one_re_reads_zoho(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    attio, zoho = sims.attio, sims.zoho
    sub_id, record = _known_subscription(sims, redis_conn)
    applied = json.loads(next(e for e in reversed(zoho.events) if e["event_type"] == "subscription_created")["payload"])
    sims.zoho.webhook_events = set()
    tie = {**applied, "event_id": "evt-tie", "event_type": "subscription_cancelled",
           "data": {"subscription": {**applied["data"]["subscription"], "status": "cancelled"}}}
    reads = _zoho_reads(zoho)
    _post_event(live_server, zoho, tie)  # the same second as the applied event: which came first is unknown
    [result] = _drain(redis_conn, sims)
    assert (result["source"], _zoho_reads(zoho)) == ("zoho", reads + 1)
    assert attio.value("subscriptions", record, "status") == "Active"  # Zoho says live


def test_a_standing_decline_keeps_past_due_against_a_carried_live(sims: Stack, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    sub_id, record = _known_subscription(sims, redis_conn)
    DeclineMarks(redis_conn, record).write({"inv-declined"}, None)
    attio.set_values("subscriptions", record, {"status": "Past due", "status_detail": "The card was declined."})
    reads = _zoho_reads(zoho)
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "live", next_billing_at="2031-03-01", event_type="subscription_activation")
    [kept] = _drain(redis_conn, sims)
    assert kept["source"] == "event"
    assert _values(sims, "subscriptions", record, "status", "status_detail", "next_billing_date") == (
        "Past due", "The card was declined.", "2031-03-01")
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "cancelled")  # Zoho's end of the subscription supersedes the decline
    _drain(redis_conn, sims)
    assert attio.value("subscriptions", record, "status") == "Cancelled"
    assert DeclineMarks(redis_conn, record).declined() == set()
    assert _zoho_reads(zoho) == reads


def test_a_newer_event_that_changes_nothing_still_orders_the_older_one(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    """Cancelled then reactivated, delivered newest first: the reactivation carries what Attio already holds, so
    nothing is written (not even ``last_event_at``); the older cancellation delivered after must still not be
    applied from its payload, Zoho's subscription being live."""
    attio, zoho = sims.attio, sims.zoho
    sub_id, record = _known_subscription(sims, redis_conn)
    next_billing = zoho.subscriptions[sub_id]["next_billing_at"]
    sims.zoho.webhook_events = set()  # delivered below, newest first
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "cancelled", next_billing_at="")
    zoho.advance_clock(60)
    zoho.set_subscription_status(sub_id, "live", next_billing_at=next_billing)
    older, newer = (json.loads(e["payload"]) for e in zoho.events[-2:])
    assert (older["event_type"], newer["event_type"]) == ("subscription_cancelled", "subscription_reactivated")
    _post_event(live_server, zoho, newer)
    [unchanged] = _drain(redis_conn, sims)
    assert unchanged["outcome"] == "unchanged"
    _post_event(live_server, zoho, older)
    _drain(redis_conn, sims)
    assert attio.value("subscriptions", record, "status") == "Active"  # Zoho's, not the older event's Cancelled
    assert DeclineMarks(redis_conn, record).declined() == set()


# -- Zoho payment_* ---------------------------------------------------------------------------------------------
def test_payments_made_outside_the_service_are_mirrored(sims: Stack, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    customer = zoho.add_customer("Acme", "billing@acme.example")
    company = attio.add_record("companies", {"name": "Acme", "zoho_customer_id": customer})
    subscription = attio.add_record("subscriptions", {"name": "Acme Basic", "zoho_subscription_id": "903777000001"})
    invoice = zoho.raise_invoice(customer, 120.5, subscription_id="903777000001")
    token = zoho.issue_token()

    # A cheque recorded by a person in Zoho → payment_thankyou.
    payment = _zoho_api(zoho, token, "POST", "/payments", json={
        "customer_id": customer, "payment_mode": "check", "amount": 120.5, "reference_number": "CHQ 0042",
        "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": 120.5}]})["payment"]  # fmt: skip
    [result] = _drain(redis_conn, sims)
    external_id = f"zoho-invoice:{invoice['invoice_id']}:{payment['payment_id']}"
    assert result == {"outcome": "mirrored", "status": "Settled", "external_ids": [external_id]}
    [mirrored] = attio.find("payments", "external_id", external_id)
    assert _values(sims, "payments", mirrored, "status", "amount", "company", "subscription", "zoho_invoice_id",
                   "zoho_invoice_number") == (
        "Settled", 120.5, company, subscription, invoice["invoice_id"], invoice["number"])
    assert attio.value("payments", mirrored, "occurred_at") is not None

    # Refunded in Zoho (the simulator has no refund call: change its state, emit Zoho's event).
    stored = next(p for p in zoho.payments if p["payment_id"] == payment["payment_id"])
    stored["amount_refunded"] = 120.5
    zoho.emit_event("payment_refunded", "payment", stored)
    _drain(redis_conn, sims)
    assert attio.value("payments", mirrored, "status") == "Refunded"

    # A late (or repeated) thank-you after the refund changes nothing: a payment's status never moves back.
    zoho.emit_event("payment_thankyou", "payment", stored)
    _drain(redis_conn, sims)
    assert attio.value("payments", mirrored, "status") == "Refunded"
    assert len(attio.records("payments")) == 1


def test_declined_zoho_payment_is_mirrored_with_zohos_reason(sims: Stack, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    customer = zoho.add_customer("Acme", "billing@acme.example")
    attio.add_record("companies", {"name": "Acme", "zoho_customer_id": customer})
    invoice = zoho.raise_invoice(customer, 80)
    # Zoho's own gateway failed to charge the card: a payment in Zoho's state (the simulator has no gateway).
    declined = {
        "payment_id": "903888000001", "status": "failure", "payment_mode": "autotransaction", "amount": 80.0,
        "date": "2026-11-30", "reference_number": "", "customer_id": customer,
        # where Zoho's payment object carries it (payments.yml of Zoho's OpenAPI files: the autotransaction object)
        "autotransaction": {"autotransaction_id": "903888000002", "payment_gateway": "test_gateway",
                            "gateway_transaction_id": "", "gateway_error_message": "Card declined: insufficient funds",
                            "card_id": "903888000003", "last_four_digits": "1111"},
        "invoices": [
            {"invoice_id": invoice["invoice_id"], "invoice_number": invoice["number"], "amount_applied": 80.0}
        ],
    }  # fmt: skip
    zoho.payments.append(declined)
    zoho.emit_event("payment_declined", "payment", declined)
    _drain(redis_conn, sims)
    [record] = attio.find("payments", "external_id", f"zoho-invoice:{invoice['invoice_id']}:903888000001")
    assert _values(sims, "payments", record, "status", "failure_reason", "amount", "subscription") == (
        "Declined", "Card declined: insufficient funds", 80.0, None)


def test_a_decline_zoho_cannot_return_keeps_the_events_reason(sims: Stack, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    customer = zoho.add_customer("Acme", "billing@acme.example")
    invoice = zoho.raise_invoice(customer, 30)
    declined = {
        "payment_id": "903888000009", "status": "failure", "payment_mode": "autotransaction", "amount": 30.0,
        "customer_id": customer, "autotransaction": {"gateway_error_message": "Do not honor"},
        "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": 30.0}],
    }  # fmt: skip
    zoho.emit_event("payment_declined", "payment", declined)  # never stored: GET /payments/{id} answers 404
    _drain(redis_conn, sims)
    [record] = attio.find("payments", "external_id", f"zoho-invoice:{invoice['invoice_id']}:903888000009")
    assert attio.value("payments", record, "failure_reason") == "Do not honor"


def test_payments_the_service_made_are_not_duplicated(sims: Stack, redis_conn: redis.Redis) -> None:
    attio, zoho = sims.attio, sims.zoho
    customer = zoho.add_customer("Acme", "billing@acme.example")
    token = zoho.issue_token()
    known = _bt_charge(sims)  # collected, and already in Attio
    _payment_record(sims, f"braintree:{known}", "Submitted")
    unrecorded = _bt_charge(sims, "10.00")  # collected, Attio not written yet (workflow 3 still running)
    for txn in (known, unrecorded):
        invoice = zoho.raise_invoice(customer, 49.0 if txn == known else 10.0)
        _zoho_api(zoho, token, "POST", "/payments", json={
            "customer_id": customer, "payment_mode": "creditcard", "amount": invoice["total"],
            "reference_number": txn,
            "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": invoice["total"]}]})  # fmt: skip
    results = _drain(redis_conn, sims)
    assert sorted(r["outcome"] for r in results) == ["own_payment", "own_payment"]
    assert [attio.value("payments", r, "external_id") for r in attio.find("payments", "status", "Submitted")] == [
        f"braintree:{known}"
    ]
    assert len(attio.records("payments")) == 1


# -- Braintree transaction_* ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "expected", "reason"),
    [("transaction_settled", "Settled", None), ("transaction_settlement_declined", "Failed", "Settlement Declined")],
)
def test_settlement_of_a_real_transaction(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis, kind: str, expected: str, reason: str | None
) -> None:
    txn = _bt_charge(sims)
    record = _payment_record(sims, f"braintree:{txn}", "Submitted")
    (sims.braintree.settle if expected == "Settled" else sims.braintree.decline_settlement)(txn)
    notification = sims.braintree.notification(kind, txn)

    resp = _post_braintree(live_server, notification)
    assert resp.status_code == 202, resp.text
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "updated"
    assert _values(sims, "payments", record, "status", "failure_reason") == (expected, reason)

    again = _post_braintree(live_server, notification)  # Braintree's retry of the same delivery
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert _drain(redis_conn, sims) == []


def test_settled_notification_from_the_sdk_writes_what_braintree_says(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    """The notification only names the transaction: its status is re-read, so a sale Braintree has not settled
    stays Submitted whatever the notification says (a settled one: ``test_settlement_of_a_real_transaction``)."""
    txn = _bt_charge(sims)
    record = _payment_record(sims, f"braintree:{txn}", "Submitted")
    assert _post_braintree(live_server, signed_braintree("transaction_settled", txn)).status_code == 202
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "unchanged" and sims.attio.value("payments", record, "status") == "Submitted"


def test_a_notification_about_a_transaction_braintree_does_not_have_changes_nothing(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    record = _payment_record(sims, "braintree:txn1", "Submitted")
    assert _post_braintree(live_server, signed_braintree("transaction_settled", "txn1")).status_code == 202
    [result] = _drain(redis_conn, sims)
    assert result == {"outcome": "unknown_transaction", "transaction_id": "txn1"}
    assert sims.attio.value("payments", record, "status") == "Submitted"


def test_settled_notification_for_an_unknown_transaction_is_logged_not_failed(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers.workflows.lifecycle")
    assert _post_braintree(live_server, signed_braintree("transaction_settled", "ghost1")).status_code == 202
    [result] = _drain(redis_conn, sims)  # finished, not failed
    assert result == {"outcome": "unknown_transaction", "transaction_id": "ghost1"}
    assert sims.attio.records("payments") == []
    assert any("unknown transaction ghost1" in r.getMessage() for r in caplog.records)


# -- Braintree dispute_* ----------------------------------------------------------------------------------------
def test_dispute_lifecycle_warns_on_call_once(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis, sentry_events: list[dict[str, Any]]
) -> None:
    txn = _bt_charge(sims, "75.00")
    sims.braintree.settle(txn)
    record = _payment_record(sims, f"braintree:{txn}", "Settled", 75.0)

    assert _post_braintree(live_server, sims.braintree.notification("dispute_opened", txn)).status_code == 202
    _drain(redis_conn, sims)
    assert sims.attio.value("payments", record, "status") == "Disputed"
    [warning] = sentry_events
    assert warning["level"] == "warning"
    assert txn in warning["message"] and "75.00" in warning["message"]
    assert warning["tags"]["braintree.transaction_id"] == txn
    assert warning["tags"]["runbook"] == "docs/runbook.md#dispute-opened"
    assert "ap@acme.example" not in json.dumps(warning)  # ids and amounts only

    assert _post_braintree(live_server, sims.braintree.notification("dispute_won", txn)).status_code == 202
    _drain(redis_conn, sims)
    assert sims.attio.value("payments", record, "status") == "Dispute won"

    # A late opened notification (SDK-built, same transaction) after the win: no change, no second warning.
    assert _post_braintree(live_server, signed_braintree("dispute_opened", txn)).status_code == 202
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "unchanged"
    assert sims.attio.value("payments", record, "status") == "Dispute won"
    assert len(sentry_events) == 1


def test_a_settled_notification_for_a_refunded_sale_writes_refunded(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    """A late ``transaction_settled`` about a sale refunded since: the job reads the refunds (it must, to tell
    Refunded from Settled) and ends where Braintree is, without failing."""
    txn = _bt_charge(sims, "30.00")
    sims.braintree.settle(txn)
    record = _payment_record(sims, f"braintree:{txn}", "Submitted", 30.0)
    assert sims.braintree.gateway().transaction.refund(txn).is_success
    assert _post_braintree(live_server, sims.braintree.notification("transaction_settled", txn)).status_code == 202
    _drain(redis_conn, sims)
    assert sims.attio.value("payments", record, "status") == "Refunded"


def test_dispute_lost_from_the_sdk(sims: Stack, live_server: LiveServer, redis_conn: redis.Redis) -> None:
    txn = _bt_charge(sims)
    sims.braintree.settle(txn)
    sims.braintree.notification("dispute_opened", txn)  # the chargeback opens and is lost in Braintree...
    sims.braintree.notification("dispute_lost", txn)
    record = _payment_record(sims, f"braintree:{txn}", "Disputed")
    assert _post_braintree(live_server, signed_braintree("dispute_lost", txn)).status_code == 202  # ...this tells
    _drain(redis_conn, sims)
    assert sims.attio.value("payments", record, "status") == "Dispute lost"


@pytest.mark.parametrize("kind", ["dispute_accepted", "dispute_auto_accepted", "dispute_expired"])
def test_an_accepted_or_expired_dispute_ends_lost(sims: Stack, live_server: LiveServer, redis_conn: redis.Redis,
                                                   kind: str) -> None:
    """Braintree's other closing kinds are routed too: without them the payment would stay Disputed."""
    txn = _bt_charge(sims)
    sims.braintree.settle(txn)
    sims.braintree.notification("dispute_opened", txn)
    record = _payment_record(sims, f"braintree:{txn}", "Disputed")
    assert _post_braintree(live_server, sims.braintree.notification(kind, txn)).status_code == 202
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "updated"
    assert sims.attio.value("payments", record, "status") == "Dispute lost"


@pytest.mark.parametrize("order", [("dispute_opened", "dispute_won"), ("dispute_won", "dispute_opened")])
def test_dispute_notifications_in_either_order_end_where_braintree_is(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis, sentry_events: list[dict[str, Any]],
    order: tuple[str, str],
) -> None:
    txn = _bt_charge(sims)
    sims.braintree.settle(txn)
    record = _payment_record(sims, f"braintree:{txn}", "Settled")
    notifications = {kind: sims.braintree.notification(kind, txn) for kind in ("dispute_opened", "dispute_won")}
    for kind in order:
        assert _post_braintree(live_server, notifications[kind]).status_code == 202
        _drain(redis_conn, sims)
        assert sims.attio.value("payments", record, "status") == "Dispute won"
    assert len(sentry_events) == (1 if order[0] == "dispute_opened" else 0)


# -- refunds ----------------------------------------------------------------------------------------------------
def test_a_zoho_refund_of_the_services_own_payment_marks_its_sale_refunded(
    sims: Stack, redis_conn: redis.Redis
) -> None:
    attio, zoho = sims.attio, sims.zoho
    customer = zoho.add_customer("Acme", "billing@acme.example")
    txn = _bt_charge(sims)
    record = _payment_record(sims, f"braintree:{txn}", "Submitted")
    invoice = zoho.raise_invoice(customer, 49.0)
    payment = _zoho_api(zoho, zoho.issue_token(), "POST", "/payments", json={
        "customer_id": customer, "payment_mode": "creditcard", "amount": 49.0, "reference_number": txn,
        "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": 49.0}]})["payment"]  # fmt: skip
    _drain(redis_conn, sims)
    stored = next(p for p in zoho.payments if p["payment_id"] == payment["payment_id"])
    stored["amount_refunded"] = 49.0
    zoho.emit_event("payment_refunded", "payment", stored)
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "own_payment_refunded"
    assert attio.value("payments", record, "status") == "Refunded"
    assert len(attio.records("payments")) == 1  # no mirrored second record for our own payment


def test_a_braintree_credit_is_never_recorded_as_income(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    """A refund is a ``credit`` transaction carrying the sale's ``order_id``: its settlement marks the sale's record
    Refunded and creates no payment of its own."""
    bt = sims.braintree
    bt.add_customer("co_bt", email="ap@acme.example")
    sale = bt.gateway().transaction.sale({"amount": "49.00", "customer_id": "co_bt", "order_id": "903000000042",
                                         "options": {"submit_for_settlement": True}}).transaction
    record = _payment_record(sims, f"braintree:{sale.id}", "Settled")
    bt.settle(sale.id)
    credit = bt.gateway().transaction.refund(sale.id).transaction
    bt.settle(credit.id)
    resp = _post_braintree(live_server, bt.notification("transaction_settled", credit.id))
    assert resp.status_code == 202, resp.text
    [result] = _drain(redis_conn, sims)
    assert result["outcome"] == "refunded"
    assert sims.attio.value("payments", record, "status") == "Refunded"
    assert sims.attio.find("payments", "external_id", f"braintree:{credit.id}") == []


def test_a_refund_the_bank_declined_puts_the_sale_back_to_settled(
    sims: Stack, live_server: LiveServer, redis_conn: redis.Redis
) -> None:
    """Braintree sends ``transaction_settlement_declined`` for an ACH refund too: the refund moved nothing, the
    sale's money stayed with us, so its record leaves Refunded."""
    bt = sims.braintree
    bt.add_customer("co_bt", email="ap@acme.example")
    sale = bt.gateway().transaction.sale({"amount": "49.00", "customer_id": "co_bt", "order_id": "903000000043",
                                         "options": {"submit_for_settlement": True}}).transaction
    bt.settle(sale.id)
    credit = bt.gateway().transaction.refund(sale.id).transaction
    record = _payment_record(sims, f"braintree:{sale.id}", "Refunded")  # as the refund's Zoho event wrote it
    bt.decline_settlement(credit.id)
    resp = _post_braintree(live_server, bt.notification("transaction_settlement_declined", credit.id))
    assert resp.status_code == 202, resp.text
    [result] = _drain(redis_conn, sims)
    assert (result["outcome"], result["status"]) == ("refunded", "Settled")
    assert sims.attio.value("payments", record, "status") == "Settled"
    assert sims.attio.find("payments", "external_id", f"braintree:{credit.id}") == []
