"""Attio webhook deliveries: ``{"webhook_id": ..., "events": [...]}`` with thin events (ids and actor only)."""

from __future__ import annotations

from marshmallow import fields, validate

from .base import BoundedList, Identifier, Inbound

__all__ = ["AttioDeliverySchema", "AttioEventSchema"]


class _EventIds(Inbound):
    """The ids of what changed; each optional (which ones are set depends on the event type)."""

    workspace_id = Identifier(load_default=None, allow_none=True)
    object_id = Identifier(load_default=None, allow_none=True)
    record_id = Identifier(load_default=None, allow_none=True)
    attribute_id = Identifier(load_default=None, allow_none=True)
    list_id = Identifier(load_default=None, allow_none=True)
    entry_id = Identifier(load_default=None, allow_none=True)


class _Actor(Inbound):
    """Who made the change: ``{"type": "workspace-member", "id": ...}``."""

    type = fields.String(required=True, validate=validate.Length(max=64))
    id = Identifier(load_default=None, allow_none=True)


class AttioEventSchema(Inbound):
    """One event of a delivery."""

    event_type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    id = fields.Nested(_EventIds, required=True)
    actor = fields.Nested(_Actor, load_default=None, allow_none=True)
    # Only record.created / record.updated are routed (routing.py), so the ids other event types carry
    # (parent_*, duplicate_*: reference/attio.md) are dropped with the other unknown fields.


class AttioDeliverySchema(Inbound):
    """A delivery: always iterate ``events`` (Attio may batch)."""

    # ``webhook_id`` is dropped with the other unknown fields: nothing reads it.
    events = BoundedList(AttioEventSchema, required=True, max_length=500)
