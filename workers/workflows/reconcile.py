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
  transactions, looked up together → ``Settled`` or ``Failed`` (settlement declined, voided) through the Braintree
  settlement event's own code; Braintree sends those webhooks only for ACH and SEPA, so this is how a card payment
  becomes Settled. After ``SETTLEMENT_GIVE_UP_DAYS`` a payment is no longer looked at (one warning);
- ``subscriptions``: each managed subscription's Zoho status and next billing date against Attio → a drift is
  repaired by ``lifecycle.sync_subscription`` under the subscription's lock (a standing decline keeps Past due).

A sweep resumes where it stopped: its position (the last item done, in a fixed order) is kept in Redis under the
run's id, so an interrupted run retried by RQ skips what it already did. A dry run reads and writes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import redis

from integration.clients.attio_values import record_id, value
from integration.locks import activation_lock, hold, invoice_lock, is_held, subscription_lock, transaction_lock
from integration.sweeps import LAST_RUN_TTL, last_run_key

from ..crm import ZOHO_TO_ATTIO_STATUS, iso, parse_time
from ..dunning import Dunning
from ..followups import enqueue_activation, enqueue_collection, enqueue_dunning_retry
from ..intents import ChargeIntents, DeclineMarks
from .collection import OPEN_STATUSES, scope
from .lifecycle import apply_transaction_event, sync_subscription

__all__ = ["SWEEP_FUNCTIONS", "SweepContext", "SweepReport", "run_sweep"]

log = logging.getLogger(__name__)

T = TypeVar("T")
SETTLEMENT_GIVE_UP_DAYS = 30
UNMANAGED_TTL = 24 * 3600  # seconds an invoice found not managed is left alone
CURSOR_TTL = 24 * 3600  # seconds a stopped run's position is kept
SETTLED = ("settled", "settlement_confirmed")
SETTLEMENT_FAILED = {"settlement_declined": "Settlement declined", "voided": "Voided in Braintree"}
_NOT_SYNCED = ("Requested", "Awaiting payment method")  # the activation's to finish, not the lifecycle's


@dataclass
class SweepReport:
    """What one sweep did."""

    sweep: str
    dry_run: bool = False
    looked_at: int = 0
    repaired: int = 0
    enqueued: int = 0
    skipped: int = 0
    unrepaired: int = 0
    planned: list[str] = field(default_factory=list)  # what a dry run would do
    jobs: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary (CLI, logs)."""
        text = (f"{self.sweep}: looked at {self.looked_at}, repaired {self.repaired}, enqueued {self.enqueued}, "
                f"skipped {self.skipped}")
        if self.unrepaired:
            text += f", could not repair {self.unrepaired}"
        return text + (" (dry run: nothing written)" if self.dry_run else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the job result and the last-run record."""
        return {"sweep": self.sweep, "dry_run": self.dry_run, "looked_at": self.looked_at, "repaired": self.repaired,
                "enqueued": self.enqueued, "skipped": self.skipped, "unrepaired": self.unrepaired,
                "jobs": self.jobs[:100]}


@dataclass(frozen=True)
class SweepContext:
    """What a sweep needs: the clients, Redis, the knobs (from the settings), the run's identity."""

    zoho: Any
    attio: Any
    braintree: Any
    connection: redis.Redis
    now: datetime
    run_id: str  # the job id (an RQ retry keeps it: the run resumes) or the CLI's own
    tag: str  # names this run's follow-up jobs (one per invoice per period)
    grace: timedelta = timedelta(minutes=30)
    settlement_after: timedelta = timedelta(hours=24)
    dunning_days: tuple[float, ...] = (3, 5, 7)
    retry_schedule: Sequence[int] = ()
    dry_run: bool = False
    progress: Callable[[int, int], None] | None = None

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> SweepContext:
        """A context with the settings' knobs."""
        return cls(grace=timedelta(minutes=settings.reconcile_grace_minutes),
                   settlement_after=timedelta(hours=settings.settlement_check_after_hours),
                   dunning_days=settings.dunning_schedule_days, retry_schedule=settings.retry_schedule_seconds, **kw)


