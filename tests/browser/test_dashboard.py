"""rq-dashboard at /rq in a real (headless) browser: refused without credentials, failed jobs requeued by its UI."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from integration import Settings
from integration.queueing import enqueue_job

from ..conftest import LiveServer, run_worker
from .conftest import Page

pytestmark = pytest.mark.browser

FLAKY_JOB = "tests.workers.jobs_for_tests.fail_once_then_succeed"


def failed_job(queues: dict[str, Any], redis_conn: redis.Redis, settings: Settings) -> str:
    """Enqueue a job that fails on its first run, run it into the failed registry; returns its id."""
    job_id = enqueue_job(
        queues["webhooks"], FLAKY_JOB, {"counter": f"test:runs:{uuid.uuid4().hex}"},
        retry_schedule=settings.retry_schedule_seconds,
        meta={"source": "test", "event_type": "flaky", "event_id": "evt-1"}, description="flaky test job",
    )
    run_worker(redis_conn)
    assert job_id in queues["webhooks"].failed_job_registry.get_job_ids()
    return job_id


def fetch(redis_conn: redis.Redis, job_id: str) -> Job:
    """The job as the service's workers read it (JSON serializer)."""
    return Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)


def log_in(page: Page, settings: Settings) -> None:
    """Send the operator's basic-auth credentials with every request of this tab."""
    pair = f"{settings.dashboard_username}:{settings.dashboard_password}".encode()
    page.set_headers({"Authorization": "Basic " + base64.b64encode(pair).decode()})


def failed_view(live_server: LiveServer) -> str:
    """The dashboard's page listing the webhooks queue's failed registry."""
    return f"{live_server.url}/rq/0/view/jobs/webhooks/failed/8/asc/1"


def wait_queued(redis_conn: redis.Redis, job_id: str, timeout: float = 10) -> None:
    """Wait until the job is back on its queue."""
    deadline = time.monotonic() + timeout
    while fetch(redis_conn, job_id).get_status() != JobStatus.QUEUED:
        assert time.monotonic() < deadline, "the job was not requeued"
        time.sleep(0.05)


def answers_from(page: Page, fragment: str) -> list[int]:
    """Statuses of the answers this tab got from URLs containing ``fragment`` (waits for the first one)."""
    page.browser.wait_event("Network.responseReceived", session=page.session,
                            where=lambda e: fragment in e["response"]["url"], timeout=10)
    return [int(e["response"]["status"]) for e in page.browser.events("Network.responseReceived", session=page.session)
            if fragment in e["response"]["url"]]


def test_without_credentials_the_dashboard_is_refused(live_server: LiveServer, page: Page) -> None:
    """No basic auth: the page, its JSON and its static files answer 401; nothing of the dashboard renders."""
    for path in ("/rq/", "/rq/0/view/jobs/webhooks/failed/8/asc/1", "/rq/0/data/queues.json",
                 "/rq/static/js/jquery-3.5.1.min.js"):
        assert page.goto(live_server.url + path) == 401, path
        assert page.js("document.getElementById('confirmation-modal')") is None


def test_failed_job_is_listed_and_requeued_through_the_ui(
    live_server: LiveServer, page: Page, queues: dict[str, Any], redis_conn: redis.Redis, settings: Settings
) -> None:
    """The failed registry view lists the job with its error; its Requeue button puts it back and it then runs."""
    job_id = failed_job(queues, redis_conn, settings)
    log_in(page, settings)
    assert page.goto(failed_view(live_server)) == 200
    row = f'tr[data-job-id="{job_id}"]'
    page.wait_for(f"!!document.querySelector({json.dumps(row)})")
    assert "first run fails on purpose" in page.text(row)
    assert "flaky test job" in page.text(row)

    page.click(f"{row} [data-role=requeue-job-btn]")
    wait_queued(redis_conn, job_id)
    page.wait_for(f"!document.querySelector({json.dumps(row)})")  # the UI drops the row once requeued
    assert answers_from(page, f"/rq/job/{job_id}/requeue") == [200]  # same-origin POST passes the guard
    assert queues["webhooks"].failed_job_registry.count == 0

    run_worker(redis_conn)
    job = fetch(redis_conn, job_id)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "ok after 2 runs"
    assert job.meta.get("source") == "test" and job.meta.get("event_id") == "evt-1"  # meta still JSON


def test_requeue_all_after_confirmation(
    live_server: LiveServer, page: Page, queues: dict[str, Any], redis_conn: redis.Redis, settings: Settings
) -> None:
    """"Requeue All" asks for confirmation, POSTs (same origin), and every failed job runs again."""
    job_ids = [failed_job(queues, redis_conn, settings) for _ in range(2)]
    log_in(page, settings)
    assert page.goto(failed_view(live_server)) == 200
    page.wait_for(f"document.querySelectorAll('tr[data-role=job]').length == {len(job_ids)}")
    page.click("#requeue-all-btn")
    page.wait_for("document.getElementById('confirmation-modal').classList.contains('show') && getComputedStyle("
                  "document.querySelector('#confirmation-modal .modal-dialog')).transform === 'none'")  # slid in
    page.click("#confirmation-modal-yes")
    for job_id in job_ids:
        wait_queued(redis_conn, job_id)
    assert answers_from(page, "/rq/requeue/webhooks") == [200]
    run_worker(redis_conn)
    jobs = [fetch(redis_conn, j) for j in job_ids]
    assert [j.get_status() for j in jobs] == [JobStatus.FINISHED] * len(jobs)
    assert all(j.meta.get("source") == "test" for j in jobs)
