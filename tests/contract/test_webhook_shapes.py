"""The webhook schemas and routes against payload shapes the providers really send (captured or documented).

- Zoho: a real captured event, PipedreamHQ/pipedream
  ``components/zoho_subscriptions/sources/subscription-created/test-event.mjs`` (its ``payload``; the subscription
  trimmed to a few of its keys): ``event_time`` a date, the instant in ``created_time`` (offset without a colon),
  ``event_time_formatted``, ``event_source``. The same event as an ``x-www-form-urlencoded`` ``payload=<json>`` body.
- Attio: the v2 delivery of docs.attio.com's webhook reference (``record.updated``): ``webhook_id`` and ``events``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

from integration.schemas import AttioDeliverySchema, ZohoEventSchema
from integration.verify import attio_signature, zoho_signature, zoho_signed_string
from tests.conftest import SECRETS
from workers.records import event_instant

ZOHO_CAPTURED = {
    "created_time": "2023-08-02T15:28:59-0400",
    "event_id": "123123123123123123",
    "event_type": "subscription_created",
    "data": {"subscription": {
        "updated_time": "2023-08-02T15:28:59-0400", "reference_id": "", "next_billing_at": "2023-09-02",
        "subscription_id": "123123123123123", "status": "live", "created_time": "2023-08-02T15:28:59-0400",
        "customer_id": "123123123123123123", "auto_collect": False, "amount": 1.06, "currency_code": "USD",
        "plan": {"plan_code": "planTest", "quantity": 1, "price": 1, "total": 1},
        "customer": {"customer_id": "123123123123123", "email": "customerTest01@customerTest01.com"},
    }},
    "event_time_formatted": "02 Aug 2023",
    "event_source": "user",
    "event_time": "2023-08-02",
}  # fmt: skip

ATTIO_DOCUMENTED = {
    "webhook_id": "23e42eaf-323a-41da-b5bb-fd67eebda553",
    "events": [{
        "event_type": "record.updated",
        "id": {"workspace_id": "14beef7a-99f7-4534-a87e-70b564330a4c",
               "object_id": "97052eb9-e65e-443f-a297-f2d9a4a7f795",
               "record_id": "bf071e1f-6035-429d-b874-d83ea64ea13b",
               "attribute_id": "41252299-f8c7-4b5e-99c9-4ff8321d2f96"},
        "actor": {"type": "workspace-member", "id": "50cf242c-7fa3-4cad-87d0-75b1af71c57b"},
    }],
}  # fmt: skip


def test_the_captured_zoho_event_keeps_its_instant() -> None:
    event = ZohoEventSchema().load(ZOHO_CAPTURED)
    assert event["event_time"] == "2023-08-02"  # a date
    assert event["created_time"] == "2023-08-02T15:28:59-0400"
    assert (event["event_time_formatted"], event["event_source"]) == ("02 Aug 2023", "user")
    assert event["data"]["subscription"]["subscription_id"] == "123123123123123"
    assert event_instant(event) == datetime(2023, 8, 2, 19, 28, 59, tzinfo=UTC)


def test_an_event_without_created_time_falls_back_to_its_date() -> None:
    bare = {k: v for k, v in ZOHO_CAPTURED.items() if k != "created_time"}
    assert event_instant(ZohoEventSchema().load(bare)) == datetime(2023, 8, 2, tzinfo=UTC)


def test_the_captured_zoho_event_is_accepted_as_json_and_as_a_form(client, queues) -> None:
    secret = SECRETS["zoho_webhook_secret"]
    body = json.dumps(ZOHO_CAPTURED).encode()
    signature = zoho_signature(zoho_signed_string([], [], body), secret).hex()
    headers = {"Content-Type": "application/json", "X-Zoho-Webhook-Signature": signature}
    assert client.post("/webhooks/zoho", data=body, headers=headers).status_code == 202

    text = json.dumps({**ZOHO_CAPTURED, "event_id": "123123123123123124"})
    signature = zoho_signature(zoho_signed_string([], [("payload", text)], b""), secret).hex()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Zoho-Webhook-Signature": signature}
    resp = client.post("/webhooks/zoho", data=urlencode({"payload": text}), headers=headers)
    assert resp.status_code == 202, resp.json
    job = queues["webhooks"].fetch_job(resp.json["jobs"][0])
    assert job.args[0]["event"]["created_time"] == "2023-08-02T15:28:59-0400"


def test_the_documented_attio_delivery_is_accepted(client, queues) -> None:
    delivery = AttioDeliverySchema().load(ATTIO_DOCUMENTED)
    [event] = delivery["events"]
    assert event["id"]["attribute_id"] == "41252299-f8c7-4b5e-99c9-4ff8321d2f96"
    assert event["actor"] == {"type": "workspace-member", "id": "50cf242c-7fa3-4cad-87d0-75b1af71c57b"}
    body = json.dumps(ATTIO_DOCUMENTED).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k-1",
               "Attio-Signature": attio_signature(body, SECRETS["attio_webhook_secret"])}
    assert client.post("/webhooks/attio", data=body, headers=headers).status_code == 202
