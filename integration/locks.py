"""Short Redis locks that expire, so a lock held by a killed worker frees itself.

``hold()`` waits a little for the lock; if another process still has it, the job raises ``ServiceUnavailable``
and RQ retries it later (by then the holder has usually done the work, and the retry finds nothing to do).
A long job calls ``refresh()`` between steps: it restores the full TTL, or raises if the lock was lost (it
lapsed and someone else took it), so a step is never done without the lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from .errors import LockBusy, ServiceUnavailable

__all__ = ["Held", "hold"]


class Held:
    """A lock this process holds."""

    def __init__(self, lock: Lock, name: str) -> None:
        self._lock = lock
        self.name = name

    def refresh(self) -> None:
        """Restore the full TTL; ServiceUnavailable if the lock is no longer ours."""
        try:
            self._lock.reacquire()
        except LockError as exc:
            raise ServiceUnavailable("lock", f"lost the lock {self.name}") from exc


@contextlib.contextmanager
def hold(connection: redis.Redis, name: str, *, ttl: float = 120.0, wait: float = 10.0) -> Iterator[Held]:
    """Hold ``lock:<name>`` for the block; it expires after ``ttl`` seconds if the holder dies."""
    lock = connection.lock(f"lock:{name}", timeout=ttl, blocking=wait > 0, blocking_timeout=wait or None,
                           thread_local=False)
    if not lock.acquire():
        raise LockBusy("lock", f"{name} is held by another worker", retry_after=min(ttl, 30.0))
    try:
        yield Held(lock, name)
    finally:
        try:
            lock.release()
        except LockError:
            pass  # it expired while we worked: the TTL is the safety net, not an error
