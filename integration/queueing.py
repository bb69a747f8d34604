"""Redis connections, RQ queues, the retry policy and ``enqueue_events()``, the one place that enqueues webhooks.

``enqueue_events`` writes each event's dedupe record and its job in **one atomic Lua script** (one round trip):
either both are in Redis or neither is, so a crash can never leave an event
acknowledged but not queued, or queued twice. A dedupe record lives ``DEDUPE_TTL`` (31 days: longer than a
failed job is kept, so a redelivery can never overwrite a failed job of the same id).

Dedupe ids come only from signed content, so a sender cannot mint new ones by replaying a captured delivery.
An envelope marked ``coalesce`` (Attio: its events carry no timestamp, so two real edits can be byte-identical)
is a duplicate only while the job of its last identical event is still *pending* (queued, scheduled, deferred):
once that job started, an identical event gets a job of its own (a fresh id), so a later real edit is never
dropped, and a replay can never hold more than one pending job per signed event. Job descriptions and meta carry
only ``[A-Za-z0-9_.:+-]`` (anything else becomes ``_``): they are rendered by the dashboard.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from .errors import QueueUnavailable
from .routing import QUEUES, Route
from .subjects import subjects_of

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
    return Retry(max=len(schedule), interval=_jittered(schedule))


def _jittered(schedule: Sequence[int]) -> list[int]:
    return [max(1, round(s * random.uniform(0.8, 1.2))) for s in schedule]


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def attempts_of(job: Any) -> int:
    """How many times a job was started: counted in its meta by each start (RQ 2.12's ``number_of_retries``
    does not count retries after an exception)."""
    meta = getattr(job, "meta", None) or {}
    return int(meta.get("attempts") or 0)


def job_id_for(source: str, dedupe_id: str) -> str:
    """A deterministic RQ job id (only ``[A-Za-z0-9_-]``, as RQ >= 2.8 demands) for an event's dedupe id."""
    return _job_id(source, dedupe_id, hashlib.sha256(dedupe_id.encode("utf-8")).hexdigest())


def _job_id(source: str, dedupe_id: str, digest: str) -> str:
    readable = _UNSAFE.sub("_", dedupe_id)[:48].strip("_")
    return f"{source}-{readable}-{digest[:12]}" if readable else f"{source}-{digest[:12]}"


@dataclass(frozen=True)
class EventEnvelope:
    """One event to enqueue: where it came from, its dedupe id, its route and the validated payload."""

    source: str
    event_type: str
    dedupe_id: str
    route: Route
    event: Mapping[str, Any]
    coalesce: bool = False  # a duplicate only while the last identical event's job is pending (module docstring)

    def job_payload(self, received_at: datetime | None = None) -> dict[str, Any]:
        """The JSON-able argument the job receives."""
        return {
            "source": self.source,
            "event_type": self.event_type,
            "event_id": self.dedupe_id,
            "received_at": (received_at or datetime.now(UTC)).isoformat(),
            "event": dict(self.event),
        }


class Enqueued(NamedTuple):
    """What happened to one envelope: its job id and whether it was already there."""

    job_id: str
    duplicate: bool


def _dedupe_key(source: str, digest: str) -> str:
    return f"dedupe:{source}:{digest}"


# KEYS = one dedupe key per event. ARGV[1] = the dedupe TTL, then per event: job id, queue key, coalesce ("1" or
# ""), the number n of items that follow, then n items: the job's fields and values as RQ's ``Job.to_dict`` gives
# them. An event whose dedupe key exists is skipped (its job id returned), unless it coalesces and the job the key
# names is no longer pending; otherwise its job is written and queued as ``Queue.enqueue_job`` writes it, and its
# key is set last, so a write refused half-way (e.g. Redis out of memory) never leaves an acknowledged event
# without its job. The script runs atomically, so of concurrent identical deliveries exactly one enqueues.
_ENQUEUE_UNLESS_SEEN = """
local pending = {queued = true, scheduled = true, deferred = true}
local result = {}
local pos = 2
for i, key in ipairs(KEYS) do
  local job_id, queue_key, coalesce, first = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], pos + 4
  pos = first + tonumber(ARGV[pos + 3])
  local existing = redis.call('GET', key)
  if existing and coalesce == '1' then
    local status = redis.call('HGET', '%(job_prefix)s' .. existing, 'status')
    if not (status and pending[status]) then existing = false end
  end
  if existing then
    result[i] = existing
  else
    redis.call('SADD', '%(queues_key)s', queue_key)
    redis.call('HSET', '%(job_prefix)s' .. job_id, unpack(ARGV, first, pos - 1))
    redis.call('RPUSH', queue_key, job_id)
    redis.call('SET', key, job_id, 'EX', ARGV[1])
    result[i] = ''
  end
end
return result
""" % {  # noqa: UP031 - the script is full of braces
    "queues_key": Queue.redis_queues_keys,
    "job_prefix": Job.redis_job_namespace_prefix,
}


