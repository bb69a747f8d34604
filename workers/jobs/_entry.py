"""The shape of every RQ entrypoint: bind the job's ids, log its start and finish, delegate to the handler.

The entrypoint also says what the work is to the provider clients (``integration.worklane``: its lane, money or
bulk, its operation for the call counts, and the time left before RQ's timeout), and turns a "not now"
(``NotNow``) into a deferral (``workers.failures.defer``) *before* the error reaches RQ, so RQ (and Sentry's RQ
hook, which looks first) see a job with a retry left, not a failed attempt.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from rq import get_current_job

from integration.clients.quota import count_operation
from integration.errors import ConfigError, NotNow
from integration.explain import index_job
from integration.observability import bind
from integration.queueing import JOB_TIMEOUT, attempts_of
from integration.worklane import MONEY, Lane, deadline, lane, operation, operation_of

from .. import runtime
from ..failures import defer

__all__ = ["entrypoint"]

log = logging.getLogger("workers.job")

F = TypeVar("F", bound=Callable[..., Any])


DEFAULT_DEADLINE_HOURS = 24  # when the settings cannot be read (they are read only when a job is deferred)


def _count_attempt(job: Any) -> int:
    """Record one more start of the job in its meta (kept across retries); returns the attempt number."""
    if job is None:
        return 1
    attempt = attempts_of(job) + 1
    job.meta["attempts"] = attempt
    job.meta.setdefault("first_run_at", datetime.now(UTC).isoformat())
    job.save_meta()
    return attempt


def _index(job: Any, payload: dict[str, Any]) -> None:
    """Findable by ``flask … explain`` under what it is about; an index write that fails never fails the job."""
    try:
        index_job(job.connection, job.id, payload)
    except Exception:  # noqa: BLE001 - a convenience for operators, not part of the job
        log.warning("could not index job %s for explain", job.id)


def _deadline_hours() -> float:
    try:
        return runtime.settings().job_deadline_hours
    except ConfigError:
        return DEFAULT_DEADLINE_HOURS


def entrypoint(workflow: str, *, work: Lane = MONEY) -> Callable[[F], F]:
    """Decorate ``run_*``: a start and a finish line (duration, outcome), and the job's ids on every line inside.

    ``handler`` is the job's function (``workers.jobs.collection.run_invoice_created``, as RQ and Sentry name
    it); ``workflow`` is the short name given here (``collection.invoice_created``); ``work`` is its lane in the
    providers' budgets (``money`` unless the work can wait: the catalog sync is ``bulk``).
    """

    def decorate(func: F) -> F:
        handler = f"{func.__module__}.{func.__qualname__}"

        @functools.wraps(func)
        def wrapper(payload: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            job = get_current_job()
            with bind(
                source=payload.get("source"),
                event_type=payload.get("event_type"),
                event_id=payload.get("event_id"),
                job_id=job.id if job else None,
                handler=handler,
                workflow=workflow,
            ), lane(work), operation(operation_of(workflow)), deadline(_timeout(job)):
                attempt = _count_attempt(job)
                if job is not None:
                    _index(job, payload)
                deferrals = int(job.meta.get("deferrals") or 0) if job else 0
                log.info("job started (attempt %s, %s deferred before)", attempt, deferrals,
                         extra={"step": "start", "attempt": attempt, "deferrals": deferrals, "lane": work})
                started = time.perf_counter()
                try:
                    result = func(payload, *args, **kwargs)
                except NotNow as exc:
                    log.info("job raised %s: not now", type(exc).__name__,
                             extra={"step": "finish", "outcome": "deferred", "error": type(exc).__name__,
                                    "duration_ms": _since(started)})
                    if job is not None:
                        defer(job, exc, deadline_hours=_deadline_hours())  # or DeferredTooLong: past the deadline
                    raise
                except BaseException as exc:
                    log.warning(
                        "job raised %s", type(exc).__name__,
                        extra={"step": "finish", "outcome": "error", "error": type(exc).__name__,
                               "duration_ms": _since(started)},
                    )
                    raise
                outcome = str(result.get("outcome") or "ok") if isinstance(result, dict) else "ok"
                if job is not None:  # one finished operation: its calls over these are calls per operation
                    count_operation(job.connection, operation_of(workflow))
                log.info("job finished: %s", outcome,
                         extra={"step": "finish", "outcome": outcome, "duration_ms": _since(started)})
                return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _timeout(job: Any) -> float | None:
    """Seconds RQ gives this run before it kills it."""
    if job is None:
        return None
    return float(job.timeout or JOB_TIMEOUT)


def _since(started: float) -> float:
    """Milliseconds since ``started`` (a ``perf_counter`` reading)."""
    return round((time.perf_counter() - started) * 1000, 1)
