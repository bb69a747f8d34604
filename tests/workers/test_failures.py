"""The worker's exception handler: transient errors keep the schedule (and Retry-After), permanent ones fail now."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integration.errors import CircuitOpen, NoHandler, ServiceRejected, ServiceUnavailable
from integration.queueing import enqueue_job
from workers.failures import is_transient

from ..conftest import run_worker


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
