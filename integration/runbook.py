"""Every alert the service can raise, named once, with the runbook entry that says what to do about it.

``anchor_for(exc)`` maps an exception to its entry in ``docs/runbook.md`` by the first class of its MRO that has
one (so a new subclass inherits its parent's entry until it gets its own); anything unlisted is a ``bug``. Sentry
events carry the entry as a ``runbook`` tag (``observability.sentry``), ``flask … jobs failed`` prints it, and
``tests/test_runbook.py`` checks that every entry named here has its section in the runbook and that every error
class of the service's tree maps to a real entry.
"""

from __future__ import annotations

__all__ = ["ALERTS", "BY_CLASS", "anchor_for", "link"]

RUNBOOK = "docs/runbook.md"

# anchor → the alert's one-line meaning (the section title in docs/runbook.md)
ALERTS: dict[str, str] = {
    "sale-not-applied": "A sale took money that Zoho can no longer book",
    "sale-outcome-unknown": "A sale's outcome stayed unknown",
    "provider-rejected": "A provider refused a request",
    "provider-unavailable": "A provider stayed unavailable through every retry",
    "rate-limited": "A provider kept rate-limiting",
    "zoho-daily-quota": "Zoho's daily quota held work back",
    "circuit-open": "A provider's circuit breaker stayed open",
    "lock-busy": "A record's lock stayed busy or was lost",
    "job-deadline": "A job was deferred past its deadline",
    "abandoned-job": "A job's worker died",
    "invalid-payload": "A queued event could not be handled",
    "dispute-opened": "A Braintree dispute was opened",
    "cron-missed": "A periodic run was missed or failed",
    "config-error": "A process refused to start",
    "audit-incomplete": "The payments audit could not finish",
    "bug": "Anything else: a bug",
}

# exception class name → anchor; looked up along the exception's MRO (by name, so no import cycles)
BY_CLASS: dict[str, str] = {
    "SaleNotApplied": "sale-not-applied",
    "SaleOutcomeUnknown": "sale-outcome-unknown",
    "LockLost": "lock-busy",
    "LockBusy": "lock-busy",
    "DeferredTooLong": "job-deadline",
    "RateLimited": "rate-limited",
    "CircuitOpen": "circuit-open",
    "ServiceUnavailable": "provider-unavailable",
    "ServiceRejected": "provider-rejected",
    "ServiceError": "provider-unavailable",
    "AbandonedJobError": "abandoned-job",
    "JobTimeoutException": "abandoned-job",
    "PayloadInvalid": "invalid-payload",
    "WebhookRejected": "invalid-payload",
    "NoHandler": "invalid-payload",
    "QueueUnavailable": "provider-unavailable",
    "ConfigError": "config-error",
    "AuditIncomplete": "audit-incomplete",
}


def anchor_for(exc: BaseException | type[BaseException] | None) -> str:
    """The runbook entry of an exception (or class); ``bug`` when none of its classes has one."""
    if exc is None:
        return "bug"
    cls = exc if isinstance(exc, type) else type(exc)
    for klass in cls.__mro__:
        if klass.__name__ in BY_CLASS:
            return BY_CLASS[klass.__name__]
    return "bug"


def link(anchor: str) -> str:
    """Where the entry is: ``docs/runbook.md#<anchor>``."""
    if anchor not in ALERTS:
        raise KeyError(f"no runbook entry {anchor!r}")
    return f"{RUNBOOK}#{anchor}"
