"""``flask --app integration quota [--json]``: today's provider calls by operation, Zoho against its daily quota.

Reads only the counters in Redis (``integration.clients.quota``): no provider is called, so asking costs no quota.
Zoho's line shows today's calls (the organization's day) against ``ZOHO_REQUESTS_PER_DAY`` and its money reserve,
and the end-of-day total projected at today's pace; then each provider's calls by operation, and calls per
finished operation.
"""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from ..clients.quota import usage, zoho_ledger

__all__ = ["command"]


@click.command("quota")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@with_appcontext
def command(as_json: bool) -> None:
    """Today's provider calls by operation (Zoho against its daily quota and reserve) and the projected total."""
    settings = current_app.extensions["settings"]
    connection = current_app.extensions["redis"]
    figures = usage(connection, zoho_ledger(settings, connection))
    if as_json:
        click.echo(json.dumps(figures, indent=2, sort_keys=True))
        return
    zoho = figures["zoho"]
    state = ("capped by Zoho" if zoho["capped_for_seconds"] else
             "bulk work stopped: only the reserve is left" if zoho["bulk_stopped"] else "open")
    click.echo(f"zoho {zoho['day']} ({zoho['time_zone']}): {zoho['used']} of {zoho['limit']} calls "
               f"(reserve {zoho['reserve']} for money work), projected {zoho['projected']} by the day's end; {state}")
    for provider, counts in figures["calls"].items():
        per = figures["calls_per_operation"].get(provider, {})
        parts = [f"{op} {n}" + (f" ({per[op]}/op)" if op in per else "") for op, n in sorted(counts.items())]
        click.echo(f"  {provider:<9} {', '.join(parts) or 'no calls today'}")
    ops = figures["operations"]
    click.echo(f"  finished  {', '.join(f'{op} {n}' for op, n in sorted(ops.items())) or 'none today'}")
