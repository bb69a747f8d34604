"""Workflow 2: a ``Requested`` subscription in Attio → a Braintree customer, a Zoho subscription, ``Active``.

Events carry ids only, arrive in any order, come in bursts (one per changed attribute) and echo our own writes,
so the handler re-reads the record and acts only on ``Requested`` (or ``Awaiting payment method`` when resumed
by the payment page), one activation at a time per subscription (a lock). Every step looks before it writes:

- the Braintree customer has a custom id derived from the Attio company id, so a retry finds it;
- the Zoho customer is the stored id (unless Zoho answers that it is gone: deleted there), else the exact
  billing-email match, else a new one; a customer Zoho refuses fails the record with a ``status_detail``;
- the Zoho subscription is looked up by ``reference_id`` (= the Attio subscription id) before it is created.

Missing or wrong data is an outcome: ``Failed`` with a ``status_detail`` a CRM user can act on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from integration.clients.attio_values import record_id, value
from integration.errors import ServiceRejected
from integration.locks import activation_lock, company_lock, hold
from integration.paylinks import PaymentLink, PaymentLinks

from ..providers import AttioLike, BraintreeVault, ZohoAccounts
from ..records import ZOHO_TO_ATTIO_STATUS

__all__ = ["ACTIONABLE", "Activation", "activate"]

log = logging.getLogger(__name__)

ACTIONABLE = ("Requested",)
RESUMABLE = ("Requested", "Awaiting payment method")


@dataclass(frozen=True)
class Activation:
    """What one activation run did."""

    outcome: str  # active | awaiting_payment_method | failed | ignored | not_found
    subscription_id: str
    detail: str = ""
    zoho_subscription_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the job result."""
        return {"outcome": self.outcome, "subscription_id": self.subscription_id, "detail": self.detail,
                "zoho_subscription_id": self.zoho_subscription_id}


class _Refused(Exception):
    """The record cannot be activated as it stands; the message tells a CRM user what to fix."""


def activate(
    subscription_id: str,
    *,
    attio: AttioLike,
    zoho: ZohoAccounts,
    braintree: BraintreeVault,
    connection: redis.Redis,
    links: PaymentLinks,
    public_base_url: str,
    customer_id_for_company: Callable[[str], str],
    resume: bool = False,
) -> Activation:
    """Activate one subscription if it asks for it; idempotent, safe to retry after a crash at any step."""
    with hold(connection, activation_lock(subscription_id), ttl=60.0, wait=10.0) as lock:
        sub = attio.get_record("subscriptions", subscription_id)
        if sub is None:
            return Activation("not_found", subscription_id)
        status = value(sub, "status")
        if status not in (RESUMABLE if resume else ACTIONABLE):
            return Activation("ignored", subscription_id, detail=f"status is {status!r}")
        try:
            company, service, email = _validate(attio, sub)
        except _Refused as refusal:
            _fail(attio, subscription_id, str(refusal))
            return Activation("failed", subscription_id, detail=str(refusal))
        company_id = record_id(company)
        company_name = value(company, "name") or "the company"

        # The customers belong to the company, not the subscription: two subscriptions of one company requested
        # together take turns here, and the second re-reads the ids the first wrote.
        with hold(connection, company_lock(company_id), ttl=60.0, wait=15.0) as company_held:
            company = attio.get_record("companies", company_id) or company
            bt_id = value(company, "braintree_customer_id") or customer_id_for_company(company_id)
            braintree.ensure_customer(bt_id, email=email, company=company_name)
            if value(company, "braintree_customer_id") != bt_id:
                attio.update_record("companies", company_id, {"braintree_customer_id": bt_id})

            try:
                zoho_customer_id = _ensure_zoho_customer(zoho, company, email=email, name=company_name,
                                                         before_create=company_held.check)
            except ServiceRejected as exc:
                _fail(attio, subscription_id, f"Zoho Billing refused the customer {email}: {exc.message}")
                raise
            if value(company, "zoho_customer_id") != zoho_customer_id:
                attio.update_record("companies", company_id, {"zoho_customer_id": zoho_customer_id})

        if braintree.default_payment_method(bt_id) is None:
            link = PaymentLink(
                subscription_id=subscription_id,
                customer_id=bt_id,
                service_name=str(value(service, "name") or value(service, "code")),
                price=str(value(service, "price") or ""),
                interval=str(value(service, "billing_interval") or ""),
                issued_at=time.time(),
            )
            url = f"{public_base_url.rstrip('/')}/pay/{links.issue(link)}"
            attio.update_record("subscriptions", subscription_id, {
                "status": "Awaiting payment method",
                "payment_link": url,
                "status_detail": f"Waiting for {company_name} to add a payment method through the payment link.",
            })
            return Activation("awaiting_payment_method", subscription_id, detail=url)

        plan_code = str(value(service, "code"))
        zsub = zoho.find_subscription_by_reference(zoho_customer_id, subscription_id)
        if zsub is None:
            lock.check()  # fenced: a lapsed activation lock must not create a second Zoho subscription
            try:
                zsub = zoho.create_subscription(zoho_customer_id, plan_code, subscription_id, auto_collect=False)
            except ServiceRejected as exc:
                _fail(attio, subscription_id, f"Zoho Billing refused the subscription: {exc.message}")
                raise
        zoho_status = str(zsub.get("status") or "")
        attio.update_record("subscriptions", subscription_id, {
            "zoho_subscription_id": str(zsub["subscription_id"]),
            "status": ZOHO_TO_ATTIO_STATUS.get(zoho_status, "Active"),
            "next_billing_date": zsub.get("next_billing_at") or None,
            "payment_link": "",
            "status_detail": "",
        })
        return Activation("active", subscription_id, zoho_subscription_id=str(zsub["subscription_id"]))


