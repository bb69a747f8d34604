"""Job functions used only by the tests of the worker's failure handling (importable by dotted path)."""

from __future__ import annotations

import os
import time
from typing import Any

from integration.errors import CircuitOpen, LockBusy, RateLimited, ServiceRejected, ServiceUnavailable
from workers.jobs._entry import entrypoint


@entrypoint("tests.fail_transient")
def fail_transient(payload: dict[str, Any]) -> None:
    """Always fail with a transient provider error (optionally carrying Retry-After)."""
    raise ServiceUnavailable("zoho", "503 from provider", status=503, retry_after=payload.get("retry_after"))


@entrypoint("tests.fail_permanent")
def fail_permanent(payload: dict[str, Any]) -> None:
    """Always fail with a provider's validation error."""
    raise ServiceRejected("attio", "value_not_found: status 'Nope'", status=400, request_id="req-1")


def succeed(payload: dict[str, Any]) -> str:
    """Succeed."""
    return "ok"


def sleep_then_succeed(payload: dict[str, Any]) -> str:
    """Write a marker, sleep, then succeed (a job to kill mid-run)."""
    marker = payload["marker"]
    with open(marker, "a") as fh:
        fh.write(f"start {os.getpid()}\n")
    time.sleep(payload.get("seconds", 5))
    with open(marker, "a") as fh:
        fh.write("done\n")
    return "ok"


CUSTOMER_EMAIL = "jane.doe@customer.example"
CARD_NUMBER = "4111111111111111"


def fail_transient_with_customer_data(payload: dict[str, Any]) -> None:
    """Fail transiently, with customer data in a local variable and in the error message (Sentry must drop both)."""
    customer = {"email": CUSTOMER_EMAIL, "card": CARD_NUMBER, **payload.get("event", {})}
    raise ServiceUnavailable("zoho", f"timeout while reading {customer['email']}", status=504)


def fail_permanent_with_customer_data(payload: dict[str, Any]) -> None:
    """Fail permanently, with customer data in a local variable and in the error message."""
    customer = {"email": CUSTOMER_EMAIL, "card": CARD_NUMBER, **payload.get("event", {})}
    raise ServiceRejected("attio", f"invalid value {customer['email']} / {customer['card']}", status=400)


def sleep_once_then_succeed(payload: dict[str, Any]) -> str:
    """On the first run write a marker and sleep (a job to kill mid-run); on any later run succeed at once."""
    marker = payload["marker"]
    if os.path.exists(marker):
        return "ok"
    with open(marker, "a") as fh:
        fh.write(f"start {os.getpid()}\n")
    time.sleep(payload.get("seconds", 60))
    return "ok"


def fail_once_then_succeed(payload: dict[str, Any]) -> str:
    """Fail permanently on the first run, succeed on the next (runs counted in Redis at ``payload['counter']``)."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    runs = int(job.connection.incr(payload["counter"]))
    if runs == 1:
        raise ServiceRejected("attio", "first run fails on purpose", status=400)
    return f"ok after {runs} runs"


def fail_with_message(payload: dict[str, Any]) -> None:
    """Fail with the payload's message as the exception text (the dashboard shows it)."""
    raise RuntimeError(str(payload["message"]))


def return_payload(payload: dict[str, Any]) -> Any:
    """Succeed with the payload's value as the result (the dashboard shows it)."""
    return payload["value"]


DAY_LEFT = 23 * 3600 + 55 * 60

_SCRIPTED = {
    "429": lambda ra: RateLimited("attio", "rate limit exceeded", status=429, retry_after=ra),
    "open": lambda ra: CircuitOpen("zoho", "circuit open", retry_after=ra),
    "busy": lambda ra: LockBusy("lock", "catalog-sync is held by another worker", retry_after=ra),
    "503": lambda ra: ServiceUnavailable("zoho", "503 from provider", status=503, retry_after=ra),
    # Zoho's daily cap met at 00:05 in the organization's day: "not now" until its midnight, 23 h 55 min away.
    "day": lambda ra: RateLimited("zoho", "daily cap reached", status=429, code="44", retry_after=DAY_LEFT),
}


@entrypoint("tests.scripted")
def scripted(payload: dict[str, Any]) -> str:
    """Run n raises ``payload['script'][n]`` (429, open, busy, 503, day) until the script is spent, then succeeds."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    run = int(job.connection.incr(payload["counter"]))
    script = payload["script"]
    if run <= len(script):
        raise _SCRIPTED[script[run - 1]](payload.get("retry_after"))
    return f"ok after {run} runs"
