"""Correctly signed sample webhook deliveries, for ``webhooks send``, the local run and the tests.

Each builder returns a ``SignedRequest``: the exact bytes to post and the headers that go with them.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .verify import attio_signature, zoho_signature, zoho_signed_string

__all__ = [
    "SignedRequest",
    "attio_delivery",
    "attio_event",
    "braintree_form",
    "braintree_notification",
    "zoho_delivery",
]


@dataclass(frozen=True)
class SignedRequest:
    """A webhook ready to post: body bytes, headers, and query parameters (Zoho may sign some)."""

    body: bytes
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)


def attio_event(
    event_type: str,
    *,
    object_id: str,
    record_id: str,
    attribute_id: str | None = None,
    actor_type: str = "workspace-member",
    workspace_id: str = "00000000-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """One Attio event in the delivery format (ids and actor only, as Attio sends)."""
    ids = {"workspace_id": workspace_id, "object_id": object_id, "record_id": record_id}
    if attribute_id is not None:
        ids["attribute_id"] = attribute_id
    return {
        "event_type": event_type,
        "id": ids,
        "actor": {"type": actor_type, "id": str(uuid.uuid4())},
    }


def attio_delivery(
    events: Sequence[Mapping[str, Any]], *, secret: str, idempotency_key: str | None = None
) -> SignedRequest:
    """An Attio delivery signed like Attio signs it (hex HMAC-SHA256 of the raw body)."""
    body = json.dumps({"webhook_id": str(uuid.uuid4()), "events": list(events)}).encode("utf-8")
    signature = attio_signature(body, secret)
    return SignedRequest(
        body,
        {
            "Content-Type": "application/json",
            "Attio-Signature": signature,
            "X-Attio-Signature": signature,
            "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
        },
    )


def zoho_delivery(
    event_type: str,
    data: Mapping[str, Any],
    *,
    secret: str,
    event_id: str | None = None,
    query: Mapping[str, str] | None = None,
    encoding: str = "hex",
    created_time: str = "2026-11-30T10:00:00+0000",
    form: bool = False,
) -> SignedRequest:
    """A Zoho Billing default-payload webhook, signed over sorted query pairs + raw body (hex or base64).

    The event has Zoho's shape (a captured one: PipedreamHQ/pipedream,
    ``components/zoho_subscriptions/sources/subscription-created/test-event.mjs``): the instant in
    ``created_time`` (offset without a colon), ``event_time`` only its date. ``form=True`` sends it as
    ``application/x-www-form-urlencoded`` with one ``payload=<json>`` pair, signed over the decoded pair.
    """
    event = {
        "created_time": created_time,
        "event_id": event_id or str(uuid.uuid4().int)[:18],
        "event_type": event_type,
        "data": dict(data),
        "event_time_formatted": f"{created_time[8:10]} {_MONTHS[int(created_time[5:7]) - 1]} {created_time[:4]}",
        "event_source": "user",
        "event_time": created_time[:10],
    }
    text = json.dumps(event)
    params = dict(query or {})
    if form:
        body = urlencode({"payload": text}).encode("ascii")
        message = zoho_signed_string(params.items(), [("payload", text)], b"")
        content_type = "application/x-www-form-urlencoded"
    else:
        body = text.encode("utf-8")
        message = zoho_signed_string(params.items(), (), body)
        content_type = "application/json"
    digest = zoho_signature(message, secret)
    signature = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return SignedRequest(body, {"Content-Type": content_type, "X-Zoho-Webhook-Signature": signature}, params)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def braintree_notification(gateway: Any, kind: str, subject_id: str) -> dict[str, str]:
    """``bt_signature``/``bt_payload`` from the SDK's own ``webhook_testing`` (signed with the gateway's keys)."""
    sample = gateway.webhook_testing.sample_notification(kind, subject_id)
    payload = sample["bt_payload"]
    return {
        "bt_signature": sample["bt_signature"],
        "bt_payload": payload.decode() if isinstance(payload, bytes) else payload,
    }


def braintree_form(fields: Mapping[str, str]) -> SignedRequest:
    """A Braintree delivery as its form-encoded body."""
    return SignedRequest(
        urlencode(dict(fields)).encode("ascii"), {"Content-Type": "application/x-www-form-urlencoded"}
    )
