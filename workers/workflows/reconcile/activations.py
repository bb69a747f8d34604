"""The activations sweep: Attio subscriptions left ``Requested`` past the grace period, with no activation running →
the activation job an Attio record event would have started."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from integration.clients.attio_values import record_id, value
from integration.locks import activation_lock, is_held

from ...followups import enqueue_activation
from .base import SweepContext, SweepReport, follow_up, value_since, walk

__all__ = ["sweep_activations"]

log = logging.getLogger(__name__)


def sweep_activations(ctx: SweepContext) -> SweepReport:
    """Queue the activation of every subscription left ``Requested`` past the grace period."""
    report = SweepReport("activations", dry_run=ctx.dry_run)
    cutoff = ctx.now - ctx.grace
    records = ctx.attio.query_records("subscriptions", {"status": "Requested"})

    def look(record: Mapping[str, Any]) -> None:
        report.looked_at += 1
        rid = record_id(record)
        since = value_since(record, "status")
        if value(record, "status") != "Requested" or since is None or since > cutoff:
            report.skipped += 1
            return
        if is_held(ctx.connection, activation_lock(rid)):
            report.skipped += 1
            return
        follow_up(ctx, report, f"activate subscription {rid} (Requested since {since:%Y-%m-%d %H:%M})",
                  lambda: enqueue_activation(ctx.connection, rid, tag=ctx.tag, source="reconcile",
                                             retry_schedule=ctx.retry_schedule))

    walk(ctx, "activations", [(record_id(r), r) for r in records], look).finish(report)
    return report
