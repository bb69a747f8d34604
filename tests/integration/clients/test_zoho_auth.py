"""The shared Zoho token and budget across real OS processes: one mint per refresh, the org's limits kept."""

from __future__ import annotations

import contextvars
import json
import multiprocessing
import threading
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from typing import Any, cast

import pytest
import redis
import requests

from integration import worklane
from integration.clients.budget import JOB_MARGIN_SECONDS
from integration.clients.zoho import build_zoho_client
from integration.clients.zoho_auth import ZohoTokens
from integration.errors import ServiceUnavailable
from integration.queueing import make_redis
from simulators.zoho import ZohoSimulator
from tests.conftest import TEST_REDIS_URL, make_settings

TOKEN_PATH = "/oauth/v2/token"
PROCESSES = 4
BUDGET = 20  # requests per minute, for both the simulator and our limiter
# Fresh interpreters (no threads, sockets or locks inherited from pytest and the simulator), forked from a server
# that has imported this module once: each batch of children then starts in milliseconds, not seconds.
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload([__name__])


@pytest.fixture(scope="module")
def server() -> Iterator[ZohoSimulator]:
    """One simulator for the module."""
    sim = ZohoSimulator()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: ZohoSimulator, redis_conn: redis.Redis) -> ZohoSimulator:
    """The simulator, reset, with no limits unless a test sets them."""
    server.reset()
    server.token_lifetime = 3600
    server.requests_per_minute = server.max_concurrent = None
    return server


def make_tokens(accounts_url: str, connection: redis.Redis, clock_offset: float = 0.0) -> ZohoTokens:
    """A process's own ZohoTokens, its clock shifted by ``clock_offset`` seconds."""
    settings = make_settings(zoho_accounts_url=accounts_url)
    return ZohoTokens(
        connection,
        accounts_url=accounts_url,
        client_id=settings.zoho_client_id,
        client_secret=settings.zoho_client_secret,
        refresh_token=settings.zoho_refresh_token,
        organization_id=settings.zoho_organization_id,
        http=requests.Session(),
        timeout=settings.http_timeout,
        clock=lambda: time.time() + clock_offset,
    )


def _ask_for_token(accounts_url: str, clock_offset: float, barrier: Barrier, out: Any) -> None:
    """Child process: its own Redis connection and ZohoTokens; all ask at the same moment."""
    connection = make_redis(TEST_REDIS_URL)
    tokens = make_tokens(accounts_url, connection, clock_offset)
    barrier.wait(timeout=20)
    try:
        out.put(tokens.token()[0])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        out.put(f"error: {exc!r}")


def _call_for_a_while(accounts_url: str, seconds: float, barrier: Barrier, out: Any) -> None:
    """Child process: three threads calling Zoho until the deadline; reports (ok, budget refusals, errors)."""
    connection = make_redis(TEST_REDIS_URL)
    settings = make_settings(zoho_accounts_url=accounts_url, zoho_requests_per_minute=BUDGET)
    counts = {"ok": 0, "budget": 0, "error": 0}
    lock = threading.Lock()

    def work(deadline: float) -> None:
        client = build_zoho_client(settings, connection)
        while time.monotonic() < deadline:
            try:
                client.get_plan("basic")
                outcome = "ok"
            except ServiceUnavailable as exc:
                outcome = "budget" if "rate budget" in exc.message else "error"
            with lock:
                counts[outcome] += 1
            if outcome != "ok":
                time.sleep(0.05)

    barrier.wait(timeout=20)
    deadline = time.monotonic() + seconds
    # jobs with `seconds` left: a call waits for the budget only that long (money would otherwise wait a minute)
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(_within, seconds, work, deadline))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(counts)


def _within(seconds: float, work: Any, deadline: float) -> None:
    with worklane.deadline(seconds + JOB_MARGIN_SECONDS):
        work(deadline)


