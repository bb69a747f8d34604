"""Contract tests of ``BraintreeClient``: the real SDK against the loopback gateway simulator, breaker on real Redis."""

from __future__ import annotations

import base64
import json
import pickle
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis

from integration.clients.braintree import BraintreeClient, SaleResult, build_braintree_client, customer_id_for_company
from integration.clients.breaker import make_breaker
from integration.errors import CircuitOpen, RateLimited, ServiceRejected, ServiceUnavailable
from simulators.braintree import BraintreeSimulator
from simulators.braintree_xml import api_error_response
from tests.conftest import free_port, make_settings

SALES = "/merchants/*/transactions"
CUSTOMERS = "/merchants/*/customers"


@pytest.fixture(scope="module")
def server() -> Iterator[BraintreeSimulator]:
    """One simulator for the module (stopping one takes ~0.5 s)."""
    sim = BraintreeSimulator()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: BraintreeSimulator) -> BraintreeSimulator:
    """The simulator with no customers, transactions or faults."""
    server.reset()
    server.duplicate_checking = False
    return server


@pytest.fixture
def client(sim: BraintreeSimulator, redis_conn: redis.Redis) -> BraintreeClient:
    """The client as production builds it (settings → gateway, shared breaker), pointed at the simulator."""
    settings = make_settings(braintree_environment=sim.url, http_timeout=(1.0, 2.0))
    return build_braintree_client(settings, redis_conn)


def short_timeout_client(sim: BraintreeSimulator, redis_conn: redis.Redis) -> BraintreeClient:
    """A client whose read timeout (0.2 s) is shorter than the injected delays."""
    return BraintreeClient(gateway=sim.gateway(timeout=(0.5, 0.2)), breaker=make_breaker(redis_conn, "braintree"))


def charge(client: BraintreeClient, order_id: str, amount: str = "49.99", customer_id: str = "payer", **kw: Any
           ) -> SaleResult:
    """A sale with the deterministic key the invoice job uses."""
    return client.sale(order_id=order_id, amount=Decimal(amount), customer_id=customer_id,
                       api_request_key=f"charge:{order_id}", **kw)


