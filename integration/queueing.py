"""Redis connections, RQ queues, the retry policy and ``enqueue_events()``, the one place that enqueues webhooks.

``enqueue_events`` writes each event's dedupe record and its job in **one atomic Lua script** (one round trip):
either both are in Redis or neither is, so a crash can never leave an event
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
from redis.exceptions import RedisError
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
    "attempts_of",
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


def make_redis(url: str, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A bytes-mode Redis client (RQ and the breaker need ``decode_responses=False``) with short timeouts."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry_on_timeout=False,
        protocol=2,  # RESP2: what RQ is built and tested on, and measurably cheaper per call than RESP3 here
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


def attempts_of(job: Any) -> int:
    """How many times a job was started: counted in its meta by each start (RQ 2.12's ``number_of_retries``
    does not count retries after an exception)."""
    meta = getattr(job, "meta", None) or {}
    return int(meta.get("attempts") or 0)


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


# KEYS = one dedupe key per event. ARGV[1] = dedupe TTL; then per event: job id, number of commands, and for
# each command its argument count and arguments. An event whose key exists is skipped (its job id returned);
# otherwise its commands run and its key is set last, so a write refused half-way (e.g. Redis out of memory)
# never leaves an acknowledged event without its job. The script runs atomically.
_ENQUEUE_UNLESS_SEEN = """
local ttl = ARGV[1]
local pos = 2
local result = {}
for i, key in ipairs(KEYS) do
  local job_id = ARGV[pos]
  local ncmds = tonumber(ARGV[pos + 1])
  pos = pos + 2
  local existing = redis.call('GET', key)
  for c = 1, ncmds do
    local n = tonumber(ARGV[pos])
    if not existing then
      redis.call(unpack(ARGV, pos + 1, pos + n))
    end
    pos = pos + 1 + n
  end
  if existing then
    result[i] = existing
  else
    redis.call('SET', key, job_id, 'EX', ttl)
    result[i] = ''
  end
end
return result
"""


def enqueue_events(
    connection: redis.Redis,
    queues: Mapping[str, Queue],
    envelopes: Sequence[EventEnvelope],
    *,
    retry_schedule: Sequence[int],
) -> list[Enqueued]:
    """Atomically record and enqueue every new envelope; a known one comes back as a duplicate, untouched.

    RQ builds each job's commands into a pipeline that is never executed; one Lua script then runs them, only
    for the events not seen before, together with their dedupe records: one round trip, all or nothing.
    """
    if not envelopes:
        return []
    keys = [_dedupe_key(env) for env in envelopes]
    args: list[Any] = [DEDUPE_TTL]
    job_ids = []
    try:
        with connection.pipeline(transaction=False) as pipe:
            for env in envelopes:
                job_id = job_id_for(env.source, env.dedupe_id)
                job_ids.append(job_id)
                _enqueue_in_pipeline(pipe, queues[env.route.queue], env, job_id, retry_schedule)
                args.extend((job_id, len(pipe.command_stack)))
                for command_args, _options in pipe.command_stack:
                    args.append(len(command_args))
                    args.extend(command_args)
                pipe.reset()
        replies = _script(connection)(keys=keys, args=args)
    except RedisError as exc:
        raise QueueUnavailable(f"redis: {type(exc).__name__}") from exc
    return [
        Enqueued(reply.decode(), duplicate=True) if reply else Enqueued(job_id, duplicate=False)
        for job_id, reply in zip(job_ids, replies, strict=True)
    ]


_scripts: dict[int, Any] = {}


def _script(connection: redis.Redis) -> Any:
    """The registered enqueue script for a connection (registration is local; Redis loads it on first use)."""
    key = id(connection)
    if key not in _scripts:
        _scripts[key] = connection.register_script(_ENQUEUE_UNLESS_SEEN)
    return _scripts[key]


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
            description=description or func,  # RQ's default shows the payload (rq-dashboard lists it)
        )
    except RedisError as exc:
        raise QueueUnavailable(f"redis: {type(exc).__name__}") from exc
    return str(job.id)
