"""Every exception of the service, under one root, cut by what the caller does next.

::

    IntegrationError
    ├── ConfigError                 bad or missing setting: the process stops at start
    ├── WebhookRejected             4xx to the sender, nothing enqueued
    │   ├── SignatureInvalid        401
    │   └── PayloadInvalid          400, carries marshmallow's messages
    ├── QueueUnavailable            Redis unreachable or the enqueue failed: 503, the sender retries
    ├── ServiceError                raised by clients/: carries provider, status, code, request_id
    │   ├── ServiceUnavailable      timeout, connection error, 5xx → retry on the schedule
    │   │   └── NotNow              "not now": defer to the time named, without using up an attempt
    │   │       ├── RateLimited     the provider answered 429, or our shared budget for it is spent
    │   │       ├── CircuitOpen     the provider's breaker is open: no call was sent
    │   │       ├── LockBusy        another job holds the lock this work needs
    │   │       ├── LockLost        a fenced lock lapsed before an irreversible step: nothing was done
    │   │       └── SaleOutcomeUnknown  an earlier sale may exist but search cannot show it yet
    │   └── ServiceRejected         any other 4xx, a validation error → fail now, report
    ├── DeferredTooLong             "not now" for longer than JOB_DEADLINE_HOURS → failed registry, one report
    ├── SaleNotApplied              money taken that Zoho can no longer book: failed job, refund or apply by hand
    ├── NoHandler                   an event routed to a job that does not exist yet → failed registry
    └── AuditIncomplete             the payments audit could not finish (a provider stayed down past its bound)

Every ``__init__`` hands its message to ``super().__init__()`` and ``__reduce__`` rebuilds the keyword
arguments, so the exceptions pickle across RQ's fork and into the failed registry.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuditIncomplete",
    "CircuitOpen",
    "ConfigError",
    "DeferredTooLong",
    "IntegrationError",
    "LockBusy",
    "LockLost",
    "NoHandler",
    "NotNow",
    "PayloadInvalid",
    "QueueUnavailable",
    "RateLimited",
    "SaleNotApplied",
    "SaleOutcomeUnknown",
    "ServiceError",
    "ServiceRejected",
    "ServiceUnavailable",
    "SignatureInvalid",
    "WebhookRejected",
]


class IntegrationError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigError(IntegrationError):
    """A required setting is missing or malformed."""


class WebhookRejected(IntegrationError):
    """A webhook delivery refused with a 4xx; nothing was enqueued."""

    status = 400
    error = "rejected"

    def to_body(self) -> dict[str, Any]:
        """The JSON answer for the sender."""
        return {"error": self.error}


class SignatureInvalid(WebhookRejected):
    """Signature missing, malformed or wrong."""

    status = 401
    error = "invalid_signature"


class PayloadInvalid(WebhookRejected):
    """Body not parseable or failing its schema."""

    status = 400
    error = "invalid_payload"

    def __init__(self, message: str = "invalid payload", details: Any = None) -> None:
        super().__init__(message)
        self.details = details if details is not None else message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.details))

    def to_body(self) -> dict[str, Any]:
        """The JSON answer, with what failed."""
        return {"error": self.error, "details": self.details}


class QueueUnavailable(IntegrationError):
    """Redis could not be reached or the enqueue failed: answer 503 so the sender retries."""


class NoHandler(IntegrationError):
    """The event's job has no handler yet."""


class DeferredTooLong(IntegrationError):
    """A job met only "not now" (rate limits, an open circuit, a busy lock) for longer than its deadline."""


class ServiceError(IntegrationError):
    """A provider call failed; carries what support needs to trace it."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}" + (f" (HTTP {status})" if status else ""))
        self.provider = provider
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (type(self), self.provider, self.message, self.status, self.code, self.request_id, self.retry_after),
        )


def _rebuild(cls: type[ServiceError], provider: str, message: str, *rest: Any) -> ServiceError:
    status, code, request_id, retry_after = rest
    return cls(provider, message, status=status, code=code, request_id=request_id, retry_after=retry_after)


class ServiceUnavailable(ServiceError):
    """Transient: the same call may succeed later (timeout, connection, 5xx, and every ``NotNow``)."""


class NotNow(ServiceUnavailable):
    """Nothing is wrong, the work must only wait (until ``retry_after`` when known): not a failed attempt."""


class RateLimited(NotNow):
    """The provider answered 429 (or its rate-limit code), or our shared budget for it is spent: we are too fast."""


class CircuitOpen(NotNow):
    """The provider's circuit breaker is open; no call was sent."""


class LockBusy(NotNow):
    """Another job holds the lock this work needs (its holder is likely doing the same work)."""


class LockLost(NotNow):
    """A lock lapsed or was taken over before an irreversible step: the step was not done; run the job again."""


class SaleOutcomeUnknown(NotNow):
    """An earlier sale of this invoice may exist but Braintree's search does not show it yet: no new sale until it
    does or the search-lag bound has passed; run again after ``retry_after``."""


class ServiceRejected(ServiceError):
    """Permanent: the provider refused the request (4xx other than 429, validation error)."""


class SaleNotApplied(IntegrationError):
    """Money was taken by a sale that Zoho can no longer book (the invoice was voided, written off or paid
    elsewhere meanwhile): permanent, and the message tells the operator to refund the sale or apply it by hand."""


class AuditIncomplete(IntegrationError):
    """The payments audit stopped before checking everything (exit 2): what it waited for, and for how long."""
