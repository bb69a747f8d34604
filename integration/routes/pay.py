"""``GET/POST /pay/<token>``: the payment-method page of an activation (workflow 2, step 5).

GET checks the token and shows Braintree's Drop-in UI with a client token for that customer (the one page that
calls a provider from the web process: a client token cannot be made ahead of time, it is short-lived). POST
takes the nonce, marks the token used, and enqueues the job that vaults it and resumes the activation; it calls
no provider. Bad tokens get a plain page with a 4xx status, never a stack trace.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, current_app, render_template, request

from ..errors import QueueUnavailable, ServiceError
from ..extensions import queues, redis_conn, settings
from ..paylinks import LinkExpired, LinkInvalid, LinkUsed, PaymentLink, PaymentLinks
from ..queueing import enqueue_job
from ..routing import WEBHOOK_QUEUE

__all__ = ["bp"]

log = logging.getLogger(__name__)

bp = Blueprint("pay", __name__, url_prefix="/pay")

SUBMIT_JOB = "workers.jobs.activation.run_payment_method_submitted"
SANDBOX_NONCE = "fake-valid-nonce"
DROPIN_URL = "https://js.braintreegateway.com/web/dropin/1.44.1/js/dropin.min.js"
_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_PAGE = tuple[str, int]


def _links() -> PaymentLinks:
    s = settings()
    return PaymentLinks(s.link_secret, ttl_days=s.payment_link_ttl_days, connection=redis_conn())


def _problem(title: str, message: str, status: int) -> _PAGE:
    return render_template("pay_problem.html", title=title, message=message), status


def _checked(token: str) -> PaymentLink | _PAGE:
    try:
        return _links().check(token)
    except LinkExpired:
        return _problem("This link has expired",
                        "Payment links stay valid for a limited time. Ask your account manager for a new one.", 410)
    except LinkUsed:
        return _problem("This link was already used",
                        "A payment method was already submitted through this link. Nothing more is needed.", 409)
    except LinkInvalid:
        return _problem("This link is not valid",
                        "Check that you opened the whole link from the message you received.", 404)


def _braintree_client() -> Any:
    ext = current_app.extensions
    if "braintree_client" not in ext:
        from ..clients.braintree import build_braintree_client

        ext["braintree_client"] = build_braintree_client(settings(), redis_conn())
    return ext["braintree_client"]


@bp.get("/<token>")
def show(token: str) -> _PAGE:
    """The page with the Drop-in UI (and, outside production, the sandbox test-card button)."""
    link = _checked(token)
    if isinstance(link, tuple):
        return link
    try:
        client_token = _braintree_client().client_token(link.customer_id)
    except ServiceError as exc:
        log.warning("client token unavailable: %s", exc)
        return _problem("Temporarily unavailable",
                        "The secure card form cannot be shown right now. Please try again in a few minutes.", 503)
    return render_template(
        "pay.html", link=link, client_token=client_token, sandbox=not settings().is_production,
        sandbox_nonce=SANDBOX_NONCE, dropin_url=DROPIN_URL,
    ), 200


@bp.post("/<token>")
def submit(token: str) -> _PAGE:
    """Take the nonce, mark the link used and queue the job that saves the card and resumes the activation."""
    link = _checked(token)
    if isinstance(link, tuple):
        return link
    nonce = (request.form.get("payment_method_nonce") or "").strip()
    if not _NONCE.match(nonce):
        return _problem("No card details were received", "Please go back and fill in the card form again.", 400)
    links = _links()
    if not links.mark_used(token):
        return _problem("This link was already used",
                        "A payment method was already submitted through this link. Nothing more is needed.", 409)
    try:
        enqueue_job(
            queues()[WEBHOOK_QUEUE], SUBMIT_JOB,
            {"subscription_id": link.subscription_id, "customer_id": link.customer_id, "nonce": nonce},
            retry_schedule=settings().retry_schedule_seconds,
            meta={"source": "pay", "event_type": "payment_method_submitted", "event_id": link.subscription_id},
            description=f"pay payment_method_submitted {link.subscription_id}",
        )
    except QueueUnavailable:
        links.forget_use(token)
        return _problem("Temporarily unavailable", "Your card was not saved. Please try again in a few minutes.", 503)
    return render_template("pay_done.html", link=link), 200