def enqueue_events(
    connection: redis.Redis,
    queues: Mapping[str, Queue],
    envelopes: Sequence[EventEnvelope],
    *,
    retry_schedule: Sequence[int],
) -> list[Enqueued]:
    """Atomically record and enqueue every new envelope; a known one comes back as a duplicate, untouched.

    One Lua script writes each new event's RQ job and its dedupe record: one round trip, all or nothing.
    """
    if not envelopes:
        return []
    received = datetime.now(UTC)
    keys = []
    args: list[Any] = [DEDUPE_TTL]
    job_ids = []
    for env in envelopes:
        digest = hashlib.sha256(env.dedupe_id.encode("utf-8")).hexdigest()  # names both the dedupe key and the job
        keys.append(_dedupe_key(env.source, digest))
        job_id = _job_id(env.source, env.dedupe_id, digest)
        if env.coalesce:  # one event may have several jobs over time: each its own id
            job_id += "-" + secrets.token_hex(4)
        job_ids.append(job_id)
        queue = queues[env.route.queue]
        fields = _job(queue, env, job_id, retry_schedule, received).to_dict()
        args += [job_id, queue.key, "1" if env.coalesce else "", 2 * len(fields)]
        for name, value in fields.items():
            args += [name, value]
    try:
        # Built per call, as cheap as a SHA-1 of its text: redis-py runs it by EVALSHA, loading it when Redis lacks it.
        replies = connection.register_script(_ENQUEUE_UNLESS_SEEN)(keys=keys, args=args)
    except RedisError as exc:
        raise QueueUnavailable(f"redis: {type(exc).__name__}") from exc
    return [
        Enqueued(reply.decode(), duplicate=True) if reply else Enqueued(job_id, duplicate=False)
        for job_id, reply in zip(job_ids, replies, strict=True)
    ]


def _job(queue: Queue, env: EventEnvelope, job_id: str, retry_schedule: Sequence[int], received: datetime) -> Job:
    """The event's RQ job, queued, as ``Queue.enqueue_job`` would store it (not saved: the script writes it)."""
    event_type, event_id = _shown(env.event_type), _shown(env.dedupe_id)
    job = queue.create_job(
        env.route.job,
        args=[env.job_payload(received)],
        job_id=job_id,
        timeout=JOB_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        retry=retry_policy(retry_schedule),
        description=_description(env, event_type, event_id),
        meta={"source": env.source, "event_type": event_type, "event_id": event_id},
    )
    job.enqueued_at = received
    return job


def _description(env: EventEnvelope, event_type: str, event_id: str) -> str:
    """What rq-dashboard lists: the work and its business object first (``collection invoice 9030…``), then the
    event (``from zoho invoice_created <id>``); every part from signed content, and shown escaped."""
    subject = next(((kind, ident) for kind, ident in subjects_of({"event": env.event}) if kind != "event"), None)
    work = env.route.job.split(".")[-2] if env.route.job.count(".") >= 2 else env.route.job
    about = f"{work} {subject[0]} {_shown(subject[1])} from " if subject else ""
    return f"{about}{env.source} {event_type} {event_id}"


_NOT_SHOWN = re.compile(r"[^A-Za-z0-9_.:+-]")


def _shown(text: str) -> str:
    """Text as it may appear in a job's description or meta (the dashboard renders both)."""
    return _NOT_SHOWN.sub("_", text[:200])


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
