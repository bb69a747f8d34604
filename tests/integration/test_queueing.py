"""enqueue_events: dedupe record and job written together, once, whatever the concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from rq import Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from integration import queueing
from integration.errors import QueueUnavailable
from integration.queueing import (
    DEDUPE_TTL,
    EventEnvelope,
    enqueue_events,
    job_id_for,
    make_redis,
    retry_policy,
)
from integration.routing import route_for

from ..conftest import TEST_REDIS_URL
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


def test_a_write_refused_inside_the_script_leaves_that_event_unacknowledged(redis_conn, queues):
    # The second event's job key already holds a string, so the script's HSET for it fails (WRONGTYPE) after the
    # first event was written: the first is complete (job and dedupe record), the second has neither.
    blocker = "rq:job:" + job_id_for("zoho", "b")
    redis_conn.set(blocker, "not a hash")
    with pytest.raises(QueueUnavailable):
        enqueue_events(redis_conn, queues, [envelope("a"), envelope("b")], retry_schedule=(1,))
    assert len(redis_conn.keys("dedupe:*")) == 1
    assert queues["webhooks"].job_ids == [job_id_for("zoho", "a")]
    redis_conn.delete(blocker)
    # The sender retries the whole delivery (it got a 503): the first is a duplicate, the second goes in.
    outcomes = enqueue_events(redis_conn, queues, [envelope("a"), envelope("b")], retry_schedule=(1,))
    assert [o.duplicate for o in outcomes] == [True, False]
    assert job_count(queues) == 2


def test_the_job_record_is_the_one_rq_writes(redis_conn, queues):
    """The script writes the hash of RQ's own ``Job.to_dict``: RQ must read back exactly what its own
    ``enqueue_job`` would have stored for the same job, field for field."""
    env = envelope("same")
    [ours] = enqueue_events(redis_conn, queues, [env], retry_schedule=(10, 100))
    mine = Job.fetch(ours.job_id, connection=redis_conn, serializer=JSONSerializer)
    theirs = queues["webhooks"].enqueue_job(queues["webhooks"].create_job(
        env.route.job, args=mine.args, job_id="rq-own", timeout=queueing.JOB_TIMEOUT,
        result_ttl=queueing.RESULT_TTL, failure_ttl=queueing.FAILURE_TTL, ttl=None,
        retry=Retry(max=2, interval=mine.retry_intervals), description=mine.description, meta=mine.meta,
    ))
    theirs = Job.fetch("rq-own", connection=redis_conn, serializer=JSONSerializer)
    skip = {"created_at", "enqueued_at"}
    assert {k: v for k, v in mine.to_dict().items() if k not in skip} == {
        k: v for k, v in theirs.to_dict().items() if k not in skip
    }
    assert sorted(redis_conn.hkeys(mine.key)) == sorted(redis_conn.hkeys(theirs.key))  # no field more or less
    assert mine.get_status() == theirs.get_status() == "queued"
    assert mine.origin == "webhooks" and mine.func_name == env.route.job
    assert abs((mine.enqueued_at - theirs.enqueued_at).total_seconds()) < 5
    assert sorted(redis_conn.smembers("rq:queues")) == [b"rq:queue:webhooks"]
    assert queues["webhooks"].job_ids == [ours.job_id, "rq-own"]


def test_without_a_retry_policy_the_job_has_none(redis_conn, queues):
    [outcome] = enqueue_events(redis_conn, queues, [envelope("no-retry")], retry_schedule=())
    job = Job.fetch(outcome.job_id, connection=redis_conn, serializer=JSONSerializer)
    assert job.retries_left is None and job.retry_intervals is None


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


def test_enqueue_outlives_a_flushed_script_cache_and_a_dropped_connection(redis_conn, queues):
    """redis-py's ``Script`` reloads the script Redis forgot; its client replaces a connection Redis closed."""
    client = make_redis(TEST_REDIS_URL)
    assert not enqueue_events(client, queues, [envelope("f1")], retry_schedule=(1,))[0].duplicate
    redis_conn.script_flush()
    assert not enqueue_events(client, queues, [envelope("f2")], retry_schedule=(1,))[0].duplicate
    assert redis_conn.client_kill_filter(_id=client.client_id()) == 1  # the client's one idle connection
    assert not enqueue_events(client, queues, [envelope("f3")], retry_schedule=(1,))[0].duplicate
    assert job_count(queues) == 3
    client.close()
