"""Tests of the Attio simulator, through real HTTP with ``requests``."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from simulators.attio import API_ACTOR_ID, AttioSimulator

AUTH = {"Authorization": "Bearer test-attio-key"}


@pytest.fixture(scope="module")
def server() -> Iterator[AttioSimulator]:
    sim = AttioSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: AttioSimulator) -> AttioSimulator:
    """The shared simulator, fresh for each test (stopping one takes ~0.5 s, so it is started once)."""
    server.reset()
    server.reads_per_second, server.writes_per_second, server.webhook_target = 100, 25, None
    return server


def call(sim: AttioSimulator, method: str, path: str, json_body: Any = None, **kw: Any) -> requests.Response:
    return requests.request(method, sim.url + path, json=json_body, headers=AUTH, timeout=5, **kw)


def text_attr(slug: str, unique: bool = False, type_: str = "text", **extra: Any) -> dict[str, Any]:
    return {"data": {"title": slug.title(), "description": None, "api_slug": slug, "type": type_,
                     "is_required": False, "is_unique": unique, "is_multiselect": False, "config": {}, **extra}}


def test_auth_required(sim: AttioSimulator) -> None:
    resp = requests.get(sim.url + "/v2/objects", timeout=5)
    assert resp.status_code == 401
    assert resp.json()["type"] == "auth_error" and resp.json()["code"] == "unauthorized"
    bad = requests.get(sim.url + "/v2/objects", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert bad.status_code == 401
    assert call(sim, "GET", "/v2/objects").status_code == 200


def test_objects_attributes_and_options(sim: AttioSimulator) -> None:
    slugs = [o["api_slug"] for o in call(sim, "GET", "/v2/objects").json()["data"]]
    assert slugs == ["companies", "people"]
    body = {"data": {"api_slug": "services", "singular_noun": "Service", "plural_noun": "Services"}}
    created = call(sim, "POST", "/v2/objects", body).json()["data"]
    assert created["api_slug"] == "services" and created["id"]["object_id"]
    conflict = call(sim, "POST", "/v2/objects", body)
    assert conflict.status_code == 409 and conflict.json()["code"] == "slug_conflict"
    by_id = call(sim, "GET", f"/v2/objects/{created['id']['object_id']}").json()["data"]
    assert by_id["api_slug"] == "services"

    attr = call(sim, "POST", "/v2/objects/services/attributes", text_attr("external_id", unique=True)).json()["data"]
    assert attr["is_unique"] and attr["is_writable"] and attr["type"] == "text"
    assert set(attr["id"]) == {"workspace_id", "object_id", "attribute_id"}
    again = call(sim, "POST", "/v2/objects/services/attributes", text_attr("external_id"))
    assert again.status_code == 409 and again.json()["code"] == "slug_conflict"
    unique_select = call(sim, "POST", "/v2/objects/services/attributes", text_attr("kind", True, "select"))
    assert unique_select.status_code == 400 and unique_select.json()["code"] == "validation_type"
    assert call(sim, "POST", "/v2/objects/services/attributes", text_attr("kind", type_="select")).ok
    price = text_attr("price", type_="currency")
    price["data"]["config"] = {"currency": {"default_currency_code": "EUR", "display_type": "symbol"}}
    assert call(sim, "POST", "/v2/objects/services/attributes", price).json()["data"]["config"]["currency"][
        "default_currency_code"] == "EUR"

    option = call(sim, "POST", "/v2/objects/services/attributes/kind/options", {"data": {"title": "Plan"}})
    assert option.json()["data"]["title"] == "Plan" and option.json()["data"]["is_archived"] is False
    assert "option_id" in option.json()["data"]["id"]
    dup = call(sim, "POST", "/v2/objects/services/attributes/kind/options", {"data": {"title": "Plan"}})
    assert dup.status_code == 409 and dup.json()["code"] == "slug_conflict"
    titles = [o["title"] for o in call(sim, "GET", "/v2/objects/services/attributes/kind/options").json()["data"]]
    assert titles == ["Plan"]
    patched = call(sim, "PATCH", "/v2/objects/services/attributes/external_id", {"data": {"title": "Ext"}})
    assert patched.json()["data"]["title"] == "Ext"
    listed = call(sim, "GET", "/v2/objects/services/attributes").json()["data"]
    assert [a["api_slug"] for a in listed] == ["external_id", "kind", "price"]


def test_record_read_shape_and_write_forms(sim: AttioSimulator) -> None:
    sim.setup_schema()
    values = {"external_id": [{"value": "zoho-plan:pro"}], "name": "Pro", "kind": {"option": "Plan"},
              "price": {"currency_value": 12.5}, "last_synced_at": "2024-05-01T14:00:00+02:00"}
    rec = call(sim, "POST", "/v2/objects/services/records", {"data": {"values": values}}).json()["data"]
    assert set(rec["id"]) == {"workspace_id", "object_id", "record_id"}
    assert rec["created_at"].endswith("000Z") and rec["web_url"].startswith("https://")
    vals = rec["values"]
    assert vals["description"] == [] and vals["status"] == []
    first = vals["name"][0]
    assert first["active_until"] is None and first["created_by_actor"] == {"type": "api-token", "id": API_ACTOR_ID}
    assert first["attribute_type"] == "text" and first["value"] == "Pro"
    assert vals["price"][0]["currency_value"] == 12.5 and vals["price"][0]["currency_code"] == "USD"
    assert vals["kind"][0]["option"]["title"] == "Plan" and "option_id" in vals["kind"][0]["option"]["id"]
    assert vals["last_synced_at"][0]["value"] == "2024-05-01T12:00:00.000000000Z"
    rid = rec["id"]["record_id"]
    assert sim.value("services", rid, "price") == 12.5 and sim.value("services", rid, "kind") == "Plan"
    bad_date = call(sim, "PATCH", f"/v2/objects/subscriptions/records/{rid}", {"data": {"values": {}}})
    assert bad_date.status_code == 404 and bad_date.json()["code"] == "not_found"
    sub = sim.add_record("subscriptions", {"name": "x"})
    bad_date = call(sim, "PATCH", f"/v2/objects/subscriptions/records/{sub}",
                    {"data": {"values": {"next_billing_date": "01/05/2024"}}})
    assert bad_date.status_code == 400
    unknown = call(sim, "PATCH", f"/v2/objects/subscriptions/records/{sub}", {"data": {"values": {"nope": "x"}}})
    assert unknown.status_code == 400 and "nope" in unknown.json()["message"]
    cleared = call(sim, "PATCH", f"/v2/objects/subscriptions/records/{sub}", {"data": {"values": {"name": []}}})
    assert cleared.json()["data"]["values"]["name"] == [] and sim.value("subscriptions", sub, "name") is None
    assert call(sim, "DELETE", f"/v2/objects/subscriptions/records/{sub}").json() == {}
    assert call(sim, "GET", f"/v2/objects/subscriptions/records/{sub}").status_code == 404


def test_assert_creates_then_updates_and_respects_uniqueness(sim: AttioSimulator) -> None:
    sim.setup_schema()
    path = "/v2/objects/services/records?matching_attribute=external_id"
    first = call(sim, "PUT", path, {"data": {"values": {"external_id": "zoho-plan:a", "name": "A"}}})
    assert first.status_code == 200
    second = call(sim, "PUT", path, {"data": {"values": {"external_id": "zoho-plan:a", "name": "A2"}}})
    rid = first.json()["data"]["id"]["record_id"]
    assert second.json()["data"]["id"]["record_id"] == rid
    assert second.json()["data"]["values"]["name"][0]["value"] == "A2"
    assert len(sim.records("services")) == 1
    other = call(sim, "PUT", path, {"data": {"values": {"external_id": "zoho-plan:b"}}}).json()["data"]
    clash = call(sim, "PATCH", f"/v2/objects/services/records/{other['id']['record_id']}",
                 {"data": {"values": {"external_id": "zoho-plan:a"}}})
    assert clash.status_code == 400 and clash.json()["code"] == "uniqueness_conflict"
    not_unique = call(sim, "PUT", "/v2/objects/services/records?matching_attribute=name",
                      {"data": {"values": {"name": "A"}}})
    assert not_unique.status_code == 400
    assert not_unique.json()["code"] == "matching_attribute_definition_not_unique"
    missing = call(sim, "PUT", path, {"data": {"values": {"name": "no id"}}})
    assert missing.status_code == 400


def test_create_conflict(sim: AttioSimulator) -> None:
    sim.setup_schema()
    body = {"data": {"values": {"name": "Acme", "domains": ["acme.example"], "zoho_customer_id": "Z1"}}}
    assert call(sim, "POST", "/v2/objects/companies/records", body).status_code == 200
    again = call(sim, "POST", "/v2/objects/companies/records", body)
    assert again.status_code == 400 and again.json()["code"] == "uniqueness_conflict"
    assert again.json()["type"] == "invalid_request_error" and again.json()["status_code"] == 400
    assert len(sim.records("companies")) == 1


def test_query_filters_and_paging(sim: AttioSimulator) -> None:
    ids = sim.seed_sample_data()
    for i in range(5):
        sim.add_record("services", {"external_id": f"zoho-addon:{i}", "name": f"Addon {i}", "kind": "Addon",
                                    "price": i})
    q = "/v2/objects/services/records/query"
    rows = call(sim, "POST", q, {"filter": {"kind": "Addon"}}).json()["data"]
    assert [r["values"]["name"][0]["value"] for r in rows] == [f"Addon {i}" for i in range(5)]
    verbose = call(sim, "POST", q, {"filter": {"external_id": {"$eq": "zoho-plan:pro-monthly"}}}).json()["data"]
    assert [r["id"]["record_id"] for r in verbose] == [ids["service"]]
    page = call(sim, "POST", q, {"filter": {"kind": "Addon"}, "limit": 2, "offset": 2}).json()["data"]
    assert [r["values"]["name"][0]["value"] for r in page] == ["Addon 2", "Addon 3"]
    either = {"$or": [{"name": "Addon 1"}, {"record_id": {"$in": [ids["service"]]}}]}
    assert len(call(sim, "POST", q, {"filter": either}).json()["data"]) == 2
    both = {"$and": [{"kind": "Addon"}, {"price": {"currency_value": {"$gte": 3}}}]}
    assert len(call(sim, "POST", q, {"filter": both}).json()["data"]) == 2
    subs = "/v2/objects/subscriptions/records/query"
    for company in (ids["company"], {"target_record_id": ids["company"]}):
        found = call(sim, "POST", subs, {"filter": {"company": company}}).json()["data"]
        assert [r["id"]["record_id"] for r in found] == [ids["subscription"]]
    assert call(sim, "POST", q, {"filter": {"nope": 1}}).status_code == 400
    assert sim.find("companies", "name", "Acme Ltd") == [ids["company"]]


def test_select_option_must_exist(sim: AttioSimulator) -> None:
    ids = sim.seed_sample_data()
    path = f"/v2/objects/subscriptions/records/{ids['subscription']}"
    bad = call(sim, "PATCH", path, {"data": {"values": {"status": "Pending"}}})
    assert bad.status_code == 400
    assert [o["title"] for o in call(sim, "GET", "/v2/objects/subscriptions/attributes/status/options")
            .json()["data"]].count("Pending") == 0
    ok = call(sim, "PATCH", path, {"data": {"values": {"status": "Requested"}}})
    assert ok.status_code == 200 and sim.value("subscriptions", ids["subscription"], "status") == "Requested"


def test_record_reference_validation(sim: AttioSimulator) -> None:
    ids = sim.seed_sample_data()
    path = "/v2/objects/payments/records"
    missing = {"company": {"target_object": "companies", "target_record_id": "00000000-0000-4000-8000-000000000000"}}
    assert call(sim, "POST", path, {"data": {"values": {"external_id": "p1", **missing}}}).status_code == 400
    wrong_object = {"company": {"target_object": "services", "target_record_id": ids["service"]}}
    assert call(sim, "POST", path, {"data": {"values": {"external_id": "p1", **wrong_object}}}).status_code == 400
    good = {"company": [{"target_object": "companies", "target_record_id": ids["company"]}], "amount": "10.50"}
    rec = call(sim, "POST", path, {"data": {"values": {"external_id": "p1", **good}}}).json()["data"]
    assert rec["values"]["company"][0]["target_record_id"] == ids["company"]
    assert rec["values"]["company"][0]["target_object"] == "companies"
    by_unique = {"external_id": "p2", "company": {"target_object": "companies", "domains": ["acme.example"]}}
    rec2 = call(sim, "POST", path, {"data": {"values": by_unique}}).json()["data"]
    assert rec2["values"]["company"][0]["target_record_id"] == ids["company"]
    assert len(sim.records("payments")) == 2


def test_rate_limit(sim: AttioSimulator) -> None:
    sim.writes_per_second = 2
    sim.setup_schema()
    started = time.time()
    answers = [call(sim, "POST", "/v2/objects/services/records", {"data": {"values": {"name": f"s{i}"}}})
               for i in range(8)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and sim.rate_limited == len(limited)
    body = limited[0].json()
    assert body == {"status_code": 429, "type": "rate_limit_error", "code": "rate_limit_exceeded",
                    "message": "Rate limit exceeded, please try again later"}
    retry_at = parsedate_to_datetime(limited[0].headers["Retry-After"])
    assert started < retry_at.timestamp() <= time.time() + 1
    assert len(sim.records("services")) == sim.writes_ok == 8 - len(limited)
    assert call(sim, "GET", "/v2/objects").status_code == 200  # reads have their own budget


def test_fault_after_applies_the_write(sim: AttioSimulator) -> None:
    sim.setup_schema()
    sim.faults.add("POST", "/v2/objects/services/records", after=503)
    resp = call(sim, "POST", "/v2/objects/services/records", {"data": {"values": {"name": "lost answer"}}})
    assert resp.status_code == 503 and resp.json()["status_code"] == 503
    assert sim.find("services", "name", "lost answer")
    sim.faults.add("POST", "/v2/objects/services/records", status=429)
    injected = call(sim, "POST", "/v2/objects/services/records", {"data": {"values": {"name": "never"}}})
    assert injected.status_code == 429 and parsedate_to_datetime(injected.headers["Retry-After"])
    assert not sim.find("services", "name", "never")


class _Receiver:
    """A tiny HTTP server collecting webhook deliveries."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), raw))
                outer.event.set()
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/attio/webhook"

    def wait(self, count: int) -> None:
        deadline = time.time() + 3
        while len(self.got) < count and time.time() < deadline:
            time.sleep(0.01)


