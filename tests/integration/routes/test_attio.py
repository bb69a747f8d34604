"""POST /webhooks/attio: signature, schema, one job per event, dedupe on Idempotency-Key + index."""

from __future__ import annotations

import hashlib
import json
import zlib

import pytest

from integration.verify import attio_signature

from ...conftest import SECRETS, make_settings
from ...helpers import job_count, signed_attio


def post(client, req, **headers):
    return client.post("/webhooks/attio", data=req.body, headers={**req.headers, **headers})


def test_valid_delivery_enqueues_one_job_per_event(client, queues):
    req = signed_attio(3, key="idem-1")
    resp = post(client, req)
    assert resp.status_code == 202
    assert resp.json["status"] == "accepted"
    assert len(resp.json["jobs"]) == 3 and len(set(resp.json["jobs"])) == 3
    assert job_count(queues) == 3
    job = queues["webhooks"].fetch_job(resp.json["jobs"][1])
    assert job.func_name == "workers.jobs.activation.run_record_event"
    assert job.args[0]["event"]["id"]["record_id"] == "rec-1"
    assert job.args[0]["event_id"] == hashlib.sha256(req.body).hexdigest()[:32] + ":1"


def test_redelivery_is_a_duplicate_and_enqueues_nothing(client, queues):
    req = signed_attio(2, key="idem-2")
    first = post(client, req)
    second = post(client, req)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json == {"status": "duplicate", "jobs": first.json["jobs"]}
    assert job_count(queues) == 2


def test_a_replay_with_a_fresh_idempotency_key_is_a_duplicate(client, queues):
    # The header is not signed: a captured delivery replayed under new keys must not mint new jobs.
    req = signed_attio(2, key="original")
    first = post(client, req)
    replays = [post(client, req, **{"Idempotency-Key": f"fresh-{n}"}) for n in range(20)]
    assert first.status_code == 202
    assert {r.status_code for r in replays} == {200}
    assert all(r.json == {"status": "duplicate", "jobs": first.json["jobs"]} for r in replays)
    assert job_count(queues) == 2


@pytest.mark.parametrize("key", ['<img src=x onerror="alert(1)">', "a b", "x" * 129, "é"])
def test_an_unsafe_idempotency_key_reaches_no_job(client, queues, redis_conn, key):
    resp = post(client, signed_attio(1), **{"Idempotency-Key": key.encode().decode("latin-1")})
    assert resp.status_code == 202
    job = queues["webhooks"].fetch_job(resp.json["jobs"][0])
    record = redis_conn.hgetall(f"rq:job:{job.id}")
    stored = b"".join(zlib.decompress(v) if k == b"data" else v for k, v in record.items())  # RQ compresses data
    assert b"<" not in stored and b"onerror" not in stored and key.encode() not in stored
    assert set(job.description) <= set("abcdefghijklmnopqrstuvwxyz0123456789_.:+- ")


def test_identical_events_coalesce_while_pending_and_a_later_one_gets_a_job(client, queues, redis_conn):
    # Attio events carry no timestamp: two real edits can produce the same signed body. While the first edit's
    # job waits, the second is covered by it (the job re-reads the record); once it started, a new job is needed.
    req = signed_attio(1)
    first = post(client, req)
    assert first.status_code == 202
    assert post(client, req).json == {"status": "duplicate", "jobs": first.json["jobs"]}
    [job_id] = first.json["jobs"]
    for status in ("started", "finished", "failed"):
        redis_conn.hset(f"rq:job:{job_id}", "status", status)
        later = post(client, req)
        assert later.status_code == 202, status
        assert later.json["jobs"] != [job_id]
        assert post(client, req).status_code == 200  # the new one is pending: coalesced
        queues["webhooks"].remove(later.json["jobs"][0])
        redis_conn.hset(f"rq:job:{later.json['jobs'][0]}", "status", "finished")
    redis_conn.hset(f"rq:job:{job_id}", "status", "scheduled")  # a retry waiting: still pending
    redis_conn.set(next(iter(redis_conn.keys("dedupe:attio:*"))), job_id)
    assert post(client, req).status_code == 200


def test_x_attio_signature_alone_is_accepted(client, queues):
    req = signed_attio(1)
    headers = {k: v for k, v in req.headers.items() if k != "Attio-Signature"}
    resp = client.post("/webhooks/attio", data=req.body, headers=headers)
    assert resp.status_code == 202


