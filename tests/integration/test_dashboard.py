"""rq-dashboard at /rq: basic auth on every path, no state change by GET, JSON serializer."""

from __future__ import annotations

import pytest

from ..helpers import signed_attio
from .routes.test_admin import auth


@pytest.mark.parametrize("path", ["/rq", "/rq/", "/rq/0/view/queues", "/rq/0/data/queues.json",
                                  "/rq/static/css/main.css", "/rq/requeue/webhooks", "/rq/job/x/delete"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_path_needs_credentials(client, path, method):
    assert client.open(path, method=method).status_code == 401
    assert client.open(path, method=method, headers=auth(password="nope")).status_code == 401


def test_pages_and_json_work_with_credentials(client, queues):
    req = signed_attio(1)
    client.post("/webhooks/attio", data=req.body, headers=req.headers)
    page = client.get("/rq/0/view/queues", headers=auth(), follow_redirects=True)
    assert page.status_code == 200
    data = client.get("/rq/0/data/queues.json", headers=auth())
    assert data.status_code == 200
    counts = {q["name"]: q["count"] for q in data.json["queues"]}
    assert counts["webhooks"] == 1


def test_requeue_all_by_get_is_refused(client, queues):
    resp = client.get("/rq/requeue/webhooks", headers=auth())
    assert resp.status_code == 405


def test_cross_site_post_is_refused(client):
    resp = client.post("/rq/requeue/webhooks", headers={**auth(), "Origin": "https://evil.example"})
    assert resp.status_code == 403


def test_requeue_through_the_dashboard_keeps_the_job_readable(client, queues, redis_conn):
    """rq-dashboard's requeue re-saves the job; it must stay JSON (workers and `jobs failed` read its meta)."""
    from integration.queueing import enqueue_job

    from ..conftest import run_worker

    q = queues["webhooks"]
    job_id = enqueue_job(q, "tests.workers.jobs_for_tests.fail_permanent", {}, retry_schedule=(1,),
                         meta={"source": "zoho", "event_type": "invoice_created", "event_id": "ev-rq"})
    run_worker(redis_conn)
    assert q.failed_job_registry.get_job_ids() == [job_id]
    resp = client.post(f"/rq/job/{job_id}/requeue", headers=auth())
    assert resp.status_code == 200
    job = q.fetch_job(job_id)
    assert job.get_status() == "queued"
    assert {k: job.meta[k] for k in ("source", "event_type", "event_id")} == {
        "source": "zoho", "event_type": "invoice_created", "event_id": "ev-rq"}
    assert job.meta["attempts"] == 1
