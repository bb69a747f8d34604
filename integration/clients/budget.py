"""Rate budgets and concurrency slots shared through Redis by every web and worker process, in two lanes.

``RateBudget`` is a sliding-window log (a sorted set of admission times, Redis's own clock): a call is admitted
only if fewer than ``limit`` calls were admitted in the last ``period`` seconds, so no window of that length,
anywhere, ever holds more. The window is stretched by ``margin`` (5 %) to absorb the network jitter between our
admission and the provider's own clock. ``ConcurrencySlots`` is a counting semaphore with leases, so a slot held
by a killed process frees itself.

Money goes first (``integration.worklane``): a ``bulk`` call (catalog sync, sweeps, the audit, commands) is
admitted only

- while the window holds fewer than ``limit - reserve`` calls (``reserve`` = ``MONEY_RESERVE`` of the limit, at
  least one), so a charge always finds the reserve free;
- not while a ``money`` call is waiting for a slot (a flag the waiting money call sets, ``<key>:money-waiting``,
  until the slot it waits for frees), so every slot that frees goes to money first;
- at most one per ``period / (limit - reserve)`` (``<key>:bulk-next``, a GCRA; ``bulk_burst`` at once after a
  pause, one by default): so the window never holds a block of bulk calls that would all expire late, and a
  charge that finds the reserve used waits about that spacing for the next slot (2.9 s of Zoho's minute at
  30/min), not a whole window.

Bulk may also hold at most ``limit - 1`` concurrency slots. A charge therefore finds a slot at once, or waits a
few seconds, or for other money work; bulk work waits in its place.

A call that would exceed the budget waits (bulk up to ``max_wait``; money up to a whole window, at most
``MONEY_WAIT_CAP``, within the job's time left) or raises ``RateLimited`` with the time until a slot frees as
``retry_after``, so the job is deferred (not failed): it is never sent. A deferred money call keeps its claim: the
money-waiting flag lasts until its job is due back, so bulk work cannot take the slots that free meanwhile.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable, Iterator

import redis

from ..errors import RateLimited
from ..worklane import MONEY, Lane, current_lane, time_left

__all__ = [
    "BULK_BURST",
    "JOB_MARGIN_SECONDS",
    "MONEY_RESERVE",
    "MONEY_WAIT_CAP",
    "ConcurrencySlots",
    "RateBudget",
]

MONEY_RESERVE = 0.25  # share of every rate budget that bulk work never takes (money's own lane)
# Bulk calls admitted at once after a pause. One: measured with bench.budget --mixed at Zoho's real 30/min, a
# burst of 7 bulk reads just before 20 invoices pushed the median charge from 0.05 s to 60 s (the calls it took
# expire a whole window later), while one call at a time left the charges as fast as with no bulk work at all.
# The price: a sync's few catalogue reads are spaced 2.9 s apart (7 reads for 1,200 items: 20 s).
BULK_BURST = 1
_HOLD_OFF_MS = 250  # how long past its expected wait a waiting money call keeps bulk work off the freed slot
JOB_MARGIN_SECONDS = 30.0  # seconds a job keeps for its own work after a money call's longest budget wait
MONEY_WAIT_CAP = 20.0  # seconds a money call waits in place at most: well inside the 60 s workflow locks it holds
CLAIM_SLACK = 1.25  # a deferred job comes back up to 25 % late (workers.failures.DEFER_JITTER) ...
CLAIM_LATENCY_MS = 2000  # ... plus the scheduler's poll: a deferred charge's claim on the next slot lasts that long

# KEYS[1] = the money-waiting flag; ARGV[1] = ms. Extends the flag to at least that long.
_CLAIM = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
"""

# KEYS[1] = zset of admissions, KEYS[2] = the money-waiting flag, KEYS[3] = bulk's theoretical arrival time (ms:
# GCRA, one bulk call per window / cap, up to `burst` at once after a pause).
# ARGV = limit, window_ms, member, lane ('money' | 'bulk'), bulk cap, hold-off ms, bulk burst.
# Returns 0 when admitted, else ms until this lane may try again.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local money = ARGV[4] == 'money'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local cap, waiting, paced, tat, spacing = limit, 0, 0, now, 0
if not money then
  cap = tonumber(ARGV[5])
  waiting = redis.call('PTTL', KEYS[2])
  spacing = math.floor(window / cap)
  tat = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), now)
  paced = tat - (tonumber(ARGV[7]) - 1) * spacing - now
