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


def _markup(field: str) -> str:
    """Markup that would run script (and leave an element behind) if a page inserted it as HTML."""
    return (f'<img id="planted-{field}" src="x" onerror="window.__xss = (window.__xss || []).concat(\'{field}\')">'
            f"<script>window.__xss = ['{field}-script']</script>")


def test_markup_in_any_job_field_renders_as_text(
    live_server: LiveServer, page: Page, queues: dict[str, Any], redis_conn: redis.Redis, settings: Settings
) -> None:
    """Description, meta, exception, result and call string: text on the job pages and in the failed list."""
    queue = queues["webhooks"]
    failed = queue.enqueue("tests.workers.jobs_for_tests.fail_with_message", {"message": _markup("exception")},
                           description=_markup("description"), meta={"note": _markup("meta")})
    # No description: RQ describes the job by its call string, which holds the arguments.
    finished = queue.enqueue("tests.workers.jobs_for_tests.return_payload", {"value": _markup("result")},
                             description=None, meta={})
    run_worker(redis_conn)
    assert fetch(redis_conn, failed.id).get_status() == JobStatus.FAILED
    assert fetch(redis_conn, finished.id).get_status() == JobStatus.FINISHED
    assert "<img" in fetch(redis_conn, finished.id).description  # the call string, as RQ made it
    log_in(page, settings)

    for job_id, fields in ((failed.id, ("description", "meta", "exception")), (finished.id, ("result",))):
        assert page.goto(f"{live_server.url}/rq/0/view/job/{job_id}") == 200
        page.wait_for("document.querySelectorAll('#job-data p').length > 0")
        shown = page.text("#job-data")
        for field in fields:
            assert f"planted-{field}" in shown, (field, shown)  # meta shows as JSON: quotes backslashed
            assert "<img id=" in shown
        assert page.js("document.querySelectorAll('[id^=planted-]').length") == 0
        assert page.js("window.__xss || null") is None

    assert page.goto(failed_view(live_server)) == 200
    page.wait_for(f"!!document.querySelector('tr[data-job-id=\"{failed.id}\"]')")
    assert '<img id="planted-exception"' in page.text(f'tr[data-job-id="{failed.id}"]')
    assert page.js("document.querySelectorAll('[id^=planted-]').length") == 0
    assert page.js("window.__xss || null") is None


def test_the_dashboard_refuses_inline_script_and_framing(live_server: LiveServer, settings: Settings) -> None:
    """CSP: scripts from the service itself or with the request's nonce only; no page of it can be framed."""
    import requests

    resp = requests.get(f"{live_server.url}/rq/", auth=(settings.dashboard_username, settings.dashboard_password),
                        timeout=10)
    csp = resp.headers["Content-Security-Policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()
    assert "'unsafe-inline'" not in script_src and any(s.startswith("'nonce-") for s in script_src)
    assert "frame-ancestors 'none'" in csp and resp.headers["X-Frame-Options"] == "DENY"
    nonce = next(s for s in script_src if s.startswith("'nonce-"))[len("'nonce-"):-1]
    assert f'nonce="{nonce}"' in resp.text
