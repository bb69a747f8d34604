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
import weakref
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
from .jsontext import encoder
from .routing import QUEUES, Route
from .script_runner import ScriptRunner
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
    rand = random.random
    return [max(1, round(s * (0.8 + 0.4 * rand()))) for s in schedule]  # random.uniform(0.8, 1.2), inlined


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


# The hot path of every webhook. It writes the same job record RQ's ``Queue.enqueue_job`` writes (the hash
# ``rq:job:<id>`` that ``Job.restore`` reads, the id pushed on the queue, the queue in ``rq:queues``), but builds it
# here instead of through RQ's ``Job`` (whose ``to_dict`` of ~25 fields cost more than verifying and validating
# the request). ``tests/integration/test_queueing.py`` checks the record field by field against one RQ writes.
#
# KEYS = one dedupe key per event. ARGV = dedupe TTL, now (RQ's timestamp format), job timeout, result TTL,
# failure TTL, then per event: job id, queue key, data, description, meta, retries left, retry intervals, coalesce
# ("1" or ""). An event whose dedupe key exists is skipped (its job id returned), unless it coalesces and the job
# the key names is no longer pending; otherwise its job is written and queued and its key is set last, so a write
# refused half-way (e.g. Redis out of memory) never leaves an acknowledged event without its job. The script runs
# atomically, so of concurrent identical deliveries exactly one enqueues.
_ENQUEUE_UNLESS_SEEN = """
local ttl, now, timeout, result_ttl, failure_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pending = {queued = true, scheduled = true, deferred = true}
local result = {}
for i, key in ipairs(KEYS) do
  local pos = 6 + (i - 1) * 8
  local existing = redis.call('GET', key)
  if existing and ARGV[pos + 7] == '1' then
    local status = redis.call('HGET', '%(job_prefix)s' .. existing, 'status')
    if not (status and pending[status]) then existing = false end
  end
  if existing then
    result[i] = existing
  else
    local job_id, queue_key = ARGV[pos], ARGV[pos + 1]
    redis.call('SADD', '%(queues_key)s', queue_key)
    redis.call('HSET', '%(job_prefix)s' .. job_id,
      'status', 'queued', 'created_at', now, 'enqueued_at', now, 'origin', string.sub(queue_key, %(origin_at)d),
      'data', ARGV[pos + 2], 'description', ARGV[pos + 3], 'meta', ARGV[pos + 4],
      'timeout', timeout, 'result_ttl', result_ttl, 'failure_ttl', failure_ttl,
      'retries_left', ARGV[pos + 5], 'retry_intervals', ARGV[pos + 6])
    redis.call('RPUSH', queue_key, job_id)
    redis.call('SET', key, job_id, 'EX', ttl)
    result[i] = ''
  end
end
return result
""" % {  # noqa: UP031 - the script is full of braces
    "queues_key": Queue.redis_queues_keys,
    "job_prefix": Job.redis_job_namespace_prefix,
    "origin_at": len(Queue.redis_queue_namespace_prefix) + 1,
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
    args: list[Any] = [DEDUPE_TTL, _rq_time(received), JOB_TIMEOUT, RESULT_TTL, FAILURE_TTL]
    job_ids = []
    for env in envelopes:
        digest = hashlib.sha256(env.dedupe_id.encode("utf-8")).hexdigest()  # names both the dedupe key and the job
        keys.append(_dedupe_key(env.source, digest))
        job_id = _job_id(env.source, env.dedupe_id, digest)
        if env.coalesce:  # one event may have several jobs over time: each its own id
            job_id += "-" + secrets.token_hex(4)
        job_ids.append(job_id)
        args.extend(_job_fields(queues[env.route.queue], env, job_id, retry_schedule, received))
    try:
        replies = _script(connection)(keys=keys, args=args)
    except RedisError as exc:
        raise QueueUnavailable(f"redis: {type(exc).__name__}") from exc
    return [
        Enqueued(reply.decode(), duplicate=True) if reply else Enqueued(job_id, duplicate=False)
        for job_id, reply in zip(job_ids, replies, strict=True)
    ]


_runners: weakref.WeakKeyDictionary[redis.Redis, ScriptRunner] = weakref.WeakKeyDictionary()


def _script(connection: redis.Redis) -> ScriptRunner:
    """The enqueue script's runner for a client (built on first use; Redis loads the script on first call)."""
    runner = _runners.get(connection)
    if runner is None:
        runner = _runners[connection] = ScriptRunner(connection, _ENQUEUE_UNLESS_SEEN)
    return runner


def _rq_time(moment: datetime) -> str:
    """A UTC time as RQ stores it (``rq.utils.utcformat``: ``2026-11-30T09:19:22.123456Z``), without strftime."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _job_fields(
    queue: Queue, env: EventEnvelope, job_id: str, retry_schedule: Sequence[int], received: datetime
) -> tuple[str, str, str, str, str, int | str, str, str]:
    """The per-event script arguments: what RQ's ``Job.to_dict`` would store, serialized as RQ serializes it."""
    intervals = _jittered(retry_schedule)  # as retry_policy() would give, without building RQ's Retry
    event_type, event_id = _shown(env.event_type), _shown(env.dedupe_id)
    return (
        job_id,
        queue.key,
        # JSONSerializer's format (JSON text, sent as UTF-8), stored as plain JSON: RQ compresses it, but
        # Job.restore reads uncompressed data as is (its own fallback; RQ re-saves it compressed), and skipping
        # zlib saves ~11 µs and a GIL release per webhook.
        _dumps([env.route.job, None, [env.job_payload(received)], {}]),
        _description(env, event_type, event_id),
        _dumps({"source": env.source, "event_type": event_type, "event_id": event_id}),
        len(intervals) if intervals else "",  # "" reads back as None: RQ leaves both unset without a policy
        _dumps(intervals) if intervals else "",
        "1" if env.coalesce else "",
    )


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


_dumps = encoder()  # json.dumps with default options, without its per-call checks and encoder building


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
