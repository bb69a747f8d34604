"""The Zoho simulator speaks Zoho's wire format: OAuth quirks, envelopes, paging, payments, faults, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from simulators.zoho import ZohoSimulator

ORG_HEADER = "X-com-zoho-subscriptions-organizationid"


class Api:
    """A minimal Billing client: base URL, token and organisation header, as a real client would send them."""

    def __init__(self, sim: ZohoSimulator, token: str) -> None:
        self.base = f"{sim.url}/billing/v1"
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Zoho-oauthtoken {token}", ORG_HEADER: sim.organization_id})

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> requests.Response:
        """GET a Billing path."""
        return self.http.get(self.base + path, params=params, timeout=5)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        """POST JSON to a Billing path."""
        return self.http.post(self.base + path, json=body, timeout=5)


def refresh(sim: ZohoSimulator, **overrides: str) -> requests.Response:
    """The refresh-token grant as form fields."""
    form = {
        "grant_type": "refresh_token",
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "refresh_token": sim.refresh_token,
    }
    return requests.post(f"{sim.url}/oauth/v2/token", data={**form, **overrides}, timeout=5)


def token_of(sim: ZohoSimulator) -> str:
    """A freshly minted access token."""
    return str(refresh(sim).json()["access_token"])


@pytest.fixture
def sim() -> Iterator[ZohoSimulator]:
    """A started simulator, stopped after the test."""
    sim = ZohoSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def api(sim: ZohoSimulator) -> Iterator[Api]:
    """A Billing client holding a freshly minted token."""
    with Api(sim, token_of(sim)) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A loopback webhook receiver recording (headers, raw body) and answering 200."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/zoho", received
    server.shutdown()
    server.server_close()


def new_subscription(
    sim: ZohoSimulator, api: Api, plan_code: str = "basic-monthly", ref: str = "attio-sub-1"
) -> dict[str, Any]:
    """Create an offline subscription for a new customer through the API."""
    customer_id = sim.add_customer("Bowman Furniture", "billing@bowman.example")
    body = {
        "customer_id": customer_id,
        "plan": {"plan_code": plan_code, "quantity": 1},
        "auto_collect": False,
        "reference_id": ref,
    }
    resp = api.post("/subscriptions", body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["subscription"])


# -- Accounts ---------------------------------------------------------------------------------------------------
def test_refresh_with_form_fields_mints_a_token(sim: ZohoSimulator) -> None:
    resp = refresh(sim)
    body = resp.json()
    assert resp.status_code == 200
    assert body["access_token"].startswith("1000.")
    assert body | {"access_token": "x"} == {
        "access_token": "x",
        "api_domain": sim.url,
        "token_type": "Bearer",
        "expires_in": 3600,
    }
    assert sim.tokens_minted == 1


def test_refresh_with_query_parameters_mints_a_token(sim: ZohoSimulator) -> None:
    params = {
        "grant_type": "refresh_token",
        "client_id": "test-client",
        "client_secret": "test-secret",
        "refresh_token": "1000.test-refresh",
    }
    resp = requests.post(f"{sim.url}/oauth/v2/token", params=params, timeout=5)
    assert "access_token" in resp.json()


def test_refresh_with_a_json_body_is_invalid_client_with_http_200(sim: ZohoSimulator) -> None:
    body = {
        "grant_type": "refresh_token",
        "client_id": "test-client",
        "client_secret": "test-secret",
        "refresh_token": "1000.test-refresh",
    }
    resp = requests.post(f"{sim.url}/oauth/v2/token", json=body, timeout=5)
    assert (resp.status_code, resp.json()) == (200, {"error": "invalid_client"})
    assert sim.tokens_minted == 0


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"client_id": "other"}, "invalid_client"),
        ({"client_secret": "wrong"}, "invalid_client_secret"),
        ({"refresh_token": "1000.revoked"}, "invalid_code"),
    ],
)
def test_bad_credentials_answer_200_with_an_error(sim: ZohoSimulator, override: dict[str, str], error: str) -> None:
    resp = refresh(sim, **override)
    assert (resp.status_code, resp.json()) == (200, {"error": error})


@pytest.mark.parametrize("throttle_status", [400, 200])
def test_an_eleventh_mint_within_ten_minutes_is_throttled(throttle_status: int) -> None:
    sim = ZohoSimulator(throttle_status=throttle_status).start()
    try:
        assert all("access_token" in refresh(sim).json() for _ in range(10))
        resp = refresh(sim)
        assert resp.status_code == throttle_status
        assert resp.json()["error"] == "Access Denied"
        assert resp.json()["status"] == "failure"
        assert (sim.tokens_minted, sim.tokens_throttled) == (10, 1)
        sim.advance_clock(601)
        assert "access_token" in refresh(sim).json()
    finally:
        sim.stop()


def test_a_sixteenth_live_token_invalidates_the_oldest(sim: ZohoSimulator) -> None:
    tokens = [token_of(sim) for _ in range(10)]
    sim.advance_clock(601)  # past the mint throttle, well within the 1 h lifetime
    tokens += [token_of(sim) for _ in range(6)]
    assert len(sim.live_tokens()) == 15
    with Api(sim, tokens[0]) as oldest, Api(sim, tokens[1]) as second:
        assert oldest.get("/plans").status_code == 401
        assert second.get("/plans").status_code == 200


def test_expired_token_is_refused_with_code_57(sim: ZohoSimulator, api: Api) -> None:
    assert api.get("/plans").json()["code"] == 0
    sim.expire_tokens()
    resp = api.get("/plans")
    assert resp.status_code == 401
    assert resp.json() == {"code": 57, "message": "You are not authorized to perform this operation"}


def test_token_expires_after_its_lifetime(sim: ZohoSimulator) -> None:
    sim.token_lifetime = 60  # the knobs are read per request, so a test may turn them after start()
    with Api(sim, token_of(sim)) as api:
        assert api.get("/plans").status_code == 200
        sim.advance_clock(61)
        assert api.get("/plans").status_code == 401


# -- Billing: headers, envelope, paging, filters ----------------------------------------------------------------
@pytest.mark.parametrize("org", [None, "999"])
def test_missing_or_wrong_org_header_is_refused(sim: ZohoSimulator, api: Api, org: str | None) -> None:
    if org is None:
        del api.http.headers[ORG_HEADER]
    else:
        api.http.headers[ORG_HEADER] = org
    resp = api.get("/plans")
    assert resp.status_code == 400
    assert resp.json() == {"code": 57, "message": "Invalid organization ID"}


def test_missing_authorization_is_401(sim: ZohoSimulator) -> None:
    resp = requests.get(f"{sim.url}/billing/v1/plans", headers={ORG_HEADER: sim.organization_id}, timeout=5)
    assert (resp.status_code, resp.json()["code"]) == (401, 57)


def test_plans_paginate_with_has_more_page(sim: ZohoSimulator, api: Api) -> None:
    for n in range(5):
        sim.add_plan(f"plan-{n}", f"Plan {n}", 10 + n)
    seen, more, page = [], [], 1
    while True:
        body = api.get("/plans", page=page, per_page=2).json()
        seen += [p["plan_code"] for p in body["plans"]]
        more.append(body["page_context"]["has_more_page"])
        if not body["page_context"]["has_more_page"]:
            break
        page += 1
    assert more == [True, True, False]
    assert sorted(seen) == [f"plan-{n}" for n in range(5)]
    assert body["page_context"] == {
        "page": 3, "per_page": 2, "has_more_page": False, "applied_filter": "PlanStatus.All",
        "sort_column": "created_time", "sort_order": "D",
    }  # fmt: skip


def test_filter_by_is_module_prefixed_and_case_sensitive(sim: ZohoSimulator, api: Api) -> None:
    sim.seed_sample_data()
    codes = {
        f: {p["plan_code"] for p in api.get("/plans", filter_by=f).json()["plans"]}
        for f in ("PlanStatus.ACTIVE", "PlanStatus.INACTIVE")
    }
    assert codes == {"PlanStatus.ACTIVE": {"basic-monthly", "pro-annual"}, "PlanStatus.INACTIVE": {"legacy-monthly"}}
    assert len(api.get("/plans").json()["plans"]) == 3
    assert [a["addon_code"] for a in api.get("/addons", filter_by="AddonStatus.ONETIME").json()["addons"]] == [
        "migration"
    ]
    resp = api.get("/plans", filter_by="PlanStatus.Active")
    assert resp.status_code == 400 and resp.json()["code"] != 0


def test_plan_and_addon_fields(sim: ZohoSimulator, api: Api) -> None:
    sim.seed_sample_data()
    plan = api.get("/plans/pro-annual").json()["plan"]
    assert (plan["recurring_price"], plan["interval"], plan["interval_unit"], plan["status"]) == (
        500.0,
        1,
        "years",
        "active",
    )
    assert plan["created_time"][-5] in "+-" and ":" not in plan["created_time"][-5:]
    addon = api.get("/addons/email-basic").json()["addon"]
    assert (addon["interval_unit"], addon["price_brackets"][0]["price"]) == ("monthly", 10.0)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        # as recorded from the live API in payrollhero/zoho-subscriptions spec/fixtures/responses/
        ("/customers/1", 400, 3004),
        ("/plans/nope", 400, 101002),
        ("/addons/nope", 400, 102001),
        ("/products/1", 400, 2006),
        ("/subscriptions/1", 404, 1002),
        ("/invoices/1", 404, 1002),  # unrecorded: Zoho's generic "does not exist"
        ("/payments/1", 404, 1002),
    ],
)
def test_unknown_ids_answer_per_resource(sim: ZohoSimulator, api: Api, path: str, status: int, code: int) -> None:
    resp = api.get(path)
    assert (resp.status_code, resp.json()["code"]) == (status, code)


def test_a_deleted_customer_answers_3004(sim: ZohoSimulator, api: Api) -> None:
    customer_id = sim.add_customer("Gone", "gone@example.com")
    sim.delete_customer(customer_id)
    resp = api.get(f"/customers/{customer_id}")
    assert resp.status_code == 400
    assert resp.json() == {"code": 3004, "message": "Please enter a valid reference for the customer"}


# -- customers ---------------------------------------------------------------------------------------------------
def test_customer_create_then_email_search_is_a_substring_match(sim: ZohoSimulator, api: Api) -> None:
    resp = api.post("/customers", {"display_name": "Ann", "email": "ann@example.com"})
    assert resp.status_code == 201 and resp.json()["code"] == 0
    ann = resp.json()["customer"]
    assert ann["customer_id"].isdigit() and len(ann["customer_id"]) > 10
    sim.add_customer("Jo Ann", "JoAnn@Example.com")
    found = api.get("/customers", email="ann@example.com").json()["customers"]
    assert sorted(c["email"] for c in found) == ["JoAnn@Example.com", "ann@example.com"]
    assert [c["display_name"] for c in api.get("/customers", search_text="jo ann").json()["customers"]] == ["Jo Ann"]
    assert api.get(f"/customers/{ann['customer_id']}").json()["customer"]["email"] == "ann@example.com"


def test_customer_create_requires_display_name_and_email(api: Api) -> None:
    resp = api.post("/customers", {"display_name": "No Mail"})
    assert resp.status_code == 400 and resp.json()["code"] != 0


def test_customer_update(sim: ZohoSimulator, api: Api) -> None:
    customer_id = sim.add_customer("Old", "old@example.com")
    resp = api.http.put(f"{api.base}/customers/{customer_id}", json={"display_name": "New"}, timeout=5)
    assert resp.json()["customer"]["display_name"] == "New"


# -- subscriptions and invoices ----------------------------------------------------------------------------------
def test_subscription_create_raises_its_first_invoice(sim: ZohoSimulator, api: Api) -> None:
    sim.seed_sample_data()
    sub = new_subscription(sim, api)
    assert (sub["status"], sub["amount"], sub["currency_code"], sub["auto_collect"]) == ("live", 50.0, "USD", False)
    assert sub["plan"] == sub["plan"] | {"plan_code": "basic-monthly", "quantity": 1, "price": 50.0, "total": 50.0}
    assert sub["next_billing_at"] > sub["current_term_starts_at"]
    invoice = api.get(f"/invoices/{sub['child_invoice_id']}").json()["invoice"]
    assert (invoice["status"], invoice["total"], invoice["balance"], invoice["number"]) == (
        "sent",
        50.0,
        50.0,
        "INV-000001",
    )
    assert invoice["subscriptions"] == [{"subscription_id": sub["subscription_id"]}]
    listed = api.get("/invoices", subscription_id=sub["subscription_id"], filter_by="Status.Unpaid").json()["invoices"]
    assert [i["invoice_id"] for i in listed] == [sub["child_invoice_id"]]


def test_subscription_lookup_by_reference_and_customer(sim: ZohoSimulator, api: Api) -> None:
    sim.seed_sample_data()
    sub = new_subscription(sim, api, ref="rec-42")
    rows = api.get("/subscriptions", customer_id=sub["customer_id"], reference_contains="rec-4").json()["subscriptions"]
    assert [(r["subscription_id"], r["reference_id"], r["plan_code"]) for r in rows] == [
        (sub["subscription_id"], "rec-42", "basic-monthly")
    ]
    assert api.get("/subscriptions", filter_by="SubscriptionStatus.CANCELLED").json()["subscriptions"] == []


def test_trial_plan_starts_in_trial_without_an_invoice(sim: ZohoSimulator, api: Api) -> None:
    sim.add_plan("trial-plan", "Trial", 20, trial_period=14)
    sub = new_subscription(sim, api, plan_code="trial-plan")
    assert (sub["status"], sub["child_invoice_id"]) == ("trial", "")
    assert sim.invoices == {}


@pytest.mark.parametrize(
    "change",
    [
        {"plan": {"plan_code": "nope", "quantity": 1}},
        {"plan": {"plan_code": "legacy-monthly"}},
        {"customer_id": "1"},
        {"auto_collect": True},
    ],
)
def test_subscription_create_refuses_bad_input(sim: ZohoSimulator, api: Api, change: dict[str, Any]) -> None:
    sim.seed_sample_data()
    body = {
        "customer_id": sim.add_customer("A", "a@example.com"),
        "plan": {"plan_code": "basic-monthly"},
        "auto_collect": False,
    }
    resp = api.post("/subscriptions", body | change)
    assert resp.status_code == 400 and resp.json()["code"] != 0
    assert sim.subscriptions == {}


def test_set_subscription_status_helper(sim: ZohoSimulator, api: Api) -> None:
    sim.seed_sample_data()
    sub = new_subscription(sim, api)
    sim.set_subscription_status(sub["subscription_id"], "unpaid", next_billing_at="2030-01-01")
    got = api.get(f"/subscriptions/{sub['subscription_id']}").json()["subscription"]
    assert (got["status"], got["next_billing_at"]) == ("unpaid", "2030-01-01")
    assert sim.events[-1]["event_type"] == "subscription_unpaid"


# -- payments ----------------------------------------------------------------------------------------------------
def payment_body(invoice: dict[str, Any], amount: float, ref: str = "bt_txn_1") -> dict[str, Any]:
    """A Braintree payment recorded against one invoice."""
    return {
        "customer_id": invoice["customer_id"], "payment_mode": "creditcard", "amount": amount, "date": "2025-07-01",
        "reference_number": ref, "description": f"Braintree transaction {ref}",
        "invoices": [{"invoice_id": invoice["invoice_id"], "amount_applied": amount}],
    }  # fmt: skip


def test_payment_is_applied_to_the_invoice(sim: ZohoSimulator, api: Api) -> None:
    invoice = sim.raise_invoice(sim.add_customer("A", "a@example.com"), 450)
    resp = api.post("/payments", payment_body(invoice, 450.0))
    assert resp.status_code == 201
    body = resp.json()
    assert (body["code"], body["message"], body["payment"]["status"]) == (0, "The payment has been created.", "success")
    assert body["payment"]["invoices"][0] | {"invoice_number": None} == {
        "invoice_id": invoice["invoice_id"], "invoice_number": None, "amount_applied": 450.0, "balance_amount": 0.0,
    }  # fmt: skip
    got = api.get(f"/invoices/{invoice['invoice_id']}").json()["invoice"]
    assert (got["status"], got["balance"], got["payment_made"]) == ("paid", 0.0, 450.0)
    assert [p["reference_number"] for p in got["payments"]] == ["bt_txn_1"]
    assert api.get(f"/payments/{body['payment']['payment_id']}").json()["payment"]["amount"] == 450.0
    assert [p["payment_id"] for p in sim.payments_for_invoice(invoice["invoice_id"])] == [body["payment"]["payment_id"]]


def test_partial_payment_then_over_apply_is_refused(sim: ZohoSimulator, api: Api) -> None:
    invoice = sim.raise_invoice(sim.add_customer("A", "a@example.com"), 100)
    assert api.post("/payments", payment_body(invoice, 40.0)).status_code == 201
    assert sim.invoice(invoice["invoice_id"])["status"] == "partially_paid"
    resp = api.post("/payments", payment_body(invoice, 60.01, ref="bt_txn_2"))
    assert resp.status_code == 400
    assert resp.json()["code"] != 0 and "balance" in resp.json()["message"]
    assert (sim.invoice(invoice["invoice_id"])["balance"], len(sim.payments)) == (60.0, 1)


@pytest.mark.parametrize("missing", ["customer_id", "payment_mode", "amount"])
def test_payment_requires_its_fields(sim: ZohoSimulator, api: Api, missing: str) -> None:
    invoice = sim.raise_invoice(sim.add_customer("A", "a@example.com"), 10)
    body = payment_body(invoice, 10.0)
    del body[missing]
    resp = api.post("/payments", body)
    assert resp.status_code == 400 and resp.json()["code"] != 0
    assert sim.payments == []


def test_fault_after_503_records_the_payment_but_answers_503(sim: ZohoSimulator, api: Api) -> None:
    invoice = sim.raise_invoice(sim.add_customer("A", "a@example.com"), 25)
    sim.faults.add("POST", "/billing/v1/payments", after=503)
    resp = api.post("/payments", payment_body(invoice, 25.0))
    assert resp.status_code == 503
    assert resp.json()["code"] != 0
    assert len(sim.payments) == 1 and sim.invoice(invoice["invoice_id"])["status"] == "paid"
    # no idempotency key in Zoho: a blind retry records a second payment, refused only because the balance is 0
    assert api.post("/payments", payment_body(invoice, 25.0)).status_code == 400


# -- webhooks ----------------------------------------------------------------------------------------------------
def test_webhooks_are_signed_with_hmac_sha256_of_the_raw_body(
    sim: ZohoSimulator, api: Api, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = receiver
    sim.seed_sample_data()
    sim.webhook_target = (url, "s3cret-token-123")
    sub = new_subscription(sim, api)
    assert sim.flush_webhooks(timeout=3)
    events = [json.loads(body) for _, body in received]
    assert [e["event_type"] for e in events] == ["subscription_created", "invoice_created"]
    assert events[1]["data"]["invoice"]["invoice_id"] == sub["child_invoice_id"]
    assert len({e["event_id"] for e in events}) == 2 and all(e["event_id"].isdigit() for e in events)
    for headers, body in received:
        expected = hmac.new(b"s3cret-token-123", body, hashlib.sha256).hexdigest()
        assert headers["X-Zoho-Webhook-Signature"] == expected == sim.sign(body, "s3cret-token-123")
        assert headers["Content-Type"] == "application/json"
    assert [d["status"] for d in sim.webhook_deliveries] == [200, 200]


def test_webhook_target_query_and_event_selection(
    sim: ZohoSimulator, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = receiver
    sim.webhook_target, sim.webhook_events = (f"{url}?name=basic&a=1", "s3cret-token-123"), {"invoice_created"}
    customer_id = sim.add_customer("A", "a@example.com")
    sim.raise_invoice(customer_id, 5)
    sim.emit_event("payment_thankyou", "payment", {"payment_id": "1"})
    assert sim.flush_webhooks(timeout=3)
    [(headers, body)] = received
    signed = b"a1namebasic" + body  # sorted query pairs, key+value, then the raw body
    assert headers["X-Zoho-Webhook-Signature"] == hmac.new(b"s3cret-token-123", signed, hashlib.sha256).hexdigest()
    assert [e["event_type"] for e in sim.events] == ["invoice_created", "payment_thankyou"]


def test_lifecycle_helpers_emit_zoho_events(sim: ZohoSimulator, api: Api) -> None:
    sim.seed_sample_data()
    sub = new_subscription(sim, api)
    renewal = sim.renew_subscription(sub["subscription_id"])
    assert (renewal["status"], renewal["transaction_type"], renewal["total"]) == ("sent", "renewal", 50.0)
    assert sim.subscription(sub["subscription_id"])["current_term_starts_at"] == sub["next_billing_at"]
    sim.set_subscription_status(sub["subscription_id"], "unpaid")
    assert api.post("/payments", payment_body(renewal, 50.0)).status_code == 201
    assert sim.subscription(sub["subscription_id"])["status"] == "live"
    types = [e["event_type"] for e in api.get("/events", sort_order="A").json()["events"]]
    assert types == [
        "subscription_created", "invoice_created", "subscription_renewed", "invoice_created",
        "subscription_unpaid", "payment_thankyou", "subscription_activation",
    ]  # fmt: skip


def test_back_dated_subscription_emits_no_events(sim: ZohoSimulator, api: Api) -> None:
    sim.seed_sample_data()
    body = {
        "customer_id": sim.add_customer("A", "a@example.com"), "plan": {"plan_code": "basic-monthly"},
        "auto_collect": False, "starts_at": "2020-01-31",
    }  # fmt: skip
    sub = api.post("/subscriptions", body).json()["subscription"]
    assert (sub["status"], sub["next_billing_at"], sub["current_term_ends_at"]) == ("live", "2020-02-29", "2020-02-28")
    assert sub["child_invoice_id"] and sim.events == []


def test_unknown_routes_and_methods_answer_in_zoho_shape(api: Api) -> None:
    assert (api.get("/nope").status_code, api.get("/nope").json()["code"]) == (404, 5)
    resp = api.get("/payments")  # Zoho documents no payment list
    assert (resp.status_code, resp.json()["code"]) == (405, 37)


def test_control_routes_for_a_separate_process(sim: ZohoSimulator, api: Api) -> None:
    assert requests.post(f"{sim.url}/_sim/zoho/seed", timeout=5).status_code == 201
    assert len(api.get("/plans").json()["plans"]) == 3
    assert requests.post(f"{sim.url}/_sim/zoho/expire_tokens", timeout=5).json() == {"ok": True}
    assert api.get("/plans").status_code == 401
    assert requests.get(f"{sim.url}/_sim/zoho/state", timeout=5).json()["tokens_minted"] == 1


def test_webhook_body_helper_is_a_zoho_event(sim: ZohoSimulator) -> None:
    event = json.loads(sim.webhook_body("invoice_created", "invoice", {"invoice_id": "1"}))
    # the keys of a captured delivery (PipedreamHQ/pipedream zoho_subscriptions subscription-created test-event)
    assert list(event) == [
        "created_time", "event_id", "event_type", "data", "event_time_formatted", "event_source", "event_time"
    ]
    assert event["data"] == {"invoice": {"invoice_id": "1"}}
    created = datetime.strptime(event["created_time"], "%Y-%m-%dT%H:%M:%S%z")
    assert event["event_time"] == created.date().isoformat()  # a date, not an instant
    assert event["event_time_formatted"] == created.strftime("%d %b %Y")


def test_no_webhooks_without_a_target(sim: ZohoSimulator) -> None:
    sim.raise_invoice(sim.add_customer("A", "a@example.com"), 5)
    assert sim.flush_webhooks(timeout=1)
    assert sim.webhook_deliveries == [] and [e["event_type"] for e in sim.events] == ["invoice_created"]


# -- concurrency and rate limits ---------------------------------------------------------------------------------
def hammer(sim: ZohoSimulator, token: str, n: int) -> list[requests.Response]:
    """``n`` simultaneous GET /plans."""
    barrier, out = threading.Barrier(n), []

    def one() -> None:
        barrier.wait()
        with Api(sim, token) as api:
            out.append(api.get("/plans"))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrency_is_tracked_and_limited(sim: ZohoSimulator) -> None:
    sim.max_concurrent = 2
    sim.faults.add("GET", "/billing/v1/plans", delay=0.3, times=None)
    answers = hammer(sim, token_of(sim), 4)
    assert sim.max_in_flight_seen >= 3 and sim.in_flight == 0
    refused = [r for r in answers if r.status_code == 429]
    assert refused and all(r.json()["code"] == 1070 for r in refused)
    assert sim.rate_limited == len(refused)


def test_requests_per_minute_budget() -> None:
    sim = ZohoSimulator(requests_per_minute=3).start()
    try:
        with Api(sim, token_of(sim)) as api:
            assert [api.get("/plans").status_code for _ in range(4)] == [200, 200, 200, 429]
            assert api.get("/plans").json()["code"] == 45
            sim.advance_clock(61)
            assert api.get("/plans").status_code == 200
    finally:
        sim.stop()
