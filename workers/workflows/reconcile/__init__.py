"""Workflow 5: the reconciliation sweeps, the guarantee behind the webhooks (workflows.md §5).

Each sweep compares one kind of state across the systems, using list calls (paged), and sends what differs
through the very code a webhook would have run, so a sweep and a late webhook never do the same work twice:

- ``invoices``: open Zoho invoices (``filter_by=Status.Unpaid``: sent, overdue, unpaid, partially paid) with a
  balance, older than ``RECONCILE_GRACE_MINUTES``, of a customer an Attio company maps to (the card is the
  company's), of subscriptions the service manages (``collection.scope``), not booked (a sale charged but never
  recorded in Zoho is booked by the same collection, never charged again),
  without a charged intent or a collection in progress → a collection of the invoice (``workers.followups``): the
  invoice's lock and charge intent make it one charge whatever else runs. Invoices in dunning are left to their
  schedule; the retries due and not queued are queued here. An invoice found not managed is not looked at again
  for a day;
- ``activations``: Attio subscriptions ``Requested`` for longer than the grace, with no activation running →
  the activation job of an Attio record event;
- ``settlements``: Attio payments ``Submitted`` for ``SETTLEMENT_CHECK_AFTER_HOURS`` → their Braintree
  transactions, each read by id → the status Braintree has now (``Settled``, ``Failed`` when settlement was
  declined or the sale voided, Refunded, a dispute's) through the Braintree
  settlement event's own code (a Failed sale's Zoho payment deleted first, as that event's job does); Braintree
  sends those webhooks only for ACH and SEPA, so this is how a card payment becomes Settled. After
  ``SETTLEMENT_GIVE_UP_DAYS`` a payment is no longer looked at (one warning);
- ``subscriptions``: each managed subscription's Zoho status and next billing date against Attio → a drift is
  repaired by ``lifecycle.sync_subscription`` under the subscription's lock (a standing decline keeps Past due).

A sweep resumes where it stopped: its position (the last item done, in a fixed order) is kept in Redis under the
run's id, so an interrupted run retried by RQ skips what it already did. A dry run reads and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .activations import sweep_activations
from .base import SweepContext, SweepReport
from .invoices import sweep_invoices
from .settlements import sweep_settlements
from .subscriptions import sweep_subscriptions

__all__ = [
    "SWEEP_FUNCTIONS",
    "SweepContext",
    "SweepReport",
    "run_sweep",
    "sweep_activations",
    "sweep_invoices",
    "sweep_settlements",
    "sweep_subscriptions",
]

log = logging.getLogger(__name__)

SWEEP_FUNCTIONS: dict[str, Callable[[SweepContext], SweepReport]] = {
    "invoices": sweep_invoices,
    "activations": sweep_activations,
    "settlements": sweep_settlements,
    "subscriptions": sweep_subscriptions,
}


def run_sweep(sweep: str, ctx: SweepContext) -> SweepReport:
    """Run one sweep by name."""
    report = SWEEP_FUNCTIONS[sweep](ctx)
    log.info("reconcile %s", report.line(), extra={"step": "sweep", "sweep": sweep})
    return report
