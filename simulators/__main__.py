"""``python -m simulators``: the three provider simulators in one process, with demo data, for the local run.

Attio and Zoho send their webhooks to the local web process (``--web``), signed with the secrets the local run
configures; Braintree's gateway simulator is what ``BRAINTREE_ENVIRONMENT`` points at. Prints one JSON line with
the URLs and the demo record ids once everything listens, then serves until stopped.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from integration.clients.braintree import customer_id_for_company
from simulators.attio import AttioSimulator
from simulators.braintree import BraintreeSimulator
from simulators.zoho import ZohoSimulator

LOCAL_SECRETS = {
    "attio_webhook_secret": "local-attio-webhook-secret",
    "zoho_webhook_secret": "localzohowebhooksecret",
}


def seed(attio: AttioSimulator, zoho: ZohoSimulator, braintree: BraintreeSimulator) -> dict[str, Any]:
    """A catalog, two companies and two subscriptions ready to request (one with a card on file)."""
    zoho.seed_sample_data()
    attio.setup_schema()
    service = attio.add_record("services", {
        "external_id": "zoho-plan:basic-monthly", "name": "Basic", "kind": "Plan", "code": "basic-monthly",
        "price": 50, "billing_interval": "every 1 month", "status": "Active",
    })
    ids: dict[str, Any] = {"service": service}
    for key, name, email, card in (("acme", "Acme Ltd", "billing@acme.example", False),
                                   ("globex", "Globex Corp", "ap@globex.example", True)):
        company = attio.add_record("companies", {"name": name, "billing_email": email})
        subscription = attio.add_record("subscriptions", {
            "name": f"{name} Basic",
            "company": {"target_object": "companies", "target_record_id": company},
            "service": {"target_object": "services", "target_record_id": service},
            "status": "Requested",
        })
        if card:
            # The customer id the service derives from the Attio company id: a card is already on file.
            braintree.add_customer(customer_id_for_company(company), email=email, card="valid")
        ids[key] = {"company": company, "subscription": subscription}
    return ids


def main() -> int:
    """Start, seed, announce, serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attio-port", type=int, default=0)
    parser.add_argument("--zoho-port", type=int, default=0)
    parser.add_argument("--braintree-port", type=int, default=0)
    parser.add_argument("--web", default="http://127.0.0.1:8000", help="Base URL of the local web process.")
    args = parser.parse_args()
    attio = AttioSimulator(port=args.attio_port).start()
    zoho = ZohoSimulator(port=args.zoho_port).start()
    braintree = BraintreeSimulator(port=args.braintree_port).start()
    ids = seed(attio, zoho, braintree)
    attio.webhook_target = (f"{args.web}/webhooks/attio", LOCAL_SECRETS["attio_webhook_secret"])
    zoho.webhook_target = (f"{args.web}/webhooks/zoho", LOCAL_SECRETS["zoho_webhook_secret"])
    print(json.dumps({"attio": attio.url, "zoho": zoho.url, "braintree": braintree.url, "ids": ids}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for sim in (attio, zoho, braintree):
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
