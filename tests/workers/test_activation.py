"""Workflow 2 end to end: a Requested subscription → Braintree customer, Zoho subscription, Active (or a link)."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
import requests

from integration import create_app
from integration.clients.braintree import customer_id_for_company
from integration.samples import attio_delivery, attio_event

from ..conftest import SECRETS, LiveServer, Stack, run_until_idle, run_worker


class CRM:
    """A company, a plan service and a subscription in the Attio simulator, the plan in Zoho."""

    def __init__(self, stack: Stack, *, email: str | None = "billing@acme.example", kind: str = "Plan",
                 service_status: str = "Active", company: bool = True, card: bool = False) -> None:
        self.stack = stack
        attio = stack.attio
        if "basic-monthly" not in stack.zoho.plans:
            stack.zoho.add_plan("basic-monthly", "Basic", 50.0)
        values: dict[str, Any] = {"name": "Acme Ltd"}
        if email:
            values["billing_email"] = email
        self.company = attio.add_record("companies", values)
        self.service = attio.add_record("services", {
            "external_id": "zoho-plan:basic-monthly", "name": "Basic", "kind": kind, "code": "basic-monthly",
            "price": 50, "billing_interval": "every 1 month", "status": service_status,
        })
        sub: dict[str, Any] = {"name": "Acme Basic",
                               "service": {"target_object": "services", "target_record_id": self.service}}
        if company:
            sub["company"] = {"target_object": "companies", "target_record_id": self.company}
        self.subscription = attio.add_record("subscriptions", sub)
        self.bt_customer = customer_id_for_company(self.company)
        if card:
            stack.braintree.add_customer(self.bt_customer, email=email, card="valid")

    def request(self) -> None:
        """A CRM user sets the status to Requested (the simulator's own write; the webhook is posted separately)."""
        self.stack.attio.set_values("subscriptions", self.subscription, {"status": "Requested"})

    def sub(self, slug: str) -> Any:
        return self.stack.attio.value("subscriptions", self.subscription, slug)


@pytest.fixture
def web(stack: Stack) -> Any:
    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


def send_event(url: str, record_id: str, *, key: str | None = None, actor: str = "workspace-member") -> requests.Response:
    req = attio_delivery([attio_event("record.updated", object_id="subscriptions-object", record_id=record_id,
                                      attribute_id="status-attr", actor_type=actor)],
                         secret=SECRETS["attio_webhook_secret"], idempotency_key=key)
    return requests.post(f"{url}/webhooks/attio", data=req.body, headers=req.headers, timeout=10)


def test_card_on_file_activates(stack, web, redis_conn, queues):
    crm = CRM(stack, card=True)
    crm.request()
    assert send_event(web.url, crm.subscription).status_code == 202
    run_worker(redis_conn)
    assert crm.sub("status") == "Active"
    zsub_id = crm.sub("zoho_subscription_id")
    zsub = stack.zoho.subscription(zsub_id)
    assert zsub["reference_id"] == crm.subscription and zsub["auto_collect"] is False
    assert crm.sub("next_billing_date") == zsub["next_billing_at"]
    assert stack.attio.value("companies", crm.company, "braintree_customer_id") == crm.bt_customer
    zoho_customer = stack.attio.value("companies", crm.company, "zoho_customer_id")
    assert stack.zoho.customer(zoho_customer)["email"] == "billing@acme.example"
    assert queues["webhooks"].failed_job_registry.count == 0


def test_existing_zoho_customer_is_found_by_exact_email(stack, web, redis_conn):
    other = stack.zoho.add_customer("Someone", "x-billing@acme.example.org")  # a substring hit, not a match
    mine = stack.zoho.add_customer("Acme Ltd", "Billing@Acme.example")
    crm = CRM(stack, card=True)
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    assert stack.attio.value("companies", crm.company, "zoho_customer_id") == mine != other
    assert len(stack.zoho.customers) == 2


def test_a_zoho_customer_deleted_in_zoho_is_replaced(stack, web, redis_conn, queues):
    gone = stack.zoho.add_customer("Acme Ltd", "old-billing@acme.example")
    crm = CRM(stack, card=True)
    stack.attio.set_values("companies", crm.company, {"zoho_customer_id": gone})
    stack.zoho.delete_customer(gone)  # Zoho now answers 400/3004 for it
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    assert crm.sub("status") == "Active"
    fresh = stack.attio.value("companies", crm.company, "zoho_customer_id")
    assert fresh != gone and stack.zoho.customer(fresh)["email"] == "billing@acme.example"
    assert queues["webhooks"].failed_job_registry.count == 0


def test_a_customer_zoho_refuses_fails_with_a_detail(stack, web, redis_conn, queues):
    crm = CRM(stack, card=True)
    refusal = json.dumps({"code": 4, "message": "Invalid value passed for email"})
    stack.zoho.faults.add("POST", "/billing/v1/customers", status=400, body=refusal, times=None)
    crm.request()
    send_event(web.url, crm.subscription)
    run_until_idle(redis_conn)
    assert crm.sub("status") == "Failed"
    assert "Zoho Billing refused the customer" in crm.sub("status_detail")
    assert stack.zoho.subscriptions == {}


def test_a_customer_search_zoho_ignores_fails_with_a_detail_instead_of_paging(stack, web, redis_conn, queues):
    for n in range(3):
        stack.zoho.add_customer(f"Other {n}", f"other{n}@example.com")
    stack.zoho.customer_search_params = set()  # neither email= nor search_text= narrows
    crm = CRM(stack, card=True)
    crm.request()
    send_event(web.url, crm.subscription)
    run_until_idle(redis_conn)
    assert crm.sub("status") == "Failed"
    assert "set zoho_customer_id on the company" in crm.sub("status_detail")
    assert len(stack.zoho.customers) == 3  # no duplicate created
    assert len(stack.zoho.calls_to("GET", "/billing/v1/customers")) == 2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"company": False}, "Choose the company"),
        ({"email": None}, "Add a billing email"),
        ({"kind": "Addon"}, "is an add-on"),
        ({"service_status": "Inactive"}, "can't be sold"),
    ],
)
def test_missing_data_fails_with_a_detail(stack, web, redis_conn, queues, kwargs, fragment):
    crm = CRM(stack, **kwargs)
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    assert crm.sub("status") == "Failed"
    assert fragment in crm.sub("status_detail")
    assert stack.zoho.subscriptions == {}
    assert queues["webhooks"].failed_job_registry.count == 0  # an outcome, not a job failure


