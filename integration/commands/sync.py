"""``flask --app integration sync services [--dry-run]``: the Zoho → Attio catalog reconcile, run now, in-process.

It is the same reconcile as the job (``workers.workflows.catalog``), with the same lock: it waits while another
run (a job or another command) is writing. Rate limits, an open circuit and provider errors are waited out too
(``_patience``: at most ``--patience`` seconds in all, printing what it waits for); each new try re-reads both
sides and writes only what is still missing. ``--dry-run`` reads both sides, prints the planned changes and
writes nothing. Exit status: 0 done, 2 could not finish.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..clients.attio import build_attio_client
from ..clients.zoho import build_zoho_client
from ..locks import hold
from ._credentials import needs_credentials
from ._patience import patience_option, patiently
from ._progress import Progress

__all__ = ["group"]

group = click.Group("sync", help="Reconcile Attio with the providers.")


@group.command("services")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@patience_option
@with_appcontext
@needs_credentials("attio", "zoho")
def services(dry_run: bool, patience: float) -> None:
    """Mirror every Zoho Billing plan and addon into Attio services now (changes only); exit 2 if it cannot finish."""
    # the worker's reconcile and lock, run in this process
    from workers.jobs.catalog import LOCK_NAME, LOCK_TTL
    from workers.workflows.catalog import WRITERS, sync_services

    settings = current_app.extensions["settings"]
    connection = current_app.extensions["redis"]
    zoho = build_zoho_client(settings, connection)
    attio = build_attio_client(settings, connection)
    writers = [build_attio_client(settings, connection) for _ in range(WRITERS)]

    def run_once() -> Any:
        bar = Progress("Writing services")
        with contextlib.ExitStack() as stack:
            if not dry_run:
                stack.enter_context(hold(connection, LOCK_NAME, ttl=LOCK_TTL, wait=0))  # LockBusy: waited out
            stack.callback(bar.close)
            return sync_services(
                zoho=zoho,
                attio=attio,
                now=datetime.now(UTC),
                dry_run=dry_run,
                progress=None if dry_run else bar,
                writers=writers,
            )

    summary = patiently(run_once, what="sync services", patience=patience)
    if dry_run:
        for change in sorted(summary.changes, key=lambda c: (c.action, c.external_id)):
            click.echo(change.describe())
    click.echo(summary.line())
