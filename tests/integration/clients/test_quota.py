"""Zoho's daily ledger (``integration.clients.quota``) on real Redis, and through the client against the simulator's
daily cap: bulk work stops at the money reserve, money work uses it, Zoho's "daily cap" defers until the reset."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from integration.clients.quota import CallMeter, ZohoLedger, count_operation, usage
from integration.clients.zoho import ZohoClient, build_zoho_client
from integration.errors import RateLimited
from integration.worklane import BULK, MONEY, lane, operation
from simulators.zoho import ZohoSimulator
from tests.conftest import make_settings

NOON = datetime(2025, 7, 1, 12, 0, tzinfo=UTC).timestamp()


def ledger(connection: redis.Redis, *, limit: int = 10, reserve: int = 50, at: float = NOON,
           warnings: list[str] | None = None) -> ZohoLedger:
    return ZohoLedger(connection, "org1", requests_per_day=limit, reserve_percent=reserve, clock=lambda: at,
                      sentry=(warnings if warnings is not None else []).append)


def test_bulk_stops_at_the_reserve_and_money_uses_it(redis_conn: redis.Redis) -> None:
    warnings: list[str] = []
    book = ledger(redis_conn, warnings=warnings)
    for _ in range(5):
        book.take(BULK, "catalog")
    with pytest.raises(RateLimited) as caught:
        book.take(BULK, "sweeps")
    assert caught.value.retry_after == pytest.approx(12 * 3600)  # until the organization's midnight
    for _ in range(5):
        book.take(MONEY, "collection")
    with pytest.raises(RateLimited):
        book.take(MONEY, "collection")
    with pytest.raises(RateLimited):
        book.take(BULK, "audit")
    assert book.used() == 10
    assert book.today()["by_operation"] == {"catalog": 5, "collection": 5}
    assert len(warnings) == 2  # once per lane and day, however many deferrals
    assert ledger(redis_conn, at=NOON + 86400).used() == 0  # the next day starts afresh


def test_the_day_is_the_organizations(redis_conn: redis.Redis) -> None:
    late = datetime(2025, 7, 1, 23, 30, tzinfo=UTC).timestamp()
    book = ledger(redis_conn, at=late)
    assert book.day() == "2025-07-01"
    book.remember_time_zone("Asia/Kolkata")  # UTC+5:30: already July 2nd there
    assert book.day() == "2025-07-02"
    assert book.seconds_to_reset() == pytest.approx(19 * 3600)  # 05:00 there


def test_a_daily_cap_answer_closes_the_day_for_money_work(redis_conn: redis.Redis) -> None:
    book = ledger(redis_conn, limit=1000)
    minute = RateLimited("zoho", "too fast", status=429, code="45")
    assert book.daily_cap(minute) is minute  # early in our day, a per-minute refusal stays one
    deferred = book.daily_cap(RateLimited("zoho", "cap", status=429, code="44"))
    assert deferred.retry_after == pytest.approx(12 * 3600)
    with pytest.raises(RateLimited):
        book.take(MONEY, "collection")  # every process now waits for the reset without calling


def test_a_rate_limit_late_in_our_day_is_the_daily_cap(redis_conn: redis.Redis) -> None:
    book = ledger(redis_conn, limit=10)
    for _ in range(9):
        book.take(MONEY, "collection")
    deferred = book.daily_cap(RateLimited("zoho", "too many", status=429, code="45"))
    assert deferred.retry_after == pytest.approx(12 * 3600)


def test_usage_reports_calls_per_operation(redis_conn: redis.Redis) -> None:
    book = ledger(redis_conn)
    meter = CallMeter(redis_conn, "attio", clock=lambda: NOON)
    for _ in range(2):
        book.take(MONEY, "collection")
        meter.count("collection")
        meter.count("collection")
        count_operation(redis_conn, "collection", clock=lambda: NOON)
    figures = usage(redis_conn, book, clock=lambda: NOON)
    assert figures["calls_per_operation"]["zoho"] == {"collection": 1.0}
    assert figures["calls_per_operation"]["attio"] == {"collection": 2.0}
    assert figures["zoho"]["projected"] == 4  # 2 calls by noon: 4 by the day's end


# -- through the client, against the simulator ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[ZohoSimulator]:
    sim = ZohoSimulator()
    sim.start()
    yield sim
    sim.stop()


def client(sim: ZohoSimulator, connection: redis.Redis, **overrides: Any) -> ZohoClient:
    overrides.setdefault("zoho_requests_per_minute", 1000)
    return build_zoho_client(make_settings(zoho_accounts_url=sim.url, **overrides), connection)


def test_the_client_counts_and_stops_bulk_work_before_the_reserve(server: ZohoSimulator,
                                                                  redis_conn: redis.Redis) -> None:
    server.reset()
    zoho = client(server, redis_conn, zoho_requests_per_day=4, zoho_daily_reserve_percent=50)
    with lane(BULK), operation("catalog"):
        zoho.list_plans()
        zoho.list_addons()
        with pytest.raises(RateLimited):
            zoho.list_products()
    with lane(MONEY), operation("collection"):
        assert zoho.get_invoice("nope") is None
    assert zoho.ledger is not None
    assert zoho.ledger.today()["by_operation"] == {"catalog": 2, "collection": 1}
    assert len(server.calls_to("*", "/billing/v1/*")) == 3  # the refused call was never sent


def test_zohos_daily_cap_defers_money_work_until_the_reset(server: ZohoSimulator, redis_conn: redis.Redis) -> None:
    server.reset()
    server.requests_per_day = 2  # another app of the organization used the rest of the day
    try:
        zoho = client(server, redis_conn)
        zoho.get_invoice("a")
        zoho.get_invoice("b")
        with pytest.raises(RateLimited) as caught:
            zoho.get_invoice("c")
        assert caught.value.code == "44" and caught.value.retry_after is not None
        assert caught.value.retry_after > 60  # until the organization's midnight, not a few seconds
        sent = len(server.calls_to("*", "/billing/v1/*"))
        with pytest.raises(RateLimited):
            zoho.get_invoice("d")  # the day is closed for every process: not sent
        assert len(server.calls_to("*", "/billing/v1/*")) == sent
    finally:
        server.requests_per_day = None


def test_a_call_given_back_after_midnight_is_given_back_to_the_day_that_counted_it(redis_conn: redis.Redis) -> None:
    """A money call counted at 23:59:30 waits up to a minute for the minute's budget; deferred after midnight, it is
    given back to the day that counted it: yesterday does not keep a call never sent, today does not go below zero
    (a negative total would let a call past the quota, in a key without an expiry)."""
    clock = [datetime(2025, 7, 1, 23, 59, 30, tzinfo=UTC).timestamp()]
    book = ZohoLedger(redis_conn, "org1", requests_per_day=10, clock=lambda: clock[0], sentry=[].append)
    counted = book.take(MONEY, "collection")
    clock[0] += 60  # 00:00:30: the budget deferred it
    book.refund(counted)
    assert book.used("2025-07-01") == 0
    assert book.used("2025-07-02") == 0
    assert redis_conn.ttl("quota:zoho:org1:2025-07-02") in (-2, *range(1, 3 * 86400 + 1))  # none, or one that expires


ORG_ZONE_KEYS = ("quota:zoho:10234695:tz", "quota:zoho:10234695:tz:asked")  # make_settings()'s organization
ORGANIZATIONS = "/billing/v1/organizations"


def test_the_client_learns_the_organizations_time_zone_by_itself_once_a_day(server: ZohoSimulator,
                                                                            redis_conn: redis.Redis) -> None:
    """Until it is known the ledger counts UTC days, up to ~17 h off Zoho's reset: the first call of the day (any
    process) asks ``GET /organizations`` first, as bulk work; the other calls do not."""
    server.reset()
    server.tz = ZoneInfo("America/Los_Angeles")
    try:
        redis_conn.delete(*ORG_ZONE_KEYS)
        zoho = client(server, redis_conn)
        other_process = client(server, redis_conn)
        with lane(MONEY), operation("collection"):
            assert zoho.get_invoice("a") is None
            assert other_process.get_invoice("b") is None
        assert zoho.ledger is not None
        assert zoho.ledger.time_zone() == "America/Los_Angeles"
        assert zoho.ledger.day() == datetime.now(ZoneInfo("America/Los_Angeles")).date().isoformat()
        assert len(server.calls_to("GET", ORGANIZATIONS)) == 1
        assert 86000 < redis_conn.ttl(ORG_ZONE_KEYS[1]) <= 86400  # asked again in a day
        redis_conn.delete(ORG_ZONE_KEYS[1])  # a day later
        zoho.get_invoice("c")
        assert len(server.calls_to("GET", ORGANIZATIONS)) == 2
    finally:
        server.tz = UTC


@pytest.mark.parametrize("why", ["bulk share used", "zoho fails"])
def test_an_ask_for_the_time_zone_that_cannot_be_made_never_stops_money_work(server: ZohoSimulator,
                                                                             redis_conn: redis.Redis,
                                                                             why: str) -> None:
    server.reset()
    server.tz = ZoneInfo("America/Los_Angeles")
    try:
        zoho = client(server, redis_conn, zoho_requests_per_day=4, zoho_daily_reserve_percent=50)
        if why == "bulk share used":
            with lane(BULK), operation("catalog"):
                zoho.list_plans()
                zoho.list_addons()  # the bulk half of the day is used: only the money reserve is left
        else:
            server.faults.add("GET", ORGANIZATIONS, status=500, times=None)
        redis_conn.delete(*ORG_ZONE_KEYS)
        with lane(MONEY), operation("collection"):
            assert zoho.get_invoice("a") is None  # answered
            assert zoho.get_invoice("b") is None
        assert zoho.ledger is not None and zoho.ledger.time_zone() == "UTC"  # still unknown
        assert len(server.calls_to("GET", ORGANIZATIONS)) == (0 if why == "bulk share used" else 1)
        assert 0 < redis_conn.ttl(ORG_ZONE_KEYS[1]) <= 3600  # asked again within the hour, not on every call
        assert zoho.ledger.today()["by_operation"].get("collection") == 2  # the ask is bulk work, counted apart
    finally:
        server.tz = UTC
        server.faults.clear()
