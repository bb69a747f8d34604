"""The Attio data model of ``spec/data-model.md`` as data, and the pure checks of an existing attribute against it.

``flask attio setup`` (``integration/commands/attio.py``) creates what is missing from ``OBJECTS`` and refuses
what conflicts; the slugs here are the contract every job relies on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CURRENCY", "OBJECTS", "AttributeSpec", "ObjectSpec", "attribute_conflicts"]

CURRENCY = "USD"  # the code of every currency attribute; Attio takes it from the attribute, never per value


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute the service relies on: slug, type and what its type needs (options, target, uniqueness)."""

    slug: str
    title: str
    type: str
    description: str | None = None
    unique: bool = False
    options: tuple[str, ...] = ()
    target: str | None = None  # record-reference: slug of the object it points at

    def describe(self) -> str:
        """A short human form, e.g. ``currency (USD)`` or ``text, unique``."""
        if self.type == "currency":
            return f"currency ({CURRENCY})"
        if self.type == "record-reference":
            return f"record-reference → {self.target}"
        return self.type + (", unique" if self.unique else "")

    def create_body(self) -> dict[str, Any]:
        """Attio's create-attribute body (``data`` of ``POST /v2/objects/{object}/attributes``)."""
        config: dict[str, Any] = {}
        if self.type == "currency":
            config = {"currency": {"default_currency_code": CURRENCY, "display_type": "symbol"}}
        elif self.type == "record-reference":
            config = {"record_reference": {"allowed_objects": [self.target]}}
        return {
            "title": self.title,
            "description": self.description,
            "api_slug": self.slug,
            "type": self.type,
            "is_required": False,  # required-ness is checked by the service when it acts, not by Attio
            "is_unique": self.unique,
            "is_multiselect": False,
            "config": config,
        }


@dataclass(frozen=True)
class ObjectSpec:
    """One Attio object and the attributes the service reads or writes on it."""

    slug: str
    singular: str
    plural: str
    attributes: tuple[AttributeSpec, ...] = field(default_factory=tuple)
    standard: bool = False  # standard objects exist in every workspace; setup never creates them


def attribute_conflicts(
    object_slug: str, spec: AttributeSpec, existing: Mapping[str, Any], object_ids: Mapping[str, str]
) -> list[str]:
    """Why an existing attribute (Attio's read shape) cannot serve as ``spec``; [] when it can."""
    name = f"{object_slug}.{spec.slug}"
    if existing.get("is_archived"):
        return [f"{name} exists but is archived; unarchive it in Attio (setup never changes existing attributes)"]
    if existing.get("type") != spec.type:
        return [f"{name} exists as {existing.get('type')}, but the service needs {spec.describe()}"]
    problems: list[str] = []
    if spec.unique and not existing.get("is_unique"):
        problems.append(f"{name} exists but is not unique; the service upserts through it and needs it unique")
    if existing.get("is_multiselect"):
        problems.append(f"{name} exists as a multiselect; the service needs a single value")
    if existing.get("is_writable") is False:
        problems.append(f"{name} exists but is not writable (a system attribute)")
    config = existing.get("config") or {}
    if spec.type == "currency":
        code = (config.get("currency") or {}).get("default_currency_code")
        if code != CURRENCY:
            problems.append(f"{name} exists with currency {code}, but the service needs {CURRENCY}")
    if spec.type == "record-reference":
        ref = config.get("record_reference") or {}
        allowed = set(ref.get("allowed_object_ids") or []) | set(ref.get("allowed_objects") or [])
        target_id = object_ids.get(spec.target or "")
        if not allowed & ({spec.target, target_id} - {None}):
            problems.append(f"{name} exists but does not point at {spec.target}")
    return problems


def _text(slug: str, title: str, description: str | None = None, *, unique: bool = False) -> AttributeSpec:
    return AttributeSpec(slug, title, "text", description, unique=unique)


def _select(slug: str, title: str, *options: str, description: str | None = None) -> AttributeSpec:
    return AttributeSpec(slug, title, "select", description, options=options)


def _ref(slug: str, title: str, target: str, description: str | None = None) -> AttributeSpec:
    return AttributeSpec(slug, title, "record-reference", description, target=target)


def _typed(slug: str, title: str, type_: str, description: str | None = None) -> AttributeSpec:
    return AttributeSpec(slug, title, type_, description)


# companies.name is a standard attribute of every workspace: the service reads it and never creates it.
OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec(
        "companies",
        "Company",
        "Companies",
        (
            _text("billing_email", "Billing email", "Where invoices and the payment-method link go"),
            _text("braintree_customer_id", "Braintree customer ID", "Set by the integration", unique=True),
            _text("zoho_customer_id", "Zoho customer ID", "Set by the integration", unique=True),
        ),
        standard=True,
    ),
    ObjectSpec(
        "services",
        "Service",
        "Services",
        (
            _text("external_id", "External ID", "zoho-plan:<plan_code> or zoho-addon:<addon_code>", unique=True),
            _text("name", "Name", "Plan or addon name"),
            _text("description", "Description"),
            _select("kind", "Kind", "Plan", "Addon"),
            _text("code", "Code", "The Zoho plan_code or addon_code"),
            _typed("price", "Price", "currency", "Plan recurring price, or the addon's first price bracket"),
            _text("billing_interval", "Billing interval", "e.g. every 1 month, every 12 months, one time"),
            _select(
                "status", "Status", "Active", "Inactive", "Removed", description="Removed: no longer in Zoho Billing"
            ),
            _text("zoho_product_id", "Zoho product ID"),
            _typed("last_synced_at", "Last synced at", "timestamp", "When the integration last wrote this record"),
        ),
    ),
    ObjectSpec(
        "subscriptions",
        "Subscription",
        "Subscriptions",
        (
            _text("name", "Name", "Free label"),
            _ref("company", "Company", "companies", "Required to activate"),
            _ref("service", "Service", "services", "A Plan service; required to activate"),
            _select(
                "status",
                "Status",
                "Requested",
                "Awaiting payment method",
                "Active",
                "Trial",
                "Past due",
                "Non-renewing",
                "Cancelled",
                "Expired",
                "Failed",
                description="Set Requested to activate; the integration sets the rest",
            ),
            _text("zoho_subscription_id", "Zoho subscription ID", "Set by the integration", unique=True),
            _text("payment_link", "Payment link", "Payment-method page, while one is needed"),
            _text("status_detail", "Status detail", "Why it is Failed or Past due"),
            _typed("next_billing_date", "Next billing date", "date", "From Zoho Billing"),
            _typed("last_payment_at", "Last payment at", "timestamp"),
            _typed("last_event_at", "Last event at", "timestamp", "Time of the newest source event applied"),
        ),
    ),
    ObjectSpec(
        "payments",
        "Payment",
        "Payments",
        (
            _text(
                "external_id",
                "External ID",
                "braintree:<transaction id> or zoho-invoice:<invoice id>:<attempt>",
                unique=True,
            ),
            _ref("company", "Company", "companies"),
            _ref("subscription", "Subscription", "subscriptions", "When the invoice belongs to one"),
            _text("zoho_invoice_id", "Zoho invoice ID"),
            _text("zoho_invoice_number", "Zoho invoice number"),
            _typed("amount", "Amount", "currency"),
            _select(
                "status",
                "Status",
                "Submitted",
                "Settled",
                "Declined",
                "Failed",
                "Disputed",
                "Dispute won",
                "Dispute lost",
                "Refunded",
            ),
            _text("failure_reason", "Failure reason", "Processor or gateway text for declines and failures"),
            _typed("occurred_at", "Occurred at", "timestamp"),
        ),
    ),
)
