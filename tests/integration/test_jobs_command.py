"""``flask jobs failed | retry | purge``: what operators see and do with the failed registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from integration.queueing import enqueue_job

from ..conftest import run_worker


def fail_one(queues, redis_conn, func="tests.workers.jobs_for_tests.fail_permanent", **meta):
    job_id = enqueue_job(queues["webhooks"], func, {}, retry_schedule=(1,),
                         meta={"source": "zoho", "event_type": "invoice_created", "event_id": "ev-9", **meta})
    run_worker(redis_conn)
    return job_id


def run_retries_now(q, redis_conn, rounds=3):
    """Make every scheduled retry due now and run it, until the schedule is spent."""
    for _ in range(rounds):
        for scheduled in q.scheduled_job_registry.get_job_ids():
            job = q.fetch_job(scheduled)
            q.scheduled_job_registry.remove(job)
            q.enqueue_job(job)
        run_worker(redis_conn)


def test_failed_lists_id_handler_event_attempts_error_and_time(app, queues, redis_conn):
    job_id = fail_one(queues, redis_conn)
    result = app.test_cli_runner().invoke(args=["jobs", "failed"])
    assert result.exit_code == 0, result.output
    assert job_id in result.output
    assert "handler=tests.workers.jobs_for_tests.fail_permanent" in result.output
    assert "event=zoho invoice_created ev-9" in result.output
    assert "attempts=1" in result.output
    assert "value_not_found" in result.output  # the last error line
    assert f"failed_at={datetime.now(UTC).date().isoformat()}" in result.output
    assert "1 failed job(s)" in result.output
    other = app.test_cli_runner().invoke(args=["jobs", "failed", "--queue", "catalog"])
    assert "0 failed job(s)" in other.output
    bad = app.test_cli_runner().invoke(args=["jobs", "failed", "--queue", "nope"])
    assert bad.exit_code != 0 and "unknown queue" in bad.output


def test_failed_shows_deferrals_and_the_deadline(app, queues, redis_conn):
    first = (datetime.now(UTC) - timedelta(hours=30)).isoformat()
    job_id = enqueue_job(queues["webhooks"], "tests.workers.jobs_for_tests.scripted",
                         {"counter": "runs", "script": ["open", "open"], "retry_after": 1}, retry_schedule=(1,))
    q = queues["webhooks"]
    run_worker(redis_conn)  # deferred once
    job = q.fetch_job(job_id)
    job.meta["first_run_at"] = first  # as if the circuit had been open for 30 hours
    job.save_meta()
    run_retries_now(q, redis_conn, rounds=1)  # "not now" past the deadline: failed
    result = app.test_cli_runner().invoke(args=["jobs", "failed"])
    assert "attempts=2 deferrals=1" in result.output, result.output
    assert f"first_run_at={first}" in result.output
    assert "last_deferral=" in result.output and "CircuitOpen: zoho: circuit open" in result.output
    assert "DeferredTooLong: not now for 30.0 h" in result.output
    retried = app.test_cli_runner().invoke(args=["jobs", "retry", job_id])
    assert retried.exit_code == 0
    assert "first_run_at" not in q.fetch_job(job_id).meta  # a fresh deadline
    run_worker(redis_conn)  # the script is spent: the job succeeds
    assert q.fetch_job(job_id).get_status() == "finished"


def test_retry_requeues_with_a_fresh_budget_and_the_job_runs(app, queues, redis_conn):
    job_id = fail_one(queues, redis_conn, func="tests.workers.jobs_for_tests.fail_transient")
    q = queues["webhooks"]
    # Spend the schedule: the job ends in the failed registry with no retries left.
    run_retries_now(q, redis_conn)
    assert q.failed_job_registry.get_job_ids() == [job_id]
    result = app.test_cli_runner().invoke(args=["jobs", "retry", job_id])
    assert result.exit_code == 0 and "requeued 1 job(s)" in result.output
    job = q.fetch_job(job_id)
    assert job.get_status() == "queued"
    assert job.retries_left == len(app.extensions["settings"].retry_schedule_seconds)
    assert q.failed_job_registry.count == 0


def test_retry_all_and_since_and_unknown_ids(app, queues, redis_conn):
    first = fail_one(queues, redis_conn)
    second = fail_one(queues, redis_conn, event_id="ev-10")
    runner = app.test_cli_runner()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    none = runner.invoke(args=["jobs", "retry", "--all", "--since", tomorrow])
    assert "requeued 0 job(s)" in none.output
    missing = runner.invoke(args=["jobs", "retry", "not-a-job"])
    assert missing.exit_code == 1 and "not-a-job" in missing.output
    both = runner.invoke(args=["jobs", "retry", "--all"])
    assert "requeued 2 job(s)" in both.output
    assert {queues["webhooks"].fetch_job(j).get_status() for j in (first, second)} == {"queued"}
    usage = runner.invoke(args=["jobs", "retry"])
    assert usage.exit_code != 0


def test_purge_deletes_only_old_failures(app, queues, redis_conn):
    job_id = fail_one(queues, redis_conn)
    runner = app.test_cli_runner()
    assert "purged 0 job(s)" in runner.invoke(args=["jobs", "purge", "--older-than", "1"]).output
    job = queues["webhooks"].fetch_job(job_id)
    job.ended_at = datetime.now(UTC) - timedelta(days=3)
    job.save()
    assert "purged 1 job(s)" in runner.invoke(args=["jobs", "purge", "--older-than", "2"]).output
    assert queues["webhooks"].failed_job_registry.count == 0
    assert queues["webhooks"].fetch_job(job_id) is None


def test_attempts_count_the_retries_used(app, queues, redis_conn):
    job_id = fail_one(queues, redis_conn, func="tests.workers.jobs_for_tests.fail_transient")
    q = queues["webhooks"]
    run_retries_now(q, redis_conn)
    out = app.test_cli_runner().invoke(args=["jobs", "failed"]).output
    assert job_id in out and "attempts=2" in out  # the first run and its one retry (a schedule of one delay)
