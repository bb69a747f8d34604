"""``flask --app integration sync services [--dry-run]``: the Zoho → Attio catalog reconcile, run now, in-process.

It is the same reconcile as the job (``workers.workflows.catalog``), with the same lock: it refuses to start while
another run (a job or another command) is writing. ``--dry-run`` reads both sides, prints the planned changes and
writes nothing.
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
from ..errors import ServiceError, ServiceUnavailable
from ..locks import hold

__all__ = ["group"]

group = click.Group("sync", help="Reconcile Attio with the providers.")


class _Bar:
    """A click progress bar that starts on the first report, once the number of writes is known."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if total == 0:
                return
            self._bar = click.progressbar(length=total, label=self._label, show_pos=True)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        """Finish the bar (if it started)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@group.command("services")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@with_appcontext
def services(dry_run: bool) -> None:
    """Mirror every Zoho Billing plan and addon into Attio services now (changes only)."""
    # the worker's reconcile and lock, run in this process
    from workers.jobs.catalog import LOCK_NAME, LOCK_TTL
    from workers.workflows.catalog import WRITERS, sync_services

    settings = current_app.extensions["settings"]
    connection = current_app.extensions["redis"]
    zoho = build_zoho_client(settings, connection)
    attio = build_attio_client(settings, connection)
    writers = [build_attio_client(settings, connection) for _ in range(WRITERS)]
    bar = _Bar("Writing services")
    with contextlib.ExitStack() as stack:
        if not dry_run:
            try:
                stack.enter_context(hold(connection, LOCK_NAME, ttl=LOCK_TTL, wait=0))
            except ServiceUnavailable:
                raise click.ClickException("another catalog sync is running; try again when it has finished") from None
        stack.callback(bar.close)
        try:
            summary = sync_services(
                zoho=zoho,
                attio=attio,
                now=datetime.now(UTC),
                dry_run=dry_run,
                progress=None if dry_run else bar,
                writers=writers,
            )
        except ServiceError as exc:
            message = f"sync stopped: {exc}"
            if isinstance(exc, ServiceUnavailable):
                message += " (transient: run it again, it writes only what is still missing)"
            raise click.ClickException(message) from exc
    if dry_run:
        for change in sorted(summary.changes, key=lambda c: (c.action, c.external_id)):
            click.echo(change.describe())
    click.echo(summary.line())
