"""Bounded waiting for the audit: a provider that is busy or briefly down is waited for, never given up on at once.

The clients never loop (RQ is the workers' retry loop); the audit is a command, not a job, so it has its own
loop here, and only here. A call that raises ``ServiceUnavailable`` (the shared budget is spent, a 429, a 5xx, a
timeout, an open circuit) is tried again after the provider's ``retry_after`` (else 1, 2, 4 … 30 s), and each wait
is told to stderr. All the waits of one audit share one bound (``max_wait``, default 600 s): past it the audit stops
with ``AuditIncomplete`` (exit 2). A ``ServiceRejected`` (a 4xx: bad credentials, a bug) stops it at once.

A ``pace`` per provider (seconds to wait before the next call, 0 = go) lets the audit keep to a share of a budget
it shares with the workers (``--zoho-share``), so a long audit does not slow the collection down; those waits are
the audit's own pace, not a provider's trouble, and do not count against the bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from ..errors import AuditIncomplete, ServiceRejected, ServiceUnavailable

__all__ = ["DEFAULT_MAX_WAIT", "Patience"]

T = TypeVar("T")
DEFAULT_MAX_WAIT = 600.0
_BACKOFF_CAP = 30.0


class Patience:
    """Runs provider calls, waiting out transient refusals within one shared bound, and counts the calls."""

    def __init__(
        self,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        say: Callable[[str], None] = lambda line: None,
        sleep: Callable[[float], None] = time.sleep,
        pace: Mapping[str, Callable[[], float]] | None = None,
    ) -> None:
        self.max_wait = max_wait
        self.waited = 0.0
        self.paced = 0.0  # seconds spent keeping to the audit's own share
        self._pace = dict(pace or {})
        self.calls: dict[str, int] = {}
        self._say = say
        self._sleep = sleep

    def call(self, provider: str, what: str, fn: Callable[[], T]) -> T:
        """``fn()``; on ServiceUnavailable wait and try again until the shared bound is spent."""
        attempt = 0
        while True:
            self._keep_pace(provider)
            self.calls[provider] = self.calls.get(provider, 0) + 1
            try:
                return fn()
            except ServiceRejected as exc:
                raise AuditIncomplete(f"{what}: refused by {provider}: {exc}") from exc
            except ServiceUnavailable as exc:
                attempt += 1
                given = exc.retry_after if exc.retry_after and exc.retry_after > 0 else None
                delay = max(given, 0.05) if given is not None else min(2.0 ** (attempt - 1), _BACKOFF_CAP)
                left = self.max_wait - self.waited
                if delay > left:
                    raise AuditIncomplete(
                        f"{what}: {provider} still unavailable after {self.waited:.0f}s of waiting "
                        f"(bound {self.max_wait:.0f}s): {exc}"
                    ) from exc
                self._say(f"waiting {delay:.1f}s for {provider} ({what}): {exc} "
                          f"[{self.waited:.0f}s of {self.max_wait:.0f}s waited]")
                self._sleep(delay)
                self.waited += delay

    def _keep_pace(self, provider: str) -> None:
        pace = self._pace.get(provider)
        while pace is not None and (wait := pace()) > 0:
            if wait >= 5:
                self._say(f"keeping to the audit's share of the {provider} budget: next call in {wait:.0f}s")
            self._sleep(wait)
            self.paced += wait
