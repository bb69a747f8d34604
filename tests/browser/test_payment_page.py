"""The payment-method page of workflow 2 in a real (headless) browser: content, offline Drop-in, sandbox submit."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integration import create_app
from integration.paylinks import PaymentLink, PaymentLinks

from ..conftest import LiveServer, Stack, run_until_idle, run_worker
from ..workers.test_activation import CRM, send_event
from .conftest import Page

pytestmark = pytest.mark.browser

# Set to a directory to keep a screenshot of the payment page (to look at it).
SCREENSHOT_DIR = os.environ.get("BROWSER_SCREENSHOT_DIR")


@pytest.fixture
def web(stack: Stack) -> Iterator[LiveServer]:
    """The service on a loopback port, wired to the simulators."""
    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


def awaiting_payment(stack: Stack, web: LiveServer, redis_conn: redis.Redis) -> tuple[CRM, str]:
    """A Requested subscription of a company with no card, run until it waits; returns it and its page's URL."""
    crm = CRM(stack, card=False)
    crm.request()
    assert send_event(web.url, crm.subscription).status_code == 202
    run_worker(redis_conn)
    assert crm.sub("status") == "Awaiting payment method"
    token = crm.sub("payment_link").rsplit("/", 1)[1]
    return crm, f"{web.url}/pay/{token}"


def test_page_shows_the_service_and_says_when_the_card_form_cannot_load(
    stack: Stack, web: LiveServer, redis_conn: redis.Redis, page: Page
) -> None:
    """Name, price and submit control render; with Drop-in's script unreachable the page says so, no JS error."""
    _, url = awaiting_payment(stack, web, redis_conn)
    assert page.goto(url) == 200
    assert page.js("document.title") == "Add a payment method"
    assert page.text("#service-name") == "Basic"
    assert page.text("#service-price") == "50.00 every 1 month"
    assert page.visible("#submit-button") and page.text("#submit-button") == "Save payment method"
    # Offline: js.braintreegateway.com cannot be reached, so the Drop-in never starts.
    page.wait_for("!document.getElementById('dropin-error').hidden")
    assert page.visible("#dropin-error") and "could not be loaded" in page.text("#dropin-error")
    assert page.js("document.getElementById('submit-button').disabled") is True  # no empty nonce can be sent
    assert page.visible("#sandbox-button")
    assert page.uncaught_errors() == []
    if SCREENSHOT_DIR:
        page.screenshot(Path(SCREENSHOT_DIR) / "payment-page.png")


def test_sandbox_button_completes_the_activation(
    stack: Stack, web: LiveServer, redis_conn: redis.Redis, page: Page
) -> None:
    """Clicking the sandbox test-card button submits its nonce; the queued job makes the subscription Active."""
    crm, url = awaiting_payment(stack, web, redis_conn)
    assert page.goto(url) == 200
    assert page.click_and_wait_for_load("#sandbox-button") == 200
    assert page.text("#done") == "Thank you"
    assert "Basic" in page.text("body")
    run_until_idle(redis_conn)
    assert crm.sub("status") == "Active"
    assert stack.braintree.customer(crm.bt_customer)["default_token"]
    assert len(stack.zoho.subscriptions) == 1
    assert page.goto(url) == 409  # the link is spent
    assert "already used" in page.text("#problem")
    if SCREENSHOT_DIR:
        page.screenshot(Path(SCREENSHOT_DIR) / "payment-used.png")


def test_tampered_and_expired_links_get_a_friendly_page(
    stack: Stack, web: LiveServer, redis_conn: redis.Redis, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mangled token and an expired one each render a plain explanation, never a stack trace."""
    _, url = awaiting_payment(stack, web, redis_conn)
    assert page.goto(url[:-3] + "abc") == 404
    assert page.text("#problem") == "This link is not valid"
    assert "whole link" in page.text("body") and "Traceback" not in page.text("body")

    settings = stack.settings()
    links = PaymentLinks(settings.link_secret, ttl_days=settings.payment_link_ttl_days)
    past = time.time() - (settings.payment_link_ttl_days * 24 + 1) * 3600
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: past)  # itsdangerous stamps tokens with time.time()
        expired = links.issue(PaymentLink("sub", "cust", "Basic", "50", "every 1 month", past))
    assert page.goto(f"{web.url}/pay/{expired}") == 410
    assert page.text("#problem") == "This link has expired"
    assert "account manager" in page.text("body")
    if SCREENSHOT_DIR:
        page.screenshot(Path(SCREENSHOT_DIR) / "payment-expired.png")
