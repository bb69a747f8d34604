"""The Attio side of every workflow: finding our records and writing outcomes, by the rules of data-model.md.

Every write is an upsert on a stable key or an update of a record found first, so a retried job converges:

- ``payments`` are asserted on ``external_id`` and their status moves only as ``payments.TRANSITIONS`` allows (a
  late ``Submitted`` never overwrites ``Settled``; a settlement never overwrites ``Disputed``);
- ``subscriptions`` carry ``last_event_at``: an event older than the newest one applied changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from integration.clients.attio_values import record_id, value

from .payments import can_move
from .providers import AttioLike

__all__ = [
    "ZOHO_TO_ATTIO_STATUS",
    "amount",
    "event_instant",
    "find_company_by_zoho_customer",
    "find_one",
    "find_subscription_by_zoho_id",
    "is_stale",
    "is_uuid",
    "iso",
    "parse_time",
    "ref",
    "sale_key",
    "sale_of",
    "set_subscription",
    "subscription_by_reference",
    "upsert_payment",
]

log = logging.getLogger(__name__)

# workflows.md §4; the statuses Zoho documents beyond those are mapped to their nearest meaning.
ZOHO_TO_ATTIO_STATUS = {
    "live": "Active",
    "future": "Active",
    "trial": "Trial",
    "unpaid": "Past due",
    "dunning": "Past due",
    "non_renewing": "Non-renewing",
    "cancelled": "Cancelled",
    "cancelled_from_dunning": "Cancelled",
    "expired": "Expired",
    "trial_expired": "Expired",
    "creation_failed": "Failed",
}


def ref(object: str, target_id: str | None) -> list[dict[str, str]]:
    """A record-reference write value (empty list clears it)."""
    return [{"target_object": object, "target_record_id": target_id}] if target_id else []


def iso(moment: datetime) -> str:
    """An Attio timestamp write value (UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    """Parse Attio's, Zoho's (``-0700``) or ISO timestamps; None when absent or unreadable."""
    if not text:
        return None
    raw = text.strip()
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    # Attio writes nanoseconds; Python keeps microseconds.
    if "." in raw:
        head, _, tail = raw.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits):]
        raw = f"{head}.{digits[:6]}{zone}"
    for fmt in (None, "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"):
        try:
            moment = datetime.fromisoformat(raw) if fmt is None else datetime.strptime(raw, fmt)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def event_instant(event: Mapping[str, Any]) -> datetime | None:
    """When a Zoho event was raised: its ``created_time`` (the instant), else its ``event_time``.

    Zoho's ``event_time`` is only a date (``"2023-08-02"``; a real capture in PipedreamHQ/pipedream,
    ``components/zoho_subscriptions/sources/subscription-created/test-event.mjs``), so every event of a day would
    tie on it and ``last_event_at`` could not order them.
    """
    return parse_time(event.get("created_time")) or parse_time(event.get("event_time"))


def find_one(attio: AttioLike, object: str, attribute: str, wanted: Any) -> dict[str, Any] | None:
    """The record whose unique ``attribute`` equals ``wanted`` (the oldest if Attio ever returns several)."""
    rows = attio.find_records(object, attribute, wanted)
    if len(rows) > 1:
        log.warning("several %s records share %s=%s; using the oldest", object, attribute, wanted)
        rows.sort(key=lambda r: str(r.get("created_at") or ""))
    return rows[0] if rows else None


def find_company_by_zoho_customer(attio: AttioLike, zoho_customer_id: str) -> dict[str, Any] | None:
    """The Attio company mapped to a Zoho customer."""
    return find_one(attio, "companies", "zoho_customer_id", zoho_customer_id)


def find_subscription_by_zoho_id(
    attio: AttioLike, zoho_subscription_id: str, reference_id: str | None = None
) -> dict[str, Any] | None:
    """The Attio subscription of a Zoho subscription: by ``zoho_subscription_id``, else by Zoho's reference id.

    The activation sets Zoho's ``reference_id`` to the Attio record id, so an event racing the write-back of
    ``zoho_subscription_id`` still finds its record.
    """
    found = find_one(attio, "subscriptions", "zoho_subscription_id", zoho_subscription_id)
    if found is None and reference_id:
        found = subscription_by_reference(attio, zoho_subscription_id, reference_id)
    return found