def _validate(attio: AttioLike, sub: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    company_id = value(sub, "company")
    if not company_id:
        raise _Refused("Choose the company this subscription is for, then set the status to Requested again.")
    company = attio.get_record("companies", company_id)
    if company is None:
        raise _Refused("The linked company no longer exists. Link an existing company and request again.")
    name = value(company, "name") or "The company"
    service_id = value(sub, "service")
    if not service_id:
        raise _Refused("Choose the service (a plan) to subscribe to, then set the status to Requested again.")
    service = attio.get_record("services", service_id)
    if service is None:
        raise _Refused("The linked service no longer exists. Choose a plan from Services and request again.")
    service_name = value(service, "name") or value(service, "code") or "The service"
    if value(service, "kind") != "Plan":
        raise _Refused(f"{service_name} is an add-on, not a plan. Choose a plan and request again.")
    if value(service, "status") != "Active":
        raise _Refused(
            f"{service_name} is {value(service, 'status') or 'not active'} in Zoho Billing and can't be sold. "
            "Choose an active plan and request again."
        )
    email = value(company, "billing_email")
    if not email or "@" not in str(email):
        raise _Refused(f"Add a billing email to {name} (it receives the invoices), then request again.")
    return company, service, str(email).strip()


def _ensure_zoho_customer(
    zoho: ZohoAccounts, company: dict[str, Any], *, email: str, name: str, before_create: Callable[[], None]
) -> str:
    stored = value(company, "zoho_customer_id")
    if stored and zoho.get_customer(str(stored)) is not None:
        return str(stored)
    found = zoho.find_customer_by_email(email)
    if found is None:
        before_create()  # the company's lock is still ours: no other activation can be creating this customer
        found = zoho.create_customer(name, email)
    return str(found["customer_id"])


def _fail(attio: AttioLike, subscription_id: str, detail: str) -> None:
    log.info("activation refused subscription=%s: %s", subscription_id, detail)
    attio.update_record("subscriptions", subscription_id, {"status": "Failed", "status_detail": detail})