def test_webhook_emission_is_signed(sim: AttioSimulator) -> None:
    receiver = _Receiver()
    try:
        ids = sim.seed_sample_data()
        sim.webhook_target = (receiver.url, "s3cret")
        path = f"/v2/objects/subscriptions/records/{ids['subscription']}"
        call(sim, "PATCH", path, {"data": {"values": {"status": "Requested", "payment_link": "https://x"}}})
        receiver.wait(2)
        assert len(receiver.got) == 2
        keys = set()
        attr_ids = set()
        for headers, raw in receiver.got:
            expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
            assert headers["Attio-Signature"] == headers["X-Attio-Signature"] == expected
            keys.add(headers["Idempotency-Key"])
            (event,) = json.loads(raw)["events"]
            assert event["event_type"] == "record.updated"
            assert event["actor"] == {"type": "api-token", "id": API_ACTOR_ID}
            assert event["id"]["record_id"] == ids["subscription"]
            attr_ids.add(event["id"]["attribute_id"])
        assert len(keys) == 2
        status_attr = call(sim, "GET", "/v2/objects/subscriptions/attributes/status").json()["data"]
        assert status_attr["id"]["attribute_id"] in attr_ids
        assert sim.emit("record.updated", "subscriptions", ids["subscription"], "status") == 202
        event = json.loads(receiver.got[-1][1])["events"][0]
        assert event["actor"]["type"] == "workspace-member" and event["id"]["attribute_id"]
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_a_registered_webhook_filters_what_is_delivered(sim: AttioSimulator) -> None:
    receiver = _Receiver()
    try:
        ids = sim.seed_sample_data()
        subscriptions_id = next(o["id"] for o in sim.objects.values() if o["api_slug"] == "subscriptions")
        sim.webhook_target = (receiver.url, "s3cret")
        rule = {"$and": [{"field": "id.object_id", "operator": "equals", "value": subscriptions_id},
                         {"field": "actor.type", "operator": "not_equals", "value": "api-token"}]}
        sim.webhooks.append({"target_url": receiver.url, "status": "active",
                             "subscriptions": [{"event_type": "record.updated", "filter": rule}]})
        path = f"/v2/objects/subscriptions/records/{ids['subscription']}"
        call(sim, "PATCH", path, {"data": {"values": {"status": "Requested"}}})  # an API token: filtered out
        time.sleep(0.3)
        assert receiver.got == []
        companies_id = next(o["id"] for o in sim.objects.values() if o["api_slug"] == "companies")
        user = {"type": "workspace-member", "id": "m1"}
        event = {"event_type": "record.updated", "id": {"object_id": subscriptions_id}, "actor": user}
        assert sim.subscribed(sim.webhooks[0], event)
        assert not sim.subscribed(sim.webhooks[0], {**event, "id": {"object_id": companies_id}})
        assert not sim.subscribed(sim.webhooks[0], {**event, "event_type": "record.created"})
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_webhook_create_refuses_http_and_a_subscription_without_filter(sim: AttioSimulator) -> None:
    bad_url = {"data": {"target_url": "http://x.example", "subscriptions": []}}
    assert call(sim, "POST", "/v2/webhooks", bad_url).status_code == 400
    no_filter = {"data": {"target_url": "https://x.example", "subscriptions": [{"event_type": "record.updated"}]}}
    assert call(sim, "POST", "/v2/webhooks", no_filter).status_code == 400
