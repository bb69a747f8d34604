"""``RateBudget`` on real Redis: from several OS processes, and in front of the Attio simulator's rate limit."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from integration.clients.attio import build_attio_client
from integration.clients.budget import JOB_MARGIN_SECONDS, RateBudget
from integration.errors import RateLimited, ServiceError, ServiceUnavailable
from integration.queueing import make_redis
from integration.worklane import BULK, MONEY, deadline
from simulators.attio import AttioSimulator
from tests.conftest import make_settings

LIMIT, PERIOD = 20, 1.0


@pytest.fixture(scope="module")
def redis_url(module_redis_url: str) -> str:
    """This module's own redis-server (budget windows and breaker counts must not be flushed by other runs)."""
    return module_redis_url


@pytest.fixture
def redis_conn(module_redis_conn: redis.Redis) -> redis.Redis:
    """A flushed connection to this module's own Redis (overrides conftest's)."""
    return module_redis_conn


def _hammer(url: str, name: str, ready: Any, results: Any, duration: float) -> None:
    """In a child process: once all are ready, take every slot it can for ``duration``; report admission times."""
    connection = make_redis(url)
    budget = RateBudget(connection, name, limit=LIMIT, period=PERIOD)
    connection.ping()
    ready.wait(timeout=60)
    stop_at = time.time() + duration
    admitted: list[float] = []
    while time.time() < stop_at:
        if budget.try_acquire() == 0.0:
            admitted.append(time.time())
        else:
            time.sleep(0.001)
    connection.close()
    results.put(admitted)


def test_four_processes_never_get_more_than_the_limit_per_window(redis_conn: redis.Redis, redis_url: str) -> None:
    # fork: a spawned child would re-import this module (conftest, Flask, the simulators), seconds on a busy box
    ctx = multiprocessing.get_context("fork")
    ready, results = ctx.Barrier(5), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(redis_url, "test:hammer", ready, results, 2.0)) for _ in range(4)]
    for proc in procs:
        proc.start()
    ready.wait(timeout=60)  # every child connected: they start together
    admitted = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    stamps = sorted(t for times in admitted for t in times)
    assert all(admitted), "every process got some slots"
    # Budget windows are period * 1.05 long (Redis clock); 0.9 s leaves room for the reply's latency.
    busiest = max(sum(1 for t in stamps[i:] if t < start + 0.9 * PERIOD) for i, start in enumerate(stamps))
    assert busiest <= LIMIT
    assert 2 * LIMIT <= len(stamps) <= 3 * LIMIT  # ~2.0 s / 1.05 s windows: the budget is used, not starved


def test_a_slot_that_frees_within_max_wait_is_waited_for(redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, "test:wait", limit=2, period=0.3, max_wait=1.0)
    started = time.monotonic()
    for _ in range(3):
        budget.acquire("attio")
    assert 0.25 <= time.monotonic() - started < 1.0


def test_no_slot_within_max_wait_raises_unavailable_with_retry_after(redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, "test:spent", limit=2, period=1.0, max_wait=0.1, reserve=0)
    budget.acquire("attio")
    budget.acquire("attio")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        budget.acquire("attio", BULK)
    assert time.monotonic() - started < 0.1  # it does not sleep when the wait cannot fit
    assert caught.value.provider == "attio"
    assert caught.value.retry_after is not None and 0.5 < caught.value.retry_after <= 1.05


def test_bulk_work_is_paced_and_never_takes_the_money_reserve(redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, "test:lanes", limit=4, period=2.0, reserve=0.25)  # bulk: 3, one per 0.7 s
    assert budget.try_acquire(BULK) == 0.0
    assert 0.6 < budget.try_acquire(BULK) <= 0.7  # paced: no burst of bulk calls
    started = time.monotonic()
    budget.acquire("zoho", BULK)
    budget.acquire("zoho", BULK)
    assert 1.3 < time.monotonic() - started < 1.6
    assert budget.try_acquire(BULK) > 0.5  # 3 of 4 taken: the last one is money's
    assert budget.try_acquire(MONEY) == 0.0  # ... at once
    assert budget.try_acquire(MONEY) > 0.0


