"""The audit's bounded waiting (``integration/audit/patience.py``), with a fake clock."""

from __future__ import annotations

import pytest

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
