"""POST /webhooks/zoho: HMAC over sorted query/form pairs + body, hex or base64; dedupe on event_id."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest

from integration.verify import zoho_signature, zoho_signed_string

from ...conftest import SECRETS, make_settings
from ...helpers import job_count, signed_zoho


def post(client, req, headers=None, query=None):
    q = query if query is not None else req.query
    url = "/webhooks/zoho" + (("?" + urlencode(q)) if q else "")
    return client.post(url, data=req.body, headers=headers or req.headers)


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_valid_event_is_accepted_in_either_encoding(client, queues, encoding):
    resp = post(client, signed_zoho(encoding=encoding))
    assert resp.status_code == 202
    job = queues["webhooks"].fetch_job(resp.json["jobs"][0])
    assert job.func_name == "workers.jobs.collection.run_invoice_created"
    assert job.args[0]["event"]["data"]["invoice"]["invoice_id"] == "903000000079426"
    assert job_count(queues) == 1


def test_uppercase_hex_is_accepted(client, queues):
    req = signed_zoho()
    headers = {**req.headers, "X-Zoho-Webhook-Signature": req.headers["X-Zoho-Webhook-Signature"].upper()}
    assert post(client, req, headers=headers).status_code == 202


def test_query_parameters_are_signed(client, queues):
    req = signed_zoho(query={"subscription_id": "90343", "name": "basic"})
    assert post(client, req).status_code == 202
    tampered = post(client, req, query={"subscription_id": "1", "name": "basic"})
    assert tampered.status_code == 401


def test_kb_example_signed_string():
    s = zoho_signed_string([("subscription_id", "90343"), ("name", "basic")], [],
                           b'{"created_date":"2019-03-06","event_id":"5675"}')
    assert s == b'namebasicsubscription_id90343{"created_date":"2019-03-06","event_id":"5675"}'


def test_form_encoded_body_is_signed_by_its_pairs(client, queues):
    form = {"event_type": "subscription_cancelled", "event_id": "777",
            "subscription_id": "sub-1"}
    body = urlencode(form).encode()
    digest = zoho_signature(zoho_signed_string([], sorted(form.items()), b""), SECRETS["zoho_webhook_secret"])
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Zoho-Webhook-Signature": digest.hex()}
    resp = client.post("/webhooks/zoho", data=body, headers=headers)
    assert resp.status_code == 202, resp.json


@pytest.mark.parametrize("query", [{}, {"subscription_id": "90343"}])
def test_form_encoded_payload_delivery_is_accepted(client, queues, query):
    req = signed_zoho(form=True, query=query)
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.body.startswith(b"payload=")
    resp = post(client, req)
    assert resp.status_code == 202, resp.json
    job = queues["webhooks"].fetch_job(resp.json["jobs"][0])
    assert job.args[0]["event"]["data"]["invoice"]["invoice_id"] == "903000000079426"
    tampered = req.body.replace(b"INV-1", b"INV-2")
    assert client.post("/webhooks/zoho", data=tampered, headers=req.headers).status_code == 401


def test_form_payload_that_is_not_json_is_400(client, queues):
    text = "not json"
    digest = zoho_signature(zoho_signed_string([], [("payload", text)], b""), SECRETS["zoho_webhook_secret"])
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Zoho-Webhook-Signature": digest.hex()}
    resp = client.post("/webhooks/zoho", data=urlencode({"payload": text}), headers=headers)
    assert resp.status_code == 400 and job_count(queues) == 0


def test_the_captured_event_shape_keeps_its_instant(client, queues):
    resp = post(client, signed_zoho(event_type="subscription_created",
                                    data={"subscription": {"subscription_id": "123123123123123"}}))
    assert resp.status_code == 202
    event = queues["webhooks"].fetch_job(resp.json["jobs"][0]).args[0]["event"]
    assert (event["event_time"], event["created_time"]) == ("2026-11-30", "2026-11-30T10:00:00+0000")
    assert (event["event_time_formatted"], event["event_source"]) == ("30 Nov 2026", "user")


def test_same_event_id_is_a_duplicate(client, queues):
    first = post(client, signed_zoho(event_id="e-1"))
    second = post(client, signed_zoho(event_id="e-1"))
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json["status"] == "duplicate"
    assert job_count(queues) == 1


@pytest.mark.parametrize(
    "signature",
    [None, "", "garbage", "!!!!", "0" * 64, base64.b64encode(b"x" * 31).decode(), "ab" * 33],
    ids=["missing", "empty", "garbage", "bad-b64", "zeros", "short-digest", "long-hex"],
)
def test_bad_signature_is_401(client, queues, signature):
    req = signed_zoho()
    headers = {k: v for k, v in req.headers.items() if k != "X-Zoho-Webhook-Signature"}
    if signature is not None:
        headers["X-Zoho-Webhook-Signature"] = signature
    resp = client.post("/webhooks/zoho", data=req.body, headers=headers)
    assert resp.status_code == 401
    assert resp.json == {"error": "invalid_signature"}
    assert job_count(queues) == 0


def test_truncated_and_wrong_secret_are_401(client, queues):
    req = signed_zoho()
    headers = {**req.headers, "X-Zoho-Webhook-Signature": req.headers["X-Zoho-Webhook-Signature"][:-1]}
    assert post(client, req, headers=headers).status_code == 401
    assert post(client, signed_zoho(secret="wrong-secret-123")).status_code == 401


def test_rotation(redis_conn):
    from integration import create_app

    client = create_app(make_settings(zoho_webhook_secrets=("freshsecret123", SECRETS["zoho_webhook_secret"]))).test_client()
    assert post(client, signed_zoho(event_id="1")).status_code == 202
    assert post(client, signed_zoho(event_id="2", secret="freshsecret123")).status_code == 202


def _signed(body: bytes) -> dict[str, str]:
    digest = zoho_signature(body, SECRETS["zoho_webhook_secret"])
    return {"X-Zoho-Webhook-Signature": digest.hex(), "Content-Type": "application/json"}


@pytest.mark.parametrize(
    "raw",
    [b"{", b"null", json.dumps({"event_type": "invoice_created"}).encode(),
     json.dumps({"event_id": "1"}).encode(),
     json.dumps({"event_id": {"x": 1}, "event_type": "invoice_created"}).encode(),
     json.dumps({"event_id": "1", "event_type": "Invoice Created!"}).encode(),
     json.dumps({"event_id": "1", "event_type": "invoice_created", "data": {"invoice": {"number": "x"}}}).encode()],
    ids=["truncated", "null", "no-id", "no-type", "id-object", "type-shape", "invoice-without-id"],
)
def test_invalid_body_is_400(client, queues, raw):
    resp = client.post("/webhooks/zoho", data=raw, headers=_signed(raw))
    assert resp.status_code == 400
    assert resp.json["error"] == "invalid_payload"
    assert job_count(queues) == 0


def test_numeric_event_id_and_top_level_resource_are_accepted(client, queues):
    raw = json.dumps({"event_id": 90300000005337, "event_type": "invoice_created",
                      "invoice": {"invoice_id": 903000000079426}}).encode()
    resp = client.post("/webhooks/zoho", data=raw, headers=_signed(raw))
    assert resp.status_code == 202
    event = queues["webhooks"].fetch_job(resp.json["jobs"][0]).args[0]["event"]
    assert event["event_id"] == "90300000005337"
    assert event["data"]["invoice"]["invoice_id"] == "903000000079426"


def test_unrouted_event_is_ignored(client, queues):
    resp = post(client, signed_zoho("card_expiring", data={}))
    assert resp.status_code == 200
    assert resp.json["status"] == "ignored"
    assert job_count(queues) == 0


def test_catalog_prefixes_route_to_the_catalog_queue(client, queues):
    resp = post(client, signed_zoho("plan_updated", event_id="p1", data={"plan": {"plan_code": "basic"}}))
    assert resp.status_code == 202
    job = queues["catalog"].fetch_job(resp.json["jobs"][0])
    assert job.func_name == "workers.jobs.catalog.run_catalog_sync"


def test_oversize_is_413(client, queues):
    raw = b'{"event_id": "1", "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    resp = client.post("/webhooks/zoho", data=raw, headers=_signed(raw))
    assert resp.status_code == 413


def _form_post(client, pairs, signed_pairs=None):
    signed = sorted(signed_pairs if signed_pairs is not None else pairs)
    digest = zoho_signature(zoho_signed_string([], signed, b""), SECRETS["zoho_webhook_secret"])
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Zoho-Webhook-Signature": digest.hex()}
    return client.post("/webhooks/zoho", data=urlencode(pairs).encode(), headers=headers)


def test_moving_a_form_boundary_keeps_the_signature_but_is_a_duplicate(client, queues):
    # Zoho signs key+value with no separator: these two forms have one signed string, and the second shows
    # another event_id. One signed string is one event.
    first = _form_post(client, [("event_id", "5"), ("event_idx", ""), ("event_type", "subscription_cancelled")])
    moved = _form_post(client, [("event_id", "5event_idx"), ("event_type", "subscription_cancelled")])
    assert first.status_code == 202, first.json
    assert moved.status_code == 200 and moved.json == {"status": "duplicate", "jobs": first.json["jobs"]}
    assert job_count(queues) == 1


def test_a_form_key_given_twice_is_refused(client, queues):
    pairs = [("event_id", "6"), ("event_id", "7"), ("event_type", "subscription_cancelled")]
    assert _form_post(client, pairs).status_code == 401
    assert job_count(queues) == 0


@pytest.mark.parametrize("path", ["/webhooks/zoho", "/webhooks/attio", "/webhooks/braintree"])
@pytest.mark.parametrize("size", [1024 * 1024 + 1, 1024 * 1024 + 100, 3 * 1024 * 1024])
def test_a_chunked_body_over_1_mib_is_413_not_read_cut_short(live_server, queues, path, size):
    import requests

    def chunks():  # no Content-Length: requests sends Transfer-Encoding: chunked
        sent = 0
        while sent < size:
            piece = b"x" * min(65536, size - sent)
            sent += len(piece)
            yield piece

    resp = requests.post(live_server.url + path, data=chunks(), timeout=30,
                         headers={"Content-Type": "application/json", "X-Zoho-Webhook-Signature": "0" * 64})
    assert resp.status_code == 413 and resp.json() == {"error": "payload_too_large"}
    assert job_count(queues) == 0


def test_a_chunked_body_of_exactly_1_mib_is_read_whole(live_server, queues):
    import requests

    body = b'{"event_id": "1", "pad": "' + b"x" * (1024 * 1024 - 28) + b'"}'
    assert len(body) == 1024 * 1024
    resp = requests.post(live_server.url + "/webhooks/zoho", data=iter([body[:1000], body[1000:]]), timeout=30,
                         headers={"Content-Type": "application/json", **_signed(body)})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_payload"  # verified: read whole, not cut


def test_a_body_one_byte_over_with_content_length_is_413(client, queues):
    resp = client.post("/webhooks/zoho", data=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
