"""The worker's exception handler: transient errors keep the schedule (and Retry-After), permanent ones fail now."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from integration.errors import CircuitOpen, NoHandler, ServiceRejected, ServiceUnavailable
from integration.queueing import enqueue_job
from workers.failures import DEFER_UNNAMED_SECONDS, is_transient

from ..conftest import run_until_idle, run_worker

SCRIPTED = "tests.workers.jobs_for_tests.scripted"


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ServiceUnavailable("zoho", "timeout"), True),
        (CircuitOpen("attio", "circuit open"), True),
        (ServiceRejected("attio", "bad value", status=400), False),
        (NoHandler("nothing"), False),
        (KeyError("bug"), False),
    ],
)
def test_classification(exc, transient):
    assert is_transient(exc) is transient


def test_transient_error_is_scheduled_for_retry(redis_conn, queues):
    q = queues["webhooks"]
    job_id = enqueue_job(q, "tests.workers.jobs_for_tests.fail_transient", {}, retry_schedule=(30, 60))
    run_worker(redis_conn)
    job = q.fetch_job(job_id)
    assert job.get_status() == "scheduled"
    assert job.retries_left == 1
    assert q.failed_job_registry.count == 0
    assert q.scheduled_job_registry.count == 1


def test_retry_after_pushes_the_next_attempt_out(redis_conn, queues):
    q = queues["webhooks"]
    job_id = enqueue_job(q, "tests.workers.jobs_for_tests.fail_transient", {"retry_after": 500},
                         retry_schedule=(5, 5))
    run_worker(redis_conn)
    [scheduled_id] = q.scheduled_job_registry.get_job_ids()
    assert scheduled_id == job_id
    when = q.scheduled_job_registry.get_scheduled_time(job_id)
    delay = (when - datetime.now(UTC)).total_seconds()
    assert 450 < delay <= 500


def test_permanent_error_fails_at_once_without_using_retries(redis_conn, queues):
    q = queues["webhooks"]
    job_id = enqueue_job(q, "tests.workers.jobs_for_tests.fail_permanent", {}, retry_schedule=(1, 1, 1))
    run_worker(redis_conn)
    job = q.fetch_job(job_id)
    assert job.get_status() == "failed"
    assert q.scheduled_job_registry.count == 0
    assert q.failed_job_registry.get_job_ids() == [job_id]
    assert "value_not_found" in job.latest_result().exc_string


def test_transient_errors_end_in_the_failed_registry_when_the_schedule_is_spent(redis_conn, queues):
    q = queues["webhooks"]
    job_id = enqueue_job(q, "tests.workers.jobs_for_tests.fail_transient", {}, retry_schedule=(0,))
    run_worker(redis_conn)  # attempt 1 fails; retry interval 1 s (jitter floor)
    job = q.fetch_job(job_id)
    # Move the scheduled retry due now and run it.
    q.scheduled_job_registry.remove(job)
    q.enqueue_job(job)
    run_worker(redis_conn)
    assert q.fetch_job(job_id).get_status() == "failed"
    assert q.failed_job_registry.count == 1


# -- "not now" ----------------------------------------------------------------------------------------------------
def scheduled_in(queue, job_id: str) -> float:
    """Seconds until the job's scheduled run."""
    when = queue.scheduled_job_registry.get_scheduled_time(job_id)
    return (when - datetime.now(UTC)).total_seconds()


@pytest.mark.parametrize("kind", ["429", "open", "busy"])
def test_not_now_longer_than_the_whole_schedule_ends_in_success(redis_conn, queues, kind):
    """Eight "not now" runs against a schedule of two retries: deferred each time, then done, 0 failed jobs."""
    q = queues["webhooks"]
    job_id = enqueue_job(q, SCRIPTED, {"counter": "runs", "script": [kind] * 8, "retry_after": 1},
                         retry_schedule=(1, 1))
    run_until_idle(redis_conn, rounds=12)
    job = q.fetch_job(job_id)
    assert job.get_status() == "finished" and job.return_value() == "ok after 9 runs"
    assert q.failed_job_registry.count == 0
    assert job.meta["deferrals"] == 8 and job.meta["attempts"] == 9
    assert job.retries_left == 2  # the schedule is untouched


