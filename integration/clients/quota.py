"""Provider calls counted per day and per business operation, and Zoho's daily quota kept, in Redis.

Zoho Billing caps each organization's calls per day by plan (about 1,000 on Standard, 5,000 on Premium), shared
with every other app of the organization, and counts the day in the organization's time zone. ``ZohoLedger``
counts every call this service sends, in every process, in one Redis hash per organization-day
(``quota:zoho:<org>:<YYYY-MM-DD>``: a field per operation and ``total``), and admits a call only

- for bulk work (catalog sync, sweeps, the audit, commands): while the day's total is under the quota less the
  money reserve (``ZOHO_DAILY_RESERVE_PERCENT``), else it is deferred until the day resets (a log line and one
  Sentry warning per day);
- for money work (collection, activation, webhook jobs): while the total is under the quota
  (``ZOHO_REQUESTS_PER_DAY``).

Zoho answering "daily cap reached" (code 44, or any rate-limit answer once we have used ``LATE_SHARE`` of the
day's quota, or a ``Retry-After`` over an hour) closes the day for every process (``quota:zoho:<org>:<day>:capped``):
money work is deferred until the reset, never failed. The day is the organization's (its ``time_zone`` from
``GET /organizations``, stored by the client when seen), UTC until it is known. The client asks for it by itself
at most once a day across processes (``time_zone_due``; an hour after an ask that failed), as bulk work.

``CallMeter`` counts Attio's and Braintree's calls per operation the same way (their budgets are per second and
already shared: nothing to keep per day), and ``count_operation`` counts finished jobs per operation, so
``usage`` can report calls per operation for each provider (``flask … quota``, ``/readyz``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from ..config import Settings
from ..errors import RateLimited
from ..worklane import MONEY, OPERATIONS, Lane, current_lane, current_operation

__all__ = [
    "DAILY_CAP_CODE",
    "Counted",
    "LATE_SHARE",
    "CallMeter",
    "ZohoLedger",
    "count_operation",
    "usage",
    "zoho_ledger",
]

log = logging.getLogger(__name__)

DAILY_CAP_CODE = "44"  # the first of Zoho's rate-limit family, quoted as "daily" (reference §4.2)
LATE_SHARE = 0.9  # a rate-limit answer once this share of the day's quota is used is taken as the daily cap
LONG_RETRY_AFTER = 3600.0  # seconds: a Retry-After this long is the day's cap, not the minute's
KEEP_SECONDS = 3 * 86400  # a day's counters outlive it, for yesterday's figures
_TZ_KEY = "quota:zoho:{org}:tz"
_TZ_ASKED_KEY = "quota:zoho:{org}:tz:asked"  # present while the stored zone is fresh (or an ask is recent)
TZ_FRESH_SECONDS = 86400  # the stored time zone is asked again after a day (an organization may change it)
TZ_RETRY_SECONDS = 3600  # after an ask that failed (or is in flight), the next one waits this long

# KEYS[1] = the day's hash, KEYS[2] = the day's capped flag; ARGV = cap for this lane, operation, ttl seconds.
# Returns -1 when Zoho said the day is over, 1 when the lane's share is used up, 0 when counted.
_TAKE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
if total >= tonumber(ARGV[1]) then return 1 end
redis.call('HINCRBY', KEYS[1], 'total', 1)
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 0
"""


class Counted(NamedTuple):
    """One call counted by ``ZohoLedger.take``: its operation and the organization-day it was counted on."""

    operation: str
    day: str


def _zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


