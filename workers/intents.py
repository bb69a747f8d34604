"""The money path's own records in Redis: charge intents per invoice and decline marks per subscription.

A **charge intent** (``charge:<invoice id>``) is written before every sale, under the invoice's fenced lock
(``Held.fenced_set``: only while the lock is ours). It names the charge: the invoice, a *generation* (advanced only
after a recorded decline or a processor failure, so a new attempt gets a new ``api_request_key`` while a retry of the
same attempt keeps it), the key, the amount and payment method, and when it was made. Its ``state`` is

- ``pending`` — a sale was (or may have been) sent and its outcome is unknown: no new sale for the invoice until
  Braintree shows that sale, or until ``SALE_SEARCH_LAG_SECONDS`` (and Braintree's duplicate window) have passed;
- ``charged`` — the sale ``transaction_id`` took the money (found again by id: ``find`` is immediate, search lags);
- ``closed`` — the attempt ended without money taken (a decline, a processor failure): the next is a new
  generation (so is the next after a ``charged`` whose sale no longer counts: refunded, declined at settlement).

**Decline marks** (``subscription-marks:<attio subscription id>``) remember which invoices of a subscription were
declined and the time of the newest collection outcome applied to it, so a decline's ``Past due`` stays until a
successful payment or a Zoho event that supersedes it (cancelled, expired), and an older invoice's outcome never
overwrites a newer one's. Beside them (``subscription-read:<attio subscription id>``), when the subscription's
Attio state was last copied from a Zoho read (a lifecycle re-read, the subscriptions sweep): a lifecycle event
raised before then carries an older state than Attio's and must not be applied from its own payload; and
(``subscription-event:<attio subscription id>``) the instant of the newest lifecycle event handled, which
``last_event_at`` does not hold when the event changed nothing. All are kept
well beyond any retry or dunning horizon.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import redis

from integration.locks import Held

__all__ = ["DUPLICATE_WINDOW_SECONDS", "ChargeIntent", "ChargeIntents", "DeclineMarks", "charge_key"]

INTENT_TTL_SECONDS = 60 * 60 * 24 * 400  # beyond any dunning schedule, and the audit's window
MARKS_TTL_SECONDS = 60 * 60 * 24 * 400
DUPLICATE_WINDOW_SECONDS = 30  # Braintree's default duplicate-transaction window (reference/braintree.md §4.4)
_KNOWS_KEYS = "braintree:request-keys"  # "1": this merchant takes api_request_key, "0": it refuses it (915231)


def charge_key(invoice_id: str, generation: int) -> str:
    """The ``api_request_key`` of one charge attempt: the invoice and its generation, never the delivery."""
    return f"charge-{invoice_id}-g{generation}"[:255]


@dataclass(frozen=True)
class ChargeIntent:
    """One charge attempt of an invoice, as recorded before its sale."""

    invoice_id: str
    generation: int
    state: str  # pending | charged | closed
    key: str
    amount: str
    customer_id: str | None = None
    payment_method_token: str | None = None
    merchant_account_id: str | None = None
    at: float = 0.0  # when the sale was (first) sent, epoch seconds
    transaction_id: str | None = None
    keyed: bool | None = None  # whether Braintree took the key (None: the answer never came)
    duplicate_at: float | None = None  # Braintree refused a sale as a duplicate: an earlier one took the money
    response_type: str | None = None  # a closed attempt's decline: soft_declined | hard_declined (dunning reads it)

    def age(self, now: float) -> float:
        """Seconds since the sale was sent, by ``now`` (``ChargeIntents.now()``: Redis's clock)."""
        return now - self.at


class ChargeIntents:
    """Charge intents in Redis: read by anyone, written only under the invoice's fenced lock."""

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection

    @staticmethod
    def _key(invoice_id: str) -> str:
        return f"charge:{invoice_id}"

    def now(self) -> float:
        """Redis's clock (epoch seconds): intents are timed and aged by one clock, whichever worker reads them."""
        seconds, micros = self._redis.time()
        return float(seconds) + micros / 1_000_000

    def load(self, invoice_id: str) -> ChargeIntent | None:
        """The invoice's latest intent, or None when it was never charged by this service."""
        raw = self._redis.get(self._key(invoice_id))
        if raw is None:
            return None
        return ChargeIntent(**json.loads(raw))

    def save(self, lock: Held, intent: ChargeIntent) -> ChargeIntent:
        """Write ``intent`` while ``lock`` is ours (``LockLost``, nothing written, if not); returns it."""
        lock.fenced_set(self._key(intent.invoice_id), json.dumps(asdict(intent)), ttl_seconds=INTENT_TTL_SECONDS)
        return intent

    def begin(
        self, lock: Held, previous: ChargeIntent | None, *, invoice_id: str, amount: str, customer_id: str,
        payment_method_token: str | None, merchant_account_id: str | None,
    ) -> ChargeIntent:
        """Record a new pending sale: the same generation as ``previous`` while that attempt is pending, the next one
        once it ended (closed, or charged by a sale that no longer counts: refunded, declined at settlement)."""
        generation = 0
        if previous is not None:
            generation = previous.generation + 1 if previous.state in ("closed", "charged") else previous.generation
        return self.save(lock, ChargeIntent(
            invoice_id=invoice_id, generation=generation, state="pending", key=charge_key(invoice_id, generation),
            amount=amount, customer_id=customer_id, payment_method_token=payment_method_token,
            merchant_account_id=merchant_account_id, at=self.now(),
        ))

    def update(self, lock: Held, intent: ChargeIntent, **changes: Any) -> ChargeIntent:
        """Save ``intent`` with ``changes``."""
        return self.save(lock, replace(intent, **changes))

    # -- what the merchant allows (learned from Braintree's answers) -------------------------------------------
    def request_keys_known(self) -> bool | None:
        """Whether this merchant takes ``api_request_key`` (None: not learned yet)."""
        raw = self._redis.get(_KNOWS_KEYS)
        return None if raw is None else raw == b"1"

    def learn_request_keys(self, allowed: bool) -> None:
        """Remember what the last sale's answer said about request keys (a day: a merchant's features change)."""
        self._redis.set(_KNOWS_KEYS, b"1" if allowed else b"0", ex=60 * 60 * 24)


class DeclineMarks:
    """Per subscription: the declined invoices and the time of the newest collection outcome applied."""

    def __init__(self, connection: redis.Redis, subscription_record_id: str) -> None:
        self._redis = connection
        self._key = f"subscription-marks:{subscription_record_id}"
        self._read_key = f"subscription-read:{subscription_record_id}"
        self._event_key = f"subscription-event:{subscription_record_id}"

    def read(self) -> tuple[set[str], datetime | None]:
        """(declined invoice ids, newest outcome time)."""
        raw = self._redis.get(self._key)
        if raw is None:
            return set(), None
        data = json.loads(raw)
        at = datetime.fromisoformat(data["outcome_at"]) if data.get("outcome_at") else None
        return set(data.get("declined") or []), at

    def write(self, declined: set[str], outcome_at: datetime | None) -> None:
        """Replace the marks (callers hold the subscription's lock)."""
        body = {"declined": sorted(declined), "outcome_at": outcome_at.isoformat() if outcome_at else None}
        self._redis.set(self._key, json.dumps(body), ex=MARKS_TTL_SECONDS)

    def declined(self) -> set[str]:
        """The invoices whose decline still stands."""
        return self.read()[0]

    def clear_declines(self) -> None:
        """Forget the declines (the subscription was cancelled or expired: Zoho's word supersedes them)."""
        _, at = self.read()
        self.write(set(), at)

    def read_at(self) -> datetime | None:
        """When the subscription's Attio state was last copied from a Zoho read (our clock); None if never."""
        return self._time(self._read_key)

    def note_read(self, at: datetime) -> None:
        """Remember that Attio now holds Zoho's state as read at ``at`` (callers hold the subscription's lock)."""
        self._raise(self._read_key, at)

    def event_at(self) -> datetime | None:
        """The instant of the newest lifecycle event handled (Zoho's clock), whether or not it changed Attio: an
        event that found Attio already as it says writes nothing, not even ``last_event_at``."""
        return self._time(self._event_key)

    def note_event(self, at: datetime) -> None:
        """Remember that a lifecycle event raised at ``at`` was handled (callers hold the subscription's lock)."""
        self._raise(self._event_key, at)

    def _time(self, key: str) -> datetime | None:
        raw = self._redis.get(key)
        if raw is None:
            return None
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))

    def _raise(self, key: str, at: datetime) -> None:
        before = self._time(key)
        if before is None or at > before:
            self._redis.set(key, at.isoformat(), ex=MARKS_TTL_SECONDS)
