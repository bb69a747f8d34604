"""The subscriptions sweep: each managed subscription's Zoho status and next billing date against Attio; a drift
is repaired by ``lifecycle.sync_subscription`` under the subscription's lock, as the lost lifecycle event would
have been (a standing decline keeps ``Past due``; no ``last_event_at`` is written, so ordering stays the events';
the time of its read is noted, ``DeclineMarks.note_read``, so an older event delivered later re-reads Zoho rather
than write the older state it carries)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from integration.clients.attio_values import record_id, value
from integration.locks import hold, subscription_lock

from ...intents import DeclineMarks
from ...records import ZOHO_TO_ATTIO_STATUS
from ..lifecycle import sync_subscription
from .base import SweepContext, SweepReport, walk

__all__ = ["sweep_subscriptions"]

log = logging.getLogger(__name__)

_NOT_SYNCED = ("Requested", "Awaiting payment method")  # the activation's to finish, not the lifecycle's


def sweep_subscriptions(ctx: SweepContext) -> SweepReport:
    """Repair every managed subscription whose Attio status or next billing date drifted from Zoho's."""
    report = SweepReport("subscriptions", dry_run=ctx.dry_run)
    records = ctx.attio.query_records("subscriptions", {"zoho_subscription_id": {"$not_empty": True}})
    in_zoho = {str(s.get("subscription_id")): s for s in ctx.zoho.list_subscriptions()}

    def look(record: Mapping[str, Any]) -> None:
        report.looked_at += 1
        zoho_id = str(value(record, "zoho_subscription_id"))
        current = in_zoho.get(zoho_id)
        if current is None or value(record, "status") in _NOT_SYNCED or not _drifted(ctx, record, current):
            report.skipped += 1
            return
        if ctx.dry_run:
            report.planned.append(f"subscription {record_id(record)}: {value(record, 'status')} → Zoho "
                                  f"{current.get('status')} (next billing {current.get('next_billing_at')})")
            report.repaired += 1
            return
        event = {"event_type": "subscription_reconciled", "data": {"subscription": {"subscription_id": zoho_id}}}
        with hold(ctx.connection, subscription_lock(zoho_id), ttl=120.0, wait=15.0):  # as lifecycle and collection
            outcome = sync_subscription(event, zoho=ctx.zoho, attio=ctx.attio,
                                        marks=lambda rid: DeclineMarks(ctx.connection, rid))
        log.info("subscriptions sweep: %s drifted from Zoho: %s", zoho_id, outcome.get("outcome"))
        report.repaired += outcome.get("outcome") == "updated"
        report.skipped += outcome.get("outcome") != "updated"

    walk(ctx, "subscriptions", [(record_id(r), r) for r in records], look).finish(report)
    return report


def _drifted(ctx: SweepContext, record: Mapping[str, Any], zoho_row: Mapping[str, Any]) -> bool:
    """Whether Attio's status or next billing date differs from what ``sync_subscription`` would write."""
    wanted = ZOHO_TO_ATTIO_STATUS.get(str(zoho_row.get("status") or ""))
    status = value(record, "status")
    if wanted is not None and wanted != status:
        kept = status == "Past due" and wanted not in ("Cancelled", "Expired") and bool(
            DeclineMarks(ctx.connection, record_id(record)).declined())
        if not kept:
            return True
    return str(zoho_row.get("next_billing_at") or "") != str(value(record, "next_billing_date") or "")