class ZohoLedger:
    """One organization's Zoho calls per day, and its daily quota with a reserve for money work."""

    def __init__(
        self,
        connection: redis.Redis,
        organization_id: str,
        *,
        requests_per_day: int,
        reserve_percent: int = 50,
        clock: Callable[[], float] = time.time,
        sentry: Callable[[str], None] | None = None,
    ) -> None:
        self.connection = connection
        self.organization_id = organization_id
        self.limit = requests_per_day
        self.reserve = min(requests_per_day, requests_per_day * reserve_percent // 100)
        self.bulk_limit = requests_per_day - self.reserve
        self._clock = clock
        self._sentry = sentry if sentry is not None else _sentry_warning
        self._take = connection.register_script(_TAKE)

    # -- the organization's day ---------------------------------------------------------------------------------
    def remember_time_zone(self, name: str | None) -> None:
        """Store the organization's time zone (from ``GET /organizations``) so every process counts its day."""
        if name and (name in ("UTC", "Etc/UTC") or _zone(name) is not UTC):
            self.connection.set(_TZ_KEY.format(org=self.organization_id), str(name))
            self.connection.set(_TZ_ASKED_KEY.format(org=self.organization_id), "1", ex=TZ_FRESH_SECONDS)

    def time_zone_due(self) -> bool:
        """Whether this process should ask Zoho for the organization's time zone now: it is not known, or was
        stored more than a day ago, and no other process asked within the hour. Claims the ask (so only one
        process makes it); a Redis error says no (the day stays as it was)."""
        try:
            return bool(self.connection.set(_TZ_ASKED_KEY.format(org=self.organization_id), "1", nx=True,
                                            ex=TZ_RETRY_SECONDS))
        except redis.RedisError:
            return False

    def time_zone(self) -> str:
        """The organization's time zone name, ``UTC`` until it is known."""
        raw = self.connection.get(_TZ_KEY.format(org=self.organization_id))
        return raw.decode() if isinstance(raw, bytes) else str(raw or "UTC")

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), _zone(self.time_zone()))

    def day(self, now: datetime | None = None) -> str:
        """Today as Zoho counts it for the organization (``YYYY-MM-DD``)."""
        return (now or self._now()).date().isoformat()

    def seconds_to_reset(self, now: datetime | None = None) -> float:
        """Seconds until the organization's next midnight."""
        now = now or self._now()
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
        return max(1.0, (midnight - now).total_seconds())

    def _key(self, day: str) -> str:
        return f"quota:zoho:{self.organization_id}:{day}"

    # -- admission ----------------------------------------------------------------------------------------------
    def take(self, lane: Lane | None = None, operation: str | None = None) -> Counted:
        """Count one call of ``operation`` (default: the current one), or raise ``RateLimited`` until the reset
        when the lane's share of the day is used (or Zoho said the day is over). Returns what was counted."""
        lane = lane or current_lane()
        operation = operation or current_operation()
        now = self._now()
        day = self.day(now)
        cap = self.limit if lane == MONEY else self.bulk_limit
        answer = int(self._take(keys=[self._key(day), f"{self._key(day)}:capped"],
                                args=[cap, operation, KEEP_SECONDS]))
        if answer == 0:
            return Counted(operation, day)
        wait = self.seconds_to_reset(now)
        if answer < 0:
            reason = f"Zoho's daily cap was reached on {day}"
        elif lane == MONEY:
            reason = f"the day's quota of {self.limit} calls is used ({day})"
        else:
            reason = f"only the money reserve ({self.reserve} of {self.limit}) is left of {day}'s quota"
        self._warn_once(day, lane, f"zoho: {operation} work deferred until the day resets in {wait / 3600:.1f} h: "
                                   f"{reason}")
        raise RateLimited("zoho", f"daily quota: {reason}", retry_after=wait)

    def refund(self, counted: Counted) -> None:
        """Give back a counted call that was never sent (the minute budget deferred it), to the day that counted it:
        the budget's wait may have crossed midnight (or the time zone become known meanwhile)."""
        key = self._key(counted.day)
        pipe = self.connection.pipeline()
        pipe.hincrby(key, "total", -1)
        pipe.hincrby(key, counted.operation, -1)
        pipe.execute()

    def daily_cap(self, exc: RateLimited) -> RateLimited:
        """Zoho's rate-limit answer ``exc``, as a deferral until the reset when it means the daily cap (which then
        closes the day for every process); else ``exc`` as it is."""
        now = self._now()
        day = self.day(now)
        used = self.used(day)
        late = used >= self.limit * LATE_SHARE
        long_wait = exc.retry_after is not None and exc.retry_after >= LONG_RETRY_AFTER
        if exc.code != DAILY_CAP_CODE and not late and not long_wait:
            return exc
        wait = self.seconds_to_reset(now)
        self.connection.set(f"{self._key(day)}:capped", "1", ex=max(1, int(wait)))
        self._warn_once(day, MONEY, f"zoho: daily cap reached on {day} after {used} calls of ours (code "
                                    f"{exc.code or exc.status}): Zoho work deferred until the reset in "
                                    f"{wait / 3600:.1f} h")
        return RateLimited("zoho", f"daily cap reached: {exc.message}", status=exc.status, code=exc.code,
                           request_id=exc.request_id, retry_after=wait)

    def _warn_once(self, day: str, lane: str, message: str) -> None:
        """A log line every time; a Sentry warning once per day and lane."""
        log.warning(message)
        if self.connection.set(f"{self._key(day)}:warned:{lane}", "1", nx=True, ex=KEEP_SECONDS):
            self._sentry(message)

    # -- figures ------------------------------------------------------------------------------------------------
    def used(self, day: str | None = None) -> int:
        """Calls counted on ``day`` (today by default)."""
        raw = self.connection.hget(self._key(day or self.day()), "total")
        return int(raw or 0)

    def today(self) -> dict[str, Any]:
        """Today's use by operation, the quota, the reserve and the projected end-of-day total."""
        now = self._now()
        day = self.day(now)
        raw = self.connection.hgetall(self._key(day))
        counts = {_text(k): int(v) for k, v in raw.items()}
        used = counts.pop("total", 0)
        midnight = datetime.combine(now.date(), datetime.min.time(), now.tzinfo)
        elapsed = max(60.0, (now - midnight).total_seconds())
        projected = round(used * 86400 / elapsed) if used else 0
        capped = self.connection.ttl(f"{self._key(day)}:capped")
        return {
            "day": day,
            "time_zone": self.time_zone(),
            "limit": self.limit,
            "reserve": self.reserve,
            "used": used,
            "left": max(0, self.limit - used),
            "by_operation": {k: v for k, v in sorted(counts.items()) if v},
            "projected": projected,
            "bulk_stopped": used >= self.bulk_limit,
            "capped_for_seconds": int(capped) if isinstance(capped, int) and capped > 0 else 0,
        }


