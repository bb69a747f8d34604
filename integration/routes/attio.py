"""``POST /webhooks/attio``: verify ``Attio-Signature``, validate, one job per event.

An event's dedupe id is the SHA-256 (128 bits) of the signed body and the event's index in it: ``Idempotency-Key``
is not covered by the signature, so it is only a hint for the request's log line, kept when it is made of
``[A-Za-z0-9_.:-]`` (at most 128) and dropped otherwise; it never reaches a job. Attio events carry no timestamp,
so identical events coalesce while one is pending instead of being dropped (``queueing``).
"""

from __future__ import annotations

import hashlib
import re

from flask import Blueprint, Response, request

from ..extensions import settings
from ..observability import note
from ..schemas import AttioDeliverySchema
from ..verify import verify_attio
from ._intake import Candidate, accept
from ._json import load_json

__all__ = ["bp"]

_SCHEMA = AttioDeliverySchema()  # built once: building a schema (and its nested ones) is costly

bp = Blueprint("attio_webhooks", __name__, url_prefix="/webhooks")

_HINT = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@bp.post("/attio")
def receive() -> Response:
    """Accept an Attio delivery: verify, validate, enqueue each event, answer."""
    body = request.get_data(cache=True)  # raw bytes: the signature covers these, not re-serialized JSON
    verify_attio(body, request.headers, secrets=settings().attio_webhook_secrets)
    delivery = _SCHEMA.load(load_json(body))
    hint = request.headers.get("Idempotency-Key", "").strip()
    if hint:
        note(delivery=hint if _HINT.fullmatch(hint) else "invalid")
    digest = hashlib.sha256(body).hexdigest()[:32]  # of the signed bytes: a replay cannot mint a new id
    candidates: list[Candidate] = [
        (event["event_type"], f"{digest}:{index}", event) for index, event in enumerate(delivery["events"])
    ]
    return accept("attio", candidates, coalesce=True)
