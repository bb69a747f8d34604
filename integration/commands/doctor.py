"""``flask --app integration doctor``: read-only checks of a deployment against the real accounts, one line each.

What an operator runs on the first day: the credentials of the three providers, the Zoho organization and data
centre, the Attio objects and attributes (the survey of ``attio setup --check``), the Braintree merchant accounts,
whether the merchant takes ``api_request_key``, and where each provider delivers its webhooks, as far as an API
tells. Each line is ``OK`` / ``FAIL`` / ``??`` (cannot tell), the check's name, what was found, and for a
``FAIL`` or ``??`` what to do. Exit 1 when any check fails, else 0.

Nothing is written to any provider. Two calls come close and are said so: the Zoho token is the service's
shared one (minted if none is cached, as the first job would), and ``--probe-request-key`` sends Braintree a
sale without a payment method, which validation refuses before anything is created.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import with_appcontext

from ..attio_schema import CURRENCY
from ..clients.attio import AttioClient, build_attio_client
from ..clients.braintree import BraintreeClient, build_braintree_client
from ..clients.zoho import ZohoClient, build_zoho_client
from ..config import Settings
from ..errors import ServiceError
from ._credentials import needs_credentials
from .attio import missing_items, survey_schema, webhook_problem

__all__ = ["Check", "command", "run_checks"]

# Zoho's data centres: accounts host ↔ API host (reference/zoho-billing.md §1.3; Canada's accounts host differs).
DATA_CENTRES = {
    "accounts.zoho.com": "www.zohoapis.com",
    "accounts.zoho.eu": "www.zohoapis.eu",
    "accounts.zoho.in": "www.zohoapis.in",
    "accounts.zoho.com.au": "www.zohoapis.com.au",
    "accounts.zoho.jp": "www.zohoapis.jp",
    "accounts.zohocloud.ca": "www.zohoapis.ca",
    "accounts.zoho.sa": "www.zohoapis.sa",
    "accounts.zoho.com.cn": "www.zohoapis.com.cn",
}
ATTIO_SCOPES = ("record_permission:read-write", "object_configuration:read-write")


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``ok`` True (OK), False (FAIL) or None (cannot tell)."""

    name: str
    ok: bool | None
    found: str
    fix: str = ""

    def line(self) -> str:
        """The printed line."""
        mark = {True: "OK  ", False: "FAIL", None: "??  "}[self.ok]
        tail = f" -> {self.fix}" if self.fix and self.ok is not True else ""
        return f"{mark} {self.name}: {self.found}{tail}"


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _failed(name: str, exc: ServiceError, fix: str) -> Check:
    return Check(name, False, f"{exc.provider} answered: {exc}", fix)


# -- Zoho ---------------------------------------------------------------------------------------------------------
def zoho_checks(settings: Settings, zoho: ZohoClient) -> list[Check]:
    """Token, data centre, organization, customer search, webhook deliveries."""
    try:
        _, api_domain = zoho.tokens.token()
    except ServiceError as exc:
        return [_failed("zoho.credentials", exc, "check ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN and "
                        "that ZOHO_ACCOUNTS_URL is the accounts server of the organization's data centre")]
    checks = [Check("zoho.credentials", True, f"refresh token accepted by {_host(settings.zoho_accounts_url)}")]
    checks.append(_zoho_data_centre(settings, api_domain))
    try:
        orgs = zoho.list_organizations()
    except ServiceError as exc:
        checks.append(_failed("zoho.organization", exc, "grant the ZohoSubscriptions.settings.READ scope, or check "
                              "that the token belongs to this data centre"))
        return checks
    mine = next((o for o in orgs if str(o.get("organization_id")) == settings.zoho_organization_id), None)
    if mine is None:
        known = ", ".join(f"{o.get('organization_id')} ({o.get('name')})" for o in orgs) or "none"
        checks.append(Check("zoho.organization", False, f"ZOHO_ORGANIZATION_ID {settings.zoho_organization_id} is "
                            f"not one of this token's organizations: {known}", "set ZOHO_ORGANIZATION_ID to one of "
                            "them (Zoho Billing → Settings → Organization Profile)"))
        return checks
    checks.append(Check("zoho.organization", True, f"{mine.get('name')} ({settings.zoho_organization_id}), "
                        f"currency {mine.get('currency_code')}, time zone {mine.get('time_zone')}"))
    checks.append(_zoho_customer_search(zoho))
    checks.append(_zoho_webhook(settings, zoho))
    return checks