def run_processes(target: Any, *args: Any) -> list[Any]:
    """Run ``PROCESSES`` children of ``target(*args, barrier, queue)``; their results."""
    barrier, out = _CTX.Barrier(PROCESSES), _CTX.Queue()
    procs = [_CTX.Process(target=target, args=(*args, barrier, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    return results


# -- one mint per refresh ---------------------------------------------------------------------------------------
def test_four_processes_at_once_mint_one_token(sim: ZohoSimulator) -> None:
    sim.faults.add("POST", TOKEN_PATH, delay=0.3)  # the mint is slow: the others must wait, not mint too
    tokens = run_processes(_ask_for_token, sim.url, 0.0)
    assert len(set(tokens)) == 1 and tokens[0] in sim.live_tokens()
    assert sim.tokens_minted == 1 and len(sim.calls_to("POST", TOKEN_PATH)) == 1


def test_a_token_near_expiry_is_refreshed_once(sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    old = make_tokens(sim.url, redis_conn).token()[0]
    sim.faults.add("POST", TOKEN_PATH, delay=0.3)
    tokens = run_processes(_ask_for_token, sim.url, 3600 - 200)  # 200 s before expiry: inside the 5 min margin
    assert sim.tokens_minted == 2
    new = make_tokens(sim.url, redis_conn, 3600 - 200).token()[0]
    assert new != old and set(tokens) <= {old, new}  # losers of the lock keep using the still-valid token
    assert sim.tokens_minted == 2


def test_the_token_is_shared_across_connections(sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    other = make_redis(TEST_REDIS_URL)
    try:
        first, second = make_tokens(sim.url, redis_conn), make_tokens(sim.url, other)
        token = first.token()
        assert second.token() == first.token() == token and token[1] == sim.url
    finally:
        other.close()
    assert sim.tokens_minted == 1


def test_invalidate_drops_only_the_stored_token(sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    tokens = make_tokens(sim.url, redis_conn)
    first = tokens.token()[0]
    assert tokens.invalidate("1000.someone-elses") is False and tokens.token()[0] == first
    assert tokens.invalidate(first) is True
    second = tokens.token()[0]
    assert second != first and sim.tokens_minted == 2
    assert tokens.invalidate(first) is False  # a late 401 from another process must not drop the new one
    assert tokens.invalidate(second) is False  # refused again right after a refresh: kept, not re-minted
    assert tokens.token()[0] == second and sim.tokens_minted == 2


@pytest.mark.parametrize(
    ("answer", "lifetime"),
    [
        ({"expires_in": 3600}, 3600),
        ({"expires_in_sec": 1800, "expires_in": 1800000}, 1800),
        ({"expires_in": 3600000}, 3600),  # milliseconds, as some Zoho services sent
        ({"expires_in": "soon"}, 3600),
        ({}, 3600),
    ],
)
def test_expires_in_is_parsed_defensively(
    sim: ZohoSimulator, redis_conn: redis.Redis, answer: dict[str, Any], lifetime: float
) -> None:
    body = {"access_token": sim.issue_token(), "api_domain": sim.url, "token_type": "Bearer", **answer}
    sim.faults.add("POST", TOKEN_PATH, status=200, body=json.dumps(body))
    tokens = make_tokens(sim.url, redis_conn)
    before = time.time()
    assert tokens.token() == (body["access_token"], sim.url)
    raw = cast(dict[bytes, bytes], redis_conn.hgetall(tokens.key))  # a bytes-mode connection
    stored = {k.decode(): v.decode() for k, v in raw.items()}
    assert before - 1 < float(stored["expires_at"]) - lifetime < time.time()
    assert float(stored["refresh_at"]) == pytest.approx(float(stored["expires_at"]) - 300)


def test_a_short_lived_token_is_not_reminted_on_every_call(sim: ZohoSimulator, redis_conn: redis.Redis) -> None:
    sim.token_lifetime = 120  # shorter than the 5-minute margin
    tokens = make_tokens(sim.url, redis_conn)
    assert tokens.token() == tokens.token() == tokens.token()
    assert sim.tokens_minted == 1


# -- the org's budget -------------------------------------------------------------------------------------------
def test_processes_together_stay_within_the_minute_budget_and_five_in_flight(
    sim: ZohoSimulator, redis_conn: redis.Redis
) -> None:
    sim.requests_per_minute, sim.max_concurrent = BUDGET, 5
    sim.add_plan("basic", "Basic", 50)
    sim.faults.add("GET", "/billing/v1/plans/basic", delay=0.1, times=None)  # calls overlap
    make_tokens(sim.url, redis_conn).token()
    results = run_processes(_call_for_a_while, sim.url, 2.0)
    assert sum(r["ok"] for r in results) == BUDGET  # exactly the budget: no more, and none wasted
    assert sum(r["error"] for r in results) == 0 and sum(r["budget"] for r in results) > 0
    assert sim.rate_limited == 0
    assert 1 < sim.max_in_flight_seen <= 5
