"""Contract tests of ``ZohoClient`` against the loopback Zoho simulator, on real Redis (token, budget, breaker)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests

from integration.clients.breaker import make_breaker
from integration.clients.zoho import ORG_HEADER, ZohoClient, build_zoho_client
from integration.clients.zoho_auth import ZohoTokens
from integration.errors import CircuitOpen, ServiceRejected, ServiceUnavailable
from integration.queueing import make_redis
from simulators.zoho import ZohoSimulator
from tests.conftest import TEST_REDIS_URL, make_settings

TOKEN_PATH = "/oauth/v2/token"


@pytest.fixture(scope="module")
def server() -> Iterator[ZohoSimulator]:
    """One simulator for the module (stopping one takes ~0.5 s)."""
    sim = ZohoSimulator()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: ZohoSimulator, redis_conn: redis.Redis) -> ZohoSimulator:
    """The simulator, reset to an empty organisation with default limits."""
    server.reset()
    server.throttle_status, server.token_lifetime = 400, 3600
    server.requests_per_minute = server.max_concurrent = None
    return server


def make_client(sim: ZohoSimulator, connection: redis.Redis, **overrides: Any) -> ZohoClient:
    """A client wired as in production, pointed at the simulator (a roomy budget unless overridden)."""
    overrides.setdefault("zoho_requests_per_minute", 1000)
    return build_zoho_client(make_settings(zoho_accounts_url=sim.url, **overrides), connection)


@pytest.fixture
def client(sim: ZohoSimulator, redis_conn: redis.Redis) -> ZohoClient:
    """The client under test."""
    return make_client(sim, redis_conn)


def billing_calls(sim: ZohoSimulator, method: str = "*") -> list[Any]:
    """Recorded Billing API calls."""
    return sim.calls_to(method, "/billing/v1/*")


def open_invoice(sim: ZohoSimulator, amount: float = 450) -> tuple[str, str]:
    """(customer_id, invoice_id) of a fresh customer with one open invoice."""
    customer_id = sim.add_customer("Bowman Furniture", "billing@bowman.test")
    return customer_id, sim.raise_invoice(customer_id, amount)["invoice_id"]


def payment_args(customer_id: str, invoice_id: str, amount: Any, reference: str = "bt1") -> dict[str, Any]:
    """Keyword arguments of ``record_payment``."""
    return dict(
        customer_id=customer_id,
        invoice_id=invoice_id,
        amount=amount,
        reference_number=reference,
        date=dt.date(2025, 7, 1),
        description=f"Braintree transaction {reference}",
    )


# -- catalogue --------------------------------------------------------------------------------------------------
def test_list_plans_follows_every_page(client: ZohoClient, sim: ZohoSimulator) -> None:
    for n in range(450):
        sim.add_plan(f"plan-{n:03d}", f"Plan {n}", 10 + n / 100, status="inactive" if n % 2 else "active")
    plans = client.list_plans()
    assert sorted(p["plan_code"] for p in plans) == [f"plan-{n:03d}" for n in range(450)]
    calls = billing_calls(sim, "GET")
    assert [(c.query["page"], c.query["per_page"], c.query["filter_by"]) for c in calls] == [
        ("1", "200", "PlanStatus.All"),
        ("2", "200", "PlanStatus.All"),
        ("3", "200", "PlanStatus.All"),
    ]
    prices = {p["plan_code"]: p["recurring_price"] for p in plans}
    assert prices["plan-007"] == Decimal("10.07") and isinstance(prices["plan-007"], Decimal)


def test_list_plans_by_status_uses_zohos_spelling(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.add_plan("basic", "Basic", 50)
    sim.add_plan("legacy", "Legacy", 30, status="inactive")
    assert [p["plan_code"] for p in client.list_plans(status="active")] == ["basic"]
    assert billing_calls(sim)[-1].query["filter_by"] == "PlanStatus.ACTIVE"
    with pytest.raises(ValueError, match="PlanStatus"):
        client.list_plans(status="retired")


def test_list_addons_and_products(client: ZohoClient, sim: ZohoSimulator) -> None:
    ids = sim.seed_sample_data()
    assert {a["addon_code"] for a in client.list_addons()} == {"email-basic", "migration"}
    assert [a["addon_code"] for a in client.list_addons(status="one_time")] == ["migration"]
    assert billing_calls(sim)[-1].query["filter_by"] == "AddonStatus.ONETIME"
    assert [p["product_id"] for p in client.list_products()] == [ids["product_id"]]


def test_a_list_without_page_context_stops_after_one_page(client: ZohoClient, sim: ZohoSimulator) -> None:
    body = {"code": 0, "message": "success", "plans": [{"plan_code": "a"}, {"plan_code": "b"}]}
    sim.faults.add("GET", "/billing/v1/plans", status=200, body=json.dumps(body), times=None)
    assert [p["plan_code"] for p in client.list_plans()] == ["a", "b"]
    assert len(billing_calls(sim)) == 1


def test_get_plan_returns_it_or_none(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.add_plan("basic-monthly", "Basic", 50, setup_fee=12.5)
    plan = client.get_plan("basic-monthly")
    assert plan is not None and plan["name"] == "Basic" and plan["setup_fee"] == Decimal("12.5")
    assert client.get_plan("no-such-plan") is None


def test_whole_number_money_is_decimal_too(client: ZohoClient, sim: ZohoSimulator) -> None:
    plan = {"plan_code": "x", "recurring_price": 400, "interval": 1, "addons": [{"price": 10}], "trial": True}
    sim.faults.add("GET", "/billing/v1/plans/x", status=200, body=json.dumps({"code": 0, "plan": plan}))
    got = client.get_plan("x")
    assert got is not None
    assert isinstance(got["recurring_price"], Decimal) and got["recurring_price"] == 400
    assert isinstance(got["addons"][0]["price"], Decimal)
    assert got["interval"] == 1 and isinstance(got["interval"], int) and got["trial"] is True


def test_every_call_sends_the_shared_token_and_the_organisation(
    client: ZohoClient, sim: ZohoSimulator, redis_conn: redis.Redis
) -> None:
    client.list_products()
    token, api_domain = ZohoTokens.from_settings(make_settings(zoho_accounts_url=sim.url), redis_conn).token()
    call = billing_calls(sim)[-1]
    assert call.headers["Authorization"] == f"Zoho-oauthtoken {token}"
    assert {k.lower(): v for k, v in call.headers.items()}[ORG_HEADER.lower()] == "10234695"
    assert api_domain == sim.url and sim.tokens_minted == 1
    token_call = sim.calls_to("POST", TOKEN_PATH)[0]
    assert token_call.headers["Content-Type"] == "application/x-www-form-urlencoded"  # form, never JSON
    assert "refresh_token=1000.test-refresh" in token_call.text and "grant_type=refresh_token" in token_call.text


def test_api_url_overrides_the_tokens_api_domain(sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    minted = {"access_token": sim.issue_token(), "api_domain": "http://127.0.0.1:9", "expires_in": 3600}
    sim.faults.add("POST", TOKEN_PATH, status=200, body=json.dumps(minted))
    sim.add_plan("basic", "Basic", 50)
    client = make_client(sim, redis_conn, zoho_api_url=f"{sim.url}/billing/v1")
    assert client.get_plan("basic") is not None
    with pytest.raises(ServiceRejected, match="not a Zoho data centre"):  # without the override: refused
        make_client(sim, redis_conn, http_timeout=(0.5, 0.5)).get_plan("basic")


@pytest.mark.parametrize("api_domain", ["https://evil.example", "http://www.zohoapis.com",
                                        "https://zohoapis.com.evil.io",
                                        "https://www.zohoapis.com@evil.io", "https://www.zohoapis.com:8443",
                                        "https://www.zohoapis.com/x"])
def test_the_bearer_token_is_never_sent_to_an_api_domain_that_is_not_zohos(
    sim: ZohoSimulator, redis_conn: redis.Redis, api_domain: str
) -> None:
    from integration.clients.zoho_auth import trusted_api_domain

    minted = {"access_token": sim.issue_token(), "api_domain": api_domain, "expires_in": 3600}
    sim.faults.add("POST", TOKEN_PATH, status=200, body=json.dumps(minted))
    sent: list[str] = []
    client = make_client(sim, redis_conn)
    assert client.tokens.token()[1] == api_domain  # minted and stored as Zoho answered
    client._caller.http.request = lambda *a, **k: sent.append(a[1])  # type: ignore[method-assign]  # must not run
    with pytest.raises(ServiceRejected, match="not a Zoho data centre"):
        client.get_plan("basic")
    assert sent == [] and not trusted_api_domain(api_domain, "https://accounts.zoho.com")


@pytest.mark.parametrize("api_domain", ["https://www.zohoapis.com", "https://www.zohoapis.eu",
                                        "https://www.zohoapis.in",
                                        "https://www.zohoapis.com.au", "https://www.zohoapis.jp",
                                        "https://www.zohoapis.com.cn", "https://www.zohoapis.sa",
                                        "https://www.zohoapis.ca"])
def test_zohos_data_centres_are_trusted(api_domain: str) -> None:
    from integration.clients.zoho_auth import trusted_api_domain

    assert trusted_api_domain(api_domain, "https://accounts.zoho.com")
    assert trusted_api_domain("http://127.0.0.1:8765", "http://127.0.0.1:8765/")  # the accounts server's own origin


# -- customers --------------------------------------------------------------------------------------------------
def test_find_customer_by_email_keeps_the_oldest_exact_match(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.add_customer("Jo Ann", "joann@example.com")
    oldest = sim.add_customer("Ann (first)", "Ann@Example.com")
    sim.add_customer("Ann (second)", "ann@example.com")
    sim.add_customer("Ann AU", "ann@example.com.au")
    found = client.find_customer_by_email("ann@example.com")
    assert found is not None and found["customer_id"] == oldest
    assert billing_calls(sim)[-1].query["email"] == "ann@example.com"
    assert client.find_customer_by_email("nn@example.com") is None  # substring hits only


def test_an_ignored_email_search_falls_back_to_search_text_without_paging_everyone(
    client: ZohoClient, sim: ZohoSimulator
) -> None:
    for n in range(250):  # more than one page of others
        sim.add_customer(f"Other {n}", f"other{n}@example.com")
    mine = sim.add_customer("Ann", "Ann@Example.com")
    sim.customer_search_params = {"search_text"}  # email= is not applied (it is not in Zoho's OpenAPI file)
    found = client.find_customer_by_email("ann@example.com")
    assert found is not None and found["customer_id"] == mine
    calls = billing_calls(sim, "GET")
    assert [sorted(c.query) for c in calls] == [["email", "page", "per_page"], ["page", "per_page", "search_text"]]


def test_no_search_that_narrows_is_refused_not_paged(client: ZohoClient, sim: ZohoSimulator) -> None:
    for n in range(250):
        sim.add_customer(f"Other {n}", f"other{n}@example.com")
    sim.customer_search_params = set()
    with pytest.raises(ServiceRejected, match="ignored email= and search_text="):
        client.find_customer_by_email("ann@example.com")
    assert len(billing_calls(sim, "GET")) == 2


def test_get_and_create_customer(client: ZohoClient, sim: ZohoSimulator) -> None:
    created = client.create_customer("Bowman Furniture", "ben@bowman.test", company_name="Bowman", currency_code="USD")
    assert created["customer_id"] and created["outstanding"] == Decimal("0")
    assert sim.customer(created["customer_id"])["company_name"] == "Bowman"
    got = client.get_customer(created["customer_id"])
    assert got is not None and got["email"] == "ben@bowman.test"
    assert client.get_customer("903999999999999") is None


# Bodies recorded from the live Subscriptions API (payrollhero/zoho-subscriptions, spec/fixtures/responses/).
RECORDED_NOT_FOUND = [
    ("get_customer", "/customers/1", 400, {"code": 3004, "message": "Please enter a valid reference for the customer"}),
    ("get_plan", "/plans/1", 400, {"code": 101002, "message": "Invalid PlanCode."}),
    ("get_subscription", "/subscriptions/1", 404, {"code": 1002, "message": "Subscription ID does not exist."}),
]


@pytest.mark.parametrize(("method", "path", "status", "body"), RECORDED_NOT_FOUND)
def test_recorded_not_found_answers_are_none(
    client: ZohoClient, sim: ZohoSimulator, method: str, path: str, status: int, body: dict[str, Any]
) -> None:
    sim.faults.add("GET", f"/billing/v1{path}", status=status, body=json.dumps(body))
    assert getattr(client, method)("1") is None


def test_a_wrong_url_or_another_resources_code_is_not_missing(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.faults.add("GET", "/billing/v1/customers/1", status=404, body=json.dumps({"code": 5, "message": "Invalid URL"}))
    with pytest.raises(ServiceRejected):
        client.get_customer("1")
    sim.faults.add("GET", "/billing/v1/plans/1", status=400, body=json.dumps({"code": 3004, "message": "?"}))
    with pytest.raises(ServiceRejected):  # 3004 means "no such customer", not "no such plan"
        client.get_plan("1")


def test_a_deleted_customer_is_none(client: ZohoClient, sim: ZohoSimulator) -> None:
    customer_id = sim.add_customer("Gone", "gone@example.com")
    sim.delete_customer(customer_id)
    assert client.get_customer(customer_id) is None


# -- subscriptions ----------------------------------------------------------------------------------------------
def test_create_subscription_is_offline_with_our_reference(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.add_plan("basic-monthly", "Basic", 50)
    customer_id = sim.add_customer("Bowman", "b@bowman.test")
    sub = client.create_subscription(customer_id, "basic-monthly", "rec-attio-1", quantity=2)
    assert billing_calls(sim, "POST")[-1].json == {
        "customer_id": customer_id,
        "plan": {"plan_code": "basic-monthly", "quantity": 2},
        "auto_collect": False,
        "reference_id": "rec-attio-1",
    }
    assert sub["status"] == "live" and sub["amount"] == Decimal("100") and sub["child_invoice_id"]
    assert sim.subscription(sub["subscription_id"])["auto_collect"] is False
    got = client.get_subscription(sub["subscription_id"])
    assert got is not None and got["reference_id"] == "rec-attio-1"
    assert client.get_subscription("903999999999999") is None


def test_create_subscription_refused_by_zoho_is_permanent(client: ZohoClient, sim: ZohoSimulator) -> None:
    customer_id = sim.add_customer("Bowman", "b@bowman.test")
    with pytest.raises(ServiceRejected, match="does not exist") as info:
        client.create_subscription(customer_id, "no-such-plan", "rec-1")
    assert info.value.status == 400 and info.value.code == "4"


def test_find_subscription_by_reference_is_exact_and_per_customer(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.add_plan("basic", "Basic", 50)
    ours, theirs = sim.add_customer("A", "a@a.test"), sim.add_customer("B", "b@b.test")
    client.create_subscription(ours, "basic", "rec-10")
    wanted = client.create_subscription(ours, "basic", "rec-1")
    client.create_subscription(theirs, "basic", "rec-1")
    found = client.find_subscription_by_reference(ours, "rec-1")
    assert found is not None and found["subscription_id"] == wanted["subscription_id"]
    assert billing_calls(sim)[-1].query["reference_contains"] == "rec-1"
    assert client.find_subscription_by_reference(ours, "rec-2") is None
    assert client.find_subscription_by_reference(ours, "REC-1") is None


# -- invoices and payments --------------------------------------------------------------------------------------
def test_get_and_list_invoices(client: ZohoClient, sim: ZohoSimulator) -> None:
    customer_id, invoice_id = open_invoice(sim, 370)
    sim.raise_invoice(customer_id, 10, status="paid")
    sim.raise_invoice(sim.add_customer("Other", "o@o.test"), 99)
    invoice = client.get_invoice(invoice_id)
    assert invoice is not None and invoice["balance"] == Decimal("370") and invoice["status"] == "sent"
    assert [i["invoice_id"] for i in client.list_invoices(customer_id, status="unpaid")] == [invoice_id]
    assert len(client.list_invoices(customer_id)) == 2
    query = billing_calls(sim)[-1].query
    assert query == {"filter_by": "Status.All", "customer_id": customer_id, "page": "1", "per_page": "200"}
    assert client.get_invoice("903999999999999") is None


def test_record_payment_is_applied_to_the_invoice(client: ZohoClient, sim: ZohoSimulator) -> None:
    customer_id, invoice_id = open_invoice(sim, 450)
    payment = client.record_payment(
        customer_id=customer_id,
        invoice_id=invoice_id,
        amount=Decimal("450"),
        reference_number="bt_txn_8f3k2p",
        date=dt.date(2025, 7, 1),
        description="Braintree transaction bt_txn_8f3k2p",
    )
    raw = billing_calls(sim, "POST")[-1].text
    assert '"amount":450.00' in raw and '"amount_applied":450.00' in raw  # JSON numbers, two decimals
    assert json.loads(raw)["payment_mode"] == "creditcard" and json.loads(raw)["date"] == "2025-07-01"
    assert payment["amount"] == Decimal("450") and payment["invoices"][0]["invoice_id"] == invoice_id
    invoice = client.get_invoice(invoice_id)
    assert invoice is not None and invoice["status"] == "paid" and invoice["balance"] == 0
    assert [p["reference_number"] for p in invoice["payments"]] == ["bt_txn_8f3k2p"]
    got = client.get_payment(payment["payment_id"])
    assert got is not None and isinstance(got["amount"], Decimal)
    assert client.get_payment("903999999999999") is None


def test_a_partial_payment_leaves_a_balance(client: ZohoClient, sim: ZohoSimulator) -> None:
    customer_id, invoice_id = open_invoice(sim, 450)
    client.record_payment(**payment_args(customer_id, invoice_id, Decimal("100.10")))
    assert sim.invoice(invoice_id)["status"] == "partially_paid"
    assert sim.invoice(invoice_id)["balance"] == pytest.approx(349.90)


@pytest.mark.parametrize(
    ("amount", "error"),
    [(450.0, TypeError), (Decimal("1.005"), ValueError), (Decimal("NaN"), ValueError), (Decimal("0"), ValueError)],
)
def test_record_payment_refuses_floats_and_sub_cent_amounts(
    client: ZohoClient, sim: ZohoSimulator, amount: Any, error: type[Exception]
) -> None:
    customer_id, invoice_id = open_invoice(sim)
    with pytest.raises(error):
        client.record_payment(**payment_args(customer_id, invoice_id, amount))
    assert billing_calls(sim, "POST") == []


def test_a_lost_payment_answer_is_unavailable_but_the_payment_exists(client: ZohoClient, sim: ZohoSimulator) -> None:
    customer_id, invoice_id = open_invoice(sim, 450)
    sim.faults.add("POST", "/billing/v1/payments", after=503)
    with pytest.raises(ServiceUnavailable) as info:
        client.record_payment(**payment_args(customer_id, invoice_id, Decimal("450.00"), "bt_tx_1"))
    assert info.value.status == 503
    assert [p["reference_number"] for p in sim.payments_for_invoice(invoice_id)] == ["bt_tx_1"]
    invoice = client.get_invoice(invoice_id)  # what a retry must look at before posting again (reference §3.5)
    assert invoice is not None and [p["reference_number"] for p in invoice["payments"]] == ["bt_tx_1"]


# -- faults -----------------------------------------------------------------------------------------------------
def test_a_timeout_is_unavailable(sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    client = make_client(sim, redis_conn, http_timeout=(1.0, 0.3))
    client.list_products()  # token minted before the slow call
    sim.faults.add("GET", "/billing/v1/plans/*", delay=0.8)
    with pytest.raises(ServiceUnavailable, match="timeout"):
        client.get_plan("basic")


@pytest.mark.parametrize(("headers", "retry_after"), [({"Retry-After": "30"}, 30.0), ({}, None)])
def test_429_is_unavailable_with_retry_after_when_sent(
    client: ZohoClient, sim: ZohoSimulator, headers: dict[str, str], retry_after: float | None
) -> None:
    sim.faults.add("GET", "/billing/v1/plans/*", status=429, headers=headers)
    with pytest.raises(ServiceUnavailable) as info:
        client.get_plan("basic")
    assert (info.value.status, info.value.code, info.value.retry_after) == (429, "45", retry_after)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_unavailable(client: ZohoClient, sim: ZohoSimulator, status: int) -> None:
    sim.faults.add("GET", "/billing/v1/customers/*", status=status)
    with pytest.raises(ServiceUnavailable) as info:
        client.get_customer("903000000000001")
    assert info.value.status == status and not isinstance(info.value, CircuitOpen)


def test_http_200_with_a_nonzero_code_is_rejected(client: ZohoClient, sim: ZohoSimulator) -> None:
    body = {"code": 4, "message": "Invalid value passed for plan_code"}
    sim.faults.add("GET", "/billing/v1/plans/*", status=200, body=json.dumps(body))
    with pytest.raises(ServiceRejected, match="Invalid value passed for plan_code") as info:
        client.get_plan("basic")
    assert (info.value.status, info.value.code) == (200, "4")


@pytest.mark.parametrize(("status", "code"), [(200, 45), (200, 44), (200, 1070), (400, 45)])
def test_rate_limit_codes_are_unavailable(client: ZohoClient, sim: ZohoSimulator, status: int, code: int) -> None:
    body = {"code": code, "message": "You have exceeded the maximum number of requests per minute."}
    sim.faults.add("GET", "/billing/v1/plans/*", status=status, body=json.dumps(body))
    with pytest.raises(ServiceUnavailable) as info:
        client.get_plan("basic")
    assert info.value.code == str(code)


def test_an_expired_token_gets_one_refresh_and_one_retry(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.add_plan("basic", "Basic", 50)
    assert client.get_plan("basic") is not None and sim.tokens_minted == 1
    sim.expire_tokens()
    assert client.get_plan("basic") is not None
    calls = sim.calls_to("GET", "/billing/v1/plans/basic")
    assert [c.status for c in calls] == [200, 401, 200]
    assert calls[1].headers["Authorization"] != calls[2].headers["Authorization"]
    assert sim.tokens_minted == 2


def test_code_57_with_http_200_also_refreshes_once(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.add_plan("basic", "Basic", 50)
    body = {"code": 57, "message": "You are not authorized to perform this operation"}
    sim.faults.add("GET", "/billing/v1/plans/basic", status=200, body=json.dumps(body))
    assert client.get_plan("basic") is not None
    assert sim.tokens_minted == 2 and len(sim.calls_to("GET", "/billing/v1/plans/basic")) == 2


def test_a_persistent_401_is_rejected_after_one_refresh(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.faults.add("GET", "/billing/v1/plans/*", status=401, times=None)
    with pytest.raises(ServiceRejected) as info:
        client.get_plan("basic")
    assert (info.value.status, info.value.code) == (401, "57")
    assert sim.tokens_minted == 2 and len(billing_calls(sim)) == 2
    # a refreshed token refused again is not a token problem: the next job does not mint once more
    with pytest.raises(ServiceRejected):
        client.get_plan("basic")
    assert sim.tokens_minted == 2 and len(billing_calls(sim)) == 3


@pytest.mark.parametrize("throttle_status", [200, 400])
def test_a_throttled_refresh_cools_every_process_down(
    client: ZohoClient, sim: ZohoSimulator, redis_conn: redis.Redis, throttle_status: int
) -> None:
    sim.throttle_status = throttle_status
    form = {
        "grant_type": "refresh_token",
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "refresh_token": sim.refresh_token,
    }
    for _ in range(10):  # someone else spent the 10-per-10-minutes allowance
        assert requests.post(sim.url + TOKEN_PATH, data=form, timeout=5).json()["access_token"]
    with pytest.raises(ServiceUnavailable, match="throttled") as info:
        client.list_products()
    assert info.value.retry_after == 600 and sim.tokens_throttled == 1
    with pytest.raises(ServiceUnavailable) as again:
        client.list_products()
    other = make_redis(TEST_REDIS_URL)  # another process: its own connection and client
    try:
        with pytest.raises(ServiceUnavailable):
            make_client(sim, other).list_products()
    finally:
        other.close()
    assert again.value.retry_after is not None and 590 < again.value.retry_after <= 600
    assert len(sim.calls_to("POST", TOKEN_PATH)) == 11 and billing_calls(sim) == []


@pytest.mark.parametrize(
    ("setting", "error", "names"),
    [
        ("zoho_client_id", "invalid_client", "ZOHO_CLIENT_ID"),
        ("zoho_client_secret", "invalid_client_secret", "ZOHO_CLIENT_SECRET"),
        ("zoho_refresh_token", "invalid_code", "ZOHO_REFRESH_TOKEN"),
    ],
)
def test_bad_oauth_configuration_is_rejected_clearly(
    sim: ZohoSimulator, redis_conn: redis.Redis, setting: str, error: str, names: str
) -> None:
    client = make_client(sim, redis_conn, **{setting: "wrong"})
    with pytest.raises(ServiceRejected, match=names) as info:
        client.list_products()
    assert info.value.code == error and billing_calls(sim) == []


def test_a_slow_token_endpoint_is_unavailable(sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    sim.faults.add("POST", TOKEN_PATH, delay=0.8)
    with pytest.raises(ServiceUnavailable, match="timeout"):
        make_client(sim, redis_conn, http_timeout=(1.0, 0.3)).list_products()


def test_an_open_breaker_sends_nothing(client: ZohoClient, sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    make_breaker(redis_conn, "zoho").open()  # shared through Redis, as another process would have opened it
    with pytest.raises(CircuitOpen) as info:
        client.get_plan("basic")
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60
    assert sim.calls == []  # not even a token mint


def test_five_failures_open_the_breaker(client: ZohoClient, sim: ZohoSimulator) -> None:
    sim.faults.add("GET", "/billing/v1/plans/*", status=503, times=None)
    for _ in range(5):
        with pytest.raises(ServiceUnavailable):
            client.get_plan("basic")
    with pytest.raises(CircuitOpen):
        client.get_plan("basic")
    assert len(billing_calls(sim)) == 5
