"""The shape of every RQ entrypoint: bind the job's ids, log its start and finish, delegate to the handler."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rq import get_current_job

from integration.explain import index_job
from integration.observability import bind
from integration.queueing import attempts_of

__all__ = ["entrypoint"]

log = logging.getLogger("workers.job")

F = TypeVar("F", bound=Callable[..., Any])


def _count_attempt(job: Any) -> int:
    """Record one more start of the job in its meta (kept across retries); returns the attempt number."""
    if job is None:
        return 1
    attempt = attempts_of(job) + 1
    job.meta["attempts"] = attempt
    job.save_meta()
    return attempt


def _index(job: Any, payload: dict[str, Any]) -> None:
    """Findable by ``flask … explain`` under what it is about; an index write that fails never fails the job."""
    try:
        index_job(job.connection, job.id, payload)
    except Exception:  # noqa: BLE001 - a convenience for operators, not part of the job
        log.warning("could not index job %s for explain", job.id)


def entrypoint(workflow: str) -> Callable[[F], F]:
    """Decorate ``run_*``: a start and a finish line (duration, outcome), and the job's ids on every line inside.

    ``handler`` is the job's function (``workers.jobs.collection.run_invoice_created``, as RQ and Sentry name
    it); ``workflow`` is the short name given here (``collection.invoice_created``).
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
            ):
                attempt = _count_attempt(job)
                if job is not None:
                    _index(job, payload)
                log.info("job started (attempt %s)", attempt, extra={"step": "start", "attempt": attempt})
                started = time.perf_counter()
                try:
                    result = func(payload, *args, **kwargs)
                except BaseException as exc:
                    log.warning(
                        "job raised %s", type(exc).__name__,
                        extra={"step": "finish", "outcome": "error", "error": type(exc).__name__,
                               "duration_ms": _since(started)},
                    )
                    raise
                outcome = str(result.get("outcome") or "ok") if isinstance(result, dict) else "ok"
                log.info("job finished: %s", outcome,
                         extra={"step": "finish", "outcome": outcome, "duration_ms": _since(started)})
                return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _since(started: float) -> float:
    """Milliseconds since ``started`` (a ``perf_counter`` reading)."""
    return round((time.perf_counter() - started) * 1000, 1)
