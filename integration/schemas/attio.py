"""Attio webhook deliveries: ``{"webhook_id": ..., "events": [...]}`` with thin events (ids and actor only)."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate

from .base import BoundedList, IdentifierMap, Inbound, identifier

__all__ = ["AttioDeliverySchema", "AttioEventSchema"]


class _Actor(fields.Field[dict[str, str | None]]):
    """``{"type": "workspace-member", "id": ...}``: ``type`` a required string of at most 64 characters, ``id`` an
    optional ``Identifier``, other keys dropped. What a nested schema of those two fields gives, with the same
    errors per key, at half the cost on the hot path of every Attio webhook."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str | None]:
        if not isinstance(value, dict):
            raise ValidationError("Invalid input type.")
        kind, ident = value.get("type"), value.get("id")
        errors: dict[str, list[str]] = {}
        if kind is None:
            errors["type"] = ["Missing data for required field."]
        elif not isinstance(kind, str):
            errors["type"] = ["Not a valid string."]
        elif len(kind) > 64:
            errors["type"] = ["Longer than maximum length 64."]
        if ident is not None:
            try:
                ident = identifier(ident)
            except ValidationError as exc:
                errors["id"] = exc.messages  # type: ignore[assignment]
        if errors:
            raise ValidationError(errors)
        return {"type": kind, "id": ident}


class AttioEventSchema(Inbound):
    """One event of a delivery."""

    event_type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    id = IdentifierMap(
        ("workspace_id", "object_id", "record_id", "attribute_id", "list_id", "entry_id"), required=True
    )
    actor = _Actor(load_default=None, allow_none=True)
    # Only record.created / record.updated are routed (routing.py), so the ids other event types carry
    # (parent_*, duplicate_*: reference/attio.md) are dropped with the other unknown fields.


class AttioDeliverySchema(Inbound):
    """A delivery: always iterate ``events`` (Attio may batch)."""

    # ``webhook_id`` is dropped with the other unknown fields: nothing reads it, and each field costs every webhook.
    events = BoundedList(AttioEventSchema, required=True, max_length=500)
