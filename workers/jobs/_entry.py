"""The shape of every RQ entrypoint: bind log context, log start and end, delegate to the handler."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rq import get_current_job

from integration.observability import bind

__all__ = ["entrypoint"]

log = logging.getLogger("workers.job")

F = TypeVar("F", bound=Callable[..., Any])


def entrypoint(handler: str) -> Callable[[F], F]:
    """Decorate ``run_*``: every log line of the job carries its source, event id, job id and handler."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(payload: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            job = get_current_job()
            with bind(
                source=payload.get("source"),
                event_type=payload.get("event_type"),
                event_id=payload.get("event_id"),
                job_id=job.id if job else None,
                handler=handler,
            ):
                started = time.monotonic()
                log.info("job started")
                result = func(payload, *args, **kwargs)
                log.info("job finished", extra={"duration_ms": round((time.monotonic() - started) * 1000, 1)})
                return result

        return wrapper  # type: ignore[return-value]

    return decorate