def test_a_deferral_waits_for_the_time_named_with_jitter(redis_conn, queues):
    q = queues["webhooks"]
    job_id = enqueue_job(q, SCRIPTED, {"counter": "runs", "script": ["open"], "retry_after": 100},
                         retry_schedule=(5, 5))
    run_worker(redis_conn)
    assert 98 < scheduled_in(q, job_id) <= 126  # 100 s, stretched by up to 25 %
    job = q.fetch_job(job_id)
    assert job.retries_left == 2 and job.meta["last_deferral"]["seconds"] >= 100  # no attempt used


def test_a_429_without_retry_after_is_deferred_a_default_while(redis_conn, queues):
    q = queues["webhooks"]
    job_id = enqueue_job(q, SCRIPTED, {"counter": "runs", "script": ["429"]}, retry_schedule=())
    run_worker(redis_conn)  # a job without a retry schedule is deferred too
    # the jitter stretches it by up to 25 %, and the delay is rounded up to a whole second
    assert DEFER_UNNAMED_SECONDS - 2 < scheduled_in(q, job_id) <= math.ceil(DEFER_UNNAMED_SECONDS * 1.25)
    assert q.failed_job_registry.count == 0


def test_a_5xx_still_uses_the_schedule_after_deferrals(redis_conn, queues):
    """Two deferrals, then 503s: the 503s spend the schedule of two retries and the job fails on the third."""
    q = queues["webhooks"]
    job_id = enqueue_job(q, SCRIPTED, {"counter": "runs", "script": ["429", "open", "503", "503", "503"],
                                       "retry_after": 1}, retry_schedule=(1, 1))
    run_until_idle(redis_conn, rounds=8)
    job = q.fetch_job(job_id)
    assert job.get_status() == "failed" and q.failed_job_registry.get_job_ids() == [job_id]
    assert job.meta["attempts"] == 5 and job.meta["deferrals"] == 2 and job.retries_left == 0
    assert int(redis_conn.get("runs")) == 5  # 2 deferred runs + 3 attempts (the first and two retries)


def test_a_daily_cap_wait_does_not_use_up_the_deadline(redis_conn, queues):
    """Zoho's daily cap met at 00:05 defers money work until the organization's midnight, ~24 h (more with the
    jitter). At the reset every deferred job comes back at once and meets the minute's budget: that "not now" defers
    it again; the day's wait was Zoho's schedule, not an outage, and never makes it DeferredTooLong (a failed
    collection)."""
    from .jobs_for_tests import DAY_LEFT

    q = queues["webhooks"]
    job_id = enqueue_job(q, SCRIPTED, {"counter": "runs", "script": ["day", "429"], "retry_after": 1},
                         retry_schedule=(1, 1))
    run_worker(redis_conn)  # 00:05: Zoho says the day is over
    job = q.fetch_job(job_id)
    waited = job.meta["last_deferral"]["seconds"]
    assert DAY_LEFT <= waited <= DAY_LEFT * 1.25 + 1
    job.meta["first_run_at"] = (datetime.now(UTC) - timedelta(seconds=waited + 60)).isoformat()  # the wait is over
    job.save_meta()
    run_until_idle(redis_conn, rounds=1)  # after the reset: the minute's budget is spent (every job is back)
    job = q.fetch_job(job_id)
    assert q.failed_job_registry.count == 0, job.latest_result().exc_string
    assert job.get_status() == "scheduled" and job.meta["deferrals"] == 2
    run_until_idle(redis_conn)
    assert q.fetch_job(job_id).return_value() == "ok after 3 runs"


def test_not_now_past_the_deadline_fails_the_job(redis_conn, queues):
    q = queues["webhooks"]
    first = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    job_id = enqueue_job(q, SCRIPTED, {"counter": "runs", "script": ["429"] * 3, "retry_after": 1},
                         retry_schedule=(1, 1), meta={"first_run_at": first, "deferrals": 700})
    run_until_idle(redis_conn)
    job = q.fetch_job(job_id)
    assert job.get_status() == "failed" and int(redis_conn.get("runs")) == 1
    assert "DeferredTooLong: not now for 25.0 h (deadline 24 h, 700 deferrals)" in job.latest_result().exc_string
