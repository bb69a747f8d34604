"""``explain``: one business object as the three systems see it, every job that touched it, and the audit's verdict.

Jobs are findable by the business ids they act on: each job, when it starts, adds its id to ``explain:<kind>:<id>``
for every subject its payload names (``subjects_of``), kept as long as failed jobs are (30 days); jobs still
waiting in a queue or for a retry are found by scanning those (they are few). Read-only; the providers are read
through the same clients (and budgets) as the workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from .clients.attio_values import value
from .queueing import attempts_of, make_queues
from .subjects import subjects_of

__all__ = ["Explanation", "explain_invoice", "index_job", "jobs_about", "subjects_of"]

INDEX_TTL_SECONDS = 60 * 60 * 24 * 31  # as long as a failed job is kept (and then a day)


def index_job(connection: redis.Redis, job_id: str, payload: Mapping[str, Any]) -> None:
    """Make the job findable by what it is about (called when it starts)."""
    with connection.pipeline(transaction=False) as pipe:
        for kind, ident in subjects_of(payload):
            key = f"explain:{kind}:{ident}"
            pipe.sadd(key, job_id)
            pipe.expire(key, INDEX_TTL_SECONDS)
        pipe.execute()


@dataclass
class JobView:
    """One job, as explain shows it."""

    job_id: str
    status: str
    handler: str
    event_type: str
    attempts: int
    enqueued_at: datetime | None
    ended_at: datetime | None
    last_error: str = ""
    outcome: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def jobs_about(connection: redis.Redis, kind: str, ident: str) -> list[JobView]:
    """Every job indexed under the subject, and every queued or scheduled one whose payload names it."""
    ids = {i.decode() if isinstance(i, bytes) else str(i) for i in connection.smembers(f"explain:{kind}:{ident}")}
    for queue in make_queues(connection).values():
        waiting = [*queue.get_job_ids(), *queue.scheduled_job_registry.get_job_ids()]
        for job in Job.fetch_many(waiting, connection=connection, serializer=JSONSerializer):
            if job is not None and job.args and (kind, ident) in subjects_of(job.args[0] or {}):
                ids.add(job.id)
    views = []
    for job in Job.fetch_many(sorted(ids), connection=connection, serializer=JSONSerializer):
        if job is None:
            continue
        payload = job.args[0] if job.args else {}
        result = job.return_value() if job.get_status() == "finished" else None
        error = str((job.meta or {}).get("last_error") or "")
        latest = job.latest_result()
        if latest is not None and getattr(latest, "exc_string", None):
            error = str(latest.exc_string).strip().splitlines()[-1][:300]
        views.append(JobView(
            job_id=job.id, status=str(getattr(job.get_status(), "value", job.get_status())),
            handler=str(job.func_name), event_type=str((payload or {}).get("event_type") or ""),
            attempts=attempts_of(job), enqueued_at=_utc(job.enqueued_at), ended_at=_utc(job.ended_at),
            last_error=error, outcome=str(result.get("outcome")) if isinstance(result, dict) else "",
        ))
    return sorted(views, key=lambda v: v.enqueued_at or datetime.min.replace(tzinfo=UTC))


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Explanation:
    """An invoice as the three systems see it."""

    invoice_id: str
    zoho: dict[str, Any] | None
    sales: list[dict[str, Any]]
    attio_payments: list[dict[str, Any]]
    attio_subscription: dict[str, Any] | None
    intent: dict[str, Any] | None
    jobs: list[JobView]
    verdict: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for ``--format json``."""
        return {"invoice_id": self.invoice_id, "zoho": self.zoho, "braintree_sales": self.sales,
                "attio_payments": self.attio_payments, "attio_subscription": self.attio_subscription,
                "charge_intent": self.intent, "jobs": [j.to_dict() for j in self.jobs], "audit": self.verdict}

    def lines(self) -> Iterable[str]:
        """One screen of text."""
        zoho = self.zoho
        if zoho is None:
            yield f"Zoho invoice {self.invoice_id}: not found"
        else:
            yield (f"Zoho invoice {zoho.get('number')} ({self.invoice_id}): {zoho.get('status')}, total "
                   f"{zoho.get('total')}, balance {zoho.get('balance')} {zoho.get('currency_code') or ''}".rstrip())
            for p in zoho.get("payments") or []:
                yield (f"  payment {p.get('payment_id')}: {p.get('amount')} by {p.get('payment_mode')}, "
                       f"reference {p.get('reference_number') or '-'}")
        yield f"Braintree transactions with order_id {self.invoice_id}: {len(self.sales)}"
        for s in self.sales:
            yield f"  {s['id']}: {s['type']} {s['amount']} {s['status']} at {s['created_at']}"
        if self.intent:
            i = self.intent
            yield (f"charge intent: generation {i.get('generation')}, {i.get('state')}, key {i.get('key')}, "
                   f"transaction {i.get('transaction_id') or '-'}")
        yield f"Attio payments for the invoice: {len(self.attio_payments)}"
        for p in self.attio_payments:
            yield f"  {p['external_id']}: {p['status']} {p['amount']}"
        if self.attio_subscription:
            s = self.attio_subscription
            yield f"Attio subscription {s['record_id']}: {s['status']} ({s.get('status_detail') or 'no detail'})"
        yield f"jobs: {len(self.jobs)}"
        for j in self.jobs:
            when = j.enqueued_at.isoformat(timespec="seconds") if j.enqueued_at else "?"
            tail = f" {j.outcome}" if j.outcome else ""
            error = f" — {j.last_error}" if j.last_error else ""
            yield f"  {when} {j.job_id} {j.event_type} {j.status}{tail}, {j.attempts} attempt(s){error}"
        if not self.verdict:
            yield "audit: clean"
        for v in self.verdict:
            yield f"audit: {v['kind']}: {v['detail']} — fix: {v['fix']}"