def test_non_requested_and_echoed_events_change_nothing(stack, web, redis_conn):
    crm = CRM(stack, card=True)
    send_event(web.url, crm.subscription)  # status not set: nothing to do
    run_worker(redis_conn)
    assert crm.sub("status") is None and stack.zoho.subscriptions == {}
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    writes = len(stack.attio.calls_to("PATCH", "*")) + len(stack.attio.calls_to("PUT", "*"))
    for n in range(3):  # the echoes of the service's own writes
        send_event(web.url, crm.subscription, actor="api-token")
    run_worker(redis_conn)
    assert len(stack.attio.calls_to("PATCH", "*")) + len(stack.attio.calls_to("PUT", "*")) == writes
    assert len(stack.zoho.subscriptions) == 1


def test_burst_of_events_is_one_activation(stack, web, redis_conn):
    crm = CRM(stack, card=True)
    crm.request()
    barrier = threading.Barrier(5)

    def fire() -> None:
        barrier.wait()
        send_event(web.url, crm.subscription)

    threads = [threading.Thread(target=fire) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_until_idle(redis_conn)
    assert len(stack.zoho.subscriptions) == 1
    assert len(stack.braintree.calls_to("POST", "/merchants/*/customers")) <= 1
    assert crm.sub("status") == "Active"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/merchants/*/customers"), ("POST", "/billing/v1/customers"), ("POST", "/billing/v1/subscriptions")],
    ids=["braintree-customer", "zoho-customer", "zoho-subscription"],
)
def test_fault_after_commit_at_each_step_still_makes_one_of_each(stack, web, redis_conn, method, path):
    crm = CRM(stack, card=False)
    stack.braintree.add_customer(crm.bt_customer, card="valid") if "billing" in path else None
    sim = stack.braintree if path.startswith("/merchants") else stack.zoho
    sim.faults.add(method, path, after=503, times=1)
    crm.request()
    send_event(web.url, crm.subscription)
    run_until_idle(redis_conn)
    assert len([c for c in stack.braintree.calls_to("GET", "/merchants/*/customers/*")]) >= 1
    assert stack.braintree.customer(crm.bt_customer) is not None
    assert len(stack.zoho.customers) == 1
    if "billing" in path:
        assert len(stack.zoho.subscriptions) == 1
        assert crm.sub("status") == "Active"
    else:
        assert crm.sub("status") == "Awaiting payment method"


def test_payment_link_path_end_to_end(stack, web, redis_conn):
    crm = CRM(stack, card=False)
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    assert crm.sub("status") == "Awaiting payment method"
    link = crm.sub("payment_link")
    assert link.startswith(stack.settings().public_base_url + "/pay/")
    token = link.rsplit("/", 1)[1]

    page = requests.get(f"{web.url}/pay/{token}", timeout=10)
    assert page.status_code == 200
    assert "Basic" in page.text and "50" in page.text
    assert 'id="sandbox-button"' in page.text and "dropin" in page.text
    assert crm.bt_customer not in page.text.replace(token, "")  # nothing beyond what the link itself carries

    done = requests.post(f"{web.url}/pay/{token}", data={"payment_method_nonce": "fake-valid-nonce"}, timeout=10)
    assert done.status_code == 200 and 'id="done"' in done.text
    run_until_idle(redis_conn)
    assert crm.sub("status") == "Active"
    assert crm.sub("payment_link") in (None, "")
    assert len(stack.zoho.subscriptions) == 1
    assert stack.braintree.customer(crm.bt_customer)["default_token"]

    again = requests.get(f"{web.url}/pay/{token}", timeout=10)
    assert again.status_code == 409 and "already used" in again.text


@pytest.mark.parametrize("mangle", [lambda t: t[:-3] + "abc", lambda t: t[:20], lambda t: "x" * 40, lambda t: t + "x"])
def test_tampered_tokens_get_a_plain_4xx_page(stack, web, redis_conn, mangle):
    crm = CRM(stack)
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    token = crm.sub("payment_link").rsplit("/", 1)[1]
    for method in ("get", "post"):
        resp = getattr(requests, method)(f"{web.url}/pay/{mangle(token)}", timeout=10)
        assert resp.status_code == 404
        assert "not valid" in resp.text and "Traceback" not in resp.text


def test_expired_token_gets_410(stack, web, redis_conn, monkeypatch):
    import time

    from integration.paylinks import PaymentLink, PaymentLinks

    settings = stack.settings()
    links = PaymentLinks(settings.link_secret, ttl_days=settings.payment_link_ttl_days)
    link = PaymentLink("sub", "cust", "Basic", "50", "every 1 month", 0.0)
    fresh = links.issue(link)
    past = time.time() - (settings.payment_link_ttl_days * 24 + 1) * 3600
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: past)  # itsdangerous stamps tokens with time.time()
        expired = links.issue(link)
    stack.braintree.add_customer("cust", card=None)
    assert requests.get(f"{web.url}/pay/{fresh}", timeout=10).status_code == 200
    resp = requests.get(f"{web.url}/pay/{expired}", timeout=10)
    assert resp.status_code == 410 and "expired" in resp.text


def test_payment_page_hides_when_braintree_is_down(stack, web, redis_conn):
    crm = CRM(stack)
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    token = crm.sub("payment_link").rsplit("/", 1)[1]
    stack.braintree.faults.add("POST", "/merchants/*/client_token", status=503, times=None)
    resp = requests.get(f"{web.url}/pay/{token}", timeout=20)
    assert resp.status_code == 503 and "Temporarily unavailable" in resp.text
    assert re.search(r"Traceback|Exception", resp.text) is None
