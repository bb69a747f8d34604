"""``python -m bench.worker``: job throughput of real workers, and what the queue costs per job (issue 9).

The workflow is the lifecycle mirror of Braintree ``transaction_settled`` (``workers.jobs.lifecycle``): each job
finds the transaction's Attio ``payments`` record and moves it from Submitted to Settled (three Attio calls: two
record queries and one assert). Jobs are enqueued exactly as intake enqueues them (``enqueue_events``, payloads
from SDK-signed, SDK-parsed, schema-validated notifications), each for its own seeded record, so every job does
the full work. The Attio simulator runs in a process of its own (so neither the in-process measurements nor a
forked work horse share a GIL or threads with it); its latency is injected on every route
(``faults.add("*", "*", delay=…, times=None)``). Redis: ``BENCH_REDIS_URL`` (flushed).

1. Throughput: ``--jobs`` jobs through 1 and through 2 real ``python -m workers`` processes (forking, as
   deployed), with 0 ms and 50 ms of provider latency; jobs/s from the enqueue to the last job finished, and
   the mean time a job ran inside its work horse (RQ's started → ended): ``workers / jobs/s`` minus that is what
   each job spent outside its own code (dequeue, fork, registries).
2. Queue overhead per job, at 0 ms, in this process: the handler called directly (one client, reused), the RQ
   entrypoint called directly (builds its clients per job, as a job does), then the same jobs through RQ's
   ``SimpleWorker`` (no fork) and ``Worker`` (a fork per job), burst mode; prints each per-job time and its
   difference from the handler's own time. Log level is WARNING here, INFO in the real workers of part 1.

No timing is asserted: every figure is compared with a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing as mp
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import braintree
import redis
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from integration.clients.attio import build_attio_client
from integration.config import Settings
from integration.queueing import EventEnvelope, enqueue_events, make_queues, make_redis
from integration.routing import route_for
from integration.schemas import BraintreeEventSchema, notification_to_dict
from tests.processes import WorkerProcess
from workers import runtime
from workers.failures import handle_job_exception
from workers.jobs.lifecycle import handle_transaction_event, run_transaction_event

from ._common import BENCH_REDIS_URL, SERVICE_ENV, table

KIND = "transaction_settled"
_SCHEMA = BraintreeEventSchema()


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs per throughput round")
    parser.add_argument("--overhead-jobs", type=int, default=200, help="jobs per overhead measurement")
    parser.add_argument("--delays", default="0,50", help="provider latencies to run, in ms, comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker process counts to run, comma-separated")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one round may take")
    return parser


# -- the simulator's process ------------------------------------------------------------------------------------
def _serve_attio(conn: Connection) -> None:
    """Run the Attio simulator and obey (command, argument) messages until ``stop``."""
    from tests.simulators.attio import AttioSimulator

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sim = AttioSimulator(writes_per_second=None, reads_per_second=None).start()
    sim.setup_schema()
    conn.send((sim.url, sim.api_key))
    while True:
        command, arg = conn.recv()
        if command == "seed":  # fresh state with one Submitted payment per external id; no latency
            sim.reset()
            sim.setup_schema()
            for external_id in arg:
                sim.add_record("payments", {"external_id": external_id, "status": "Submitted", "amount": 49.0})
            conn.send(None)
        elif command == "delay":
            sim.faults.clear()
            if arg:
                sim.faults.add("*", "*", delay=arg, times=None)
            conn.send(None)
        elif command == "settled":
            conn.send(sum(1 for r in sim.records("payments") if _status(r) == "Settled"))
        elif command == "stop":
            sim.stop()
            conn.send(None)
            return


def _status(record: dict[str, Any]) -> str | None:
    from integration.clients.attio_values import value

    found = value(record, "status")
    return str(found) if found is not None else None


class _AttioProcess:
    """The Attio simulator in a spawned process, driven through a pipe."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_attio, args=(child,), daemon=True)
        self._proc.start()
        self.url, self.api_key = self._conn.recv()

    def ask(self, command: str, arg: Any = None) -> Any:
        """Send a command and wait for its answer."""
        self._conn.send((command, arg))
        return self._conn.recv()

    def stop(self) -> None:
        """Stop the simulator and its process."""
        if self._proc.is_alive():
            self.ask("stop")
            self._proc.join(timeout=10)


