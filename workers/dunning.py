"""Dunning: the invoices whose charge was declined, and when each is tried again; kept in Redis.

An entry (``dunning:<invoice id>``) is written by the collection under the invoice's lock when a charge is declined
or cannot be made (no payment method). Its ``kind`` decides what happens next:

- ``soft`` (Braintree's ``soft_declined``: insufficient funds, a limit, try later): tried again
  ``DUNNING_SCHEDULE_DAYS`` days after the *first* decline (default 3, 5 and 7 days), each attempt a new charge
  generation under the money path's guards; after the last one it stays ``Past due`` until a new card is saved;
- ``hard`` (``hard_declined``, or no payment method on file): no retry until the customer saves a new payment
  method through ``/pay/<token>``, which retries every open invoice of that customer at once.

Every retry carries the number of declines it answers (``attempt``): a retry made stale by another attempt (a card
saved meanwhile) does nothing. A collection that charges the invoice, or finds nothing left to charge, clears the
entry. The due times live in a sorted set, so a sweep finds the due retries without reading every entry.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

__all__ = ["DAY", "Dunning", "DunningEntry"]

DAY = 86400.0  # seconds
ENTRY_TTL_SECONDS = 60 * 60 * 24 * 400
_DUE = "dunning:due"  # sorted set: invoice id → when its next retry is due (soft declines only)
_ALL = "dunning:invoices"  # set of every invoice in dunning


@dataclass(frozen=True)
class DunningEntry:
    """One declined invoice: who pays it, how many declines, and when it is tried next (None: not by itself)."""

    invoice_id: str
    kind: str  # soft | hard
    declines: int
    first_declined_at: float
    last_declined_at: float
    next_at: float | None
    customer_id: str | None = None  # the Braintree customer (a saved card retries its invoices)
    invoice_number: str = ""
    reason: str = ""
    attempt: str | None = None  # what was declined (a transaction id): recording it again counts nothing more

    @property
    def exhausted(self) -> bool:
        """A soft decline with no retry left."""
        return self.kind == "soft" and self.next_at is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return asdict(self)


class Dunning:
    """The dunning entries in Redis, with the retry schedule (days after the first decline)."""

    def __init__(self, connection: redis.Redis, schedule_days: tuple[float, ...] = (3, 5, 7)) -> None:
        self._redis = connection
        self.schedule_days = tuple(schedule_days)

    @staticmethod
    def _key(invoice_id: str) -> str:
        return f"dunning:{invoice_id}"

    @staticmethod
    def _customer_key(customer_id: str) -> str:
        return f"dunning-customer:{customer_id}"

    def load(self, invoice_id: str) -> DunningEntry | None:
        """The invoice's entry, or None when it is not in dunning."""
        raw = self._redis.get(self._key(invoice_id))
        return None if raw is None else DunningEntry(**json.loads(raw))

    def declined(
        self, invoice_id: str, *, response_type: str | None, customer_id: str | None, invoice_number: str = "",
        reason: str = "", now: float | None = None, attempt: str | None = None,
    ) -> DunningEntry:
        """Record a decline (``soft_declined`` is retried on the schedule, anything else waits for a new card).
        The same ``attempt`` recorded twice (a retry finishing a cut-short recording) counts once."""
        moment = time.time() if now is None else now
        previous = self.load(invoice_id)
        if previous is not None and attempt is not None and previous.attempt == attempt:
            return previous
        declines = (previous.declines if previous else 0) + 1
        first = previous.first_declined_at if previous else moment
        kind = "soft" if response_type == "soft_declined" else "hard"
        next_at = None
        if kind == "soft" and declines <= len(self.schedule_days):
            next_at = max(moment, first + self.schedule_days[declines - 1] * DAY)
        entry = DunningEntry(invoice_id, kind, declines, first, moment, next_at, customer_id, invoice_number, reason,
                             attempt)
        pipe = self._redis.pipeline()
        pipe.set(self._key(invoice_id), json.dumps(entry.to_dict()), ex=ENTRY_TTL_SECONDS)
        pipe.sadd(_ALL, invoice_id)
        if next_at is None:
            pipe.zrem(_DUE, invoice_id)
        else:
            pipe.zadd(_DUE, {invoice_id: next_at})
        if customer_id:
            pipe.sadd(self._customer_key(customer_id), invoice_id)
            pipe.expire(self._customer_key(customer_id), ENTRY_TTL_SECONDS)
        pipe.execute()
        return entry

    def clear(self, invoice_id: str) -> None:
        """The invoice is paid (or has nothing left to charge): out of dunning."""
        entry = self.load(invoice_id)
        pipe = self._redis.pipeline()
        pipe.delete(self._key(invoice_id))
        pipe.srem(_ALL, invoice_id)
        pipe.zrem(_DUE, invoice_id)
        if entry is not None and entry.customer_id:
            pipe.srem(self._customer_key(entry.customer_id), invoice_id)
        pipe.execute()

    def due(self, now: float | None = None) -> list[DunningEntry]:
        """The entries whose next retry is due."""
        moment = time.time() if now is None else now
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in self._redis.zrangebyscore(_DUE, "-inf", moment)]
        return [e for e in (self.load(i) for i in ids) if e is not None]

    def of_customer(self, customer_id: str) -> list[DunningEntry]:
        """The customer's invoices in dunning (a new payment method retries them)."""
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m)
                     for m in self._redis.smembers(self._customer_key(customer_id)))
        return [e for e in (self.load(i) for i in ids) if e is not None]

    def entries(self) -> list[DunningEntry]:
        """Every invoice in dunning, the next due first (those waiting for a card last)."""
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m in self._redis.smembers(_ALL)]
        found = [e for e in (self.load(i) for i in ids) if e is not None]
        return sorted(found, key=lambda e: (e.next_at is None, e.next_at or 0.0, e.invoice_id))
