"""``python -m workers``: an RQ worker over every queue, JSON serializer, scheduler on."""

from __future__ import annotations

import sys

from rq import Worker
from rq.serializers import JSONSerializer

from integration.config import Settings, load_dotenv_if_present
from integration.errors import ConfigError
from integration.observability import init_sentry, setup_logging
from integration.queueing import make_queues, make_redis

from .failures import handle_job_exception

# A job whose worker died (even kill -9) is noticed when its heartbeat lapses: heartbeat TTL is
# JOB_MONITORING_INTERVAL + 60 s, and any worker's maintenance pass (every MAINTENANCE_INTERVAL) then retries it
# or moves it to the failed registry: 75 s + 30 s < 2 minutes.
JOB_MONITORING_INTERVAL = 15  # seconds
MAINTENANCE_INTERVAL = 30  # seconds


def build_worker(settings: Settings, *, name: str | None = None) -> Worker:
    """The service's worker: every queue in priority order, our exception handler, short liveness intervals."""
    connection = make_redis(settings.redis_url, socket_timeout=30.0)
    return Worker(
        list(make_queues(connection).values()),
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        exception_handlers=[handle_job_exception],
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the worker until stopped (SIGTERM finishes the current job first)."""
    args = sys.argv[1:] if argv is None else argv
    load_dotenv_if_present()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    init_sentry(settings, component="worker")
    setup_logging(settings.log_level, component="worker")
    worker = build_worker(settings)
    from .schedule import install_schedule

    install_schedule(settings, worker.connection)
    worker.work(with_scheduler=True, burst="--burst" in args, logging_level=settings.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
