"""Contract tests of ``AttioClient`` against the loopback Attio simulator, on real Redis (budgets, breaker)."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest
import redis
import requests

from integration.clients.attio import AttioClient, AttioLimiter, build_attio_client
from integration.clients.attio_values import record_id, value, values
from integration.clients.breaker import make_breaker
from integration.errors import CircuitOpen, RateLimited, ServiceRejected, ServiceUnavailable
from integration.queueing import make_redis
from integration.worklane import BULK, deadline, lane
from simulators.attio import AttioSimulator
from tests.conftest import make_settings

SERVICES = "/v2/objects/services/records"


@pytest.fixture(scope="module")
def redis_url(module_redis_url: str) -> str:
    """This module's own redis-server (budget windows and breaker counts must not be flushed by other runs)."""
    return module_redis_url


@pytest.fixture
def redis_conn(module_redis_conn: redis.Redis) -> redis.Redis:
    """A flushed connection to this module's own Redis (overrides conftest's)."""
    return module_redis_conn


@pytest.fixture(scope="module")
def server() -> Iterator[AttioSimulator]:
    """One simulator for the module (stopping one takes ~0.5 s)."""
    sim = AttioSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: AttioSimulator, redis_conn: redis.Redis) -> AttioSimulator:
    """The simulator, reset to a workspace holding the data model."""
    server.reset()
    server.reads_per_second, server.writes_per_second = 100, 25
    server.setup_schema()
    return server


def make_client(sim: AttioSimulator, connection: redis.Redis, **overrides: Any) -> AttioClient:
    """A client wired as in production, pointed at the simulator."""
    return build_attio_client(make_settings(attio_api_url=sim.url, **overrides), connection)


