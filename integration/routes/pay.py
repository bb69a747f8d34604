"""``GET/POST /pay/<token>``: the payment-method page of an activation (workflow 2, step 5).

GET checks the token and shows Braintree's Drop-in UI with a client token that names no customer (a client token
bound to the customer would show the link's holder that customer's vaulted cards, and let it delete them). POST
takes the nonce and saves it as the customer's default card through the server, *then* marks the link used and
enqueues the job that resumes the activation (its vault step finds the card and skips): a refused card shows
Braintree's reason and the link stays usable. These are the web process's only provider calls (a client token is
short-lived; the customer must learn at once whether the card was taken). One submission per link at a time
(a lock), and each link has a budget of page views and submissions (``VIEWS_PER_WINDOW``, ``SUBMITS_PER_WINDOW``:
a 429 page beyond). Bad tokens get a plain page with a 4xx status, never a stack trace.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, current_app, render_template, request

from ..errors import QueueUnavailable, ServiceError, ServiceRejected
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
VIEWS_PER_WINDOW = (30, 600)  # page views (each mints a client token) per link per 10 minutes
SUBMITS_PER_WINDOW = (10, 3600)  # card submissions per link per hour (a refused card may be retried, not tested)
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


def _over_budget(links: PaymentLinks, link: PaymentLink, kind: str, budget: tuple[int, int]) -> _PAGE | None:
    limit, window = budget
    if links.count_view(link, kind, window=window) > limit:
        return _problem("Too many attempts", "Please wait a few minutes before trying again.", 429)
    return None


@bp.get("/<token>")
def show(token: str) -> _PAGE:
    """The page with the Drop-in UI (and, outside production, the sandbox test-card button)."""
    link = _checked(token)
    if isinstance(link, tuple):
        return link
    limited = _over_budget(_links(), link, "views", VIEWS_PER_WINDOW)
    if limited:
        return limited
    try:
        client_token = _braintree_client().client_token()
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
    """Save the card through Braintree; only then mark the link used and queue the activation's resumption."""
    link = _checked(token)
    if isinstance(link, tuple):
        return link
    nonce = (request.form.get("payment_method_nonce") or "").strip()
    if not _NONCE.match(nonce):
        return _problem("No card details were received", "Please go back and fill in the card form again.", 400)
    links = _links()
    limited = _over_budget(links, link, "submits", SUBMITS_PER_WINDOW)
    if limited:
        return limited
    if not links.hold_submit(link):
        return _problem("Your card is being saved",
                        "A payment method is being submitted through this link right now. Please wait.", 409)
    try:
        return _save(links, link, nonce)
    finally:
        links.release_submit(link)


def _save(links: PaymentLinks, link: PaymentLink, nonce: str) -> _PAGE:
    try:
        _braintree_client().add_payment_method(link.customer_id, nonce)
    except ServiceRejected as exc:
        log.info("payment method refused subscription=%s code=%s", link.subscription_id, exc.code)
        reason = exc.message.removeprefix("payment method refused: ")
        return _problem("Your card was not accepted",
                        f"{reason} Please check the details or use another card: this link still works.", 422)
    except ServiceError as exc:
        log.warning("payment method not saved: %s", exc)
        return _problem("Temporarily unavailable", "Your card was not saved. Please try again in a few minutes.", 503)
    try:
        enqueue_job(
            queues()[WEBHOOK_QUEUE], SUBMIT_JOB,
            # The card is saved; the job's vault step finds it as the default and skips (the nonce is spent).
            {"subscription_id": link.subscription_id, "customer_id": link.customer_id, "nonce": nonce},
            retry_schedule=settings().retry_schedule_seconds,
            meta={"source": "pay", "event_type": "payment_method_submitted", "event_id": link.subscription_id},
            description=f"pay payment_method_submitted {link.subscription_id}",
        )
    except QueueUnavailable:
        return _problem("Temporarily unavailable",
                        "Your card was saved, but your subscription could not be set up yet. "
                        "Please open this link again in a few minutes.", 503)
    links.mark_used(link)
    return render_template("pay_done.html", link=link), 200