def zoho_ledger(settings: Settings, connection: redis.Redis) -> ZohoLedger:
    """The configured organization's ledger (``ZOHO_REQUESTS_PER_DAY``, ``ZOHO_DAILY_RESERVE_PERCENT``)."""
    return ZohoLedger(connection, settings.zoho_organization_id, requests_per_day=settings.zoho_requests_per_day,
                      reserve_percent=settings.zoho_daily_reserve_percent)


class CallMeter:
    """Calls to one provider per UTC day and operation (``quota:<provider>:<day>``); no limit, only figures."""

    def __init__(self, connection: redis.Redis, provider: str, *, clock: Callable[[], float] = time.time) -> None:
        self.connection = connection
        self.provider = provider
        self._clock = clock

    def day(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).date().isoformat()

    def count(self, operation: str | None = None) -> None:
        """One call of ``operation`` (default: the current one). A Redis error never stops the call."""
        key = f"quota:{self.provider}:{self.day()}"
        try:
            pipe = self.connection.pipeline(transaction=False)
            pipe.hincrby(key, "total", 1)
            pipe.hincrby(key, operation or current_operation(), 1)
            pipe.expire(key, KEEP_SECONDS)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not count a %s call", self.provider)

    def today(self) -> dict[str, int]:
        raw = self.connection.hgetall(f"quota:{self.provider}:{self.day()}")
        return {_text(k): int(v) for k, v in sorted(raw.items()) if int(v)}


def count_operation(connection: redis.Redis, operation: str, *, clock: Callable[[], float] = time.time) -> None:
    """One finished operation (a job that ran to its end, not deferred), for calls per operation."""
    key = f"quota:operations:{datetime.fromtimestamp(clock(), UTC).date().isoformat()}"
    try:
        pipe = connection.pipeline(transaction=False)
        pipe.hincrby(key, operation, 1)
        pipe.expire(key, KEEP_SECONDS)
        pipe.execute()
    except redis.RedisError:
        log.warning("could not count a finished %s operation", operation)


def usage(connection: redis.Redis, ledger: ZohoLedger, *, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Today's figures: Zoho against its quota, Attio and Braintree calls, finished operations, calls per operation."""
    day = datetime.fromtimestamp(clock(), UTC).date().isoformat()
    raw = connection.hgetall(f"quota:operations:{day}")
    operations = {_text(k): int(v) for k, v in raw.items() if int(v)}
    zoho = ledger.today()
    calls = {
        "zoho": zoho["by_operation"],
        "attio": CallMeter(connection, "attio", clock=clock).today(),
        "braintree": CallMeter(connection, "braintree", clock=clock).today(),
    }
    per_operation = {
        provider: {op: round(n / operations[op], 2) for op, n in counts.items() if op in OPERATIONS
                   and operations.get(op)}
        for provider, counts in calls.items()
    }
    for provider in ("attio", "braintree"):
        calls[provider].pop("total", None)
    return {"zoho": zoho, "calls": calls, "operations": operations, "calls_per_operation": per_operation}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sentry_warning(message: str) -> None:
    try:
        import sentry_sdk

        from .. import runbook

        sentry_sdk.capture_message(message, level="warning", tags={"runbook": runbook.link("zoho-daily-quota")})
    except Exception:  # noqa: BLE001 - an alert that cannot be sent never stops the work
        log.debug("sentry warning not sent", exc_info=True)
