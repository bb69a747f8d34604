"""``flask --app integration jobs …``: list, retry and purge failed jobs.

A retried job runs the same handler with the same payload, so it goes through the same locks and look-ups as
its first run (a retried collection cannot charge twice). It gets a fresh retry budget and a fresh deadline for
"not now" (``JOB_DEADLINE_HOURS`` from its next run).

``failed`` shows, per job, its runs (``attempts``), how many of them were deferred by "not now" (a 429, an open
circuit, a busy lock: ``deferrals``, which used no attempt of the schedule), when it first ran and its last
deferral.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import click
from flask import current_app
from flask.cli import with_appcontext
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from ..queueing import attempts_of, retry_policy

__all__ = ["failed_jobs", "group", "retry_job"]

group = click.Group("jobs", help="Inspect and retry failed jobs.")


def _queues(name: str | None) -> list[Queue]:
    queues: dict[str, Queue] = current_app.extensions["queues"]
    if name is None:
        return list(queues.values())
    if name not in queues:
        raise click.BadParameter(f"unknown queue {name!r}; queues: {', '.join(queues)}", param_hint="--queue")
    return [queues[name]]


def failed_jobs(queue: Queue) -> Iterator[Job]:
    """The jobs of a queue's failed registry, oldest failure first."""
    registry = queue.failed_job_registry
    ids = registry.get_job_ids()
    for job in Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer):
        if job is not None:
            yield job


def _last_error_line(job: Job) -> str:
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or job.exc_info or ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(no traceback: retries exhausted or job lost)"


def _runbook(error_line: str) -> str:
    """The runbook entry of a failed job, from its error's class (``pkg.module.ClassName: message``)."""
    from .. import errors
    from ..runbook import BY_CLASS, anchor_for, link

    name = error_line.split(":", 1)[0].rsplit(".", 1)[-1].strip()
    cls = getattr(errors, name, None)
    anchor = anchor_for(cls) if isinstance(cls, type) else BY_CLASS.get(name, "bug")
    if "retries exhausted" in error_line or "job lost" in error_line:
        anchor = "abandoned-job"
    return link(anchor)


def _last_deferral(meta: dict[str, object]) -> str:
    last = meta.get("last_deferral")
    if not isinstance(last, dict):
        return ""
    return f"\n  last_deferral={last.get('seconds')}s for {last.get('reason')}"


def _failed_at(job: Job) -> datetime | None:
    ended = job.ended_at
    if ended is None:
        return None
    return ended if ended.tzinfo else ended.replace(tzinfo=UTC)


@group.command("failed")
@click.option("--queue", "queue_name", help="Only this queue.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@with_appcontext
def failed_command(queue_name: str | None, limit: int) -> None:
    """List failed jobs: id, handler, source event, attempts, last error, failed at, runbook entry."""
    shown = 0
    for queue in _queues(queue_name):
        for job in failed_jobs(queue):
            if shown >= limit:
                break
            meta = job.meta or {}
            event = " ".join(str(meta.get(k, "")) for k in ("source", "event_type", "event_id")).strip() or "-"
            failed_at = _failed_at(job)
            failed = failed_at.isoformat() if failed_at else "-"
            click.echo(
                f"{job.id}\n"
                f"  queue={queue.name} handler={job.func_name} attempts={attempts_of(job)} "
                f"deferrals={int(meta.get('deferrals') or 0)}\n"
                f"  event={event}\n"
                f"  first_run_at={meta.get('first_run_at') or '-'} failed_at={failed}"
                f"{_last_deferral(meta)}\n"
                f"  error={_last_error_line(job)}\n"
                f"  runbook={_runbook(_last_error_line(job))}"
            )
            shown += 1
    click.echo(f"{shown} failed job(s)")


def retry_job(queue: Queue, job: Job, schedule: tuple[int, ...]) -> None:
    """Requeue one failed job with a fresh retry budget."""
    policy = retry_policy(schedule)
    job.retries_left = policy.max if policy else None
    job.retry_intervals = policy.intervals if policy else None
    job.number_of_retries = None
    job.meta.pop("first_run_at", None)  # a fresh deadline for "not now", from the next run
    job.meta.pop("excused_seconds", None)
    job.save_meta()
    queue.failed_job_registry.requeue(job)


@group.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every failed job (of --queue, since --since).")
@click.option("--queue", "queue_name", help="Only this queue.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]),
              help="Only jobs that failed at or after this UTC time.")
@with_appcontext
def retry_command(job_ids: tuple[str, ...], retry_all: bool, queue_name: str | None, since: datetime | None) -> None:
    """Re-enqueue failed jobs with a fresh retry budget; prints how many."""
    if bool(job_ids) == retry_all:
        raise click.UsageError("give job ids, or --all (not both)")
    schedule = current_app.extensions["settings"].retry_schedule_seconds
    count = 0
    missing: list[str] = []
    wanted = set(job_ids)
    since_utc = since.replace(tzinfo=UTC) if since else None
    for queue in _queues(queue_name):
        for job in failed_jobs(queue):
            if wanted and job.id not in wanted:
                continue
            failed_at = _failed_at(job)
            if since_utc and (failed_at is None or failed_at < since_utc):
                continue
            try:
                retry_job(queue, job, schedule)
            except (InvalidJobOperation, NoSuchJobError):
                continue  # retried by someone else meanwhile
            wanted.discard(job.id)
            count += 1
    missing = sorted(wanted)
    click.echo(f"requeued {count} job(s)")
    if missing:
        click.echo(f"not in a failed registry: {', '.join(missing)}", err=True)
        raise SystemExit(1)


@group.command("purge")
@click.option("--older-than", "days", type=click.IntRange(min=0), required=True, help="Age in days.")
@click.option("--queue", "queue_name", help="Only this queue.")
@with_appcontext
def purge_command(days: int, queue_name: str | None) -> None:
    """Delete failed jobs that failed more than DAYS days ago."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    count = 0
    for queue in _queues(queue_name):
        for job in list(failed_jobs(queue)):
            failed_at = _failed_at(job)
            if failed_at is not None and failed_at < cutoff:
                queue.failed_job_registry.remove(job, delete_job=True)
                count += 1
    click.echo(f"purged {count} job(s)")
