"""Zoho Billing events: invoice collection (workflow 3) and lifecycle mirroring (workflow 4)."""

from __future__ import annotations

from typing import Any

from integration.errors import NoHandler

from ._entry import entrypoint

__all__ = ["run_invoice_created", "run_payment_event", "run_subscription_event"]


@entrypoint("zoho.invoice_created")
def run_invoice_created(payload: dict[str, Any]) -> Any:
    """RQ entrypoint for ``invoice_created``."""
    raise NoHandler("no handler yet for zoho invoice_created")


@entrypoint("zoho.subscription_event")
def run_subscription_event(payload: dict[str, Any]) -> Any:
    """RQ entrypoint for ``subscription_*``."""
    raise NoHandler(f"no handler yet for zoho {payload.get('event_type')}")


@entrypoint("zoho.payment_event")
def run_payment_event(payload: dict[str, Any]) -> Any:
    """RQ entrypoint for ``payment_thankyou`` / ``payment_declined`` / ``payment_refunded``."""
    raise NoHandler(f"no handler yet for zoho {payload.get('event_type')}")
