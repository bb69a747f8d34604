"""/pay/<token>: canonical single-use tokens, the card saved before the link is spent, no customer-bound client
token, a budget of views and submissions per link (against the simulators, over real HTTP)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from integration import create_app
from integration.routes.pay import SUBMITS_PER_WINDOW, VIEWS_PER_WINDOW

from ...conftest import LiveServer, Stack, run_until_idle, run_worker
from ...helpers import job_count
from ...workers.test_activation import CRM, send_event

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def web(stack: Stack) -> Any:
    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


def awaiting_link(stack: Stack, web: LiveServer, redis_conn: Any) -> tuple[CRM, str]:
    crm = CRM(stack, card=False)
    crm.request()
    send_event(web.url, crm.subscription)
    run_worker(redis_conn)
    assert crm.sub("status") == "Awaiting payment method"
    return crm, crm.sub("payment_link").rsplit("/", 1)[1]


def _low_bit_flipped(segment: str) -> str:
    """The segment with its last character's lowest bit flipped: base64 of the same bytes when that bit is unused."""
    last = _B64.index(segment[-1])
    return segment[:-1] + _B64[last ^ 1]


def respellings(token: str) -> list[str]:
    value, signature = token.rsplit(".", 1)
    payload, timestamp = value.rsplit(".", 1)
    return [
        token + "!!",
        token + "=",
        f"{value}.{_low_bit_flipped(signature)}",  # 27 chars for 20 bytes: the last char carries 2 unused bits
        f"{payload}.{timestamp}!.{signature}",
        f"{payload}!.{timestamp}.{signature}",
    ]


def test_a_spent_link_respelled_is_refused(stack, web, redis_conn, queues):
    crm, token = awaiting_link(stack, web, redis_conn)
    done = requests.post(f"{web.url}/pay/{token}", data={"payment_method_nonce": "fake-valid-nonce"}, timeout=10)
    assert done.status_code == 200
    run_until_idle(redis_conn)
    assert crm.sub("status") == "Active"
    assert requests.get(f"{web.url}/pay/{token}", timeout=10).status_code == 409
    for other in respellings(token):
        for method in ("get", "post"):
            resp = getattr(requests, method)(f"{web.url}/pay/{other}",
                                             data={"payment_method_nonce": "fake-valid-nonce"}, timeout=10)
            assert resp.status_code in (404, 409), (other, method, resp.status_code)
    assert job_count(queues) == 0


def test_respelled_fresh_links_are_not_valid(stack, web, redis_conn):
    _, token = awaiting_link(stack, web, redis_conn)
    for other in respellings(token):
        resp = requests.get(f"{web.url}/pay/{other}", timeout=10)
        assert resp.status_code == 404 and "not valid" in resp.text, other
    assert requests.get(f"{web.url}/pay/{token}", timeout=10).status_code == 200


def test_a_refused_card_shows_the_reason_and_the_link_stays_usable(stack, web, redis_conn, queues):
    crm, token = awaiting_link(stack, web, redis_conn)
    refused = requests.post(f"{web.url}/pay/{token}", data={"payment_method_nonce": "fake-consumed-nonce"},
                            timeout=10)
    assert refused.status_code == 422
    assert "not accepted" in refused.text and "more than once" in refused.text
    assert job_count(queues) == 0
    assert requests.get(f"{web.url}/pay/{token}", timeout=10).status_code == 200
    done = requests.post(f"{web.url}/pay/{token}", data={"payment_method_nonce": "fake-valid-nonce"}, timeout=10)
    assert done.status_code == 200 and 'id="done"' in done.text
    assert stack.braintree.customer(crm.bt_customer)["default_token"]  # saved before the answer
    run_until_idle(redis_conn)
    assert crm.sub("status") == "Active"
    vaults = stack.braintree.calls_to("POST", "/merchants/*/payment_methods")
    assert len([c for c in vaults if c.status < 300]) == 1  # the job found the card, it did not vault again