class _Cursor:
    """A run's position in Redis: the key of the last item done, kept under the run's id."""

    def __init__(self, ctx: SweepContext, sweep: str) -> None:
        self._ctx, self._sweep = ctx, sweep
        self._key = f"reconcile:{sweep}:cursor"

    def start(self) -> str | None:
        raw = self._ctx.connection.get(self._key)
        if raw is None:
            return None
        data = json.loads(raw)
        return str(data["after"]) if data.get("run") == self._ctx.run_id else None

    def advance(self, position: str) -> None:
        if not self._ctx.dry_run:
            self._ctx.connection.set(self._key, json.dumps({"run": self._ctx.run_id, "after": position}),
                                     ex=CURSOR_TTL)

    def finish(self, report: SweepReport) -> None:
        if self._ctx.dry_run:
            return
        record = {**report.as_dict(), "finished_at": iso(datetime.now(UTC)),
                  "run": self._ctx.run_id}
        record.pop("jobs", None)
        pipe = self._ctx.connection.pipeline()
        pipe.delete(self._key)
        pipe.set(last_run_key(self._sweep), json.dumps(record), ex=LAST_RUN_TTL)
        pipe.execute()


def _walk(ctx: SweepContext, sweep: str, items: Iterable[tuple[str, T]], act: Callable[[T], None]) -> _Cursor:
    """Run ``act`` on each item after the run's saved position, in key order, saving the position after each."""
    cursor = _Cursor(ctx, sweep)
    after = cursor.start()
    todo = sorted((kv for kv in items if after is None or kv[0] > after), key=lambda kv: kv[0])
    if after is not None:
        log.info("%s sweep resumes after %s (%s items left)", sweep, after, len(todo))
    for done, (key, item) in enumerate(todo, start=1):
        act(item)
        cursor.advance(key)
        if ctx.progress is not None:
            ctx.progress(done, len(todo))
    return cursor


# -- invoices -----------------------------------------------------------------------------------------------------
def sweep_invoices(ctx: SweepContext) -> SweepReport:
    """Queue the collection of every open managed invoice the webhooks missed; queue due dunning retries."""
    report = SweepReport("invoices", dry_run=ctx.dry_run)
    intents, dunning = ChargeIntents(ctx.connection), Dunning(ctx.connection, ctx.dunning_days)
    for entry in dunning.due(ctx.now.timestamp()):
        report.looked_at += 1
        if ctx.dry_run:
            label = entry.invoice_number or entry.invoice_id
            report.planned.append(f"retry invoice {label} (decline {entry.declines})")
            report.enqueued += 1
            continue
        job_id = enqueue_dunning_retry(ctx.connection, entry.invoice_id, entry.declines,
                                       retry_schedule=ctx.retry_schedule)
        _count_job(report, job_id)

    cutoff = ctx.now - ctx.grace
    rows = ctx.zoho.list_invoices(status="Unpaid")  # Zoho's Unpaid: every open status, one paged list
    companies: dict[str, dict[str, Any]] | None = None  # Zoho customer id → Attio company, read once if needed

    def look(row: Mapping[str, Any]) -> None:
        nonlocal companies
        report.looked_at += 1
        invoice_id, customer_id = str(row.get("invoice_id")), str(row.get("customer_id"))
        reason = _why_not_collect(ctx, row, intents, dunning, cutoff)
        if reason is None:
            if companies is None:
                companies = _mapped_companies(ctx.attio)
            if customer_id not in companies:
                # The card is the company's: an invoice of a customer no company maps to cannot be charged.
                reason = "its customer is no Attio company's"
        if reason is None:
            invoice = ctx.zoho.get_invoice(invoice_id)  # the list row carries neither subscriptions nor payments
            if invoice is None or not scope(ctx.zoho, ctx.attio, invoice, (companies or {}).get(customer_id))[0]:
                if not ctx.dry_run:
                    ctx.connection.set(_unmanaged_key(invoice_id), b"1", ex=UNMANAGED_TTL)
                reason = "not managed"
        if reason is not None:
            log.debug("invoices sweep: %s skipped (%s)", invoice_id, reason)
            report.skipped += 1
            return
        if ctx.dry_run:
            report.planned.append(f"collect invoice {row.get('number') or invoice_id} ({invoice_id})")
            report.enqueued += 1
            return
        job_id = enqueue_collection(ctx.connection, invoice_id, tag=ctx.tag, source="reconcile",
                                    retry_schedule=ctx.retry_schedule, event_time=row.get("created_time"))
        log.info("invoices sweep: invoice %s (%s) had no collection: %s", row.get("number"), invoice_id,
                 job_id or "already queued")
        _count_job(report, job_id)

    keyed = [(f"{_sort_time(r.get('created_time'))}|{r.get('invoice_id')}", r) for r in rows]
    _walk(ctx, "invoices", keyed, look).finish(report)
    return report