end
if count < cap and waiting <= 0 and paced <= 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  if not money then
    redis.call('SET', KEYS[3], tat + spacing, 'PX', window * 2)
  end
  return 0
end
local wait = 1
if count >= cap then
  local nth = redis.call('ZRANGE', KEYS[1], count - cap, count - cap, 'WITHSCORES')
  wait = tonumber(nth[2]) + window - now
end
if money then
  if wait < 1 then wait = 1 end
  local hold = wait + tonumber(ARGV[6])
  if redis.call('PTTL', KEYS[2]) < hold then
    redis.call('SET', KEYS[2], '1', 'PX', hold)
  end
  return wait
end
if waiting > wait then wait = waiting end
if paced > wait then wait = paced end
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
        reserve: float = MONEY_RESERVE,
        bulk_burst: int = BULK_BURST,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.key = f"budget:{name}"
        self.waiting_key = f"{self.key}:money-waiting"
        self.bulk_next_key = f"{self.key}:bulk-next"
        self.name = name
        self.limit = limit
        self.bulk_limit = max(1, limit - max(1, math.ceil(limit * reserve))) if reserve > 0 else limit
        self.bulk_burst = max(1, min(bulk_burst, self.bulk_limit))
        self.window_ms = int(period * (1 + margin) * 1000)
        self.max_wait = max_wait
        self._script = connection.register_script(_ADMIT)
        self._claim = connection.register_script(_CLAIM)
        self._sleep = sleep

    def try_acquire(self, lane: Lane = MONEY) -> float:
        """Take a slot of ``lane`` now if one is free; returns 0.0, or the seconds until this lane may try again."""
        args: list[int | str] = [
            self.limit, self.window_ms, uuid.uuid4().hex, lane, self.bulk_limit, _HOLD_OFF_MS, self.bulk_burst
        ]
        wait_ms = int(self._script(keys=[self.key, self.waiting_key, self.bulk_next_key], args=args))
        return wait_ms / 1000.0

    def acquire(self, provider: str, lane: Lane | None = None) -> None:
        """Wait for a slot (bulk: at most ``max_wait``; money: see ``_patience``), else raise RateLimited so the
        job is deferred. ``lane`` defaults to the current work's (``integration.worklane``).
        """
        lane = lane or current_lane()
        deadline = time.monotonic() + self._patience(lane)
        while True:
            wait = self.try_acquire(lane)
            if wait == 0.0:
                return
            if time.monotonic() + wait > deadline:
                if lane == MONEY:  # deferred, a charge still claims the next slot: bulk waits until it is back
                    self._claim(keys=[self.waiting_key], args=[int(wait * CLAIM_SLACK * 1000) + CLAIM_LATENCY_MS])
                raise RateLimited(provider, f"rate budget {self.name} spent ({lane} lane)", retry_after=wait)
            self._sleep(wait)

    def money_wait(self) -> float:
        """The longest a money call waits in place: ``max_wait``, or one whole window if longer, within
        ``MONEY_WAIT_CAP``."""
        return max(self.max_wait, min(self.window_ms / 1000 + 1.0, MONEY_WAIT_CAP))

    def _patience(self, lane: Lane) -> float:
        """How long this call may wait: bulk ``max_wait``; money longer (``money_wait``: every second it waits it
        keeps its claim on the next slot that frees), within the job's time left."""
        if lane != MONEY:
            return self.max_wait
        left = time_left()
        wait = self.money_wait()
        return wait if left is None else max(0.0, min(wait, left - JOB_MARGIN_SECONDS))


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
    def slot(self, provider: str, lane: Lane | None = None) -> Iterator[None]:
        """Hold one slot for the duration of the block (bulk work never holds the last one)."""
        member = uuid.uuid4().hex
        limit = self.limit if (lane or current_lane()) == MONEY else max(1, self.limit - 1)
        deadline = time.monotonic() + self.max_wait
        while not int(self._script(keys=[self.key], args=[limit, self.lease_ms, member])):
            if time.monotonic() > deadline:
                raise RateLimited(provider, f"no free {self.name} slot", retry_after=self.poll * 50)
            time.sleep(self.poll)
        try:
            yield
        finally:
            self._connection.zrem(self.key, member)
