"""Braintree notifications: settlement and dispute states mirrored into Attio ``payments`` (workflow 4)."""

from __future__ import annotations

from typing import Any

from integration.errors import NoHandler

from ._entry import entrypoint

__all__ = ["run_dispute_event", "run_transaction_event"]


@entrypoint("braintree.transaction_event")
def run_transaction_event(payload: dict[str, Any]) -> Any:
    """RQ entrypoint for ``transaction_settled`` / ``transaction_settlement_declined``."""
    raise NoHandler(f"no handler yet for braintree {payload.get('event_type')}")


@entrypoint("braintree.dispute_event")
def run_dispute_event(payload: dict[str, Any]) -> Any:
    """RQ entrypoint for ``dispute_opened`` / ``dispute_won`` / ``dispute_lost``."""
    raise NoHandler(f"no handler yet for braintree {payload.get('event_type')}")
