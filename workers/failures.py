"""The worker's exception handler: decides, from the error tree, whether a failed attempt is retried.

RQ calls it before it requeues or fails the job (``handle_exception`` runs before ``handle_job_failure``):

- a **transient** error (``ServiceUnavailable``, Redis or network trouble, a timeout, an abandoned job) keeps
  the job's retry schedule, and a provider's ``Retry-After`` pushes the next attempt at least that far out;
- anything else (``ServiceRejected``, ``NoHandler``, a bug) ends the job now: it goes to the failed registry
  with its error instead of using up the schedule.

Sentry's RQ integration reports a failure only when no retries are left, and it looks *before* this handler
runs, so a permanent error that ends a job early is reported here (once).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import redis.exceptions
import requests
import sentry_sdk
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from integration.errors import ServiceUnavailable

__all__ = ["handle_job_exception", "is_transient"]

log = logging.getLogger(__name__)

_TRANSIENT = (
    ServiceUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    requests.ConnectionError,
    requests.Timeout,
    JobTimeoutException,
    AbandonedJobError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether the same attempt may succeed later."""
    return isinstance(exc, _TRANSIENT)


def handle_job_exception(job: Job, exc_type: type[BaseException], exc: BaseException, tb: Any) -> bool:
    """Shape the job's next attempt from the error; always lets RQ's default handling continue."""
    retries_left = job.retries_left or 0
    if is_transient(exc):
        retry_after = getattr(exc, "retry_after", None)
        if retry_after and retries_left > 0 and job.retry_intervals:
            index = max(len(job.retry_intervals) - retries_left, 0)
            if index < len(job.retry_intervals):
                job.retry_intervals[index] = max(job.retry_intervals[index], math.ceil(retry_after))
        log.warning("job attempt failed (transient) job=%s error=%s retries_left=%s", job.id, exc, retries_left)
        return True
    if retries_left > 0:
        job.retries_left = 0  # permanent: straight to the failed registry
        sentry_sdk.capture_exception(exc)
    log.error("job failed (permanent) job=%s error=%s: %s", job.id, exc_type.__name__, exc)
    return True
