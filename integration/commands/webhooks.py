"""``flask --app integration webhooks send SOURCE EVENT [--url URL] [--id ID]``: post a signed sample delivery.

For trying a deployment or a local run: the delivery is signed exactly as the provider signs it (Attio with
``ATTIO_WEBHOOK_SECRET``, Zoho with ``ZOHO_WEBHOOK_SECRET``, Braintree through the SDK's ``webhook_testing``
with the configured keys), posted, and the answer printed.
"""

from __future__ import annotations

import json
import uuid

import click
import requests
from flask import current_app
from flask.cli import with_appcontext

from ..clients.gateway import make_gateway
from ..routing import routed_event_types
from ..samples import attio_delivery, attio_event, braintree_form, braintree_notification, zoho_delivery

__all__ = ["group"]

group = click.Group("webhooks", help="Send signed sample webhooks.")

_EVENTS = {source: routed_event_types(source) for source in ("attio", "zoho", "braintree")}
_HELP = "; ".join(f"{source}: {', '.join(events)}" for source, events in _EVENTS.items())


def _zoho_data(event: str, object_id: str) -> dict[str, object]:
    if event == "invoice_created":
        return {"invoice": {"invoice_id": object_id}}
    if event.startswith("subscription_"):
        return {"subscription": {"subscription_id": object_id}}
    if event.startswith("payment_"):
        return {"payment": {"payment_id": object_id}}
    return {}


@group.command("send", epilog=f"Events handled — {_HELP}")
@click.argument("source", type=click.Choice(sorted(_EVENTS)))
@click.argument("event")
@click.option("--url", help="Service base URL (default: PUBLIC_BASE_URL).")
@click.option("--id", "object_id", help="The id the event names: Attio record, Zoho invoice/subscription/"
              "payment, Braintree transaction or dispute subject.")
@click.option("--object-id", "attio_object", default="subscriptions", show_default=True,
              help="Attio only: the object id/slug the event names.")
@with_appcontext
def send_command(source: str, event: str, url: str | None, object_id: str | None, attio_object: str) -> None:
    """Build a correctly signed sample SOURCE EVENT delivery, post it, print the answer."""
    if event not in _EVENTS[source]:
        raise click.BadParameter(f"{source} events: {', '.join(_EVENTS[source])}", param_hint="EVENT")
    settings = current_app.extensions["settings"]
    base = (url or settings.public_base_url).rstrip("/")
    subject = object_id or str(uuid.uuid4())
    if source == "attio":
        req = attio_delivery([attio_event(event, object_id=attio_object, record_id=subject)],
                             secret=settings.attio_webhook_secrets[0])
    elif source == "zoho":
        req = zoho_delivery(event, _zoho_data(event, subject), secret=settings.zoho_webhook_secrets[0])
    else:
        public, private = settings.braintree_key_pairs[0]
        gateway = make_gateway(settings.braintree_environment, settings.braintree_merchant_id, public, private)
        req = braintree_form(braintree_notification(gateway, event, subject))
    try:
        resp = requests.post(f"{base}/webhooks/{source}", data=req.body, headers=req.headers,
                             params=req.query or None, timeout=15)
    except requests.RequestException as exc:
        click.echo(f"could not reach {base}: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        body = json.dumps(resp.json())
    except ValueError:
        body = resp.text[:500]
    click.echo(f"{resp.status_code} {body}")
    if resp.status_code >= 400:
        raise SystemExit(1)
