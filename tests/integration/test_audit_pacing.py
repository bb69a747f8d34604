"""The audit paces itself within the shared budgets and waits out busy or briefly failing providers (bounded):
it completes instead of aborting, and exits 2 (never 0 or 1) when a provider stays down past the bound."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import requests

from integration.audit import run_audit
from integration.clients.attio import build_attio_client
from integration.clients.braintree import build_braintree_client
from integration.clients.breaker import make_breaker
from integration.clients.zoho import ZohoClient, ZohoLimiter
from integration.clients.zoho_auth import ZohoTokens
from integration.worklane import BULK, lane

from .test_audit import Books, audit


@pytest.fixture
def books(stack: Any, redis_conn: Any) -> Books:
    return Books(stack)


def _forty(books: Books) -> None:
    for n in range(40):
        books.collected(f"{10 + n}.00")


def test_forty_invoices_at_thirty_per_scaled_minute_complete(stack, books, redis_conn):
    # The default budget (30 Zoho calls a minute) scaled down 30x: 30 calls per 2 s. The audit needs 41 Zoho calls
    # (one list page, one read per invoice), so the shared budget refuses it mid-way; it must wait, not abort.
    _forty(books)
    settings = stack.settings()
    http = requests.Session()
    limiter = ZohoLimiter(redis_conn, settings.zoho_organization_id, requests_per_minute=30, period=2.0,
                          max_wait=0.1)  # a call waits 0.1 s at most for the budget, then is refused
    zoho = ZohoClient(tokens=ZohoTokens.from_settings(settings, redis_conn, http=http),
                      organization_id=settings.zoho_organization_id, http=http, timeout=settings.http_timeout,
                      breaker=make_breaker(redis_conn, "zoho"), limiter=limiter)
    said: list[str] = []
    with lane(BULK):  # as the command runs it: bulk work yields to charges, so the budget refuses it mid-way
        report = run_audit(braintree=build_braintree_client(settings, redis_conn), zoho=zoho,
                           attio=build_attio_client(settings, redis_conn),
                           since=datetime(2020, 1, 1), say=said.append)
    assert report.complete, report.error
    assert report.exit_code == 0, [v.line() for v in report.violations]
    assert report.invoices == 40 and report.sales == 40 and report.zoho_payments == 40
    # 41 calls against 30 per window: the shared budget made the audit wait (paced in the bulk lane, or refused
    # and waited out by the audit itself), it did not abort, and it sent nothing over the budget.
    assert report.calls["zoho"] >= 41
    assert stack.zoho.rate_limited == 0


@pytest.mark.slow
def test_forty_invoices_at_the_default_zoho_budget_complete_through_the_command(stack, books):
    _forty(books)
    result = audit(stack, zoho_requests_per_minute=30)  # the default: 41 calls need a second minute
    assert result.exit_code == 0, result.output
    assert "checked 40 invoice(s), 40 successful sale(s)" in result.stdout
    assert "zoho 41 call(s)" in result.stderr  # 41 calls at 30 a minute: paced into a second minute, not aborted
    assert stack.zoho.rate_limited == 0


def test_a_transient_zoho_failure_is_waited_out(stack, books):
    sold = books.collected("10.00")
    fault = stack.zoho.faults.add("GET", f"/billing/v1/invoices/{sold.invoice_id}", status=503, times=2)
    result = audit(stack)
    assert fault.fired == 2
    assert result.exit_code == 0, result.output
    assert f"audit: waiting 1.0s for zoho (invoice {sold.invoice_id})" in result.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_provider_down_past_the_bound_exits_2(stack, books, fmt):
    books.collected("10.00")
    stack.zoho.faults.add("GET", "/billing/v1/invoices*", status=503, times=None)
    result = audit(stack, "--max-wait", "3", "--format", fmt)
    assert result.exit_code == 2, result.output
    if fmt == "json":
        doc = json.loads(result.stdout)
        assert doc["complete"] is False and "zoho" in doc["error"] and doc["violations"] == []
    else:
        assert result.stdout.startswith("INCOMPLETE (") and "still unavailable" in result.stdout
    assert "audit: waiting" in result.stderr


def test_a_refusal_is_not_waited_for_and_exits_2(stack, books):
    books.collected("10.00")
    stack.attio.faults.add("POST", "/v2/objects/payments/records/query", status=403, times=None)
    result = audit(stack)
    assert result.exit_code == 2, result.output
    assert "refused by attio" in result.stdout
    assert "waiting" not in result.stderr


def test_redis_unreachable_is_could_not_complete_not_violations(stack, books):
    books.collected("10.00")
    result = audit(stack, "--format", "json", redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["complete"] is False and "ConnectionError" in doc["error"]
    assert "Traceback" in result.stderr


def test_zoho_share_takes_its_calls_from_the_audits_own_budget(stack, books, redis_conn):
    for amount in ("10.00", "11.00"):
        books.collected(amount)
    result = audit(stack, "--zoho-share", "0.5", "--format", "json")
    assert result.exit_code == 0, result.output
    calls = json.loads(result.stdout)["calls"]["zoho"]
    assert redis_conn.zcard("budget:zoho:10234695:audit") == calls == 3
    assert audit(stack).exit_code == 0 and redis_conn.zcard("budget:zoho:10234695:audit") == 3  # default: no cap