# -- jobs -------------------------------------------------------------------------------------------------------
def _payloads(prefix: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    """(dedupe id, validated event) of N settled notifications, signed and parsed by the Braintree SDK."""
    gateway = braintree.BraintreeGateway(braintree.Configuration(
        braintree.Environment.Sandbox, SERVICE_ENV["BRAINTREE_MERCHANT_ID"], SERVICE_ENV["BRAINTREE_PUBLIC_KEY"],
        SERVICE_ENV["BRAINTREE_PRIVATE_KEY"]))
    out = []
    for i in range(n):
        sample = gateway.webhook_testing.sample_notification(KIND, f"{prefix}{i:05d}")
        notification = gateway.webhook_notification.parse(sample["bt_signature"], sample["bt_payload"])
        event = _SCHEMA.load(notification_to_dict(notification))
        out.append((hashlib.sha256(str(sample["bt_payload"]).encode()).hexdigest(), event))
    return out


def _seed(sim: _AttioProcess, prefix: str, n: int, delay_ms: float = 0.0) -> list[tuple[str, dict[str, Any]]]:
    """Fresh records for N transactions, the latency set; their events."""
    events = _payloads(prefix, n)
    sim.ask("seed", [f"braintree:{e['transaction']['id']}" for _, e in events])
    sim.ask("delay", delay_ms / 1000.0)
    return events


def _enqueue(connection: redis.Redis, events: list[tuple[str, dict[str, Any]]], settings: Settings) -> None:
    """Enqueue as intake does."""
    route = route_for("braintree", KIND)
    assert route is not None
    envelopes = [EventEnvelope("braintree", KIND, dedupe, route, event) for dedupe, event in events]
    enqueue_events(connection, make_queues(connection), envelopes, retry_schedule=settings.retry_schedule_seconds)


def _settings(sim: _AttioProcess) -> Settings:
    """The service's settings: Attio is the simulator, budgets out of the way, nothing else reachable."""
    env = dict(SERVICE_ENV)
    env.update(REDIS_URL=BENCH_REDIS_URL, ATTIO_API_URL=sim.url, ATTIO_API_KEY=sim.api_key,
               ATTIO_WRITES_PER_SECOND="100000", ATTIO_READS_PER_SECOND="100000",
               ZOHO_ACCOUNTS_URL="http://127.0.0.1:9", BRAINTREE_ENVIRONMENT="http://127.0.0.1:9",
               CATALOG_SYNC_INTERVAL_MINUTES="0", RETRY_SCHEDULE_SECONDS="2,5,10", LOG_LEVEL="INFO")
    return Settings.from_env(env)


def _mean_run(connection: redis.Redis) -> float:
    """Mean seconds a finished job ran (RQ's started_at → ended_at, inside the work horse)."""
    queue = make_queues(connection)["webhooks"]
    ids = queue.finished_job_registry.get_job_ids()
    spans = [(j.ended_at - j.started_at).total_seconds()
             for j in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer)
             if j is not None and j.started_at and j.ended_at]
    return sum(spans) / len(spans) if spans else float("nan")


def _done(connection: redis.Redis) -> tuple[int, int]:
    """(finished, failed) jobs of the webhooks queue."""
    queue = make_queues(connection)["webhooks"]
    return queue.finished_job_registry.count, queue.failed_job_registry.count


# -- part 1: throughput -----------------------------------------------------------------------------------------
def _throughput(sim: _AttioProcess, settings: Settings, connection: redis.Redis, *, workers: int, delay_ms: float,
                jobs: int, timeout: float, log_dir: Path) -> dict[str, Any]:
    """Jobs per second through ``workers`` real worker processes."""
    connection.flushdb()
    events = _seed(sim, f"tp{workers}d{int(delay_ms)}x", jobs, delay_ms)
    procs = [WorkerProcess(settings, log_dir, name=f"w{workers}-{int(delay_ms)}-{i}") for i in range(workers)]
    try:
        deadline = time.monotonic() + 60
        while Worker.count(connection=connection) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not register")
            time.sleep(0.05)
        started = time.monotonic()
        _enqueue(connection, events, settings)
        deadline = started + timeout
        while sum(_done(connection)) < jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        finished, failed = _done(connection)
    finally:
        for proc in procs:
            proc.stop()
    settled = sim.ask("settled")
    return {"workers": workers, "delay_ms": delay_ms, "jobs": jobs, "elapsed_s": elapsed,
            "mean_run_s": _mean_run(connection),
            "jobs_per_second": finished / elapsed, "finished": finished, "failed": failed, "settled": settled}


