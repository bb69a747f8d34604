"""Read Attio's value shape as plain Python: pure functions over a record dict, no I/O.

A record's ``values`` maps each attribute slug to a *list* of value objects, even for single-value attributes;
only active ones (``active_until: null``) are normally returned, and an empty attribute may come back as ``[]``
or be missing (reference/attio.md §3.2–3.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["record_id", "value", "values"]

# The read field holding the plain value, by attribute type (reference/attio.md §3.3, "read fields").
_FIELD = {
    "text": "value",
    "number": "value",
    "rating": "value",
    "date": "value",
    "timestamp": "value",
    "record-reference": "target_record_id",
    "email-address": "email_address",
    "domain": "domain",
    "phone-number": "phone_number",
    "personal-name": "full_name",
    "actor-reference": "referenced_actor_id",
    "interaction": "interacted_at",
}
_META = ("active_from", "active_until", "created_by_actor", "attribute_type")


def record_id(record: Mapping[str, Any]) -> str:
    """The record's id (``record["id"]["record_id"]``)."""
    return str(record["id"]["record_id"])


def value(record: Mapping[str, Any], slug: str) -> Any:
    """The plain value of a single-value attribute (its first active value); None when empty or missing."""
    found = values(record, slug)
    return found[0] if found else None


def values(record: Mapping[str, Any], slug: str) -> list[Any]:
    """The plain values of an attribute (a multiselect's every active value); [] when empty or missing."""
    raw = (record.get("values") or {}).get(slug) or []
    return [_plain(item) for item in raw if isinstance(item, Mapping) and item.get("active_until") is None]


def _plain(item: Mapping[str, Any]) -> Any:
    kind = item.get("attribute_type") or _guess_type(item)
    if kind in ("select", "status"):
        chosen = item.get("option" if kind == "select" else "status")
        # the spec lets the option/status be a bare UUID string instead of an object; then the id is all we have
        return chosen.get("title") if isinstance(chosen, Mapping) else chosen
    if kind == "currency":
        return _decimal(item.get("currency_value"))
    if kind == "checkbox":
        flag = item.get("value")
        return flag if isinstance(flag, bool) or flag is None else str(flag).lower() == "true"
    if kind == "location":
        return {k: v for k, v in item.items() if k not in _META}
    field = _FIELD.get(kind)
    if field is not None:
        return item.get(field)
    return item.get("value", {k: v for k, v in item.items() if k not in _META})


def _guess_type(item: Mapping[str, Any]) -> str:
    """The attribute type of a value object that does not say (older payloads, hand-built fixtures)."""
    for key, kind in (
        ("option", "select"),
        ("status", "status"),
        ("currency_value", "currency"),
        ("target_record_id", "record-reference"),
        ("email_address", "email-address"),
        ("domain", "domain"),
        ("full_name", "personal-name"),
        ("phone_number", "phone-number"),
    ):
        if key in item:
            return kind
    return "text"


def _decimal(raw: Any) -> Decimal | None:
    """A currency amount as Decimal; Attio sends it as a number or a string such as ``"499.00"``."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        # via str(): Decimal(49.99) would carry the float's binary error into money
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