def _why_not_collect(
    ctx: SweepContext, row: Mapping[str, Any], intents: ChargeIntents, dunning: Dunning, cutoff: datetime
) -> str | None:
    """Why an open invoice's row needs no collection from the sweep (None: it may)."""
    invoice_id = str(row.get("invoice_id"))
    if row.get("status") not in OPEN_STATUSES or _money(row.get("balance")) <= 0:
        return "not open"
    created = parse_time(str(row.get("created_time") or ""))
    if created is None or created > cutoff:
        return "younger than the grace period"
    intent = intents.load(invoice_id)
    # A charged intent on an invoice still open past the grace is a sale whose Zoho payment was never recorded (its
    # job gave up): the collection is queued again, and books that sale (it finds it by id) without a new one.
    if intent is not None and ctx.now.timestamp() - intent.at < ctx.grace.total_seconds():
        return "an attempt is recent"
    if dunning.load(invoice_id) is not None:
        return "in dunning"
    if intent is not None and intent.state == "closed" and intent.response_type:
        return "declined before dunning: waits for a new payment method"
    if ctx.connection.exists(_unmanaged_key(invoice_id)):
        return "not managed"
    if is_held(ctx.connection, invoice_lock(invoice_id)):
        return "a collection is running"
    return None


def _mapped_companies(attio: Any) -> dict[str, dict[str, Any]]:
    """Every Attio company mapped to a Zoho customer, by Zoho customer id (one paged query)."""
    rows = attio.query_records("companies", {"zoho_customer_id": {"$not_empty": True}})
    return {str(value(c, "zoho_customer_id")): c for c in rows if value(c, "zoho_customer_id")}


def _unmanaged_key(invoice_id: str) -> str:
    return f"reconcile:unmanaged:{invoice_id}"


# -- activations --------------------------------------------------------------------------------------------------
def sweep_activations(ctx: SweepContext) -> SweepReport:
    """Queue the activation of every subscription left ``Requested`` past the grace period."""
    report = SweepReport("activations", dry_run=ctx.dry_run)
    cutoff = ctx.now - ctx.grace
    records = ctx.attio.query_records("subscriptions", {"status": "Requested"})

    def look(record: Mapping[str, Any]) -> None:
        report.looked_at += 1
        rid = record_id(record)
        since = _value_since(record, "status")
        if value(record, "status") != "Requested" or since is None or since > cutoff:
            report.skipped += 1
            return
        if is_held(ctx.connection, activation_lock(rid)):
            report.skipped += 1
            return
        if ctx.dry_run:
            report.planned.append(f"activate subscription {rid}")
            report.enqueued += 1
            return
        job_id = enqueue_activation(ctx.connection, rid, tag=ctx.tag, source="reconcile",
                                    retry_schedule=ctx.retry_schedule)
        log.info("activations sweep: subscription %s Requested since %s: %s", rid, since, job_id or "already queued")
        _count_job(report, job_id)

    _walk(ctx, "activations", [(record_id(r), r) for r in records], look).finish(report)
    return report


