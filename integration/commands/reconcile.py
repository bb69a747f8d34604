"""``flask --app integration reconcile [invoices|activations|settlements|subscriptions|all] [--dry-run]`` and
``flask --app integration dunning status``.

``reconcile`` runs the sweeps now, in this process: the same sweeps as the periodic jobs
(``workers.workflows.reconcile``), under the same locks (a sweep another run is doing is refused). Progress goes to
stderr, one summary line per sweep to stdout; the exit status is 1 when something could not be repaired (or a
sweep stopped on a provider error), else 0. ``--dry-run`` reads everything, prints what it would do, writes nothing.
"""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..clients.attio import build_attio_client
from ..clients.braintree import build_braintree_client
from ..clients.zoho import build_zoho_client
from ..errors import LockBusy, ServiceError
from ..locks import hold, sweep_lock
from ..sweeps import SWEEPS
from ._credentials import needs_credentials
from ._progress import to_stderr

__all__ = ["dunning_group", "reconcile"]


@click.command("reconcile")
@click.argument("sweep", type=click.Choice([*SWEEPS, "all"]), default="all")
@click.option("--dry-run", is_flag=True, help="Print what would be done; write and enqueue nothing.")
@with_appcontext
@needs_credentials("attio", "zoho")
def reconcile(sweep: str, dry_run: bool) -> None:
    """Run the reconciliation sweeps now (all of them by default)."""
    from workers.jobs.reconcile import LOCK_TTL
    from workers.workflows.reconcile import SweepContext, run_sweep

    settings = current_app.extensions["settings"]
    connection = current_app.extensions["redis"]
    started = datetime.now(UTC)
    failed = False
    for name in SWEEPS if sweep == "all" else (sweep,):
        progress = to_stderr(f"{name:<13}")
        ctx = SweepContext.from_settings(
            settings, zoho=build_zoho_client(settings, connection), attio=build_attio_client(settings, connection),
            braintree=build_braintree_client(settings, connection), connection=connection, now=datetime.now(UTC),
            run_id=f"cli-{name}-{started.timestamp():.0f}", tag=f"cli{started.timestamp():.0f}", dry_run=dry_run,
            progress=progress,
        )
        with contextlib.ExitStack() as stack:
            stack.callback(progress.close)
            try:
                if not dry_run:
                    stack.enter_context(hold(connection, sweep_lock(name), ttl=LOCK_TTL, wait=0))
            except LockBusy:
                progress.close()
                click.echo(f"{name}: another run of this sweep is going on")
                failed = True
                continue
            try:
                report = run_sweep(name, ctx)
            except ServiceError as exc:  # a record's lock busy inside the sweep is a stop like any other
                progress.close()
                click.echo(f"{name}: stopped: {exc}")
                failed = True
                continue
        progress.close()
        for plan in report.planned:
            click.echo(f"  would {plan}")
        click.echo(report.line())
        failed = failed or report.unrepaired > 0
    sys.exit(1 if failed else 0)


dunning_group = click.Group("dunning", help="Invoices whose charge was declined, and their next attempt.")


@dunning_group.command("status")
@with_appcontext
def status() -> None:
    """List the invoices in dunning with their next attempt."""
    from workers.dunning import Dunning

    settings: Any = current_app.extensions["settings"]
    entries = Dunning(current_app.extensions["redis"], settings.dunning_schedule_days).entries()
    if not entries:
        click.echo("no invoice in dunning")
        return
    click.echo(f"{'invoice':<22} {'kind':<5} {'declines':>8}  {'next attempt':<20} reason")
    for entry in entries:
        if entry.next_at is not None:
            when = datetime.fromtimestamp(entry.next_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        else:
            when = "after a new card" if entry.kind == "hard" or entry.exhausted else "-"
            if entry.exhausted:
                when = "none left: new card"
        label = entry.invoice_number or entry.invoice_id
        click.echo(f"{label:<22} {entry.kind:<5} {entry.declines:>8}  {when:<20} {entry.reason}")
