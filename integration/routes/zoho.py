"""``POST /webhooks/zoho``: verify ``X-Zoho-Webhook-Signature``, validate, one job per event.

The body is the event as JSON (the default payload) or, when the webhook is set to ``x-www-form-urlencoded``,
one ``payload=<the event as JSON>`` pair (as public handlers of Zoho's deliveries parse it); the signature covers
the decoded form pairs in that case (``verify.zoho_signed_string``).

The dedupe id of a JSON delivery is its ``event_id`` (the body is signed whole and parsed unambiguously). A form
delivery's fields are cut out of a signed string that has no separators (``verify.verify_zoho``), so a sender
could move a key/value boundary and show another ``event_id`` under the same signature: its dedupe id is the
SHA-256 of the signed string itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Response, request

from ..extensions import settings
from ..schemas import ZohoEventSchema
from ..verify import verify_zoho
from ._intake import accept
from ._json import load_json

__all__ = ["bp"]

_SCHEMA = ZohoEventSchema()  # built once: building a schema (and its nested ones) is costly

bp = Blueprint("zoho_webhooks", __name__, url_prefix="/webhooks")


@bp.post("/zoho")
def receive() -> Response:
    """Accept a Zoho Billing event: verify, validate, enqueue, answer."""
    body = request.get_data(cache=True)  # raw bytes, read before request.form / request.json
    is_form = request.mimetype == "application/x-www-form-urlencoded"
    form = list(request.form.items(multi=True)) if is_form else []
    signed = verify_zoho(
        body,
        request.headers,
        query=list(request.args.items(multi=True)),
        form=form,
        secrets=settings().zoho_webhook_secrets,
    )
    raw = _form_event(form) if is_form else load_json(body)
    event = _SCHEMA.load(raw)
    dedupe_id = "form-" + hashlib.sha256(signed).hexdigest() if is_form else event["event_id"]
    return accept("zoho", [(event["event_type"], dedupe_id, event)])


def _form_event(form: list[tuple[str, str]]) -> Any:  # unvalidated: the schema checks it
    """The event of a form-encoded delivery: the JSON of its one ``payload`` pair, else the pairs themselves."""
    if len(form) == 1 and form[0][0] == "payload":
        return load_json(form[0][1].encode("utf-8"))
    return dict(form)
