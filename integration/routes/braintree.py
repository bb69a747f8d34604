"""``/webhooks/braintree``: the SDK verifies ``bt_signature``/``bt_payload``; GET answers the challenge.

Braintree sends no event id, so a notification's dedupe id is what it says, parsed from the signed payload:
``kind:subject id:signed timestamp`` (not the payload's bytes, which can be re-encoded without breaking the
signature). A notification signed more than ``MAX_AGE`` ago is refused (400): its dedupe record may be gone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, request

from ..errors import PayloadInvalid
from ..extensions import braintree_verifier
from ..schemas import BraintreeEventSchema, notification_to_dict
from ._intake import accept

__all__ = ["bp"]

_SCHEMA = BraintreeEventSchema()  # built once: building a schema (and its nested ones) is costly

bp = Blueprint("braintree_webhooks", __name__, url_prefix="/webhooks")

MAX_AGE = timedelta(days=30)  # < queueing.DEDUPE_TTL (31 days); Braintree retries for 24 hours
_SKEW = timedelta(days=1)


@bp.post("/braintree")
def receive() -> Response:
    """Accept a Braintree notification: verify and parse through the SDK, validate, enqueue, answer."""
    signature = request.form.get("bt_signature")
    payload = request.form.get("bt_payload")
    notification = braintree_verifier().parse(signature, payload)
    event = _SCHEMA.load(notification_to_dict(notification))
    return accept("braintree", [(event["kind"], _dedupe_id(event), event)])


def _dedupe_id(event: dict[str, Any]) -> str:
    """``kind:subject:timestamp`` of a validated notification; PayloadInvalid when it is undated or too old."""
    try:
        signed_at = datetime.fromisoformat(event["timestamp"])
    except (TypeError, ValueError) as exc:
        raise PayloadInvalid("the notification has no timestamp") from exc
    signed_at = signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    if not now - MAX_AGE <= signed_at <= now + _SKEW:
        raise PayloadInvalid("the notification's timestamp is outside the accepted window")
    subject = event.get("subject_id") or (event.get("transaction") or {}).get("id") \
        or (event.get("dispute") or {}).get("id") or ""
    return f"{event['kind']}:{subject}:{signed_at.astimezone(UTC).isoformat()}"


@bp.get("/braintree")
def challenge() -> Response:
    """Answer the registration handshake ``GET ?bt_challenge=`` with the SDK's ``verify()``."""
    value = request.args.get("bt_challenge")
    if not value:
        raise PayloadInvalid("bt_challenge is missing")
    return Response(braintree_verifier().verify_challenge(value), status=200, mimetype="text/plain")
