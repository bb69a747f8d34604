"""Rate budgets and concurrency slots shared through Redis by every web and worker process.

``RateBudget`` is a sliding-window log (a sorted set of admission times, Redis's own clock): a call is admitted
only if fewer than ``limit`` calls were admitted in the last ``period`` seconds, so no window of that length,
anywhere, ever holds more. The window is stretched by ``margin`` (5 %) to absorb the network jitter between our
admission and the provider's own clock. ``ConcurrencySlots`` is a counting semaphore with leases, so a slot held
by a killed process frees itself.

A call that would exceed the budget waits (up to ``max_wait``) or raises ``ServiceUnavailable`` with the time
until a slot frees as ``retry_after``, so the job is rescheduled: it is never sent.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

import redis

from ..errors import ServiceUnavailable

__all__ = ["ConcurrencySlots", "RateBudget"]

# KEYS[1] = zset; ARGV = limit, window_ms, member. Returns 0 when admitted, else ms until a slot frees.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return wait
"""

# KEYS[1] = zset of leases; ARGV = limit, lease_ms, member. Returns 1 when a slot was taken.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
  return 1
end
return 0
"""


class RateBudget:
    """At most ``limit`` calls per ``period`` seconds across every process sharing the Redis key."""

    def __init__(
        self,
        connection: redis.Redis,
        name: str,
        *,
        limit: int,
        period: float,
        max_wait: float = 10.0,
        margin: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.key = f"budget:{name}"
        self.name = name
        self.limit = limit
        self.window_ms = int(period * (1 + margin) * 1000)
        self.max_wait = max_wait
        self._script = connection.register_script(_ADMIT)
        self._sleep = sleep

    def try_acquire(self) -> float:
        """Take a slot now if one is free; returns 0.0, or the seconds until one frees."""
        wait_ms = int(self._script(keys=[self.key], args=[self.limit, self.window_ms, uuid.uuid4().hex]))
        return wait_ms / 1000.0

    def acquire(self, provider: str) -> None:
        """Wait for a slot (at most ``max_wait`` seconds), else raise ServiceUnavailable to reschedule."""
        deadline = time.monotonic() + self.max_wait
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return
            if time.monotonic() + wait > deadline:
                raise ServiceUnavailable(provider, f"rate budget {self.name} spent", retry_after=wait)
            self._sleep(wait)


class ConcurrencySlots:
    """At most ``limit`` calls in flight across every process; a slot's lease expires after ``lease`` seconds."""

    def __init__(
        self,
        connection: redis.Redis,
        name: str,
        *,
        limit: int,
        lease: float,
        max_wait: float = 30.0,
        poll: float = 0.02,
    ) -> None:
        self.key = f"slots:{name}"
        self.name = name
        self.limit = limit
        self.lease_ms = int(lease * 1000)
        self.max_wait = max_wait
        self.poll = poll
        self._connection = connection
        self._script = connection.register_script(_TAKE_SLOT)

    @contextlib.contextmanager
    def slot(self, provider: str) -> Iterator[None]:
        """Hold one slot for the duration of the block."""
        member = uuid.uuid4().hex
        deadline = time.monotonic() + self.max_wait
        while not int(self._script(keys=[self.key], args=[self.limit, self.lease_ms, member])):
            if time.monotonic() > deadline:
                raise ServiceUnavailable(provider, f"no free {self.name} slot", retry_after=self.poll * 50)
            time.sleep(self.poll)
        try:
            yield
        finally:
            self._connection.zrem(self.key, member)
