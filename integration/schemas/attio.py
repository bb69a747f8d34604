"""Attio webhook deliveries: ``{"webhook_id": ..., "events": [...]}`` with thin events (ids and actor only)."""

from __future__ import annotations

from marshmallow import fields, validate

from .base import BoundedList, Identifier, IdentifierMap, Inbound

__all__ = ["AttioDeliverySchema", "AttioEventSchema"]


class _Actor(Inbound):
    type = fields.String(required=True, validate=validate.Length(max=64))
    id = Identifier(load_default=None, allow_none=True)


class AttioEventSchema(Inbound):
    """One event of a delivery."""

    event_type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    id = IdentifierMap(
        ("workspace_id", "object_id", "record_id", "attribute_id", "list_id", "entry_id"), required=True
    )
    actor = fields.Nested(_Actor, load_default=None, allow_none=True)
    parent_object_id = Identifier(load_default=None, allow_none=True)
    parent_record_id = Identifier(load_default=None, allow_none=True)
    duplicate_object_id = Identifier(load_default=None, allow_none=True)
    duplicate_record_id = Identifier(load_default=None, allow_none=True)


class AttioDeliverySchema(Inbound):
    """A delivery: always iterate ``events`` (Attio may batch)."""

    webhook_id = Identifier(load_default=None, allow_none=True)
    events = BoundedList(fields.Nested(AttioEventSchema), required=True, max_length=500)
