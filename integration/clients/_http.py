"""The one choke point of the JSON providers' clients: budget, breaker, timeouts and error mapping.

``HttpCaller.request()`` waits for the provider's shared budget, calls through the circuit breaker with a
connect and read timeout, and turns every failure into the service's error tree:

- timeout, connection error, 5xx → ``ServiceUnavailable`` (with ``retry_after`` from ``Retry-After``);
- 429 → ``RateLimited`` ("not now": the job is deferred, not failed);
- an open circuit → ``CircuitOpen``;
- any other 4xx → ``ServiceRejected`` with the provider's message and request id.

It never retries an error: RQ is the only retry loop. The one wait it does is not a retry of a failure: a 429
whose ``Retry-After`` is at most ``inline_wait`` seconds is waited once, in place, and the call sent again (with a
fresh budget slot), when the job has that much time left (``integration.worklane.time_left``): a one-second
pause of the provider then costs one second, not a deferred job that starts over.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker
import requests

from ..errors import CircuitOpen, RateLimited, ServiceRejected, ServiceUnavailable
from ..worklane import time_left

__all__ = ["ErrorParser", "HttpCaller", "Limiter", "parse_retry_after"]

ErrorParser = Callable[[requests.Response], tuple[str | None, str]]  # → (code, message)
_REQUEST_ID_HEADERS = ("X-Attio-Execution-Id", "X-Request-Id", "X-Zoho-Request-Id", "Request-Id")
_INLINE_MARGIN = 10.0  # seconds a job must still have after an inline wait (to finish the call and its work)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (Attio sends a date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Limiter:
    """Budget hooks around one call: ``enter(kind)`` returns a context manager held during the call."""

    def enter(self, kind: str) -> contextlib.AbstractContextManager[None]:
        """No limit by default."""
        return contextlib.nullcontext()


@dataclass
class HttpCaller:
    """Sends one request for a provider, guarded and mapped (see module docstring)."""

    provider: str
    base_url: str
    http: requests.Session
    timeout: tuple[float, float]
    breaker: pybreaker.CircuitBreaker | None = None
    limiter: Limiter | None = None
    parse_error: ErrorParser | None = None
    inline_wait: float = 0.0  # seconds of Retry-After waited in place, once per call (0: never)
    sleep: Callable[[float], None] = time.sleep

    def request(
        self,
        method: str,
        path: str,
        *,
        kind: str = "read",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
    ) -> requests.Response:
        """A 2xx response, or a ServiceError subclass."""
        url = (base_url or self.base_url).rstrip("/") + path
        try:
            return self._guarded(method, url, kind, params=params, json=json, data=data, headers=headers)
        except RateLimited as exc:
            if not self._may_wait(exc):
                raise
            assert exc.retry_after is not None
            self.sleep(exc.retry_after)
        return self._guarded(method, url, kind, params=params, json=json, data=data, headers=headers)

    def _may_wait(self, exc: RateLimited) -> bool:
        """Whether a 429 is short enough to wait out in place, and the job has the time."""
        if self.inline_wait <= 0 or exc.status != 429 or exc.retry_after is None or exc.retry_after > self.inline_wait:
            return False
        left = time_left()
        return left is None or left > exc.retry_after + sum(self.timeout) + _INLINE_MARGIN

    def _guarded(
        self,
        method: str,
        url: str,
        kind: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> requests.Response:
        """One call: a budget slot, then the breaker around the send."""
        with self._limited(kind):
            if self.breaker is None:
                return self._send(method, url, params=params, json=json, data=data, headers=headers)
            try:
                result: requests.Response = self.breaker.call(
                    self._send, method, url, params=params, json=json, data=data, headers=headers
                )
                return result
            except pybreaker.CircuitBreakerError as exc:
                remaining = self._breaker_remaining()
                raise CircuitOpen(self.provider, f"circuit open: {exc}", retry_after=remaining) from exc

    @contextlib.contextmanager
    def _limited(self, kind: str) -> Iterator[None]:
        if self.limiter is None:
            yield
            return
        with self.limiter.enter(kind):
            yield

    def _breaker_remaining(self) -> float | None:
        assert self.breaker is not None
        opened_at = self.breaker._state_storage.opened_at  # pybreaker exposes no public accessor
        if opened_at is None:
            return float(self.breaker.reset_timeout)
        elapsed = (datetime.now(UTC) - opened_at).total_seconds()
        return max(1.0, float(self.breaker.reset_timeout) - elapsed)

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        started = time.monotonic()
        try:
            resp = self.http.request(method, url, timeout=self.timeout, **kw)
        except requests.Timeout as exc:
            raise ServiceUnavailable(
                self.provider, f"timeout after {time.monotonic() - started:.1f}s on {method} {_path(url)}"
            ) from exc
        except requests.RequestException as exc:
            raise ServiceUnavailable(self.provider, f"{type(exc).__name__} on {method} {_path(url)}") from exc
        if resp.status_code < 400:
            return resp
        code, message = self._describe(resp)
        request_id = next((resp.headers[h] for h in _REQUEST_ID_HEADERS if h in resp.headers), None)
        detail = f"{method} {_path(url)}: {message}"
        if resp.status_code == 429 or resp.status_code >= 500:
            raise (RateLimited if resp.status_code == 429 else ServiceUnavailable)(
                self.provider,
                detail,
                status=resp.status_code,
                code=code,
                request_id=request_id,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            )
        raise ServiceRejected(self.provider, detail, status=resp.status_code, code=code, request_id=request_id)

    def _describe(self, resp: requests.Response) -> tuple[str | None, str]:
        if self.parse_error is not None:
            try:
                return self.parse_error(resp)
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
        return None, (resp.text or resp.reason or "")[:300]


def _path(url: str) -> str:
    """The path of a URL, without the query (which may carry ids worth keeping out of error text)."""
    rest = url.split("://", 1)[-1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path.split("?", 1)[0]