# -- part 2: overhead per job -----------------------------------------------------------------------------------
def _overhead(sim: _AttioProcess, settings: Settings, connection: redis.Redis, n: int) -> dict[str, Any]:
    """Per-job seconds of the handler, the entrypoint, SimpleWorker and Worker, in this process, at 0 ms."""
    runtime.use_settings(settings)
    out: dict[str, Any] = {"jobs": n}
    try:
        events = _seed(sim, "ohh", n)
        client = build_attio_client(settings, connection)
        payloads = [{"source": "braintree", "event_type": KIND, "event_id": d, "event": e} for d, e in events]
        started = time.perf_counter()
        for payload in payloads:
            handle_transaction_event(payload, attio=client)
        out["handler"] = (time.perf_counter() - started) / n
        out["handler_settled"] = sim.ask("settled")

        events = _seed(sim, "ohe", n)
        payloads = [{"source": "braintree", "event_type": KIND, "event_id": d, "event": e} for d, e in events]
        started = time.perf_counter()
        for payload in payloads:
            run_transaction_event(payload)
        out["entrypoint"] = (time.perf_counter() - started) / n
        out["entrypoint_settled"] = sim.ask("settled")

        for name, worker_class in (("simple_worker", SimpleWorker), ("worker", Worker)):
            connection.flushdb()
            events = _seed(sim, f"oh{name[0]}", n)
            _enqueue(connection, events, settings)
            worker = worker_class(list(make_queues(connection).values()), connection=connection,
                                  serializer=JSONSerializer, exception_handlers=[handle_job_exception])
            started = time.perf_counter()
            worker.work(burst=True, logging_level="WARNING")
            out[name] = (time.perf_counter() - started) / n
            out[f"{name}_settled"] = sim.ask("settled")
            out[f"{name}_failed"] = _done(connection)[1]
    finally:
        runtime.use_settings(None)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both parts; returns the figures."""
    delays = [float(d) for d in args.delays.split(",") if d.strip()]
    counts = [int(c) for c in args.workers.split(",") if c.strip()]
    sim = _AttioProcess()
    connection = make_redis(BENCH_REDIS_URL, socket_timeout=30.0)
    rounds = []
    try:
        settings = _settings(sim)
        with tempfile.TemporaryDirectory() as tmp:
            for delay in delays:
                for workers in counts:
                    rounds.append(_throughput(sim, settings, connection, workers=workers, delay_ms=delay,
                                              jobs=args.jobs, timeout=args.timeout, log_dir=Path(tmp)))
        overhead = _overhead(sim, settings, connection, args.overhead_jobs)
    finally:
        connection.flushdb()
        sim.stop()
    return {"rounds": rounds, "overhead": overhead}


def report(result: dict[str, Any]) -> str:
    """The printed tables."""
    rows: list[tuple[str, Any]] = [("", "  jobs/s   vs 1 worker   wall s   job runs ms   finished  failed  settled")]
    base: dict[float, float] = {}
    for r in result["rounds"]:
        base.setdefault(r["delay_ms"], r["jobs_per_second"] if r["workers"] == 1 else float("nan"))
        ratio = r["jobs_per_second"] / base[r["delay_ms"]]
        rows.append((f"{r['workers']} worker(s), {r['delay_ms']:g} ms latency",
                     f"{r['jobs_per_second']:8.1f} {ratio:12.2f} {r['elapsed_s']:8.2f} "
                     f"{1000 * r['mean_run_s']:13.1f} {r['finished']:10d} "
                     f"{r['failed']:7d} {r['settled']:8d}"))
    o = result["overhead"]
    handler = o["handler"]
    rows += [
        ("", ""),
        (f"per job, 0 ms latency, {o['jobs']} jobs", "    ms/job   minus handler   settled"),
        ("handler called directly", f"{1000 * handler:10.2f} {0:15.2f} {o['handler_settled']:9d}"),
        ("entrypoint (clients per job)", f"{1000 * o['entrypoint']:10.2f} {1000 * (o['entrypoint'] - handler):15.2f} "
                                         f"{o['entrypoint_settled']:9d}"),
        ("RQ SimpleWorker (no fork)", f"{1000 * o['simple_worker']:10.2f} "
                                      f"{1000 * (o['simple_worker'] - handler):15.2f} {o['simple_worker_settled']:9d}"),
        ("RQ Worker (fork per job)", f"{1000 * o['worker']:10.2f} {1000 * (o['worker'] - handler):15.2f} "
                                     f"{o['worker_settled']:9d}"),
        ("fork's own share", f"{1000 * (o['worker'] - o['simple_worker']):10.2f} ms/job (Worker − SimpleWorker)"),
    ]
    head = (f"bench.worker: lifecycle {KIND} mirror (3 Attio calls per job), Attio simulator in its own process; "
            f"{result['rounds'][0]['jobs'] if result['rounds'] else 0} jobs per throughput round")
    return head + "\n" + table(rows)


def main() -> None:
    """Run and print."""
    print(report(run(build_parser().parse_args())))


if __name__ == "__main__":
    main()
