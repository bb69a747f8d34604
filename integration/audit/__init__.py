"""The payments audit: workflow 3's invariants checked across Braintree, Zoho Billing and Attio (read-only).

For every Zoho invoice dated or created since ``since``, every invoice a sale created since then names, and every
sale of those invoices whatever its age (so a double charge whose first sale predates ``since`` is found):

- at most one successful Braintree sale per invoice (``order_id`` = invoice id; credits are never sales);
- each successful sale applied by exactly one Zoho payment (``reference_number`` = transaction id) whose amount is
  the sale's;
- each Zoho card payment backed by a sale of that invoice that is still charged (not voided, declined or failed);
- each sale has its Attio ``payments`` record (``braintree:<id>``) with its amount and a consistent status;
- no open invoice of a managed subscription older than ``stale_after`` without any attempt.

Each violation names the invoice (id and number), the sale(s) and the fix. The audit never aborts because a
budget is busy or a provider briefly fails: it waits, within one bound (``patience.py``); past the bound the report
says it is incomplete (exit 2), never "clean". What it costs per invoice is in ``gather.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import AuditIncomplete
from .checks import Facts, check_invoice, never_attempted
from .gather import gather
from .model import CHARGED, AuditReport, Violation
from .patience import DEFAULT_MAX_WAIT, Patience

__all__ = ["CHARGED", "DEFAULT_MAX_WAIT", "DEFAULT_STALE_HOURS", "AuditReport", "Violation", "audit_payments",
           "run_audit"]

DEFAULT_STALE_HOURS = 24.0


def run_audit(
    *,
    braintree: Any,
    zoho: Any,
    attio: Any,
    since: datetime,
    stale_after: timedelta = timedelta(hours=DEFAULT_STALE_HOURS),
    max_wait: float = DEFAULT_MAX_WAIT,
    say: Callable[[str], None] = lambda line: None,
    jobs: Callable[[str], Sequence[str]] = lambda invoice_id: (),
    now: datetime | None = None,
    sleep: Callable[[float], None] | None = None,
    every_payment: bool = False,
    pace: Mapping[str, Callable[[], float]] | None = None,
) -> AuditReport:
    """The report for the window; ``complete`` is False when a provider stayed unavailable past ``max_wait``."""
    since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    patience = Patience(max_wait=max_wait, say=say, sleep=sleep or time.sleep, pace=pace)
    report = AuditReport(since=since)
    try:
        got = gather(braintree=braintree, zoho=zoho, attio=attio, since=since, now=now, stale_after=stale_after,
                     patience=patience, say=say, every_payment=every_payment)
    except AuditIncomplete as exc:
        report.complete, report.error = False, str(exc)
    else:
        facts = Facts(attio=got.attio, elsewhere=got.elsewhere, payment_amounts=got.payment_amounts, jobs=jobs)
        for invoice_id in sorted(got.invoices):
            invoice = got.invoices[invoice_id]
            sales = got.sales.get(invoice_id, [])
            report.violations.extend(check_invoice(invoice, sales, facts))
            report.sales += sum(1 for s in sales if s.charged)
            report.zoho_payments += sum(1 for p in invoice.payments or [] if p.by_card)
        report.violations.extend(never_attempted(inv, now, jobs(inv.invoice_id)) for inv in got.unattempted)
        report.invoices = len(got.invoices)
    report.calls, report.waited_seconds, report.paced_seconds = dict(patience.calls), patience.waited, patience.paced
    return report


def audit_payments(
    *, braintree: Any, zoho: Any, attio: Any, since: datetime, progress: Callable[[int], None] | None = None
) -> tuple[list[Violation], int]:
    """The violations and the number of successful sales checked; raises AuditIncomplete if it could not finish."""
    report = run_audit(braintree=braintree, zoho=zoho, attio=attio, since=since)
    if not report.complete:
        raise AuditIncomplete(report.error or "the audit could not complete")
    if progress is not None:
        progress(report.invoices)
    return report.violations, report.sales