def _zoho_data_centre(settings: Settings, api_domain: str) -> Check:
    accounts, api = _host(settings.zoho_accounts_url), _host(api_domain)
    if settings.zoho_api_url and _host(settings.zoho_api_url) != api:
        return Check("zoho.data_centre", False, f"ZOHO_API_URL is on {_host(settings.zoho_api_url)} but the token's "
                     f"api_domain is {api}", "unset ZOHO_API_URL (the token's api_domain is used) or make them agree")
    expected = DATA_CENTRES.get(accounts)
    if expected is None:
        known = accounts == api  # a simulator or a proxy serving both
        return Check("zoho.data_centre", True if known else None, f"accounts {accounts}, API {api}",
                     "" if known else f"{accounts} is not a Zoho accounts server; use the one of the data centre")
    if expected != api:
        return Check("zoho.data_centre", False, f"accounts {accounts} belongs with {expected}, but the token's "
                     f"api_domain is {api}", "use the accounts server of the organization's data centre")
    return Check("zoho.data_centre", True, f"accounts {accounts}, API {api}")


def _zoho_customer_search(zoho: ZohoClient) -> Check:
    probe = f"doctor-probe-{uuid.uuid4().hex[:12]}@example.invalid"
    try:
        zoho.find_customer_by_email(probe)
    except ServiceError as exc:
        return Check("zoho.customer_search", False, str(exc.message), "activation cannot find existing Zoho "
                     "customers by email: set zoho_customer_id on each Attio company by hand, and report it")
    return Check("zoho.customer_search", True, "GET /customers narrows by email (an unknown address finds nobody)")


def _zoho_webhook(settings: Settings, zoho: ZohoClient) -> Check:
    url = f"{settings.public_base_url.rstrip('/')}/webhooks/zoho"
    fix = f"Zoho Billing → Settings → Automation → Webhooks: URL {url} (README, Registering the webhooks)"
    try:
        events = zoho.recent_events()
    except ServiceError as exc:
        return Check("zoho.webhook", None, f"the event log could not be read ({exc})",
                     f"grant ZohoSubscriptions.webhooks.READ, or check by hand: {fix}")
    hooks = [h for e in events for h in e.get("webhooks") or [] if isinstance(h, dict)]
    if not events:
        return Check("zoho.webhook", None, "no events yet: Zoho has no API listing webhooks", f"check by hand: {fix}")
    ours = [h for h in hooks if str(h.get("url") or "").split("?")[0].rstrip("/") == url]
    if not ours:
        seen = sorted({str(h.get("url") or "").split("?")[0] for h in hooks}) or ["no webhook at all"]
        return Check("zoho.webhook", False, f"the last {len(events)} events went to {', '.join(seen)}, not {url}", fix)
    last = ours[0].get("status")
    return Check("zoho.webhook", last != "failure", f"recent events delivered to {url} "
                 f"(last status {last})", "the service did not answer 2xx: check PUBLIC_BASE_URL and the web logs")


# -- Attio --------------------------------------------------------------------------------------------------------
def attio_checks(settings: Settings, attio: AttioClient) -> list[Check]:
    """Token and scopes, the data model (``attio setup --check``), the webhook."""
    try:
        info = attio.token_info()
    except ServiceError as exc:
        return [_failed("attio.credentials", exc, "check ATTIO_API_KEY (and ATTIO_API_URL)")]
    if not info.get("active"):
        return [Check("attio.credentials", False, "Attio says the token is not active", "create a new access "
                      "token in Attio → Workspace settings → Developers, put it in ATTIO_API_KEY")]
    scopes = set(str(info.get("scope") or "").split())
    lacking = [s for s in ATTIO_SCOPES if s not in scopes]
    checks = [Check("attio.credentials", not lacking, f"workspace {info.get('workspace_name')}"
                    + (f", scopes missing: {', '.join(lacking)}" if lacking else ""),
                    "give the token these scopes in Attio → Developers")]
    try:
        ws, conflicts = survey_schema(attio)
    except ServiceError as exc:
        return [*checks, _failed("attio.schema", exc, "give the token object_configuration:read")]
    missing = missing_items(ws)
    if conflicts:
        checks.append(Check("attio.schema", False, f"{len(conflicts)} conflict(s), e.g. {conflicts[0]}",
                            "run `flask --app integration attio setup --check` for all, fix them in Attio"))
    elif missing:
        checks.append(Check("attio.schema", False, f"{len(missing)} missing, e.g. {missing[0]}",
                            "run `flask --app integration attio setup`"))
    else:
        checks.append(Check("attio.schema", True, "the objects and attributes of the data model are there"))
    url = f"{settings.public_base_url.rstrip('/')}/webhooks/attio"
    try:
        problem = webhook_problem(attio, url)
    except ServiceError as exc:
        checks.append(Check("attio.webhook", None, f"webhooks could not be listed ({exc})",
                            "give the token webhook:read, or check Attio → Developers → Webhooks by hand"))
        return checks
    checks.append(Check("attio.webhook", problem is None, problem or f"registered for {url}, filtered on "
                        "subscriptions", f"run `flask --app integration attio setup --webhook-url {url}`"))
    return checks


