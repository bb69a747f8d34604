"""enqueue_events: dedupe record and job written together, once, whatever the concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from integration import queueing
from integration.errors import QueueUnavailable
from integration.queueing import DEDUPE_TTL, EventEnvelope, enqueue_events, job_id_for, retry_policy
from integration.routing import route_for

from ..helpers import job_count, signed_attio


def envelope(dedupe_id: str) -> EventEnvelope:
    route = route_for("zoho", "invoice_created")
    assert route is not None
    return EventEnvelope("zoho", "invoice_created", dedupe_id, route, {"event_id": dedupe_id})


def test_job_carries_retry_policy_ttls_and_meta(redis_conn, queues):
    [outcome] = enqueue_events(redis_conn, queues, [envelope("ev-1")], retry_schedule=(10, 100))
    job = queues["webhooks"].fetch_job(outcome.job_id)
    assert job.retries_left == 2
    assert 8 <= job.retry_intervals[0] <= 12 and 80 <= job.retry_intervals[1] <= 120
    assert job.failure_ttl >= 30 * 24 * 3600
    assert job.ttl is None
    assert job.meta == {"source": "zoho", "event_type": "invoice_created", "event_id": "ev-1"}
    key_ttl = max(redis_conn.ttl(k) for k in redis_conn.keys("dedupe:*"))
    assert DEDUPE_TTL - 5 <= key_ttl <= DEDUPE_TTL
    assert key_ttl >= 7 * 24 * 3600


def test_jitter_differs_between_enqueues():
    intervals = {tuple(retry_policy((60, 600, 6000)).intervals) for _ in range(20)}
    assert len(intervals) > 1


def test_job_ids_are_rq_safe_and_distinct():
    a, b = job_id_for("attio", "key:0"), job_id_for("attio", "key_0")
    assert a != b
    for job_id in (a, b, job_id_for("braintree", "x" * 200), job_id_for("zoho", "::")):
        assert job_id.replace("-", "").replace("_", "").isalnum()


def test_failed_enqueue_leaves_no_dedupe_record(redis_conn, queues, monkeypatch):
    calls = {"n": 0}
    real = queueing._enqueue_in_pipeline

    def flaky(pipe, queue, env, job_id, schedule):
        calls["n"] += 1
        if calls["n"] == 2:
            raise queueing.RedisError("connection lost mid-transaction")
        return real(pipe, queue, env, job_id, schedule)

    monkeypatch.setattr(queueing, "_enqueue_in_pipeline", flaky)
    with pytest.raises(QueueUnavailable):
        enqueue_events(redis_conn, queues, [envelope("a"), envelope("b")], retry_schedule=(1,))
    assert redis_conn.keys("dedupe:*") == []
    assert job_count(queues) == 0
    monkeypatch.setattr(queueing, "_enqueue_in_pipeline", real)
    # The sender retries: now both go in.
    outcomes = enqueue_events(redis_conn, queues, [envelope("a"), envelope("b")], retry_schedule=(1,))
    assert [o.duplicate for o in outcomes] == [False, False]
    assert job_count(queues) == 2


def test_concurrent_identical_deliveries_enqueue_once(live_server, queues):
    req = signed_attio(3, key="burst")
    barrier = threading.Barrier(16)

    def send(_: int) -> int:
        barrier.wait()
        return requests.post(live_server.url + "/webhooks/attio", data=req.body, headers=req.headers,
                             timeout=10).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses.count(202) == 1
    assert statuses.count(200) == 15
    assert job_count(queues) == 3


def test_partial_redelivery_enqueues_only_the_new_events(redis_conn, queues):
    first = enqueue_events(redis_conn, queues, [envelope("x")], retry_schedule=(1,))
    both = enqueue_events(redis_conn, queues, [envelope("x"), envelope("y")], retry_schedule=(1,))
    assert both[0].job_id == first[0].job_id
    assert [o.duplicate for o in both] == [True, False]
    assert job_count(queues) == 2
