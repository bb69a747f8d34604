"""Fenced Redis locks that expire, so a lock held by a killed worker frees itself, and a live holder never loses it
unnoticed.

``hold()`` waits a little for the lock; if another process still has it, the job raises ``ServiceUnavailable``
and RQ retries it later (by then the holder has usually done the work, and the retry finds nothing to do).

While the block runs, a heartbeat thread extends the lock every third of its TTL, so a step that waits long (a
rate budget, a slow provider) does not let it lapse; only a dead process (or one frozen past the TTL) loses it.
Before every irreversible step the holder calls ``check()``, which verifies in Redis that the lock still carries
its own token: a lock that lapsed anyway (the heartbeat could not reach Redis, the process was frozen) is then
noticed *before* the step, never after it. ``fenced_set()`` goes one step further for records that decide a
charge: it writes only while the lock is ours, in one Lua script, so no check-then-act gap is left at all.

Lock names are built here, once, by the functions below: two workflows that must exclude each other use the same
function, never a copied string.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from .errors import LockBusy, LockLost

__all__ = [
    "Held",
    "LockLost",
    "activation_lock",
    "catalog_lock",
    "company_lock",
    "hold",
    "invoice_lock",
    "is_held",
    "payment_lock",
    "subscription_lock",
    "sweep_lock",
    "transaction_lock",
]


def invoice_lock(invoice_id: str) -> str:
    """One collection at a time per Zoho invoice."""
    return f"collect:{invoice_id}"


def subscription_lock(zoho_subscription_id: str) -> str:
    """Every read-then-write of one subscription's status: collection outcomes and Zoho lifecycle events."""
    return f"subscription:{zoho_subscription_id}"


def transaction_lock(transaction_id: str) -> str:
    """Every read-then-write of one Braintree transaction's ``payments`` record (collection, settlement, dispute)."""
    return f"lifecycle:braintree-transaction:{transaction_id}"


def payment_lock(zoho_payment_id: str) -> str:
    """Every read-then-write of the ``payments`` records mirroring one Zoho payment (its lifecycle events)."""
    return f"lifecycle:zoho-payment:{zoho_payment_id}"


def activation_lock(attio_subscription_id: str) -> str:
    """One activation at a time per Attio subscription."""
    return f"activate:{attio_subscription_id}"


def company_lock(attio_company_id: str) -> str:
    """Customer creation (Braintree and Zoho) for one Attio company: two subscriptions of one company requested
    together must not create two Zoho customers."""
    return f"company:{attio_company_id}"


def catalog_lock() -> str:
    """One catalogue sync at a time (job or ``flask sync services``)."""
    return "catalog-sync"


def sweep_lock(sweep: str) -> str:
    """One run at a time of a reconciliation sweep (taken without waiting: a second run is skipped)."""
    return f"reconcile:{sweep}"


def is_held(connection: redis.Redis, name: str) -> bool:
    """Whether someone holds the lock ``name`` now (a look, not a guarantee: it may be taken or freed next)."""
    return bool(connection.exists(f"lock:{name}"))


# Write KEYS[2] = ARGV[2] (with TTL ARGV[3] seconds) only if KEYS[1] (the lock) still holds our token ARGV[1].
_FENCED_SET = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""


class Held:
    """A lock this process holds, kept alive by a heartbeat until the block ends."""

    def __init__(self, connection: redis.Redis, lock: Lock, name: str, ttl: float) -> None:
        self._connection = connection
        self._lock = lock
        self.name = name
        self._ttl = ttl
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lock-heartbeat:{name}", daemon=True)

    @property
    def key(self) -> str:
        """The Redis key of the lock."""
        return str(self._lock.name)

    @property
    def token(self) -> bytes:
        """The value that marks the lock as ours."""
        token = self._lock.local.token
        return token if isinstance(token, bytes) else str(token).encode()

    def start(self) -> None:
        """Start extending the lock every third of its TTL."""
        self._heartbeat.start()

    def stop(self) -> None:
        """Stop the heartbeat (the block is over)."""
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5.0)

    def _beat(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            try:
                self._lock.reacquire()
            except (LockError, redis.exceptions.RedisError):
                return  # lost (or Redis is away): check() says so before the next irreversible step

    def check(self) -> None:
        """Raise ``LockLost`` unless Redis still holds our token: call it right before an irreversible step."""
        try:
            owned = self._lock.owned()
        except redis.exceptions.RedisError as exc:
            raise LockLost("lock", f"lost the lock {self.name}") from exc
        if not owned:
            raise LockLost("lock", f"lost the lock {self.name}")

    def fenced_set(self, key: str, value: str | bytes, *, ttl_seconds: int) -> None:
        """``SET key value EX ttl`` only while the lock is ours, atomically; ``LockLost`` (nothing written) if not."""
        written = self._connection.eval(_FENCED_SET, 2, self.key, key, self.token, value, int(ttl_seconds))
        if not written:
            raise LockLost("lock", f"lost the lock {self.name}")


@contextlib.contextmanager
def hold(connection: redis.Redis, name: str, *, ttl: float = 120.0, wait: float = 10.0) -> Iterator[Held]:
    """Hold ``lock:<name>`` for the block, extended by a heartbeat; it expires ``ttl`` seconds after its holder
    dies."""
    lock = connection.lock(f"lock:{name}", timeout=ttl, blocking=wait > 0, blocking_timeout=wait or None,
                           thread_local=False)
    if not lock.acquire():
        raise LockBusy("lock", f"{name} is held by another worker", retry_after=min(ttl, 30.0))
    held = Held(connection, lock, name, ttl)
    held.start()
    try:
        yield held
    finally:
        held.stop()
        try:
            lock.release()
        except LockError:
            pass  # it expired while we worked: the TTL is the safety net, not an error
