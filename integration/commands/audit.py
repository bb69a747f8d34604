"""``flask --app integration audit payments``: the payments invariants, checked across Braintree, Zoho and Attio.

Exit codes: 0 clean, 1 violations found (each named with invoice, sale(s) and the fix), 2 could not complete (a
provider stayed unavailable past ``--max-wait``, or refused the audit's credentials). Progress and waits go to
stderr; the report (text, or one JSON document with ``--format json``) to stdout.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import click
import redis
from flask import current_app
from flask.cli import with_appcontext

from ..audit import DEFAULT_MAX_WAIT, DEFAULT_STALE_HOURS, AuditReport, run_audit
from ..clients.budget import RateBudget
from ..config import Settings
from ._credentials import needs_credentials

__all__ = ["group"]

group = click.Group("audit", help="Check invariants across Braintree, Zoho Billing and Attio.")


@group.command("payments")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Invoices dated or created, and sales created, on or after this UTC time (default: 30 days ago).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--stale-hours", type=click.FloatRange(min=0), default=DEFAULT_STALE_HOURS, show_default=True,
              help="An open invoice of a managed subscription older than this with no attempt is a violation.")
@click.option("--max-wait", type=click.FloatRange(min=0), default=DEFAULT_MAX_WAIT, show_default=True,
              help="Seconds the audit may wait in total for busy budgets and unavailable providers.")
@click.option("--every-payment", is_flag=True,
              help="Read every Zoho payment of a sale (one more Zoho call per sale), not only those applied in part.")
@click.option("--zoho-share", type=click.FloatRange(min=0, min_open=True, max=1), default=1.0, show_default=True,
              help="Use at most this share of ZOHO_REQUESTS_PER_MINUTE (e.g. 0.5 while invoices are being collected).")
@with_appcontext
@needs_credentials("attio", "zoho")
def payments_command(since: datetime | None, fmt: str, stale_hours: float, max_wait: float,
                     every_payment: bool, zoho_share: float) -> None:
    """One sale per invoice, each booked once in Zoho and in Attio, nothing open left untried; exit 1 on violations."""
    from ..clients.attio import build_attio_client
    from ..clients.braintree import build_braintree_client
    from ..clients.zoho import build_zoho_client

    settings = current_app.extensions["settings"]
    connection = current_app.extensions["redis"]
    start = since.replace(tzinfo=UTC) if since else datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)

    def say(line: str) -> None:
        click.echo(f"audit: {line}", err=True)

    # The service's logs are JSON lines on stdout; the report owns stdout here, so they go to stderr meanwhile.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            report = run_audit(
                braintree=build_braintree_client(settings, connection),
                zoho=build_zoho_client(settings, connection),
                attio=build_attio_client(settings, connection),
                since=start, stale_after=timedelta(hours=stale_hours), max_wait=max_wait, say=say,
                jobs=_failed_jobs(say), every_payment=every_payment, pace=_share(settings, connection, zoho_share),
            )
        except Exception as exc:  # Redis down, a bug: "could not complete" (2), never "violations" (1)
            traceback.print_exc(file=sys.stderr)
            report = AuditReport(since=start, complete=False, error=f"{type(exc).__name__}: {exc}")
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for violation in report.violations:
            click.echo(violation.line())
        click.echo(report.summary())
    calls = ", ".join(f"{p} {n}" for p, n in sorted(report.calls.items()))
    say(f"{calls} call(s); waited {report.waited_seconds:.0f}s for providers, {report.paced_seconds:.0f}s to keep "
        "to its share")
    raise SystemExit(report.exit_code)


def _failed_jobs(say: Callable[[str], None]) -> Callable[[str], Sequence[str]]:
    """invoice id → ids of failed jobs whose payload names it (read once, lazily; none if Redis cannot tell)."""
    from .jobs import failed_jobs

    index: list[tuple[str, str]] | None = None

    def jobs(invoice_id: str) -> Sequence[str]:
        nonlocal index
        if index is None:
            index = []
            try:
                for queue in current_app.extensions["queues"].values():
                    index += [(job.id, json.dumps([job.args, job.kwargs], default=str)) for job in failed_jobs(queue)]
            except Exception as exc:  # a hint only: the audit's result does not depend on it
                say(f"could not read the failed jobs ({type(exc).__name__}): fixes will not name them")
        return [job_id for job_id, text in index if f'"{invoice_id}"' in text]

    return jobs


def _share(settings: Settings, connection: redis.Redis, share: float) -> dict[str, Callable[[], float]]:
    """The audit's own Zoho pace: at most ``share`` of the per-minute budget (none at 1: the shared budget paces)."""
    if share >= 1:
        return {}
    limit = max(1, math.floor(settings.zoho_requests_per_minute * share))
    budget = RateBudget(connection, f"zoho:{settings.zoho_organization_id}:audit", limit=limit, period=60.0)
    return {"zoho": budget.try_acquire}
