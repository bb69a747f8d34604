"""What kind of work the current code runs for, and how long it may still take: read by the provider clients.

Two lanes share every provider budget (``integration.clients.budget``):

- ``money``: work a customer's payment waits on (collection, activation, the payment page's vaulting, every
  webhook job). It is the default, so a code path that forgets to say is never slowed down;
- ``bulk``: work that can wait a few seconds (the catalog sync, sweeps, the audit, CLI commands).

A job entrypoint (``workers.jobs._entry``) and the command groups set the lane; the clients read it when they take
a budget slot. ``time_left()`` is the job's remaining time (RQ kills a job at its timeout), so a client only waits
inside a call (a short ``Retry-After``) when the job can afford it. Both are context variables: each thread (the
catalog's parallel writers copy the context) and each forked job sees its own.

The *operation* is the business class the provider calls are counted under (``integration.clients.quota``):
collection, activation, lifecycle, catalog, sweeps, audit, or other (commands, the payment page). The entrypoint
names it from the job's workflow, so every call of a job is counted to the operation it serves.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal, TypeVar

__all__ = [
    "BULK",
    "LANES",
    "MONEY",
    "OPERATIONS",
    "Lane",
    "current_lane",
    "current_operation",
    "deadline",
    "lane",
    "operation",
    "operation_of",
    "time_left",
]

_T = TypeVar("_T")
Lane = Literal["money", "bulk"]
MONEY: Lane = "money"
BULK: Lane = "bulk"
LANES: tuple[Lane, ...] = (MONEY, BULK)

_LANE: ContextVar[Lane] = ContextVar("worklane", default=MONEY)
_DEADLINE: ContextVar[float | None] = ContextVar("worklane_deadline", default=None)
OPERATIONS = ("collection", "activation", "lifecycle", "catalog", "sweeps", "audit", "other")
_OPERATION: ContextVar[str] = ContextVar("operation", default="other")
# a workflow's first word when it differs from its operation's name
_WORKFLOW_OPERATIONS = {"reconcile": "sweeps"}


def current_lane() -> Lane:
    """The lane of the work running now (``money`` unless someone said otherwise)."""
    return _LANE.get()


@contextlib.contextmanager
def _setting(var: ContextVar[_T], value: _T) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def lane(name: Lane) -> contextlib.AbstractContextManager[None]:
    """Run the block in lane ``name``."""
    if name not in LANES:
        raise ValueError(f"lane must be one of {', '.join(LANES)}, got {name!r}")
    return _setting(_LANE, name)


def deadline(seconds: float | None) -> contextlib.AbstractContextManager[None]:
    """The block must be done within ``seconds`` (None: no limit)."""
    return _setting(_DEADLINE, None if seconds is None else time.monotonic() + seconds)


def time_left() -> float | None:
    """Seconds left before the current deadline (None when there is none)."""
    until = _DEADLINE.get()
    return None if until is None else until - time.monotonic()


def current_operation() -> str:
    """The business operation the running code serves (``other`` unless someone said)."""
    return _OPERATION.get()


def operation_of(workflow: str) -> str:
    """The operation of a workflow name such as ``collection.invoice_created`` (``other`` when unknown)."""
    head = workflow.split(".", 1)[0]
    head = _WORKFLOW_OPERATIONS.get(head, head)
    return head if head in OPERATIONS else "other"


def operation(name: str) -> contextlib.AbstractContextManager[None]:
    """Count the block's provider calls under operation ``name``."""
    if name not in OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {name!r}")
    return _setting(_OPERATION, name)
