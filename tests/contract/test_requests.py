"""Every request our clients send, recorded by the simulators during real flows, checked against the operations of
Zoho Billing's and Attio's published API descriptions (``tests/contract/operations.py``).

The simulators accept more than the providers document in places (they are lenient where the providers'
behaviour is unknown), so a request they serve may still be one the real API refuses: these tests are the check.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import redis

from integration import create_app
from integration.clients.attio import build_attio_client
from integration.clients.zoho import build_zoho_client
from tests.conftest import SECRETS, LiveServer, Stack, run_until_idle, run_worker
from tests.workers.test_activation import CRM, send_event

from .operations import ATTIO, ZOHO, ZOHO_ACCOUNTS, check

BILLING = "/billing/v1"


def problems_of(stack: Stack) -> list[str]:
    """Every recorded request to the Zoho and Attio simulators that the published descriptions do not allow."""
    found: list[str] = []
    for call in stack.zoho.calls_to("*", "*"):
        if call.path.startswith(BILLING):
            table, path = ZOHO, call.path[len(BILLING):]
        else:
            table, path = ZOHO_ACCOUNTS, call.path
        found += [f"zoho {call.method} {call.path}: {p}" for p in
                  check(table, call.method, path, call.query, call.headers, call.body)]
    for call in stack.attio.calls_to("*", "*"):
        found += [f"attio {call.method} {call.path}: {p}" for p in
                  check(ATTIO, call.method, call.path, call.query, call.headers, call.body)]
    return sorted(set(found))


def test_every_client_call_is_a_documented_request(stack: Stack, redis_conn: redis.Redis) -> None:
    settings = stack.settings()
    zoho, attio = build_zoho_client(settings, redis_conn), build_attio_client(settings, redis_conn)
    stack.zoho.add_plan("basic-monthly", "Basic", 50.0)
    zoho.list_plans(), zoho.list_addons("active"), zoho.list_products(), zoho.get_plan("basic-monthly")
    zoho.get_plan("nope"), zoho.list_organizations(), zoho.recent_events()
    customer = zoho.create_customer("Acme", "billing@acme.example", company_name="Acme Ltd")
    zoho.get_customer(customer["customer_id"]), zoho.find_customer_by_email("billing@acme.example")
    sub = zoho.create_subscription(customer["customer_id"], "basic-monthly", "rec-1")
    zoho.find_subscription_by_reference(customer["customer_id"], "rec-1"), zoho.get_subscription(sub["subscription_id"])
    invoice = zoho.list_invoices(customer["customer_id"], "unpaid")[0]
    zoho.get_invoice(invoice["invoice_id"])
    payment = zoho.record_payment(customer_id=customer["customer_id"], invoice_id=invoice["invoice_id"],
                                  amount=Decimal(str(invoice["balance"])), reference_number="txn1",
                                  date=dt.date.today(), description="Braintree transaction txn1")
    zoho.get_payment(payment["payment_id"])
    stack.zoho.customer_search_params = {"search_text"}  # the fallback search too
    zoho.find_customer_by_email("billing@acme.example")

    attio.token_info(), attio.list_objects(), attio.get_object("services"), attio.list_attributes("services")
    attio.list_options("services", "kind", show_archived=True)
    record = attio.assert_record("services", "external_id", {"external_id": "zoho-plan:x", "name": "X", "price": ""})
    rid = record["id"]["record_id"]
    attio.update_record("services", rid, {"price": None, "name": "Y"})
    attio.create_record("payments", {"external_id": "x:1", "amount": "9.50", "failure_reason": ""})
    attio.find_records("services", "external_id", "zoho-plan:x"), attio.get_record("services", rid)
    attio.query_records("services", {"status": "Active"}, sorts=[{"attribute": "name", "direction": "asc"}])
    attio.create_object("things", "Thing", "Things")
    attio.create_attribute("things", {"title": "Code", "description": None, "api_slug": "code", "type": "text",
                                      "is_required": False, "is_unique": True, "is_multiselect": False, "config": {}})
    attio.list_webhooks()
    attio.create_webhook("https://svc.example/webhooks/attio", [{"event_type": "record.updated", "filter": None}])

    assert problems_of(stack) == []
    assert len(stack.zoho.calls_to("*", "*")) >= 15 and len(stack.attio.calls_to("*", "*")) >= 15


def test_the_flows_send_only_documented_requests(stack: Stack, redis_conn: redis.Redis) -> None:
    web = LiveServer(create_app(stack.settings()))
    try:
        # catalog sync, then an activation with a card on file, then Zoho's invoice collected through Braintree
        crm = CRM(stack, card=True)  # its plan in Zoho, its service in Attio
        stack.zoho.add_plan("pro-monthly", "Pro", 90.0)
        runner = create_app(stack.settings(public_base_url=web.url)).test_cli_runner()
        assert runner.invoke(args=["sync", "services"]).exit_code == 0
        crm.request()
        stack.zoho.webhook_target = (f"{web.url}/webhooks/zoho", SECRETS["zoho_webhook_secret"])
        assert send_event(web.url, crm.subscription).status_code == 202
        run_worker(redis_conn)
        assert crm.sub("status") == "Active"
        assert stack.zoho.flush_webhooks()
        zoho_sub = crm.sub("zoho_subscription_id")
        customer = stack.zoho.subscription(zoho_sub)["customer_id"]
        stack.zoho.raise_invoice(customer, 50.0, subscription_id=zoho_sub)
        stack.zoho.set_subscription_status(zoho_sub, "non_renewing")
        assert stack.zoho.flush_webhooks()
        run_until_idle(redis_conn)
        assert stack.zoho.calls_to("POST", f"{BILLING}/payments") and stack.attio.calls_to("PATCH", "/v2/objects/*")
        found = problems_of(stack)
        # the operator's commands, on a fresh workspace
        stack.attio.reset()
        assert runner.invoke(args=["attio", "setup", "--webhook-url", "https://svc.example/webhooks/attio"]
                             ).exit_code == 0
        runner.invoke(args=["doctor"])
    finally:
        web.stop()
    assert found + problems_of(stack) == []
    assert stack.attio.calls_to("POST", "/v2/webhooks")


@pytest.mark.parametrize(
    ("table", "method", "path", "query", "headers", "body", "expected"),
    [
        (ZOHO, "POST", "/payments", {}, {"Authorization": "x", "X-com-zoho-subscriptions-organizationid": "1",
                                          "Content-Type": "application/json"},
         (b'{"customer_id": "1", "payment_mode": "creditcard", "date": "2026-01-01", "reference_number": "t",'
          b' "invoices": []}'), "body amount is required"),
        (ZOHO, "POST", "/payments", {}, {"Authorization": "x", "X-com-zoho-subscriptions-organizationid": "1",
                                          "Content-Type": "application/json"},
         (b'{"customer_id": "1", "payment_mode": "creditcard", "amount": "49.00", "date": "2026-01-01",'
          b' "reference_number": "t", "invoices": [{"invoice_id": "9", "amount_applied": 49}]}'),
         "body amount is str"),
        (ZOHO, "GET", "/customers", {"emial": "a@b.c"}, {"Authorization": "x",
                                                         "X-com-zoho-subscriptions-organizationid": "1"}, b"",
         "query 'emial' is not a parameter"),
        (ZOHO, "GET", "/plans", {}, {"Authorization": "x"}, b"",
         "header X-com-zoho-subscriptions-organizationid is required"),
        (ZOHO, "POST", "/subscriptions", {}, {"Authorization": "x", "X-com-zoho-subscriptions-organizationid": "1",
                                               "Content-Type": "application/json"},
         b'{"plan": {"plan_code": "p"}, "auto_collect": false, "reference_id": "r"}', "exactly one of customer_id"),
        (ZOHO, "DELETE", "/customers/1", {}, {}, b"", "no such documented operation"),
        (ZOHO_ACCOUNTS, "POST", "/oauth/v2/token", {}, {"Content-Type": "application/json"},
         b'{"grant_type": "refresh_token"}', "must be form-encoded"),
        (ATTIO, "PATCH", "/v2/objects/subscriptions/records/r1", {}, {"Authorization": "Bearer k",
                                                                      "Content-Type": "application/json"},
         b'{"data": {"values": {"next_billing_date": null}}}', "next_billing_date is null: clear with []"),
        (ATTIO, "PATCH", "/v2/objects/subscriptions/records/r1", {}, {"Authorization": "Bearer k",
                                                                      "Content-Type": "application/json"},
         b'{"data": {"values": {"status_detail": ""}}}', 'status_detail is "": clear with []'),
        (ATTIO, "PUT", "/v2/objects/services/records", {}, {"Authorization": "Bearer k",
                                                             "Content-Type": "application/json"},
         b'{"data": {"values": {}}}', "query 'matching_attribute' is required"),
        (ATTIO, "POST", "/v2/webhooks", {}, {"Authorization": "Bearer k", "Content-Type": "application/json"},
         b'{"data": {"target_url": "https://x", "subscriptions": [{"event_type": "record.updated"}]}}',
         "data.subscriptions[].filter is required"),
    ],
)
def test_a_request_the_real_api_would_refuse_is_caught(
    table: Any, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes, expected: str
) -> None:
    assert any(expected in p for p in check(table, method, path, query, headers, body))
