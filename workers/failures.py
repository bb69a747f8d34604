"""The worker's failure handling: whether a failed attempt is retried, the log line saying so, the Sentry report.

RQ calls ``handle_job_exception`` before it requeues or fails the job (``handle_exception`` runs before
``handle_job_failure``), and its registry cleanup calls it for a job whose worker vanished (``AbandonedJobError``):

- a **transient** error (``ServiceUnavailable``, Redis or network trouble, a timeout, an abandoned job) keeps
  the job's retry schedule, and a provider's ``Retry-After`` pushes the next attempt at least that far out;
- anything else (``ServiceRejected``, ``NoHandler``, a bug) ends the job now: it goes to the failed registry
  with its error instead of using up the schedule.

Exactly one Sentry event per failed job. Sentry's RQ integration reports an exception when no retries are left,
looking *before* this handler runs; the three failures it cannot see are reported here: a permanent error that
ends a job early, a job abandoned by a dead worker (found by another worker's maintenance pass), and a job whose
work horse was killed (``handle_work_horse_killed``, e.g. by the OOM killer), once no retry is left.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import redis.exceptions
import requests
import sentry_sdk
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from integration.errors import ServiceUnavailable
from integration.observability import bind_job

__all__ = ["handle_job_exception", "handle_work_horse_killed", "is_transient", "report_job_failure"]

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
    error = {"error": exc_type.__name__, "retries_left": retries_left}
    _remember_error(job, exc_type, exc)
    with bind_job(job):
        if is_transient(exc):
            _respect_retry_after(job, exc, retries_left)
            if retries_left > 0:
                log.warning("job attempt failed (transient), retrying: %s: %s", exc_type.__name__, exc,
                            extra={"outcome": "retry", **error})
                return True
            log.error("job failed: retries exhausted: %s: %s", exc_type.__name__, exc,
                      extra={"outcome": "failed", **error})
            if isinstance(exc, AbandonedJobError):
                report_job_failure(job, exc)  # from a registry cleanup, where Sentry's RQ hook is not
            return True
        if retries_left > 0:
            job.retries_left = 0  # permanent: straight to the failed registry
            report_job_failure(job, exc)
        log.error("job failed (permanent): %s: %s", exc_type.__name__, exc, extra={"outcome": "failed", **error})
    return True


def _remember_error(job: Job, exc_type: type[BaseException], exc: BaseException) -> None:
    """The attempt's error line in the job's meta, so ``explain`` shows why a job waits for its retry."""
    try:
        job.meta["last_error"] = f"{exc_type.__name__}: {exc}"[:300]
        job.save_meta()
    except Exception:  # noqa: BLE001 - never let bookkeeping hide the real failure
        log.debug("could not save the last error of job %s", job.id)


def handle_work_horse_killed(job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
    """RQ's hook for a work horse that died mid-job: RQ retries or fails the job without raising, so report it."""
    signal = f" by signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else ""
    with bind_job(job):
        if job.should_retry:
            log.warning("job attempt lost: work horse died%s, retrying", signal, extra={"outcome": "retry"})
            return
        log.error("job failed: work horse died%s", signal, extra={"outcome": "failed"})
        report_job_failure(job, AbandonedJobError(f"work horse died{signal} (exit status {ret_val})"))


def report_job_failure(job: Job, exc: BaseException) -> None:
    """One Sentry event for a failed job, tagged with its ids (no arguments: they carry customer data)."""
    with sentry_sdk.new_scope() as scope, bind_job(job):
        rq_job = {"job_id": job.id, "origin": job.origin}
        try:
            rq_job["func"] = job.func_name
        except Exception:  # noqa: BLE001 - an undeserializable job is still reported
            rq_job["func"] = None
        scope.set_extra("rq-job", rq_job)
        if isinstance(exc, AbandonedJobError):
            scope.fingerprint = ["rq", "AbandonedJobError", str(rq_job["func"])]
        sentry_sdk.capture_exception(exc)


def _respect_retry_after(job: Job, exc: BaseException, retries_left: int) -> None:
    """Stretch the next interval of the job's schedule to at least the provider's ``Retry-After``."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after and retries_left > 0 and job.retry_intervals:
        index = max(len(job.retry_intervals) - retries_left, 0)
        if index < len(job.retry_intervals):
            job.retry_intervals[index] = max(job.retry_intervals[index], math.ceil(retry_after))