@pytest.fixture
def other_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A second Redis connection: another process's view of the shared state."""
    conn = make_redis(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def client(sim: AttioSimulator, redis_conn: redis.Redis) -> AttioClient:
    """The client under test."""
    return make_client(sim, redis_conn)


def add_service(sim: AttioSimulator, code: str, **extra: Any) -> str:
    """A services record straight into the simulator's state."""
    return sim.add_record("services", {"external_id": f"zoho-plan:{code}", "code": code, "kind": "Plan", **extra})


# -- records ----------------------------------------------------------------------------------------------------
def test_get_record_returns_the_record_and_sends_the_bearer_token(client: AttioClient, sim: AttioSimulator) -> None:
    rid = add_service(sim, "pro", name="Pro", price=49.5, status="Active")
    record = client.get_record("services", rid)
    assert record is not None and record_id(record) == rid
    assert value(record, "name") == "Pro"
    assert value(record, "kind") == "Plan"
    assert value(record, "price") == Decimal("49.5")
    assert sim.calls[-1].headers["Authorization"] == "Bearer test-attio-key"


def test_get_record_of_a_missing_record_is_none(client: AttioClient) -> None:
    assert client.get_record("services", "00000000-0000-4000-8000-000000000000") is None


def test_query_records_pages_by_offset_until_a_short_page(client: AttioClient, sim: AttioSimulator) -> None:
    ids = [add_service(sim, f"p{i}") for i in range(7)]
    rows = client.query_records("services", page_size=3)
    assert [record_id(r) for r in rows] == ids
    bodies = [c.json for c in sim.calls_to("POST", f"{SERVICES}/query")]
    assert [(b["limit"], b["offset"]) for b in bodies] == [(3, 0), (3, 3), (3, 6)]
    assert "filter" not in bodies[0] and "sorts" not in bodies[0]


def test_query_records_reads_an_empty_last_page_when_rows_fill_the_pages(
    client: AttioClient, sim: AttioSimulator
) -> None:
    for i in range(4):
        add_service(sim, f"p{i}")
    assert len(client.query_records("services", page_size=2)) == 4
    assert len(sim.calls_to("POST", f"{SERVICES}/query")) == 3


def test_query_records_sends_filter_and_sorts(client: AttioClient, sim: AttioSimulator) -> None:
    add_service(sim, "a", status="Active")
    add_service(sim, "b", status="Inactive")
    add_service(sim, "c", status="Active")
    rows = client.query_records("services", {"status": "Active"}, sorts=[{"attribute": "code", "direction": "desc"}])
    assert [value(r, "code") for r in rows] == ["c", "a"]
    assert sim.calls[-1].json["filter"] == {"status": "Active"}


def test_find_records_filters_on_equality(client: AttioClient, sim: AttioSimulator) -> None:
    rid = add_service(sim, "pro")
    add_service(sim, "basic")
    assert [record_id(r) for r in client.find_records("services", "external_id", "zoho-plan:pro")] == [rid]
    assert client.find_records("services", "external_id", "zoho-plan:none") == []


def test_assert_record_creates_then_updates_through_the_unique_attribute(
    client: AttioClient, sim: AttioSimulator
) -> None:
    first = client.assert_record("services", "external_id", {"external_id": "zoho-plan:pro", "name": "Pro"})
    second = client.assert_record("services", "external_id", {"external_id": "zoho-plan:pro", "name": "Pro 2"})
    assert record_id(first) == record_id(second)
    assert sim.find("services", "external_id", "zoho-plan:pro") == [record_id(first)]
    assert value(second, "name") == "Pro 2"
    put = sim.calls_to("PUT", SERVICES)[-1]
    assert put.query == {"matching_attribute": "external_id"}
    assert put.json == {"data": {"values": {"external_id": "zoho-plan:pro", "name": "Pro 2"}}}


def test_create_record_and_update_record(client: AttioClient, sim: AttioSimulator) -> None:
    created = client.create_record("services", {"external_id": "zoho-addon:seats", "kind": "Addon", "price": "5.25"})
    rid = record_id(created)
    updated = client.update_record("services", rid, {"status": "Inactive", "last_synced_at": "2024-05-01T12:00:00Z"})
    assert value(updated, "status") == "Inactive"
    assert value(updated, "last_synced_at") == "2024-05-01T12:00:00.000000000Z"
    assert sim.value("services", rid, "price") == 5.25
    assert sim.calls_to("PATCH", f"{SERVICES}/{rid}")


def test_clearing_sends_the_empty_array_for_every_attribute_type(client: AttioClient, sim: AttioSimulator) -> None:
    rid = sim.add_record("subscriptions", {"name": "Acme", "status_detail": "The card was declined.",
                                           "next_billing_date": "2027-01-01", "payment_link": "https://x.example/p"})
    client.update_record("subscriptions", rid, {"status_detail": "", "next_billing_date": None, "payment_link": []})
    assert sim.calls_to("PATCH", "/v2/objects/subscriptions/records/*")[-1].json == {
        "data": {"values": {"status_detail": [], "next_billing_date": [], "payment_link": []}}
    }
    assert [sim.value("subscriptions", rid, s) for s in ("status_detail", "next_billing_date", "payment_link")] == [
        None, None, None]
    pay = sim.add_record("payments", {"external_id": "x:1", "amount": 49})
    client.update_record("payments", pay, {"amount": None})  # currency: null is refused, [] clears
    assert sim.value("payments", pay, "amount") is None


def test_the_simulator_refuses_null_for_a_currency_as_attio_documents(sim: AttioSimulator) -> None:
    pay = sim.add_record("payments", {"external_id": "x:1", "amount": 49})
    resp = requests.patch(f"{sim.url}/v2/objects/payments/records/{pay}", json={"data": {"values": {"amount": None}}},
                          headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=5)
    assert resp.status_code == 400 and "null is not supported" in resp.json()["message"]


def test_webhooks_are_listed_page_by_page_and_created(client: AttioClient, sim: AttioSimulator) -> None:
    for n in range(101):
        sim.webhooks.append({"target_url": f"https://h{n}.example/x", "subscriptions": [], "status": "active"})
    assert len(client.list_webhooks()) == 101
    assert [c.query for c in sim.calls_to("GET", "/v2/webhooks")] == [
        {"limit": "100", "offset": "0"}, {"limit": "100", "offset": "100"}]
    hook = client.create_webhook("https://svc.example/webhooks/attio", [{"event_type": "record.updated", "filter": None}])
    assert len(hook["secret"]) == 64 and "secret" not in client.list_webhooks()[-1]


def test_create_record_refuses_a_unique_clash(client: AttioClient, sim: AttioSimulator) -> None:
    add_service(sim, "pro")
    with pytest.raises(ServiceRejected) as caught:
        client.create_record("services", {"external_id": "zoho-plan:pro"})
    assert caught.value.status == 400 and caught.value.code == "uniqueness_conflict"


def test_record_references_and_multiselects_read_back(client: AttioClient, sim: AttioSimulator) -> None:
    company = client.create_record("companies", {"name": "Acme", "domains": ["acme.example", "acme.test"]})
    payment = client.assert_record("payments", "external_id", {
        "external_id": "braintree:tx1", "status": "Settled", "amount": 12.5,
        "company": {"target_object": "companies", "target_record_id": record_id(company)}})
    assert value(payment, "company") == record_id(company)
    assert value(payment, "amount") == Decimal("12.5")
    assert values(company, "domains") == ["acme.example", "acme.test"]


# -- schema -----------------------------------------------------------------------------------------------------
def test_schema_calls(client: AttioClient, sim: AttioSimulator) -> None:
    sim.reset()
    assert [o["api_slug"] for o in client.list_objects()] == ["companies", "people"]
    assert client.get_object("services") is None
    created = client.create_object("services", "Service", "Services")
    assert created["api_slug"] == "services" and client.get_object("services") == created
    with pytest.raises(ServiceRejected) as caught:
        client.create_object("services", "Service", "Services")
    assert caught.value.status == 409 and caught.value.code == "slug_conflict"

    body = {"title": "Kind", "description": None, "api_slug": "kind", "type": "select", "is_required": False,
            "is_unique": False, "is_multiselect": False, "config": {}}
    attr = client.create_attribute("services", body)
    assert attr["api_slug"] == "kind" and attr["type"] == "select"
    assert [a["api_slug"] for a in client.list_attributes("services")] == ["kind"]
    option = client.create_option("services", "kind", "Plan")
    assert option["title"] == "Plan"
    assert [o["title"] for o in client.list_options("services", "kind")] == ["Plan"]
    assert sim.calls_to("POST", "/v2/objects/services/attributes/kind/options")[-1].json == {"data": {"title": "Plan"}}


def test_every_call_takes_a_slot_of_its_own_budget(
    client: AttioClient, sim: AttioSimulator, redis_conn: redis.Redis
) -> None:
    rid = add_service(sim, "pro")
    client.get_record("services", rid)
    client.query_records("services")  # a POST, but a read for Attio's limits
    client.list_attributes("services")
    client.update_record("services", rid, {"name": "Pro"})
    assert redis_conn.zcard("budget:attio:reads") == 3
    assert redis_conn.zcard("budget:attio:writes") == 1


def test_a_spent_write_budget_raises_without_sending(sim: AttioSimulator, redis_conn: redis.Redis) -> None:
    limiter = AttioLimiter(redis_conn, reads_per_second=100, writes_per_second=1, max_wait=0.05)
    client = AttioClient(base_url=sim.url, token="test-attio-key", http=requests.Session(), timeout=(1, 2),
                         limiter=limiter)
    client.create_record("services", {"external_id": "zoho-plan:a"})
    with lane(BULK), pytest.raises(ServiceUnavailable) as caught:  # bulk: no waiting past max_wait
        client.create_record("services", {"external_id": "zoho-plan:b"})
    assert 0 < (caught.value.retry_after or 0) <= 1.05
    assert len(sim.calls_to("POST", SERVICES)) == 1
    client.get_record("services", "00000000-0000-4000-8000-000000000000")  # reads have their own budget


# -- faults -----------------------------------------------------------------------------------------------------
def test_timeout_is_unavailable(sim: AttioSimulator, redis_conn: redis.Redis) -> None:
    client = make_client(sim, redis_conn, http_timeout=(1.0, 0.2))
    sim.faults.add("GET", f"{SERVICES}/*", delay=0.5)
    with pytest.raises(ServiceUnavailable) as caught:
        client.get_record("services", "00000000-0000-4000-8000-000000000000")
    assert "timeout" in caught.value.message and caught.value.status is None


def test_429_with_an_http_date_retry_after(client: AttioClient, sim: AttioSimulator) -> None:
    when = datetime.now(UTC) + timedelta(seconds=8)  # longer than INLINE_WAIT_SECONDS: not waited in place
    sim.faults.add("GET", "/v2/objects", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(RateLimited) as caught:
        client.list_objects()
    exc = caught.value
    assert exc.status == 429 and exc.code == "rate_limit_exceeded"
    assert exc.retry_after is not None and 6.5 <= exc.retry_after <= 8.0  # the date has whole seconds
    assert len(sim.calls_to("GET", "/v2/objects")) == 1


def test_a_short_retry_after_is_waited_once_in_place(client: AttioClient, sim: AttioSimulator) -> None:
    sim.faults.add("GET", "/v2/objects", status=429, headers={"Retry-After": "1"}, times=1)
    started = time.monotonic()
    client.list_objects()
    assert 1.0 <= time.monotonic() - started < 3.0
    assert [c.status for c in sim.calls_to("GET", "/v2/objects")] == [429, 200]


def test_a_short_retry_after_is_waited_only_once(client: AttioClient, sim: AttioSimulator) -> None:
    sim.faults.add("GET", "/v2/objects", status=429, headers={"Retry-After": "1"}, times=None)
    with pytest.raises(RateLimited):
        client.list_objects()
    assert len(sim.calls_to("GET", "/v2/objects")) == 2


def test_no_wait_in_place_when_the_job_has_no_time_left(client: AttioClient, sim: AttioSimulator) -> None:
    sim.faults.add("GET", "/v2/objects", status=429, headers={"Retry-After": "1"}, times=1)
    with deadline(5.0), pytest.raises(RateLimited):  # 1 s + the call's timeouts + a margin do not fit in 5 s
        client.list_objects()
    assert len(sim.calls_to("GET", "/v2/objects")) == 1


def test_429_without_retry_after(client: AttioClient, sim: AttioSimulator) -> None:
    # The simulator adds a Retry-After to every 429 that lacks one; an empty value is the closest to "none".
    sim.faults.add("GET", "/v2/objects", status=429, headers={"Retry-After": ""})
    with pytest.raises(ServiceUnavailable) as caught:
        client.list_objects()
    assert caught.value.status == 429 and caught.value.retry_after is None


def test_the_simulators_own_rate_limit_is_unavailable(client: AttioClient, sim: AttioSimulator) -> None:
    sim.reads_per_second = 0
    with pytest.raises(ServiceUnavailable) as caught:
        client.list_objects()
    assert caught.value.status == 429 and 0 <= (caught.value.retry_after or -1) <= 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_unavailable(client: AttioClient, sim: AttioSimulator, status: int) -> None:
    sim.faults.add("POST", f"{SERVICES}/query", status=status)
    with pytest.raises(ServiceUnavailable) as caught:
        client.query_records("services")
    assert caught.value.status == status and caught.value.provider == "attio"
    assert caught.value.request_id  # X-Attio-Execution-Id, for support


def test_a_lost_answer_to_a_write_then_a_retried_upsert_converges(client: AttioClient, sim: AttioSimulator) -> None:
    sim.faults.add("PUT", SERVICES, after=503)
    values_ = {"external_id": "zoho-plan:pro", "name": "Pro"}
    with pytest.raises(ServiceUnavailable) as caught:
        client.assert_record("services", "external_id", values_)
    assert caught.value.status == 503
    done = sim.find("services", "external_id", "zoho-plan:pro")
    assert len(done) == 1  # the write happened although the client saw an error
    retried = client.assert_record("services", "external_id", values_)
    assert sim.find("services", "external_id", "zoho-plan:pro") == done == [record_id(retried)]


def test_wrong_token_is_rejected(sim: AttioSimulator, redis_conn: redis.Redis) -> None:
    client = make_client(sim, redis_conn, attio_api_key="wrong-key")
    with pytest.raises(ServiceRejected) as caught:
        client.list_objects()
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    assert "Invalid or missing API key" in caught.value.message


def test_validation_error_is_rejected_with_attios_code_and_message(client: AttioClient) -> None:
    with pytest.raises(ServiceRejected) as caught:
        client.create_record("services", {"external_id": "zoho-plan:x", "price": "not money"})
    exc = caught.value
    assert exc.status == 400 and exc.code == "validation_type"
    assert 'Invalid value for currency attribute "price"' in exc.message and exc.request_id
    copy = pickle.loads(pickle.dumps(exc))  # crosses RQ's fork into the failed registry
    assert (type(copy), copy.code, copy.status, copy.message) == (ServiceRejected, exc.code, 400, exc.message)


def test_unknown_select_option_is_rejected(client: AttioClient) -> None:
    with pytest.raises(ServiceRejected) as caught:
        client.assert_record("services", "external_id", {"external_id": "zoho-plan:x", "kind": "Bundle"})
    assert caught.value.code == "value_not_found" and "Bundle" in caught.value.message


# -- circuit breaker --------------------------------------------------------------------------------------------
def trip(client: AttioClient, sim: AttioSimulator) -> None:
    """Five consecutive 5xx answers: the fifth opens the circuit."""
    sim.faults.add("GET", "/v2/objects", status=503, times=5)
    for _ in range(5):
        with pytest.raises(ServiceUnavailable):
            client.list_objects()


def test_five_5xx_open_the_circuit_for_every_client(
    sim: AttioSimulator, redis_conn: redis.Redis, other_conn: redis.Redis
) -> None:
    client = make_client(sim, redis_conn)
    trip(client, sim)
    assert len(sim.calls) == 5
    with pytest.raises(CircuitOpen) as caught:
        client.list_objects()
    assert caught.value.retry_after and caught.value.retry_after > 50
    # another process's client: its own Redis connection, its own breaker object, the same state
    other = make_client(sim, other_conn)
    with pytest.raises(CircuitOpen):
        other.get_record("services", "00000000-0000-4000-8000-000000000000")
    assert len(sim.calls) == 5  # neither call reached Attio


def test_after_the_reset_timeout_a_probe_closes_the_circuit(
    sim: AttioSimulator, redis_conn: redis.Redis, other_conn: redis.Redis
) -> None:
    breaker = make_breaker(redis_conn, "attio", reset_timeout=1)
    client = AttioClient(base_url=sim.url, token="test-attio-key", http=requests.Session(), timeout=(1, 2),
                         breaker=breaker)
    trip(client, sim)
    assert make_breaker(other_conn, "attio").current_state == "open"
    time.sleep(1.1)  # pybreaker stores opened_at in whole seconds, so it half-opens at most 1 s later
    assert [o["api_slug"] for o in client.list_objects()][:2] == ["companies", "people"]  # the probe
    assert len(sim.calls) == 6
    assert breaker.current_state == "closed"
    assert make_breaker(other_conn, "attio").current_state == "closed"  # closed for every process


def test_4xx_answers_do_not_open_the_circuit(client: AttioClient, sim: AttioSimulator) -> None:
    for _ in range(6):
        assert client.get_object("nope") is None
    assert client.list_objects()
    assert len(sim.calls) == 7


# -- value helpers (pure) ---------------------------------------------------------------------------------------
def test_value_reads_each_documented_shape() -> None:
    record = {"id": {"record_id": "r1"}, "values": {
        "status": [{"attribute_type": "status", "status": {"title": "Qualified", "is_archived": False}}],
        "tier": [{"attribute_type": "select", "option": "14938464-5b2c-4a8e-9f00-000000000001"}],
        "price": [{"attribute_type": "currency", "currency_value": "499.00", "currency_code": "USD"}],
        "mrr": [{"attribute_type": "currency", "currency_value": 1250.5, "currency_code": "USD"}],
        "trial": [{"attribute_type": "checkbox", "value": False}],
        "email": [{"attribute_type": "email-address", "email_address": "ap@acme.example"}],
        "site": [{"attribute_type": "domain", "domain": "acme.example", "root_domain": "acme.example"}],
        "renews": [{"attribute_type": "date", "value": "2025-01-31"}],
        "tags": [{"attribute_type": "select", "option": {"title": "beta"}},
                 {"attribute_type": "select", "option": {"title": "old"}, "active_until": "2024-01-01T00:00:00Z"},
                 {"attribute_type": "select", "option": {"title": "enterprise"}}],
        "empty": [],
    }}
    assert record_id(record) == "r1"
    assert value(record, "status") == "Qualified"
    assert value(record, "tier") == "14938464-5b2c-4a8e-9f00-000000000001"  # a bare option id: all there is
    assert value(record, "price") == Decimal("499.00") and value(record, "mrr") == Decimal("1250.5")
    assert value(record, "trial") is False
    assert value(record, "email") == "ap@acme.example" and value(record, "site") == "acme.example"
    assert value(record, "renews") == "2025-01-31"
    assert values(record, "tags") == ["beta", "enterprise"]  # inactive (historic) values are skipped
    assert value(record, "empty") is None and value(record, "missing") is None and values(record, "missing") == []