def subscription_by_reference(attio: AttioLike, zoho_subscription_id: str, reference_id: str) -> dict[str, Any] | None:
    """The Attio subscription a Zoho subscription's ``reference_id`` names (our activation sets it to the record id),
    if it is not linked to another Zoho subscription; None for a reference typed in Zoho by hand."""
    if not is_uuid(reference_id):
        return None
    candidate = attio.get_record("subscriptions", reference_id)
    if candidate is not None and value(candidate, "zoho_subscription_id") in (None, zoho_subscription_id):
        return candidate
    return None


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID as Attio writes record ids (canonical, hyphenated); anything else typed in a
    reference field is not one of our ids."""
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


SALE_PREFIX = "braintree:"  # a payment's external_id for a Braintree transaction: braintree:<transaction id>


def sale_key(transaction_id: str) -> str:
    """The ``external_id`` of the payment that records a Braintree transaction."""
    return f"{SALE_PREFIX}{transaction_id}"


def sale_of(external_id: str) -> str | None:
    """The Braintree transaction id a payment's ``external_id`` names (None: not a Braintree transaction's)."""
    return (external_id[len(SALE_PREFIX):] or None) if external_id.startswith(SALE_PREFIX) else None


def amount(raw: Any) -> Decimal | None:
    """A provider's amount as Decimal (via ``str``: Zoho sends JSON numbers, and a float's binary error is not
    money); None when absent, a bool, unreadable or not finite."""
    if raw is None or isinstance(raw, bool) or raw == "":
        return None
    try:
        found = raw if isinstance(raw, Decimal) else Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
    return found if found.is_finite() else None


def is_stale(record: Mapping[str, Any], event_time: datetime | None) -> bool:
    """Whether an event raised at ``event_time`` is older than the newest one applied to a subscription (its
    ``last_event_at``); an event without a time is never stale."""
    if event_time is None:
        return False
    applied = parse_time(value(record, "last_event_at"))
    return applied is not None and event_time < applied


def set_subscription(
    attio: AttioLike,
    record: Mapping[str, Any],
    changes: Mapping[str, Any],
    *,
    event_time: datetime | None = None,
) -> bool:
    """Write ``changes`` to a subscription unless the event is older than its ``last_event_at``; returns whether
    anything was written. Values already equal are not rewritten (each write echoes back as a webhook)."""
    values = dict(changes)
    if event_time is not None:
        if is_stale(record, event_time):
            log.info("stale event for subscription %s: %s < %s", record_id(record), event_time,
                     value(record, "last_event_at"))
            return False
        values["last_event_at"] = iso(event_time)
    pending = {k: v for k, v in values.items() if not _same(value(record, k), v)}
    if not pending or set(pending) == {"last_event_at"}:
        return False
    attio.update_record("subscriptions", record_id(record), pending)
    return True


def upsert_payment(attio: AttioLike, external_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Create or update the ``payments`` record of ``external_id``; its status moves only as
    ``payments.TRANSITIONS`` allows (a refused status is left out of the write, with its ``failure_reason``)."""
    existing = find_one(attio, "payments", "external_id", external_id)
    values = {"external_id": external_id, **fields}
    if existing is not None:
        current = value(existing, "status")
        new = values.get("status")
        if new and not can_move(current, str(new)):
            log.info("payment %s is %s: %s refused (not a move a payment can make)", external_id, current, new)
            values.pop("status")
            values.pop("failure_reason", None)
        pending = {k: v for k, v in values.items() if k == "external_id" or not _same(value(existing, k), v)}
        if set(pending) == {"external_id"}:
            return existing
        values = pending
    return attio.assert_record("payments", "external_id", values)


def _same(current: Any, wanted: Any) -> bool:
    """Whether an Attio value already equals what a write would put there."""
    if isinstance(wanted, list):
        if not wanted:
            return current in (None, "", [])
        first = wanted[0]
        if isinstance(first, Mapping) and "target_record_id" in first:
            return bool(current == first["target_record_id"])
        return False
    if wanted is None or wanted == "":
        return current in (None, "")
    if isinstance(current, Decimal) or isinstance(wanted, Decimal):
        try:
            return Decimal(str(current)) == Decimal(str(wanted))
        except ArithmeticError:
            return False
    if isinstance(current, str) and isinstance(wanted, str) and ("T" in wanted and wanted.endswith("Z")):
        return parse_time(current) == parse_time(wanted)
    return bool(current == wanted)
