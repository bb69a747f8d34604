"""End to end per source: a signed request over real HTTP → the worker → the job ends where it should.

Each event names something the providers do not know (a record, subscription or dispute that does not exist):
the job re-reads it, finds nothing, logs it, and finishes — it is not retried and not failed.
"""

from __future__ import annotations

import pytest
import requests

from .conftest import run_worker
from .helpers import signed_attio, signed_braintree, signed_zoho


def _post(url, source, req_or_fields):
    if source == "braintree":
        return requests.post(f"{url}/webhooks/braintree", data=req_or_fields, timeout=10)
    q = getattr(req_or_fields, "query", None) or None
    return requests.post(f"{url}/webhooks/{source}", data=req_or_fields.body, headers=req_or_fields.headers,
                         params=q, timeout=10)


CASES = {
    "attio": (lambda: signed_attio(1, record_id="3f0b7a3c-9d1e-4c55-8a40-2f6f8c1d9e01"),
              "workers.jobs.activation.run_record_event"),
    "zoho": (lambda: signed_zoho("subscription_cancelled", event_id="e2e-1",
                                 data={"subscription": {"subscription_id": "s1"}}),
             "workers.jobs.lifecycle.run_subscription_event"),
    "braintree": (lambda: signed_braintree("dispute_lost", "d1"), "workers.jobs.lifecycle.run_dispute_event"),
}


@pytest.mark.parametrize("source", sorted(CASES))
def test_signed_delivery_runs_its_job(stack, redis_conn, queues, source):
    from integration import create_app

    from .conftest import LiveServer

    live_server = LiveServer(create_app(stack.settings()))
    build, func = CASES[source]
    payload = build()
    resp = _post(live_server.url, source, payload)
    assert resp.status_code == 202, resp.text
    [job_id] = resp.json()["jobs"]
    again = _post(live_server.url, source, payload)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    live_server.stop()
    run_worker(redis_conn)

    q = queues["webhooks"]
    job = q.fetch_job(job_id)
    assert job.func_name == func
    assert job.get_status() == "finished", job.latest_result().exc_string if job.latest_result() else None
    assert q.failed_job_registry.count == 0
    assert q.count == 0 and q.scheduled_job_registry.count == 0