# -- settlements --------------------------------------------------------------------------------------------------
def sweep_settlements(ctx: SweepContext) -> SweepReport:
    """Move card payments ``Submitted`` past the threshold to what Braintree says: Settled or Failed."""
    report = SweepReport("settlements", dry_run=ctx.dry_run)
    cutoff, give_up = ctx.now - ctx.settlement_after, ctx.now - timedelta(days=SETTLEMENT_GIVE_UP_DAYS)
    records = ctx.attio.query_records("payments", {"status": "Submitted"})
    candidates: list[tuple[str, dict[str, Any]]] = []
    for record in records:
        report.looked_at += 1
        external_id = str(value(record, "external_id") or "")
        since = parse_time(value(record, "occurred_at")) or parse_time(str(record.get("created_at") or ""))
        if not external_id.startswith("braintree:") or since is None or since > cutoff:
            report.skipped += 1
        elif since < give_up:
            log.warning("payment %s is still Submitted %s days after %s: no longer looked up in Braintree",
                        external_id, SETTLEMENT_GIVE_UP_DAYS, since.date())
            report.skipped += 1
        else:
            candidates.append((external_id, record))
    found = {str(t.id): t for t in ctx.braintree.find_transactions([e.split(":", 1)[1] for e, _ in candidates])}

    def settle(record: dict[str, Any]) -> None:
        txn_id = str(value(record, "external_id")).split(":", 1)[1]
        txn = found.get(txn_id)
        if txn is None:
            log.warning("payment braintree:%s is Submitted but Braintree has no such transaction", txn_id)
            report.unrepaired += 1
            return
        status = str(txn.status)
        if status in SETTLED:
            kind, reason = "transaction_settled", None
        elif status in SETTLEMENT_FAILED:
            kind = "transaction_settlement_declined"
            reason = getattr(txn, "processor_settlement_response_text", None) or SETTLEMENT_FAILED[status]
        else:
            report.skipped += 1  # submitted_for_settlement, settling, settlement_pending: not decided yet
            return
        if ctx.dry_run:
            report.planned.append(f"payment braintree:{txn_id} → {'Settled' if reason is None else 'Failed'}")
            report.repaired += 1
            return
        event = {"kind": kind, "transaction": {
            "id": txn_id, "type": str(getattr(txn, "type", "sale")), "order_id": getattr(txn, "order_id", None),
            "amount": str(getattr(txn, "amount", "") or ""), "processor_settlement_response_text": reason}}
        with hold(ctx.connection, transaction_lock(txn_id), ttl=60.0, wait=15.0):  # as the webhook's job
            outcome = apply_transaction_event(event, attio=ctx.attio)
        if outcome.get("outcome") in ("updated", "created"):
            report.repaired += 1
        else:
            report.skipped += 1

    _walk(ctx, "settlements", candidates, settle).finish(report)
    return report


# -- subscriptions ------------------------------------------------------------------------------------------------
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

    _walk(ctx, "subscriptions", [(record_id(r), r) for r in records], look).finish(report)
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


# -- plumbing -----------------------------------------------------------------------------------------------------
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


def _count_job(report: SweepReport, job_id: str | None) -> None:
    if job_id is None:
        report.skipped += 1  # the same follow-up is queued already
    else:
        report.enqueued += 1
        report.jobs.append(job_id)


def _value_since(record: Mapping[str, Any], slug: str) -> datetime | None:
    """Since when an attribute has its current value (Attio's ``active_from``), else the record's creation."""
    for item in (record.get("values") or {}).get(slug) or []:
        if isinstance(item, Mapping) and item.get("active_until") is None and item.get("active_from"):
            return parse_time(str(item["active_from"]))
    return parse_time(str(record.get("created_at") or ""))


def _sort_time(raw: Any) -> str:
    moment = parse_time(str(raw or ""))
    return moment.astimezone(UTC).isoformat() if moment else ""


def _money(raw: Any) -> Decimal:
    try:
        return Decimal(str(raw if raw is not None else 0))
    except InvalidOperation:
        return Decimal(0)
