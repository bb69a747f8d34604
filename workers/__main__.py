"""``python -m workers``: an RQ worker over every queue, JSON serializer, scheduler on."""

from __future__ import annotations

import importlib
import sys

from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from integration.config import WORKER, Settings, load_dotenv_if_present
from integration.errors import ConfigError
from integration.observability import bind_job, init_sentry, secret_values, setup_logging
from integration.queueing import make_queues, make_redis
from integration.routing import job_modules

from .failures import handle_job_exception, handle_work_horse_killed

# A job whose worker died (even kill -9) is noticed when its heartbeat lapses: RQ sets the heartbeat TTL to
# JOB_MONITORING_INTERVAL + 60 s, and any worker's maintenance pass then retries it or moves it to the failed
# registry. An idle worker only looks at maintenance between blocking dequeues, which last WORKER_TTL - 15 s, so
# both are kept short: worst case 70 s + 20 s + 20 s = 110 s < 2 minutes.
JOB_MONITORING_INTERVAL = 10  # seconds
MAINTENANCE_INTERVAL = 20  # seconds
WORKER_TTL = 35  # seconds; RQ blocks on dequeue for WORKER_TTL - 15


class ServiceWorker(Worker):
    """RQ's forking worker; each job runs with its ids bound, so RQ's own lines and Sentry's report carry them."""

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """Run the job (in the work horse) with its source, event id, job id and handler bound."""
        with bind_job(job):
            return super().perform_job(job, queue)


def build_worker(settings: Settings, *, name: str | None = None) -> Worker:
    """The service's worker: every queue in priority order, our failure handlers, short liveness intervals."""
    connection = make_redis(settings.redis_url, socket_timeout=30.0)
    return ServiceWorker(
        list(make_queues(connection).values()),
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        exception_handlers=[handle_job_exception],
        work_horse_killed_handler=handle_work_horse_killed,
        log_job_description=False,  # a description built by RQ from the call shows the payload's first bytes
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
    )


def preload_jobs() -> None:
    """Import every job module once in the parent: each forked work horse then starts with them loaded.

    Without this every job re-imports its module (the Braintree SDK and ~230 others: ~75 ms a job, measured
    by bench/worker.py); forking from a parent that has them costs nothing extra.
    """
    for module in job_modules():
        importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    """Run the worker until stopped (SIGTERM finishes the current job first)."""
    args = sys.argv[1:] if argv is None else argv
    load_dotenv_if_present()
    try:
        settings = Settings.from_env(role=WORKER)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    init_sentry(settings, component="worker")
    setup_logging(settings.log_level, component="worker", secrets=secret_values(settings))
    worker = build_worker(settings)
    preload_jobs()
    from .schedule import install_schedule

    install_schedule(settings, worker.connection)
    worker.work(with_scheduler=True, burst="--burst" in args, logging_level=settings.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
