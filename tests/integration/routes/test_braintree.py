"""/webhooks/braintree: the SDK verifies, the payload hash dedupes; GET answers the challenge."""

from __future__ import annotations

import base64

import braintree
import pytest

from ...conftest import SECRETS, make_settings
from ...helpers import braintree_sign, job_count, signed_braintree, test_gateway


def post(client, fields):
    return client.post("/webhooks/braintree", data=fields)


@pytest.mark.parametrize(
    ("kind", "job"),
    [
        ("transaction_settled", "workers.jobs.lifecycle.run_transaction_event"),
        ("transaction_settlement_declined", "workers.jobs.lifecycle.run_transaction_event"),
        ("dispute_opened", "workers.jobs.lifecycle.run_dispute_event"),
        ("dispute_won", "workers.jobs.lifecycle.run_dispute_event"),
        ("dispute_lost", "workers.jobs.lifecycle.run_dispute_event"),
        ("dispute_accepted", "workers.jobs.lifecycle.run_dispute_event"),
        ("dispute_auto_accepted", "workers.jobs.lifecycle.run_dispute_event"),
        ("dispute_expired", "workers.jobs.lifecycle.run_dispute_event"),
    ],
)
def test_sdk_sample_notifications_are_accepted(client, queues, kind, job):
    resp = post(client, signed_braintree(kind, "txn42"))
    assert resp.status_code == 202, resp.json
    queued = queues["webhooks"].fetch_job(resp.json["jobs"][0])
    assert queued.func_name == job
    event = queued.args[0]["event"]
    assert event["kind"] == kind
    txn = event["transaction"] or event["dispute"]["transaction"]
    assert txn["id"]


def test_same_payload_twice_is_a_duplicate(client, queues):
    fields = signed_braintree("transaction_settled", "txn1")
    assert post(client, fields).status_code == 202
    second = post(client, fields)
    assert second.status_code == 200 and second.json["status"] == "duplicate"
    assert job_count(queues) == 1


@pytest.mark.parametrize("kind", ["check", "subscription_went_past_due", "disbursement"])
def test_other_kinds_are_ignored(client, queues, kind):
    resp = post(client, signed_braintree(kind, "x1"))
    assert resp.status_code == 200
    assert resp.json["status"] == "ignored"
    assert job_count(queues) == 0


def _tamper(fields, **changes):
    return {**fields, **changes}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: {"bt_payload": f["bt_payload"]},
        lambda f: {"bt_signature": f["bt_signature"]},
        lambda f: _tamper(f, bt_signature="garbage"),
        lambda f: _tamper(f, bt_signature="test-public|" + "0" * 40),
        lambda f: _tamper(f, bt_signature=f["bt_signature"][:-3]),
        lambda f: _tamper(f, bt_signature="other-public|" + f["bt_signature"].split("|")[1]),
        lambda f: _tamper(f, bt_payload=f["bt_payload"].replace("\n", "\r\n")),
        lambda f: _tamper(f, bt_payload=f["bt_payload"][:-8]),
        lambda f: {},
    ],
    ids=["no-signature", "no-payload", "garbage", "zeros", "truncated", "other-key", "crlf", "cut-payload", "empty"],
)
def test_bad_signatures_are_401(client, queues, mutate):
    resp = post(client, mutate(signed_braintree("transaction_settled", "txn1")))
    assert resp.status_code == 401
    assert resp.json == {"error": "invalid_signature"}
    assert job_count(queues) == 0


def test_wrong_private_key_is_401(client, queues):
    fields = signed_braintree("transaction_settled", "t", private="someone-elses-key")
    assert post(client, fields).status_code == 401


def test_signed_garbage_payload_is_400(client, queues):
    payload = base64.encodebytes(b"<not-a-notification>").decode()
    fields = {"bt_signature": braintree_sign("test-public", "test-private", payload), "bt_payload": payload}
    resp = post(client, fields)
    assert resp.status_code == 400
    assert job_count(queues) == 0


def test_key_rotation(redis_conn):
    from integration import create_app

    app = create_app(make_settings(braintree_public_key="new-public,test-public",
                                   braintree_private_key="new-private,test-private"))
    client = app.test_client()
    assert post(client, signed_braintree("transaction_settled", "a")).status_code == 202
    fields = signed_braintree("transaction_settled", "b", public="new-public", private="new-private")
    assert post(client, fields).status_code == 202


def test_challenge_answers_the_sdk_verify(client):
    challenge = "20f9f8ed05f77439fe955c977e4c8a53"
    resp = client.get(f"/webhooks/braintree?bt_challenge={challenge}")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True) == test_gateway().webhook_notification.verify(challenge)
    assert resp.get_data(as_text=True).startswith(SECRETS["braintree_public_key"] + "|")


@pytest.mark.parametrize("challenge", ["", "XYZ", "abc", "g" * 24, "a" * 40])
def test_malformed_challenge_is_400(client, challenge):
    resp = client.get(f"/webhooks/braintree?bt_challenge={challenge}")
    assert resp.status_code == 400


def test_sample_built_with_sdk_verifies_with_sdk():
    fields = signed_braintree("dispute_opened", "d1")
    n = test_gateway().webhook_notification.parse(fields["bt_signature"], fields["bt_payload"])
    assert n.kind == braintree.WebhookNotification.Kind.DisputeOpened


def _resigned(xml: bytes) -> dict[str, str]:
    payload = base64.encodebytes(xml).decode()
    return {"bt_signature": braintree_sign(SECRETS["braintree_public_key"], SECRETS["braintree_private_key"],
                                           payload), "bt_payload": payload}


def test_the_same_notification_re_encoded_is_a_duplicate(client, queues):
    # The SDK tolerates other encodings of the same payload (no trailing newline, base64 without line breaks):
    # dedupe on what the notification says, not on its bytes.
    fields = signed_braintree("transaction_settled", "txn-re")
    first = post(client, fields)
    assert first.status_code == 202
    xml = base64.b64decode(fields["bt_payload"])
    variants = [
        {**fields, "bt_payload": fields["bt_payload"].rstrip("\n")},
        {**fields, "bt_payload": fields["bt_payload"] + "\n"},
        _resigned(xml),
        _resigned(xml + b"\n"),
    ]
    for variant in variants:
        resp = post(client, variant)
        assert resp.status_code in (200, 401), resp.json  # refused by the SDK, or a duplicate: never a new job
        if resp.status_code == 200:
            assert resp.json == {"status": "duplicate", "jobs": first.json["jobs"]}
    assert job_count(queues) == 1


@pytest.mark.parametrize("age_days", [31, 400, -3])
def test_a_notification_signed_outside_the_window_is_400(client, queues, age_days):
    import re
    from datetime import UTC, datetime, timedelta

    fields = signed_braintree("transaction_settled", "txn-old")
    xml = base64.b64decode(fields["bt_payload"])
    when = (datetime.now(UTC) - timedelta(days=age_days)).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    old = re.sub(rb"(<timestamp type=\"datetime\">)[^<]+", rb"\g<1>" + when, xml)
    resp = post(client, _resigned(old))
    assert resp.status_code == 400 and resp.json["error"] == "invalid_payload"
    assert job_count(queues) == 0
    recent = re.sub(rb"(<timestamp type=\"datetime\">)[^<]+", rb"\g<1>" + datetime.now(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ").encode() + b"", xml)
    assert post(client, _resigned(recent)).status_code == 202