def explain_invoice(ref: str, *, zoho: Any, braintree: Any, attio: Any, connection: redis.Redis) -> Explanation:
    """Gather the invoice (by id, or by number) across the three systems, its jobs and the audit's verdict."""
    from .audit.checks import Facts, check_invoice
    from .audit.model import AttioPayment, Invoice, Sale, money

    invoice = zoho.get_invoice(ref) if ref.isdigit() else None
    if invoice is None:
        invoice = next((i for i in zoho.list_invoices() if str(i.get("number")) == ref), None)
        if invoice is not None:
            invoice = zoho.get_invoice(str(invoice["invoice_id"])) or invoice
    invoice_id = str(invoice["invoice_id"]) if invoice else ref
    txns = braintree.transactions_for_order(invoice_id)
    sales = [{"id": str(t.id), "type": str(t.type), "amount": str(t.amount), "status": str(t.status),
              "created_at": str(t.created_at)} for t in txns]
    records = attio.find_records("payments", "zoho_invoice_id", invoice_id)
    payments = [{"record_id": str(r["id"]["record_id"]), "external_id": str(value(r, "external_id")),
                 "status": value(r, "status"), "amount": str(value(r, "amount"))} for r in records]
    subscription = None
    for item in (invoice or {}).get("subscriptions") or []:
        rows = attio.find_records("subscriptions", "zoho_subscription_id", str(item.get("subscription_id")))
        if rows:
            subscription = {"record_id": str(rows[0]["id"]["record_id"]), "status": value(rows[0], "status"),
                            "status_detail": value(rows[0], "status_detail")}
    raw_intent = connection.get(f"charge:{invoice_id}")
    intent = json.loads(raw_intent) if raw_intent else None
    jobs = jobs_about(connection, "invoice", invoice_id)
    verdict: list[dict[str, Any]] = []
    if invoice is not None:
        model = Invoice.of_row(invoice)
        model.complete(invoice)
        facts = Facts(attio={p["external_id"]: AttioPayment(p["record_id"], p["external_id"], p["status"],
                                                            money(p["amount"]), invoice_id) for p in payments},
                      jobs=lambda _: [j.job_id for j in jobs if j.status == "failed"])
        verdict = [v.to_dict() if hasattr(v, "to_dict") else v.__dict__
                   for v in check_invoice(model, [Sale.of(t) for t in txns if str(t.type) == "sale"], facts)]
    return Explanation(invoice_id, invoice, sales, payments, subscription, intent, jobs, verdict)
