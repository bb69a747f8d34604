"""One circuit breaker per provider, its state in Redis (RQ forks a process per job: memory would not trip)."""

from __future__ import annotations

import pybreaker
import redis

from ..errors import RateLimited, ServiceRejected

__all__ = ["FAIL_MAX", "RESET_TIMEOUT", "make_breaker"]

FAIL_MAX = 5  # consecutive transient failures that open the circuit
RESET_TIMEOUT = 60  # seconds the circuit stays open before one probe call is let through


def make_breaker(
    connection: redis.Redis, provider: str, *, fail_max: int = FAIL_MAX, reset_timeout: float = RESET_TIMEOUT
) -> pybreaker.CircuitBreaker:
    """A breaker shared by every process through Redis; 4xx answers (429 included) don't count as failures.

    ``connection`` must be a bytes-mode client (``decode_responses=False``), as pybreaker's storage expects.
    """
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, connection, namespace=f"breaker:{provider}")
    return pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        # A 429 means the provider is up and we are too fast: the budget and Retry-After handle that, not the breaker.
        exclude=[ServiceRejected, RateLimited],
        state_storage=storage,
        name=provider,
    )
