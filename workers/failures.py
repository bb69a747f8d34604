"""The worker's failure handling: whether a failed attempt is retried, the log line saying so, the Sentry report.

RQ calls ``handle_job_exception`` before it requeues or fails the job (``handle_exception`` runs before
``handle_job_failure``), and its registry cleanup calls it for a job whose worker vanished (``AbandonedJobError``):

- **"not now"** (``NotNow``: a 429, our budget spent, an open circuit, a busy lock) is no failure: ``defer()``,
  called by the job's entrypoint before the error reaches RQ, gives the job one more retry whose interval is the
  time the provider or breaker named (at least ``DEFER_FLOOR_SECONDS``, plus up to 25 % jitter), so RQ's
  scheduler runs it again then and its schedule of attempts is untouched. Only once ``JOB_DEADLINE_HOURS`` have
  passed since its first run does "not now" end the job, as ``DeferredTooLong``: failed, one Sentry event;
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
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.exceptions
import requests
import sentry_sdk
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from integration.errors import DeferredTooLong, NotNow, ServiceUnavailable
from integration.observability import bind_job
from integration.queueing import attempts_of

__all__ = [
    "DEFER_FLOOR_SECONDS",
    "DEFER_UNNAMED_SECONDS",
    "defer",
    "handle_job_exception",
    "handle_work_horse_killed",
    "is_transient",
    "report_job_failure",
]

log = logging.getLogger(__name__)

DEFER_FLOOR_SECONDS = 2  # a deferral is never shorter (a Retry-After of 0, a breaker about to half-open)
DEFER_UNNAMED_SECONDS = 30  # a "not now" that names no time (a 429 without Retry-After, Zoho's rate-limit codes)
DEFER_JITTER = 0.25  # each deferral is stretched by up to this share, so jobs deferred together spread out
# A wait named this long is a provider's schedule (Zoho's daily cap: until the organization's midnight), not an
# outage: it does not count against the deadline, else a cap met early in the day would leave a job nothing of its
# JOB_DEADLINE_HOURS after the reset, and the first minute's 429 then (every deferred job comes back at once) would
# fail it.
EXCUSED_WAIT_SECONDS = 3600

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


def defer(job: Job, exc: NotNow, *, deadline_hours: float, now: datetime | None = None) -> float:
    """Make RQ run the job again after the time ``exc`` names, without using an attempt; returns the delay.

    RQ retries a job whose ``retries_left`` is positive after ``retry_intervals[len - retries_left]`` seconds
    (``Job.get_retry_interval``): one more retry whose interval sits just before the next scheduled one leaves
    the rest of the schedule as it was. Raises ``DeferredTooLong`` (from ``exc``) once the job's deadline has
    passed since its first run, not counting the waits of an hour or more it was told to sit out
    (``EXCUSED_WAIT_SECONDS``); the job then has no retry left and fails.
    """
    now = now or datetime.now(UTC)
    meta = job.meta
    first = _first_run(meta) or now
    waited = now - first
    excused = float(meta.get("excused_seconds") or 0)
    if waited - timedelta(seconds=excused) >= timedelta(hours=deadline_hours):
        job.retries_left = 0
        raise DeferredTooLong(
            f"not now for {_hours(waited)} (deadline {deadline_hours} h, {meta.get('deferrals', 0)} deferrals); "
            f"last: {type(exc).__name__}: {exc}"
        ) from exc
    named = exc.retry_after if exc.retry_after is not None else DEFER_UNNAMED_SECONDS
    delay = math.ceil(max(float(named), DEFER_FLOOR_SECONDS) * (1 + DEFER_JITTER * random.random()))
    retries_left = job.retries_left or 0
    intervals = list(job.retry_intervals or [])
    index = len(intervals) - (retries_left + 1)
    if index < 0:  # no spent interval to overwrite: make room before the next one
        intervals[:0] = [0] * -index
        index = 0
    intervals[index] = delay
    job.retries_left = retries_left + 1
    job.retry_intervals = intervals
    meta["deferrals"] = int(meta.get("deferrals") or 0) + 1
    if float(named) >= EXCUSED_WAIT_SECONDS:
        meta["excused_seconds"] = excused + delay
    meta["last_deferral"] = {
        "reason": f"{type(exc).__name__}: {exc}"[:200],
        "seconds": delay,
        "until": (now + timedelta(seconds=delay)).isoformat(),
        "run": meta.get("attempts"),
    }
    log.info(
        "job deferred %ss (not now, not a failed attempt): %s: %s", delay, type(exc).__name__, exc,
        extra={"outcome": "deferred", "error": type(exc).__name__, "defer_seconds": delay,
               "deferrals": meta["deferrals"], "retries_left": retries_left},
    )
    return delay


def _first_run(meta: dict[str, Any]) -> datetime | None:
    raw = meta.get("first_run_at")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def handle_job_exception(job: Job, exc_type: type[BaseException], exc: BaseException, tb: Any) -> bool:
    """Shape the job's next attempt from the error; always lets RQ's default handling continue."""
    retries_left = job.retries_left or 0
    error = {"error": exc_type.__name__, "retries_left": retries_left}
    _remember_error(job, exc_type, exc)
    with bind_job(job):
        last = (job.meta or {}).get("last_deferral")
        if isinstance(exc, NotNow) and isinstance(last, dict) and last.get("run") == attempts_of(job):
            return True  # deferred by the entrypoint (``defer``), which logged it: not an attempt to count
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
        rq_job: dict[str, str | None] = {"job_id": job.id, "origin": job.origin}
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