# -- Braintree ----------------------------------------------------------------------------------------------------
def braintree_checks(settings: Settings, braintree: BraintreeClient, *, probe_request_key: bool) -> list[Check]:
    """Keys (through the merchant accounts), the default account's currency, api_request_key, the webhook."""
    try:
        accounts = braintree.merchant_accounts()
    except ServiceError as exc:
        return [_failed("braintree.credentials", exc, "check BRAINTREE_MERCHANT_ID, BRAINTREE_PUBLIC_KEY, "
                        "BRAINTREE_PRIVATE_KEY and BRAINTREE_ENVIRONMENT (sandbox keys do not work in production)")]
    checks = [Check("braintree.credentials", True, f"merchant {settings.braintree_merchant_id} answered "
                    f"({settings.braintree_environment})")]
    active = [a for a in accounts if a["status"] == "active"]
    default = next((a for a in active if a["default"]), None)
    listing = ", ".join(f"{a['id']} ({a['currency_iso_code']}, {a['status']}{', default' if a['default'] else ''})"
                        for a in accounts) or "none"
    if default is None:
        checks.append(Check("braintree.merchant_accounts", False, f"no active default merchant account: {listing}",
                            "activate a merchant account and make it the default in the Control Panel"))
    elif default["currency_iso_code"] != CURRENCY:
        checks.append(Check("braintree.merchant_accounts", False, f"the default account {default['id']} charges "
                            f"{default['currency_iso_code']}, Zoho and Attio use {CURRENCY}: {listing}",
                            f"make a {CURRENCY} merchant account the default"))
    else:
        checks.append(Check("braintree.merchant_accounts", True, listing))
    checks.append(_request_keys(braintree, probe_request_key))
    url = f"{settings.public_base_url.rstrip('/')}/webhooks/braintree"
    checks.append(Check("braintree.webhook", None, "Braintree has no API listing webhook destinations",
                        f"check Control Panel → Settings → Webhooks for {url}"))
    return checks


def _request_keys(braintree: BraintreeClient, probe: bool) -> Check:
    fallback = "sales are sent without the key on 915231; the per-invoice lock and order_id search remain"
    if not probe:
        return Check("braintree.api_request_key", None, "unknown without a probe (no read-only call tells)",
                     f"run `doctor --probe-request-key` (a sale validation refuses, nothing is created); {fallback}")
    try:
        allowed = braintree.probe_request_keys()
    except ServiceError as exc:
        return _failed("braintree.api_request_key", exc, fallback)
    if allowed is None:
        return Check("braintree.api_request_key", None, "the probe's answer says neither", fallback)
    return Check("braintree.api_request_key", allowed, "accepted" if allowed else "not enabled for this merchant "
                 "(915231)", f"ask Braintree support to enable api_request_key; until then {fallback}")


# -- the command --------------------------------------------------------------------------------------------------
def run_checks(
    settings: Settings,
    *,
    zoho: ZohoClient,
    attio: AttioClient,
    braintree: BraintreeClient,
    probe_request_key: bool = False,
) -> list[Check]:
    """Every check, each line echoed as it completes; the checks."""
    checks: list[Check] = []
    groups: tuple[Callable[[], list[Check]], ...] = (
        lambda: zoho_checks(settings, zoho),
        lambda: attio_checks(settings, attio),
        lambda: braintree_checks(settings, braintree, probe_request_key=probe_request_key),
    )
    for group in groups:
        for check in group():
            click.echo(check.line())
            checks.append(check)
    return checks


@click.command("doctor")
@click.option("--probe-request-key", is_flag=True,
              help="Ask Braintree whether api_request_key is enabled, with a sale validation refuses.")
@with_appcontext
@needs_credentials("attio", "zoho")
def command(probe_request_key: bool) -> None:
    """Check the configured accounts of Zoho Billing, Attio and Braintree (reads only); exit 1 on any FAIL."""
    settings, connection = current_app.extensions["settings"], current_app.extensions["redis"]
    checks = run_checks(
        settings,
        zoho=build_zoho_client(settings, connection),
        attio=build_attio_client(settings, connection),
        braintree=build_braintree_client(settings, connection),
        probe_request_key=probe_request_key,
    )
    failed = [c.name for c in checks if c.ok is False]
    unknown = [c.name for c in checks if c.ok is None]
    click.echo(f"doctor: {len(checks) - len(failed) - len(unknown)} ok, {len(failed)} failed, {len(unknown)} unknown")
    if failed:
        raise SystemExit(1)
