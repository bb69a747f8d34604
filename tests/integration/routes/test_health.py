"""/healthz never touches Redis; /readyz reports Redis and the queues, 503 when Redis is down."""

from __future__ import annotations

from integration import create_app

from ...conftest import make_settings
from ...helpers import signed_attio


def test_healthz_without_redis():
    app = create_app(make_settings(redis_url="redis://127.0.0.1:1/0"))
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200 and resp.json == {"status": "ok"}


def test_readyz_reports_queue_depths_and_failed_counts(client, queues):
    client.post("/webhooks/attio", data=signed_attio(2).body, headers=signed_attio(2).headers)
    req = signed_attio(2)
    client.post("/webhooks/attio", data=req.body, headers=req.headers)
    resp = client.get("/readyz")
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