def test_when_braintree_is_down_the_card_is_not_saved_and_the_link_stays_usable(stack, web, redis_conn, queues):
    _, token = awaiting_link(stack, web, redis_conn)
    stack.braintree.faults.add("POST", "/merchants/*/payment_methods", status=503, times=None)
    resp = requests.post(f"{web.url}/pay/{token}", data={"payment_method_nonce": "fake-valid-nonce"}, timeout=20)
    assert resp.status_code == 503 and "not saved" in resp.text
    stack.braintree.faults.clear()
    assert requests.get(f"{web.url}/pay/{token}", timeout=10).status_code == 200
    assert job_count(queues) == 0


def test_the_client_token_names_no_customer(stack, web, redis_conn):
    _, token = awaiting_link(stack, web, redis_conn)
    assert requests.get(f"{web.url}/pay/{token}", timeout=10).status_code == 200
    [call] = stack.braintree.calls_to("POST", "/merchants/*/client_token")
    assert b"customer" not in call.body


def test_page_views_per_link_are_limited(stack, web, redis_conn):
    _, token = awaiting_link(stack, web, redis_conn)
    limit, _ = VIEWS_PER_WINDOW
    statuses = [requests.get(f"{web.url}/pay/{token}", timeout=10).status_code for _ in range(limit + 2)]
    assert statuses[:limit] == [200] * limit and statuses[limit:] == [429, 429]
    assert len(stack.braintree.calls_to("POST", "/merchants/*/client_token")) == limit


def test_card_submissions_per_link_are_limited(stack, web, redis_conn):
    _, token = awaiting_link(stack, web, redis_conn)
    limit, _ = SUBMITS_PER_WINDOW
    statuses = [requests.post(f"{web.url}/pay/{token}", data={"payment_method_nonce": "fake-consumed-nonce"},
                              timeout=10).status_code for _ in range(limit + 1)]
    assert statuses == [422] * limit + [429]


def test_two_submissions_at_once_save_one_card(stack, web, redis_conn, queues):
    _, token = awaiting_link(stack, web, redis_conn)
    stack.braintree.faults.add("POST", "/merchants/*/payment_methods", delay=0.5, times=1)  # the first is slow

    def submit(_: int) -> requests.Response:
        return requests.post(f"{web.url}/pay/{token}", data={"payment_method_nonce": "fake-valid-nonce"}, timeout=10)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(submit, 0)
        time.sleep(0.15)
        second = pool.submit(submit, 1)
        statuses = sorted([first.result().status_code, second.result().status_code])
    assert statuses == [200, 409]
    assert job_count(queues) == 1
    assert requests.get(f"{web.url}/pay/{token}", timeout=10).status_code == 409  # spent


def test_drop_in_is_a_pinned_version_from_braintree_and_only_listed_hosts_may_run_scripts(stack, web, redis_conn):
    """No SRI hash yet (none published by Braintree was found, and an integrity value needs the CDN file's exact
    bytes): the pinned versioned URL and the page's CSP are what keep other code off the page."""
    import re

    from integration.routes.pay import DROPIN_URL

    assert re.fullmatch(r"https://js\.braintreegateway\.com/web/dropin/\d+\.\d+\.\d+/js/dropin\.min\.js", DROPIN_URL)
    _, token = awaiting_link(stack, web, redis_conn)
    page = requests.get(f"{web.url}/pay/{token}", timeout=10)
    assert page.status_code == 200 and DROPIN_URL in page.text
    directives = {d.split()[0]: d.split()[1:] for d in page.headers["Content-Security-Policy"].split(";") if d.strip()}
    sources = directives["script-src"]
    assert [s for s in sources if s.startswith("'")] == [s for s in sources if s.startswith("'nonce-")]  # no unsafe-*
    assert {s for s in sources if not s.startswith("'")} == {
        "https://js.braintreegateway.com", "https://assets.braintreegateway.com",  # Braintree's JS SDK hosts
        "https://*.paypal.com", "https://www.paypalobjects.com"}  # Braintree's documented set for PayPal in Drop-in