def wait_for(predicate: Any, timeout: float = 3.0) -> None:
    """Poll until ``predicate()`` holds (a request the client gave up on still completes in the simulator)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# -- customer ids -----------------------------------------------------------------------------------------------


def test_customer_id_is_deterministic_short_and_safe() -> None:
    record = uuid.uuid4()
    cid = customer_id_for_company(str(record))
    assert cid == customer_id_for_company(str(record).upper()) == customer_id_for_company(record.hex)
    assert len(cid) <= 36 and cid.replace("_", "").replace("-", "").isalnum() and cid.isascii()
    ids = {customer_id_for_company(str(uuid.uuid4())) for _ in range(200)}
    assert len(ids) == 200


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "co_123"])
def test_customer_id_refuses_non_uuid(bad: str) -> None:
    with pytest.raises(ValueError):
        customer_id_for_company(bad)


# -- customers, vault, client token -----------------------------------------------------------------------------


def test_ensure_customer_creates_once_then_finds(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    cid = customer_id_for_company(str(uuid.uuid4()))
    assert client.find_customer(cid) is None
    created = client.ensure_customer(cid, email="ap@acme.test", company="Acme")
    assert created.id == cid and created.email == "ap@acme.test" and created.company == "Acme"
    again = client.ensure_customer(cid, email="ap@acme.test", company="Acme")
    assert again.id == cid
    assert len(sim.calls_to("POST", CUSTOMERS)) == 1


def test_ensure_customer_after_a_lost_create_answer_finds_it(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    cid = customer_id_for_company(str(uuid.uuid4()))
    sim.faults.add("POST", CUSTOMERS, after=503)  # created, but the SDK raises ServiceUnavailableError
    with pytest.raises(ServiceUnavailable) as info:
        client.ensure_customer(cid, email="ap@acme.test", company="Acme")
    assert info.value.status == 503
    assert client.ensure_customer(cid, email="ap@acme.test", company="Acme").id == cid
    assert [c["id"] for c in [sim.customer(cid)] if c] == [cid] and len(sim.calls_to("POST", CUSTOMERS)) == 1


def test_ensure_customer_when_the_id_is_taken_meanwhile(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    cid = customer_id_for_company(str(uuid.uuid4()))
    # The first look-up misses (404), then another worker creates it: the create answers 91609 and we find it.
    sim.faults.add("GET", f"/merchants/*/customers/{cid}", status=404)
    sim.add_customer(cid, card=None)
    assert client.ensure_customer(cid, email=None, company=None).id == cid


def test_unreadable_customer_create_answer_is_unavailable(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    cid = customer_id_for_company(str(uuid.uuid4()))
    sim.faults.add("POST", CUSTOMERS, status=201, body="")  # the SDK's create() returns None for an empty body
    with pytest.raises(ServiceUnavailable, match="unreadable answer"):
        client.ensure_customer(cid, email=None, company=None)


def test_ensure_customer_validation_error_is_rejected(client: BraintreeClient) -> None:
    with pytest.raises(ServiceRejected, match="Email is an invalid format") as info:
        client.ensure_customer("co_bad_email", email="not-an-email", company=None)
    assert info.value.code == "81604"


def test_payment_method_and_client_token(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer", card=None)
    assert client.default_payment_method("payer") is None
    token = client.add_payment_method("payer", "fake-valid-nonce")
    assert client.default_payment_method("payer") == token == (sim.customer("payer") or {})["default_token"]
    second = client.add_payment_method("payer", "fake-valid-nonce")  # same card again: allowed, becomes default
    assert client.default_payment_method("payer") == second != token
    decoded = json.loads(base64.b64decode(client.client_token("payer")))
    assert decoded["customerId"] == "payer"
    assert client.default_payment_method("nobody") is None


def test_vault_and_token_refusals(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer", card=None)
    with pytest.raises(ServiceRejected, match="Unknown or expired payment_method_nonce"):
        client.add_payment_method("payer", "fake-unknown-nonce")
    with pytest.raises(ServiceRejected, match="does not exist"):
        client.client_token("nobody")


# -- sales ------------------------------------------------------------------------------------------------------


def test_sale_charged(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    result = charge(client, "inv-1")
    assert (result.outcome, result.status, result.amount, result.processor_code) == (
        "charged", "submitted_for_settlement", Decimal("49.99"), "1000")
    assert result.charged and result.transaction_id
    [txn] = sim.sales_for_order("inv-1")
    assert (txn["id"], txn["amount"], txn["api_request_key"]) == (result.transaction_id, "49.99", "charge:inv-1")
    found = client.find_transaction(result.transaction_id)
    assert found is not None and found.order_id == "inv-1"
    assert client.find_transaction("nope") is None and client.find_transaction("bad id!") is None


@pytest.mark.parametrize(
    ("card", "amount", "outcome", "code", "message"),
    [
        ("valid", "2000.00", "declined", "2000", "Do Not Honor"),
        ("declining", "10.00", "declined", "2000", "Do Not Honor"),
        ("valid", "3000.00", "failed", "3000", "Processor Network Unavailable - Try Again"),
    ],
)
def test_sale_declines_and_failures_are_outcomes(
    client: BraintreeClient, sim: BraintreeSimulator, card: str, amount: str, outcome: str, code: str, message: str
) -> None:
    sim.add_customer("payer", card=card)
    result = charge(client, "inv-2", amount)
    assert (result.outcome, result.processor_code, result.message) == (outcome, code, message)
    assert not result.charged and result.transaction_id and sim.sales_for_order("inv-2") == []
    assert client.find_successful_sale("inv-2") is None


def test_sale_duplicate_rejection_carries_the_reason(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.duplicate_checking = True
    sim.add_customer("payer")
    first = charge(client, "inv-3")
    again = client.sale(order_id="inv-3", amount=Decimal("49.99"), customer_id="payer", api_request_key="other-key")
    assert (again.outcome, again.rejection_reason) == ("rejected", "duplicate") and "duplicate" in again.message
    found = client.find_successful_sale("inv-3")
    assert found is not None and found.id == first.transaction_id


def test_sale_without_payment_method_is_rejected(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer", card=None)
    with pytest.raises(ServiceRejected, match="Customer does not have any credit cards") as info:
        charge(client, "inv-4")
    assert info.value.code == "91511" and sim.transactions == []


def test_sale_with_explicit_token(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    token = sim.add_customer("payer")["default_token"]
    assert charge(client, "inv-5", payment_method_token=token).charged
    with pytest.raises(ServiceRejected) as info:
        charge(client, "inv-6", payment_method_token="missing")
    assert info.value.code == "91518"


@pytest.mark.parametrize("amount", [49.99, 50, "49.99", Decimal("0"), Decimal("-1.00"), Decimal("1.005"),
                                    Decimal("NaN"), Decimal("Infinity")])
def test_sale_refuses_unsafe_amounts(client: BraintreeClient, sim: BraintreeSimulator, amount: Any) -> None:
    with pytest.raises(ValueError):
        client.sale(order_id="inv-7", amount=amount, customer_id="payer", api_request_key="charge:inv-7")
    assert sim.calls == []


def test_sale_sends_two_decimals(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    assert client.sale(order_id="inv-8", amount=Decimal("12.5"), customer_id="payer",
                       api_request_key="charge:inv-8").amount == Decimal("12.50")
    assert b"<amount>12.50</amount>" in sim.calls_to("POST", SALES)[0].body


def test_lost_sale_answer_is_unavailable_then_found_and_replayed(client: BraintreeClient, sim: BraintreeSimulator
                                                                 ) -> None:
    sim.add_customer("payer")
    sim.faults.add("POST", SALES, after=503)  # the gateway charged; the answer was lost
    with pytest.raises(ServiceUnavailable):
        charge(client, "inv-9")
    found = client.find_successful_sale("inv-9")
    [charged] = sim.sales_for_order("inv-9")
    assert found is not None and found.id == charged["id"] and found.amount == Decimal("49.99")
    replay = charge(client, "inv-9")  # same api_request_key, same body: the same transaction, no second charge
    assert (replay.outcome, replay.transaction_id) == ("charged", charged["id"])
    assert len(sim.sales_for_order("inv-9")) == 1


def test_sale_timeout_is_unavailable_and_reconcilable(sim: BraintreeSimulator, redis_conn: redis.Redis) -> None:
    client = short_timeout_client(sim, redis_conn)
    sim.add_customer("payer")
    sim.faults.add("POST", SALES, delay=0.5)  # answered after the client gave up; the charge still happens
    with pytest.raises(ServiceUnavailable, match="ReadTimeout"):
        charge(client, "inv-10")
    wait_for(lambda: sim.sales_for_order("inv-10"))
    found = client.find_successful_sale("inv-10")
    assert found is not None and found.id == sim.sales_for_order("inv-10")[0]["id"]


def test_find_successful_sale_skips_declines(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    assert client.find_successful_sale("inv-11") is None
    assert charge(client, "inv-11", "2001.00").outcome == "declined"
    assert client.find_successful_sale("inv-11") is None
    ok = client.sale(order_id="inv-11", amount=Decimal("20.00"), customer_id="payer", api_request_key="charge:2")
    found = client.find_successful_sale("inv-11")
    assert found is not None and found.id == ok.transaction_id


def test_search_sales_since(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    since = datetime.now(UTC) - timedelta(seconds=5)
    ids = {charge(client, order, amount).transaction_id
           for order, amount in [("inv-a", "10.00"), ("inv-b", "2000.00"), ("zz-c", "30.00")]}
    assert {t.id for t in client.search_sales(since=since)} == ids
    assert {t.order_id for t in client.search_sales(since=since, order_id_prefix="inv-")} == {"inv-a", "inv-b"}
    # an aware non-UTC time is converted (the SDK would otherwise send local time labelled Z)
    assert {t.id for t in client.search_sales(since=since.astimezone(timezone(timedelta(hours=5))))} == ids
    assert client.search_sales(since=since.replace(tzinfo=None)) != []  # naive = UTC
    assert client.search_sales(since=datetime.now(UTC) + timedelta(minutes=1)) == []


# -- transport and auth errors, breaker -------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status"), [({"status": 408}, 408), ({"status": 429}, 429), ({"status": 500}, 500),
                                               ({"status": 502}, 502), ({"status": 503}, 503), ({"status": 504}, 504)])
def test_transient_statuses_are_unavailable(client: BraintreeClient, sim: BraintreeSimulator,
                                            fault: dict[str, Any], status: int) -> None:
    sim.faults.add("GET", f"{CUSTOMERS}/*", **fault)
    with pytest.raises(ServiceUnavailable) as info:
        client.find_customer("payer")
    assert info.value.status == status and not isinstance(info.value, CircuitOpen)
    assert pickle.loads(pickle.dumps(info.value)).status == status  # crosses RQ's fork


def test_search_without_results_is_unavailable(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    # the SDK's "search timeout": a 200 whose body has no search results
    sim.faults.add("POST", f"{SALES}/advanced_search_ids", status=200, body="<unexpected/>")
    with pytest.raises(ServiceUnavailable, match="search timeout"):
        client.find_successful_sale("inv-13")


def test_unreadable_sale_answer_is_unavailable(client: BraintreeClient, sim: BraintreeSimulator) -> None:
    sim.add_customer("payer")
    sim.faults.add("POST", SALES, status=201, body="")  # the SDK's sale() returns None for an empty body
    with pytest.raises(ServiceUnavailable, match="outcome unknown"):
        charge(client, "inv-14")


@pytest.mark.parametrize(("code", "error"), [("915233", ServiceUnavailable), ("915235", ServiceUnavailable),
                                             ("915232", ServiceRejected), ("81000", ServiceRejected)])
def test_sale_validation_codes(client: BraintreeClient, sim: BraintreeSimulator, code: str, error: type) -> None:
    body = api_error_response("Refused", [(("transaction",), code, "api_request_key", "Refused")])
    sim.faults.add("POST", SALES, status=422, body=body)
    with pytest.raises(error) as info:
        charge(client, "inv-15")
    assert info.value.code == code


def test_read_timeout_and_refused_connection_are_unavailable(sim: BraintreeSimulator, redis_conn: redis.Redis
                                                             ) -> None:
    sim.faults.add("GET", f"{CUSTOMERS}/*", delay=0.5)
    with pytest.raises(ServiceUnavailable, match="ReadTimeout"):
        short_timeout_client(sim, redis_conn).find_customer("payer")
    closed = make_settings(braintree_environment=f"http://127.0.0.1:{free_port()}", http_timeout=(0.5, 0.5))
    with pytest.raises(ServiceUnavailable, match="ConnectionError"):
        build_braintree_client(closed, redis_conn).find_customer("payer")
    time.sleep(0.35)  # let the delayed request finish before the next test resets the simulator


@pytest.mark.parametrize(("status", "name"), [(401, "AuthenticationError"), (403, "AuthorizationError"),
                                              (426, "UpgradeRequiredError"), (400, "UnexpectedError")])
def test_permanent_statuses_are_rejected(client: BraintreeClient, sim: BraintreeSimulator, status: int, name: str
                                         ) -> None:
    sim.faults.add("POST", SALES, status=status)
    with pytest.raises(ServiceRejected, match=name):
        charge(client, "inv-12")


def test_bad_keys_are_rejected_and_do_not_trip_the_breaker(sim: BraintreeSimulator, redis_conn: redis.Redis) -> None:
    bad = BraintreeClient(gateway=sim.gateway(private_key="wrong"), breaker=make_breaker(redis_conn, "braintree"))
    for _ in range(7):
        with pytest.raises(ServiceRejected) as info:
            bad.find_customer("payer")
        assert info.value.status == 401 and not isinstance(info.value, ServiceUnavailable)


def test_breaker_opens_after_five_transient_failures(sim: BraintreeSimulator, redis_conn: redis.Redis) -> None:
    sim.add_customer("payer")
    client = BraintreeClient(gateway=sim.gateway(), breaker=make_breaker(redis_conn, "braintree"))
    sim.faults.add("POST", SALES, status=503, times=5)
    for n in range(5):
        with pytest.raises(ServiceUnavailable) as info:
            charge(client, f"inv-b{n}")
        # the fifth trips the breaker but was sent: it is reported as itself, not as "nothing was sent"
        assert not isinstance(info.value, CircuitOpen)
    with pytest.raises(CircuitOpen) as opened:
        charge(client, "inv-b5")
    assert len(sim.calls_to("POST", SALES)) == 5 and sim.transactions == []
    assert opened.value.retry_after is not None and 0 < opened.value.retry_after <= 60
    # the state is in Redis: another client (another worker process) sees the open circuit too
    with pytest.raises(CircuitOpen):
        BraintreeClient(gateway=sim.gateway(), breaker=make_breaker(redis_conn, "braintree")).find_customer("payer")
    assert sim.calls_to("GET", f"{CUSTOMERS}/*") == []


def test_429s_do_not_open_the_shared_breaker(sim: BraintreeSimulator, redis_conn: redis.Redis) -> None:
    # The payment page mints client tokens from the web: a burst answered 429 must not open the circuit that
    # collections share (a 429 means Braintree is up and asks us to slow down).
    sim.add_customer("payer")
    client = BraintreeClient(gateway=sim.gateway(), breaker=make_breaker(redis_conn, "braintree"))
    sim.faults.add("POST", "/merchants/*/client_token", status=429, times=8)
    for _ in range(8):
        with pytest.raises(RateLimited):
            client.client_token()
    assert client.find_customer("payer") is not None  # not CircuitOpen


def test_429s_never_open_the_breaker(sim: BraintreeSimulator, redis_conn: redis.Redis) -> None:
    sim.add_customer("payer")
    client = BraintreeClient(gateway=sim.gateway(), breaker=make_breaker(redis_conn, "braintree"))
    sim.faults.add("GET", f"{CUSTOMERS}/*", status=429, times=7)
    for _ in range(7):  # more than the breaker's five
        with pytest.raises(RateLimited) as info:
            client.find_customer("payer")
        assert info.value.status == 429
    assert client.find_customer("payer") is not None  # the circuit is still closed: the call goes through
    assert len(sim.calls_to("GET", f"{CUSTOMERS}/*")) == 8


def test_merchant_without_request_keys_still_gets_one_sale(sim, client):
    """Braintree limits api_request_key to selected merchants: refused with 91523x, the sale goes without it."""
    sim.add_customer("cust-nokey", card="valid")
    sim.request_keys_allowed = False
    try:
        result = client.sale(order_id="inv-nokey", amount=Decimal("12.00"), customer_id="cust-nokey",
                             api_request_key="charge-inv-nokey-1")
    finally:
        sim.request_keys_allowed = True
    assert result.outcome == "charged"
    [sale] = sim.sales_for_order("inv-nokey")
    assert sale["api_request_key"] is None
