"""/healthz never touches Redis; /readyz reports Redis and the queues, 503 when Redis is down."""

from __future__ import annotations

import base64
import time

from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from integration import create_app

from ...conftest import SECRETS, make_settings
from ...helpers import signed_attio

OPERATOR = {"Authorization": "Basic " + base64.b64encode(f"operator:{SECRETS['dashboard_password']}".encode()).decode()}


def test_healthz_without_redis():
    app = create_app(make_settings(redis_url="redis://127.0.0.1:1/0"))
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200 and resp.json == {"status": "ok"}


def test_readyz_reports_queue_depths_and_failed_counts(client, queues):
    client.post("/webhooks/attio", data=signed_attio(2).body, headers=signed_attio(2).headers)
    req = signed_attio(2)
    client.post("/webhooks/attio", data=req.body, headers=req.headers)
    resp = client.get("/readyz", headers=OPERATOR)
    assert resp.status_code == 200
    assert resp.json["redis"] == "ok"
    assert resp.json["queues"]["webhooks"]["queued"] == 2
    assert resp.json["queues"]["webhooks"]["failed"] == 0
    assert set(resp.json["queues"]) == {"webhooks", "catalog"}


def test_readyz_is_503_when_redis_is_down(private_redis):
    app = create_app(make_settings(redis_url=private_redis.url))
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    private_redis.stop()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json["status"] == "unavailable"


def test_webhook_is_503_and_not_acknowledged_when_redis_is_down(private_redis):
    app = create_app(make_settings(redis_url=private_redis.url))
    client = app.test_client()
    private_redis.stop()
    req = signed_attio(1)
    resp = client.post("/webhooks/attio", data=req.body, headers=req.headers)
    assert resp.status_code == 503
    assert resp.json == {"error": "unavailable"}


def test_readyz_without_credentials_says_only_ready(client, queues):
    req = signed_attio(1)
    client.post("/webhooks/attio", data=req.body, headers=req.headers)
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.json == {"status": "ready"}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"operator:wrong-password").decode()}
    assert client.get("/readyz", headers=wrong).status_code == 401  # no oracle: wrong credentials are refused


def test_readyz_does_not_run_the_registry_cleanup(client, queues, redis_conn):
    # A job in the started registry whose heartbeat lapsed: RQ's cleanup would fail it right here, without the
    # worker's exception handler (no retry, no Sentry alert). That is the workers' maintenance pass's job.
    queue = queues["webhooks"]
    job = queue.enqueue("tests.workers.jobs_for_tests.succeed", {})
    queue.remove(job.id)
    job.set_status("started")
    # RQ 2.12's entry is "<job id>:<execution id>", scored by when its heartbeat lapses: an hour ago.
    redis_conn.zadd(StartedJobRegistry(queue=queue).key, {f"{job.id}:exec1": time.time() - 3600})
    for headers in ({}, OPERATOR):
        assert client.get("/readyz", headers=headers).status_code == 200
    assert Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer).get_status() == "started"
    assert client.get("/readyz", headers=OPERATOR).json["queues"]["webhooks"]["started"] == 1


def test_readyz_and_the_quota_command_show_todays_calls(app, client, redis_conn):
    from integration.clients.quota import count_operation, zoho_ledger
    from integration.worklane import MONEY

    ledger = zoho_ledger(app.extensions["settings"], redis_conn)
    for _ in range(3):
        ledger.take(MONEY, "collection")
    count_operation(redis_conn, "collection")
    quota = client.get("/readyz", headers=OPERATOR).json["quota"]
    assert quota["zoho"]["used"] == 3 and quota["zoho"]["limit"] == 1000 and quota["zoho"]["reserve"] == 500
    assert quota["zoho"]["by_operation"] == {"collection": 3}
    assert quota["calls_per_operation"]["zoho"] == {"collection": 3.0}
    assert quota["zoho"]["projected"] >= 3
    assert "quota" not in client.get("/readyz").json  # the public answer says only ready
    result = app.test_cli_runner().invoke(args=["quota"])
    assert result.exit_code == 0, result.output
    assert "3 of 1000 calls (reserve 500 for money work)" in result.output
    assert "collection 3 (3.0/op)" in result.output
