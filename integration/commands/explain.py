"""``flask --app integration explain invoice|subscription|event …``: one object across the three systems, its jobs,
the audit's verdict (read-only)."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from ..explain import explain_invoice, jobs_about
from ._credentials import needs_credentials

__all__ = ["group"]

group = click.Group("explain", help="Show one invoice, subscription or event as Zoho, Braintree and Attio see it.")
_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)


def _clients() -> dict[str, object]:
    from ..clients.attio import build_attio_client
    from ..clients.braintree import build_braintree_client
    from ..clients.zoho import build_zoho_client

    settings, connection = current_app.extensions["settings"], current_app.extensions["redis"]
    return {"zoho": build_zoho_client(settings, connection), "braintree": build_braintree_client(settings, connection),
            "attio": build_attio_client(settings, connection), "connection": connection}


@group.command("invoice")
@click.argument("ref")
@_FORMAT
@with_appcontext
@needs_credentials("attio", "zoho")
def invoice_command(ref: str, fmt: str) -> None:
    """An invoice by Zoho id or number: Zoho, Braintree sales, Attio, the charge intent, jobs, audit verdict."""
    found = explain_invoice(ref, **_clients())  # type: ignore[arg-type]
    if fmt == "json":
        click.echo(json.dumps(found.to_dict(), indent=2, default=str))
    else:
        for line in found.lines():
            click.echo(line)


@group.command("subscription")
@click.argument("ref")
@_FORMAT
@with_appcontext
@needs_credentials("attio", "zoho")
def subscription_command(ref: str, fmt: str) -> None:
    """A subscription by Attio record id or Zoho subscription id: both records and every job about it."""
    from ..clients.attio_values import record_id, value

    clients = _clients()
    attio, zoho, connection = clients["attio"], clients["zoho"], clients["connection"]
    record = attio.get_record("subscriptions", ref) if "-" in ref else None  # type: ignore[attr-defined]
    if record is None:
        rows = attio.find_records("subscriptions", "zoho_subscription_id", ref)  # type: ignore[attr-defined]
        record = rows[0] if rows else None
    zoho_id = str(value(record, "zoho_subscription_id") or ref) if record else ref
    zsub = zoho.get_subscription(zoho_id)  # type: ignore[attr-defined]
    ids = {ref, zoho_id} | ({record_id(record)} if record else set())
    jobs = sorted({j.job_id: j for i in ids for j in jobs_about(connection, "subscription", i)}.values(),  # type: ignore[arg-type]
                  key=lambda j: str(j.enqueued_at))
    out = {"attio": {k: value(record, k) for k in ("status", "status_detail", "zoho_subscription_id",
                                                     "next_billing_date", "last_payment_at", "last_event_at")}
           if record else None,
           "zoho": {k: (zsub or {}).get(k) for k in ("subscription_id", "status", "next_billing_at",
                                                     "reference_id", "auto_collect")} if zsub else None,
           "jobs": [j.to_dict() for j in jobs]}
    if fmt == "json":
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"Attio subscription: {out['attio']}")
    click.echo(f"Zoho subscription: {out['zoho']}")
    click.echo(f"jobs: {len(jobs)}")
    for j in jobs:
        click.echo(f"  {j.enqueued_at} {j.job_id} {j.event_type} {j.status} {j.outcome} {j.last_error}".rstrip())


@group.command("event")
@click.argument("source", type=click.Choice(["attio", "zoho", "braintree", "pay"]))
@click.argument("event_id")
@_FORMAT
@with_appcontext
def event_command(source: str, event_id: str, fmt: str) -> None:
    """An event by source and the id the service gave it (the job's ``event_id``): its jobs."""
    jobs = jobs_about(current_app.extensions["redis"], "event", f"{source}:{event_id}")
    if fmt == "json":
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=2, default=str))
        return
    click.echo(f"{source} event {event_id}: {len(jobs)} job(s)")
    for j in jobs:
        click.echo(f"  {j.enqueued_at} {j.job_id} {j.event_type} {j.status} {j.outcome}, {j.attempts} attempt(s)"
                   + (f" — {j.last_error}" if j.last_error else ""))