def test_after_a_pause_bulk_may_take_its_burst_at_once(redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, "test:burst", limit=30, period=6.0, reserve=0.25, bulk_burst=7)  # bulk 22
    assert [budget.try_acquire(BULK) for _ in range(7)] == [0.0] * 7
    assert 0.2 < budget.try_acquire(BULK) <= 0.29  # then one per 6.3 s / 22


def test_bulk_work_stands_aside_while_money_waits(redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, "test:standaside", limit=2, period=0.4, reserve=0.5)
    assert budget.try_acquire(MONEY) == 0.0 and budget.try_acquire(MONEY) == 0.0  # money is never paced
    wait = budget.try_acquire(MONEY)  # full: money waits, and says so
    assert 0 < wait <= 0.42
    time.sleep(wait + 0.02)  # the slot money waited for is free now
    assert budget.try_acquire(BULK) > 0  # ... but bulk may not take it
    assert budget.try_acquire(MONEY) == 0.0


def test_a_spent_budget_is_not_now(redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, "test:notnow", limit=1, period=1.0, max_wait=0.0)
    budget.acquire("zoho")
    with pytest.raises(RateLimited):
        budget.acquire("zoho", BULK)


def test_money_waits_a_whole_window_when_the_job_has_the_time(redis_conn: redis.Redis) -> None:
    """Money waits in place (up to a window, within MONEY_WAIT_CAP): every second it waits it claims the next slot."""
    budget = RateBudget(redis_conn, "test:moneywait", limit=1, period=0.5, max_wait=0.0)
    budget.acquire("zoho", MONEY)
    started = time.monotonic()
    budget.acquire("zoho", MONEY)
    assert 0.4 < time.monotonic() - started < 1.0
    with deadline(JOB_MARGIN_SECONDS + 0.1), pytest.raises(RateLimited):  # ... but not past the job's time
        budget.acquire("zoho", MONEY)


def test_a_deferred_money_call_keeps_bulk_off_until_it_is_due_back(redis_conn: redis.Redis) -> None:
    budget = RateBudget(redis_conn, "test:claim", limit=2, period=1.0, max_wait=0.0, reserve=0.5)
    budget.acquire("zoho", MONEY)
    budget.acquire("zoho", MONEY)
    with deadline(JOB_MARGIN_SECONDS), pytest.raises(RateLimited) as caught:  # no time to wait: deferred
        budget.acquire("zoho", MONEY)
    time.sleep(caught.value.retry_after + 0.3)  # the slot it waited for is free, the hold-off of a wait is over
    assert budget.try_acquire(BULK) > 0  # ... but the deferred charge still claims it
    assert budget.try_acquire(MONEY) == 0.0


@pytest.fixture
def slow_sim() -> Iterator[AttioSimulator]:
    """An Attio simulator that answers 429 past 10 writes in any calendar second."""
    sim = AttioSimulator(writes_per_second=10).start()
    sim.setup_schema()
    yield sim
    sim.stop()


def test_writes_through_one_shared_budget_never_hit_attios_limit(
    slow_sim: AttioSimulator, redis_conn: redis.Redis
) -> None:
    settings = make_settings(attio_api_url=slow_sim.url, attio_writes_per_second=10)
    stop_at = time.monotonic() + 2.0
    errors: list[ServiceError] = []

    def writer(n: int) -> None:
        client = build_attio_client(settings, redis_conn)  # own client and session, shared budget in Redis
        i = 0
        while time.monotonic() < stop_at:
            try:
                client.create_record("services", {"external_id": f"zoho-plan:w{n}-{i}"})
            except ServiceError as exc:
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    elapsed = time.monotonic() - started
    assert errors == []
    assert slow_sim.rate_limited == 0
    assert 15 <= slow_sim.writes_ok <= 10 * (elapsed + 1)
    assert len(slow_sim.records("services")) == slow_sim.writes_ok