@pytest.mark.parametrize(
    "signature",
    [None, "", "garbage", "v1,@@@", "0" * 64, "zz" * 32, "é" * 10, "a" * 5000],
    ids=["missing", "empty", "garbage", "weird", "zeros", "bad-hex", "non-ascii", "huge"],
)
def test_bad_signature_is_401_and_no_job(client, queues, signature):
    req = signed_attio(1)
    headers = {k: v for k, v in req.headers.items() if "Signature" not in k}
    if signature is not None:
        headers["Attio-Signature"] = signature.encode("utf-8").decode("latin-1")
    resp = client.post("/webhooks/attio", data=req.body, headers=headers)
    assert resp.status_code == 401
    assert resp.json == {"error": "invalid_signature"}
    assert job_count(queues) == 0


def test_truncated_and_wrong_secret_signatures_are_401(client, queues):
    req = signed_attio(1)
    truncated = req.headers["Attio-Signature"][:-2]
    assert post(client, req, **{"Attio-Signature": truncated, "X-Attio-Signature": truncated}).status_code == 401
    other = signed_attio(1, secret="not-the-secret")
    assert post(client, other).status_code == 401
    assert job_count(queues) == 0


def test_signature_over_other_bytes_is_401(client, queues):
    req = signed_attio(1)
    resp = client.post("/webhooks/attio", data=req.body + b" ", headers=req.headers)
    assert resp.status_code == 401


def test_rotation_any_configured_secret_verifies(redis_conn, queues):
    from integration import create_app

    app = create_app(make_settings(attio_webhook_secrets=("new-secret", SECRETS["attio_webhook_secret"])))
    client = app.test_client()
    assert post(client, signed_attio(1, key="a")).status_code == 202
    assert post(client, signed_attio(1, key="b", secret="new-secret")).status_code == 202
    assert post(client, signed_attio(1, key="c", secret="retired")).status_code == 401


def _signed_raw(body: bytes) -> dict[str, str]:
    return {"Attio-Signature": attio_signature(body, SECRETS["attio_webhook_secret"]), "Idempotency-Key": "x"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        json.dumps({"events": "nope"}).encode(),
        json.dumps({"events": [{"event_type": "record.updated"}]}).encode(),
        json.dumps({"events": [{"event_type": 5, "id": {}}]}).encode(),
        b"[" * 100000 + b"]" * 100000,
    ],
    ids=["text", "binary", "list", "no-events", "events-str", "no-id", "bad-type", "deep"],
)
def test_signed_but_invalid_body_is_400(client, queues, body):
    resp = client.post("/webhooks/attio", data=body, headers=_signed_raw(body))
    assert resp.status_code == 400
    assert resp.json["error"] == "invalid_payload"
    assert "details" in resp.json
    assert job_count(queues) == 0


def test_unknown_fields_are_dropped_nested_too(client, queues):
    body = json.dumps({
        "webhook_id": "w", "new_top": 1,
        "events": [{"event_type": "record.created", "new_field": {"x": 1},
                    "id": {"workspace_id": "w", "object_id": "o", "record_id": "r", "future_id": "f"},
                    "actor": {"type": "workspace-member", "id": "a", "extra": True}}],
    }).encode()
    resp = client.post("/webhooks/attio", data=body, headers=_signed_raw(body))
    assert resp.status_code == 202
    event = queues["webhooks"].fetch_job(resp.json["jobs"][0]).args[0]["event"]
    assert "new_field" not in event and "future_id" not in event["id"] and "extra" not in event["actor"]


def test_unrouted_event_types_are_ignored(client, queues):
    resp = post(client, signed_attio(2, event_type="note.created"))
    assert resp.status_code == 200
    assert resp.json["status"] == "ignored"
    assert job_count(queues) == 0


def test_oversize_body_is_413(client, queues):
    body = b'{"events": [], "pad": "' + b"x" * (1024 * 1024) + b'"}'
    resp = client.post("/webhooks/attio", data=body, headers=_signed_raw(body))
    assert resp.status_code == 413
    assert resp.json == {"error": "payload_too_large"}
    assert job_count(queues) == 0
