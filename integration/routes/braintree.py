"""``/webhooks/braintree``: the SDK verifies ``bt_signature``/``bt_payload``; GET answers the challenge."""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, request

from ..errors import PayloadInvalid
from ..extensions import braintree_verifier
from ..schemas import BraintreeEventSchema, notification_to_dict
from ._intake import accept

__all__ = ["bp"]

_SCHEMA = BraintreeEventSchema()  # built once: building a schema (and its nested ones) is costly

bp = Blueprint("braintree_webhooks", __name__, url_prefix="/webhooks")


@bp.post("/braintree")
def receive() -> Response:
    """Accept a Braintree notification: verify and parse through the SDK, validate, enqueue, answer."""
    signature = request.form.get("bt_signature")
    payload = request.form.get("bt_payload")
    notification = braintree_verifier().parse(signature, payload)
    event = _SCHEMA.load(notification_to_dict(notification))
    # Braintree sends no event id; a retry resends the same payload, so its hash is the delivery key.
    dedupe_id = hashlib.sha256((payload or "").encode("utf-8")).hexdigest()
    return accept("braintree", [(event["kind"], dedupe_id, event)])


@bp.get("/braintree")
def challenge() -> Response:
    """Answer the registration handshake ``GET ?bt_challenge=`` with the SDK's ``verify()``."""
    value = request.args.get("bt_challenge")
    if not value:
        raise PayloadInvalid("bt_challenge is missing")
    return Response(braintree_verifier().verify_challenge(value), status=200, mimetype="text/plain")
