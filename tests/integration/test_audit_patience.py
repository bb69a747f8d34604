"""The audit's bounded waiting (``integration/audit/patience.py``) with a fake clock, and its paging with fakes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integration.audit import run_audit
from integration.audit.patience import Patience
from integration.errors import AuditIncomplete, RateLimited, ServiceRejected, ServiceUnavailable


def flaky(*errors: Exception):
    """A call that raises each error once, then answers "ok"."""
    pending = list(errors)

    def call() -> str:
        if pending:
            raise pending.pop(0)
        return "ok"

    return call


def test_waits_as_long_as_the_provider_asks_else_backs_off():
    slept: list[float] = []
    said: list[str] = []
    patience = Patience(max_wait=100, say=said.append, sleep=slept.append)
    call = flaky(RateLimited("zoho", "429", retry_after=7.5), ServiceUnavailable("zoho", "503"),
                 ServiceUnavailable("zoho", "503"))
    assert patience.call("zoho", "invoice 1", call) == "ok"
    assert slept == [7.5, 2.0, 4.0]  # Retry-After honoured; else 2**(n-1) s after the n-th failure of the call
    assert patience.waited == pytest.approx(13.5) and patience.calls == {"zoho": 4}
    assert said[0].startswith("waiting 7.5s for zoho (invoice 1)")


def test_the_bound_is_shared_by_every_call_and_then_it_stops():
    slept: list[float] = []
    patience = Patience(max_wait=10, sleep=slept.append)
    patience.call("zoho", "a", flaky(ServiceUnavailable("zoho", "busy", retry_after=6)))
    with pytest.raises(AuditIncomplete, match="still unavailable after 6s of waiting"):
        patience.call("zoho", "b", flaky(ServiceUnavailable("zoho", "busy", retry_after=6)))
    assert slept == [6]


def test_a_refusal_stops_at_once():
    slept: list[float] = []
    patience = Patience(max_wait=100, sleep=slept.append)
    with pytest.raises(AuditIncomplete, match="refused by attio"):
        patience.call("attio", "payments", flaky(ServiceRejected("attio", "forbidden", status=403)))
    assert slept == []


class _Lists:
    """Fake clients: two pages of old invoices; Braintree and Attio empty."""

    def __init__(self, context: dict[str, str]) -> None:
        self.context, self.pages = context, []

    def list_invoices_page(self, page: int) -> tuple[list[dict[str, str]], dict[str, object]]:
        self.pages.append(page)
        row = {"invoice_id": f"i{page}", "status": "paid", "created_time": "2020-01-01T00:00:00+0000"}
        return [row], {**self.context, "has_more_page": page < 2}

    def search_sales(self, **kw: object) -> list[object]:
        return []

    def query_records(self, slug: str) -> list[object]:
        return []


@pytest.mark.parametrize(("context", "pages"), [({"sort_column": "created_time", "sort_order": "D"}, [1]),
                                                ({}, [1, 2]), ({"sort_column": "total", "sort_order": "D"}, [1, 2])])
def test_paging_stops_early_only_when_zoho_says_newest_first(context, pages):
    fake = _Lists(context)
    report = run_audit(braintree=fake, zoho=fake, attio=fake, since=datetime(2026, 1, 1, tzinfo=UTC))
    assert report.complete and fake.pages == pages


def test_the_audits_own_pace_is_kept_and_not_counted_against_the_bound():
    slept: list[float] = []
    waits = [3.0, 0.0, 0.0]
    patience = Patience(max_wait=1, sleep=slept.append, pace={"zoho": lambda: waits.pop(0)})
    assert patience.call("zoho", "page 1", lambda: "ok") == "ok"
    assert patience.call("attio", "payments", lambda: "ok") == "ok"  # only Zoho is paced
    assert patience.call("zoho", "page 2", lambda: "ok") == "ok"
    assert slept == [3.0] and patience.paced == 3.0 and patience.waited == 0.0
