"""Redis connections, RQ queues, the retry policy and ``enqueue_events()``, the one place that enqueues webhooks.

``enqueue_events`` writes each event's dedupe record and its job in **one MULTI/EXEC transaction** (guarded by
WATCH on the dedupe keys): either both are in Redis or neither is, so a crash can never leave an event
acknowledged but not queued, or queued twice. A dedupe record lives ``DEDUPE_TTL`` (31 days: longer than a
failed job is kept, so a redelivery can never overwrite a failed job of the same id).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redis.exceptions import RedisError, WatchError
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from .errors import QueueUnavailable
from .routing import QUEUES, Route

__all__ = [
    "DEDUPE_TTL",
    "FAILURE_TTL",
    "JOB_TIMEOUT",
    "RESULT_TTL",
    "Enqueued",
    "EventEnvelope",
    "enqueue_events",
    "enqueue_job",
    "job_id_for",
    "make_queue",
    "make_queues",
    "make_redis",
    "retry_policy",
]

log = logging.getLogger(__name__)

DEDUPE_TTL = 31 * 24 * 3600  # seconds; >= 7 days (Attio retries ~3 days) and > FAILURE_TTL
FAILURE_TTL = 30 * 24 * 3600  # seconds a failed job stays in the failed registry
RESULT_TTL = 24 * 3600  # seconds a finished job's result is kept
JOB_TIMEOUT = 600  # seconds one attempt of a job may run before RQ kills it
_WATCH_ATTEMPTS = 5


def make_redis(url: str, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A bytes-mode Redis client (RQ and the breaker need ``decode_responses=False``) with short timeouts."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def make_queue(name: str, connection: redis.Redis) -> Queue:
    """An RQ queue with the JSON serializer (job arguments are plain JSON: no pickles on the wire)."""
    return Queue(name, connection=connection, serializer=JSONSerializer, default_timeout=JOB_TIMEOUT)


def make_queues(connection: redis.Redis) -> dict[str, Queue]:
    """Every queue the service uses, by name."""
    return {name: make_queue(name, connection) for name in QUEUES}


def retry_policy(schedule: Sequence[int]) -> Retry | None:
    """RQ retries after each transient failure: the base delays, each stretched by ±20% jitter, per enqueue."""
    if not schedule:
        return None
    return Retry(max=len(schedule), interval=[max(1, round(s * random.uniform(0.8, 1.2))) for s in schedule])


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def job_id_for(source: str, dedupe_id: str) -> str:
    """A deterministic RQ job id (only ``[A-Za-z0-9_-]``, as RQ >= 2.8 demands) for an event's dedupe id."""
    digest = hashlib.sha256(dedupe_id.encode("utf-8")).hexdigest()[:12]
    readable = _UNSAFE.sub("_", dedupe_id)[:48].strip("_")
    return f"{source}-{readable}-{digest}" if readable else f"{source}-{digest}"


@dataclass(frozen=True)
class EventEnvelope:
    """One event to enqueue: where it came from, its dedupe id, its route and the validated payload."""

    source: str
    event_type: str
    dedupe_id: str
    route: Route
    event: Mapping[str, Any]

    def job_payload(self) -> dict[str, Any]:
        """The JSON-able argument the job receives."""
        return {
            "source": self.source,
            "event_type": self.event_type,
            "event_id": self.dedupe_id,
            "received_at": datetime.now(UTC).isoformat(),
            "event": dict(self.event),
        }


@dataclass(frozen=True)
class Enqueued:
    """What happened to one envelope: its job id and whether it was already there."""

    job_id: str
    duplicate: bool


def _dedupe_key(env: EventEnvelope) -> str:
    return f"dedupe:{env.source}:{hashlib.sha256(env.dedupe_id.encode('utf-8')).hexdigest()}"


def enqueue_events(
    connection: redis.Redis,
    queues: Mapping[str, Queue],
    envelopes: Sequence[EventEnvelope],
    *,
    retry_schedule: Sequence[int],
) -> list[Enqueued]:
    """Atomically record and enqueue every new envelope; a known one comes back as a duplicate, untouched."""
    if not envelopes:
        return []
    keys = [_dedupe_key(env) for env in envelopes]
    try:
        with connection.pipeline() as pipe:
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    pipe.watch(*keys)
                    existing = pipe.mget(keys)
                    pipe.multi()
                    outcomes = []
                    for env, key, known in zip(envelopes, keys, existing, strict=True):
                        if known is not None:
                            outcomes.append(Enqueued(known.decode(), duplicate=True))
                            continue
                        job_id = job_id_for(env.source, env.dedupe_id)
                        pipe.set(key, job_id, ex=DEDUPE_TTL)
                        _enqueue_in_pipeline(pipe, queues[env.route.queue], env, job_id, retry_schedule)
                        outcomes.append(Enqueued(job_id, duplicate=False))
                    pipe.execute()
                    return outcomes
                except WatchError:
                    continue  # another request wrote one of these keys: look again
            raise QueueUnavailable("dedupe keys kept changing under the enqueue")
    except RedisError as exc:
        raise QueueUnavailable(f"redis: {type(exc).__name__}") from exc


def _enqueue_in_pipeline(
    pipe: Any, queue: Queue, env: EventEnvelope, job_id: str, retry_schedule: Sequence[int]
) -> None:
    job = queue.create_job(
        env.route.job,
        args=(env.job_payload(),),
        job_id=job_id,
        timeout=JOB_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        ttl=None,  # a queued event never expires unrun
        retry=retry_policy(retry_schedule),
        description=f"{env.source} {env.event_type} {env.dedupe_id}",
        meta={"source": env.source, "event_type": env.event_type, "event_id": env.dedupe_id},
    )
    queue.enqueue_job(job, pipeline=pipe)


def enqueue_job(
    queue: Queue,
    func: str,
    payload: Mapping[str, Any],
    *,
    retry_schedule: Sequence[int],
    job_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> str:
    """Enqueue a job that is not a webhook (admin trigger, schedule, resume); returns its id."""
    try:
        job = queue.enqueue(
            func,
            dict(payload),
            job_id=job_id,
            job_timeout=JOB_TIMEOUT,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            retry=retry_policy(retry_schedule),
            meta=dict(meta or {}),
            description=description,
        )
    except RedisError as exc:
        raise QueueUnavailable(f"redis: {type(exc).__name__}") from exc
    return str(job.id)
