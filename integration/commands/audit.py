"""``flask --app integration audit payments [--since DATE]``: the payments invariants, checked across systems."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from flask import current_app
from flask.cli import with_appcontext

from ..audit import audit_payments

__all__ = ["group"]

group = click.Group("audit", help="Check invariants across Braintree, Zoho Billing and Attio.")


@group.command("payments")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Sales created on or after this UTC date (default: 30 days ago).")
@with_appcontext
def payments_command(since: datetime | None) -> None:
    """At most one sale per invoice, each recorded in Zoho and Attio; exit 1 on any violation."""
    from ..clients.attio import build_attio_client
    from ..clients.braintree import build_braintree_client
    from ..clients.zoho import build_zoho_client

    settings = current_app.extensions["settings"]
    connection = current_app.extensions["redis"]
    start = (since.replace(tzinfo=UTC) if since else datetime.now(UTC) - timedelta(days=30))
    violations, checked = audit_payments(
        braintree=build_braintree_client(settings, connection),
        zoho=build_zoho_client(settings, connection),
        attio=build_attio_client(settings, connection),
        since=start,
    )
    for violation in violations:
        click.echo(violation.line())
    click.echo(f"checked {checked} successful sale(s) since {start.date().isoformat()}: "
               f"{len(violations)} violation(s)")
    if violations:
        raise SystemExit(1)
