"""Attio record events: activation of ``Requested`` subscriptions (workflow 2)."""

from __future__ import annotations

from typing import Any

from integration.errors import NoHandler

from ._entry import entrypoint

__all__ = ["run_record_event"]


@entrypoint("attio.record_event")
def run_record_event(payload: dict[str, Any]) -> Any:
    """RQ entrypoint for Attio ``record.created`` / ``record.updated``."""
    raise NoHandler(f"no handler yet for attio {payload.get('event_type')}")
