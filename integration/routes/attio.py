"""``POST /webhooks/attio``: verify ``Attio-Signature``, validate, one job per event."""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, request

from ..extensions import settings
from ..schemas import AttioDeliverySchema
from ..verify import verify_attio
from ._intake import Candidate, accept
from ._json import load_json

__all__ = ["bp"]

_SCHEMA = AttioDeliverySchema()  # built once: building a schema (and its nested ones) is costly

bp = Blueprint("attio_webhooks", __name__, url_prefix="/webhooks")


@bp.post("/attio")
def receive() -> Response:
    """Accept an Attio delivery: verify, validate, enqueue each event, answer."""
    body = request.get_data(cache=True)  # raw bytes: the signature covers these, not re-serialized JSON
    verify_attio(body, request.headers, secrets=settings().attio_webhook_secrets)
    delivery = _SCHEMA.load(load_json(body))
    # One Idempotency-Key per delivery (which may carry several events): the event's index completes it.
    key = request.headers.get("Idempotency-Key", "").strip()[:128] or "body-" + hashlib.sha256(body).hexdigest()
    candidates: list[Candidate] = [
        (event["event_type"], f"{key}:{index}", event) for index, event in enumerate(delivery["events"])
    ]
    return accept("attio", candidates)
