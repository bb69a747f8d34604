"""``flask doctor`` against the three simulators: all green when set up, and each check naming what is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from integration import create_app
from integration.clients.attio import subscriptions_filter
from integration.commands.doctor import _zoho_data_centre
from tests.conftest import SECRETS, LiveServer, Stack


@pytest.fixture
def web(stack: Stack) -> Iterator[LiveServer]:
    """The service over real HTTP: where the simulators deliver their webhooks."""
    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


@pytest.fixture
def healthy(stack: Stack, web: LiveServer) -> Stack:
    """A deployment set up as the README says: webhooks registered at the service's public URL."""
    subscriptions_id = next(o["id"] for o in stack.attio.objects.values() if o["api_slug"] == "subscriptions")
    stack.attio.webhooks.append({
        "target_url": f"{web.url}/webhooks/attio", "status": "active",
        "subscriptions": [{"event_type": e, "filter": subscriptions_filter(subscriptions_id)}
                          for e in ("record.created", "record.updated")],
    })  # fmt: skip
    stack.zoho.webhook_target = (f"{web.url}/webhooks/zoho", SECRETS["zoho_webhook_secret"])
    stack.zoho.raise_invoice(stack.zoho.add_customer("Acme", "billing@acme.example"), 10)
    assert stack.zoho.flush_webhooks()
    return stack


def doctor(stack: Stack, web: LiveServer, *args: str, **overrides: Any) -> tuple[int, dict[str, str]]:
    """Run the command; (exit code, check name → its line)."""
    settings = stack.settings(**{"public_base_url": web.url, **overrides})
    result = create_app(settings).test_cli_runner().invoke(args=["doctor", *args])
    lines = {line.split(":")[0].split()[-1]: line for line in result.output.splitlines() if ":" in line}
    return result.exit_code, lines


def test_all_green_against_the_simulators(healthy: Stack, web: LiveServer) -> None:
    code, lines = doctor(healthy, web, "--probe-request-key")
    assert code == 0, "\n".join(lines.values())
    for name in ("zoho.credentials", "zoho.data_centre", "zoho.organization", "zoho.customer_search", "zoho.webhook",
                 "attio.credentials", "attio.schema", "attio.webhook", "braintree.credentials",
                 "braintree.merchant_accounts", "braintree.api_request_key"):
        assert lines[name].startswith("OK"), lines[name]
    assert lines["braintree.webhook"].startswith("??")  # no API lists Braintree's webhooks: said, not guessed
    assert "time zone UTC" in lines["zoho.organization"]
    assert not [c for c in healthy.braintree.calls if c.method == "POST" and "/transactions" in c.path
                and "advanced_search" not in c.path and c.status < 400]  # the probe created nothing
    assert not [c for c in healthy.attio.calls if c.method not in ("GET", "HEAD")
                and not c.path.endswith("/records/query")]  # reads only
    assert not healthy.zoho.calls_to("POST", "/billing/v1/*")


def test_without_the_probe_the_request_key_is_unknown(healthy: Stack, web: LiveServer) -> None:
    code, lines = doctor(healthy, web)
    assert code == 0
    assert lines["braintree.api_request_key"].startswith("??") and "--probe-request-key" in lines[
        "braintree.api_request_key"]


@pytest.mark.parametrize(
    ("overrides", "name", "fragment"),
    [
        ({"zoho_refresh_token": "1000.wrong"}, "zoho.credentials", "ZOHO_REFRESH_TOKEN"),
        ({"zoho_organization_id": "999"}, "zoho.organization",
         "999 is not one of this token's organizations: 10234695 (Simulated Billing)"),
        ({"attio_api_key": "wrong"}, "attio.credentials", "ATTIO_API_KEY"),
        ({"braintree_private_key": "wrong"}, "braintree.credentials", "BRAINTREE_PRIVATE_KEY"),
    ],
)
def test_wrong_credentials_are_named(
    healthy: Stack, web: LiveServer, overrides: dict[str, Any], name: str, fragment: str
) -> None:
    code, lines = doctor(healthy, web, **overrides)
    assert code == 1
    assert lines[name].startswith("FAIL") and fragment in lines[name], lines[name]


def test_a_workspace_without_the_data_model_is_named(healthy: Stack, web: LiveServer) -> None:
    healthy.attio.reset()  # only companies and people
    code, lines = doctor(healthy, web)
    assert code == 1
    assert lines["attio.schema"].startswith("FAIL") and "missing" in lines["attio.schema"]
    assert "attio setup" in lines["attio.schema"]
    assert lines["attio.webhook"].startswith("FAIL") and "subscriptions object is missing" in lines["attio.webhook"]


def test_webhooks_at_the_wrong_url_are_named(healthy: Stack, web: LiveServer) -> None:
    healthy.attio.webhooks[0]["target_url"] = "https://old-host.example/webhooks/attio"
    code, lines = doctor(healthy, web, public_base_url="https://billing.example.com")
    assert code == 1
    assert "no active webhook for https://billing.example.com/webhooks/attio" in lines["attio.webhook"]
    assert lines["zoho.webhook"].startswith("FAIL")
    assert f"went to {web.url}/webhooks/zoho, not https://billing.example.com/webhooks/zoho" in lines["zoho.webhook"]


def test_an_unfiltered_attio_webhook_is_named(healthy: Stack, web: LiveServer) -> None:
    for sub in healthy.attio.webhooks[0]["subscriptions"]:
        sub["filter"] = None  # every record event of every object
    code, lines = doctor(healthy, web)
    assert code == 1
    assert "exists but not as the service's" in lines["attio.webhook"]


def test_a_customer_search_zoho_ignores_is_named(healthy: Stack, web: LiveServer) -> None:
    healthy.zoho.customer_search_params = set()
    code, lines = doctor(healthy, web)
    assert code == 1
    assert lines["zoho.customer_search"].startswith("FAIL") and "ignored email=" in lines["zoho.customer_search"]


def test_merchant_accounts_and_request_keys_are_named(healthy: Stack, web: LiveServer) -> None:
    healthy.braintree.merchant_accounts = [
        {"id": "acme_eur", "status": "active", "currency_iso_code": "EUR", "default": True}]
    healthy.braintree.request_keys_allowed = False
    try:
        code, lines = doctor(healthy, web, "--probe-request-key")
    finally:
        healthy.braintree.request_keys_allowed = True
    assert code == 1
    assert "the default account acme_eur charges EUR" in lines["braintree.merchant_accounts"]
    assert lines["braintree.api_request_key"].startswith("FAIL") and "915231" in lines["braintree.api_request_key"]


@pytest.mark.parametrize(
    ("accounts", "api_domain", "ok", "fragment"),
    [
        ("https://accounts.zoho.eu", "https://www.zohoapis.eu", True, "accounts accounts.zoho.eu"),
        ("https://accounts.zoho.eu", "https://www.zohoapis.com", False, "belongs with www.zohoapis.eu"),
        ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca", True, "API www.zohoapis.ca"),
    ],
)
def test_the_data_centre_pairs_accounts_and_api_hosts(
    stack: Stack, accounts: str, api_domain: str, ok: bool, fragment: str
) -> None:
    check = _zoho_data_centre(stack.settings(zoho_accounts_url=accounts), api_domain)
    assert check.ok is ok and fragment in check.found
