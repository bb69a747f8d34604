"""``python -m bench.worker``: job throughput of real workers, and what the queue costs per job (issue 9).

The workflow is the lifecycle mirror of Braintree ``transaction_settled`` (``workers.jobs.lifecycle``): each job
re-reads the transaction from Braintree (one ``find``), finds its Attio ``payments`` record and moves it from
Submitted to Settled (three Attio calls: two record queries and one assert). Jobs are enqueued exactly as intake
enqueues them (``enqueue_events``, payloads from SDK-signed, SDK-parsed, schema-validated notifications), each for
its own seeded sale (settled in the Braintree simulator) and record, so every job does the full work. The Attio
and Braintree simulators run in processes of their own (so neither the in-process measurements nor a forked work
horse share a GIL or threads with them); the latency is injected on every route of both
(``faults.add("*", "*", delay=…, times=None)``), so a job waits for four provider calls. Redis:
``BENCH_REDIS_URL`` (flushed).

1. Throughput: ``--jobs`` jobs through 1 and through 2 real ``python -m workers`` processes (forking, as
   deployed), with 0 ms and 50 ms of provider latency; jobs/s from the enqueue to the last job finished, and
   the mean time a job ran inside its work horse (RQ's started → ended): ``workers / jobs/s`` minus that is what
   each job spent outside its own code (dequeue, fork, registries). ``python -m workers`` imports a job's module
   only when it runs it, so every work horse imports it afresh (the Braintree SDK and ~230 modules); at the
   latencies in ``--preimported`` the rounds are repeated with workers whose parent imports every job module
   before it forks, which is what a pre-import in ``workers/__main__.py`` would give.
2. Queue overhead per job, at 0 ms, in this process: the handler called directly (one client, reused), the RQ
   entrypoint called directly (builds its clients per job, as a job does), then the same jobs through RQ's
   ``SimpleWorker`` (no fork) and ``Worker`` (a fork per job), burst mode; the four are interleaved for
   ``--overhead-rounds`` rounds and each one's best round counts (the machine is shared and noisy); prints each
   per-job time and its difference from the handler's own time. Log level is WARNING here, INFO in the real
   workers of part 1; the job modules are already imported in this process, so this fork does not pay the import
   that part 1's does.

No timing is asserted: every figure is compared with a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing as mp
import os
import subprocess
import sys
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
from integration.clients.braintree import build_braintree_client
from integration.config import Settings
from integration.queueing import EventEnvelope, enqueue_events, make_queues, make_redis
from integration.routing import route_for
from integration.schemas import BraintreeEventSchema, notification_to_dict
from tests.processes import ROOT, WorkerProcess, settings_env
from workers import runtime
from workers.failures import handle_job_exception
from workers.jobs.lifecycle import handle_transaction_event, run_transaction_event

from ._common import BENCH_REDIS_URL, SERVICE_ENV, table

KIND = "transaction_settled"
_SCHEMA = BraintreeEventSchema()


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50, help="jobs per throughput round")
    parser.add_argument("--overhead-jobs", type=int, default=100, help="jobs per overhead measurement")
    parser.add_argument("--overhead-rounds", type=int, default=3, help="interleaved rounds; the best one counts")
    parser.add_argument("--delays", default="0,50", help="provider latencies to run, in ms, comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker process counts to run, comma-separated")
    parser.add_argument("--preimported", default="0",
                        help="latencies (ms) at which to rerun with job modules imported before the fork ('' = none)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one round may take")
    return parser


# -- the simulators' processes ----------------------------------------------------------------------------------
def _serve_attio(conn: Connection) -> None:
    """Run the Attio simulator and obey (command, argument) messages until ``stop``."""
    from simulators.attio import AttioSimulator

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


BENCH_CUSTOMER = "bench-customer"


def _serve_braintree(conn: Connection) -> None:
    """Run the Braintree simulator (the service's merchant and keys) and obey (command, argument) messages."""
    from simulators.braintree import BraintreeSimulator

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sim = BraintreeSimulator(SERVICE_ENV["BRAINTREE_MERCHANT_ID"], SERVICE_ENV["BRAINTREE_PUBLIC_KEY"],
                             SERVICE_ENV["BRAINTREE_PRIVATE_KEY"]).start()
    conn.send((sim.url, None))
    while True:
        command, arg = conn.recv()
        if command == "seed":  # fresh state with N settled sales; their ids; no latency
            sim.reset()
            sim.add_customer(BENCH_CUSTOMER)
            conn.send([sim.add_sale(BENCH_CUSTOMER, 49.0, order_id=f"bench-{i}", settle=True)["id"]
                       for i in range(arg)])
        elif command == "delay":
            sim.faults.clear()
            if arg:
                sim.faults.add("*", "*", delay=arg, times=None)
            conn.send(None)
        elif command == "stop":
            sim.stop()
            conn.send(None)
            return


def _status(record: dict[str, Any]) -> str | None:
    from integration.clients.attio_values import value

    found = value(record, "status")
    return str(found) if found is not None else None


class _SimProcess:
    """A simulator in a spawned process (``serve``: ``_serve_attio`` or ``_serve_braintree``), driven by a pipe."""

    def __init__(self, serve: Any = _serve_attio) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve, args=(child,), daemon=True)
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


class _PreimportingWorker(WorkerProcess):
    """``python -m workers`` whose parent imports every job module first, so each work horse inherits them."""

    COMMAND = ("import runpy, workers.jobs.activation, workers.jobs.catalog, workers.jobs.collection, "
               "workers.jobs.lifecycle; runpy.run_module('workers', run_name='__main__', alter_sys=True)")

    def __init__(self, settings: Settings, log_dir: Path, name: str) -> None:
        """As ``WorkerProcess`` (same environment and log file), with the pre-importing command."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTIO_", "ZOHO_", "BRAINTREE_"))}
        env.update(settings_env(settings))
        env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-c", self.COMMAND], cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)


# -- jobs -------------------------------------------------------------------------------------------------------
def _payloads(txn_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(dedupe id, validated event) of a settled notification per transaction, signed and parsed by the SDK."""
    gateway = braintree.BraintreeGateway(braintree.Configuration(
        braintree.Environment.Sandbox, SERVICE_ENV["BRAINTREE_MERCHANT_ID"], SERVICE_ENV["BRAINTREE_PUBLIC_KEY"],
        SERVICE_ENV["BRAINTREE_PRIVATE_KEY"]))
    out = []
    for txn_id in txn_ids:
        sample = gateway.webhook_testing.sample_notification(KIND, txn_id)
        notification = gateway.webhook_notification.parse(sample["bt_signature"], sample["bt_payload"])
        event = _SCHEMA.load(notification_to_dict(notification))
        out.append((hashlib.sha256(str(sample["bt_payload"]).encode()).hexdigest(), event))
    return out


class _Sims:
    """The two simulators the jobs call."""

    def __init__(self) -> None:
        self.attio, self.braintree = _SimProcess(_serve_attio), _SimProcess(_serve_braintree)

    def ask(self, command: str, arg: Any = None) -> Any:
        """``settled``: the Attio payments now Settled."""
        return self.attio.ask(command, arg)

    def stop(self) -> None:
        """Stop both."""
        self.attio.stop()
        self.braintree.stop()


def _seed(sims: _Sims, n: int, delay_ms: float = 0.0) -> list[tuple[str, dict[str, Any]]]:
    """N fresh settled sales in Braintree, a Submitted Attio payment for each, the latency set; their events."""
    events = _payloads(sims.braintree.ask("seed", n))
    sims.attio.ask("seed", [f"braintree:{e['transaction']['id']}" for _, e in events])
    for sim in (sims.attio, sims.braintree):
        sim.ask("delay", delay_ms / 1000.0)
    return events


def _enqueue(connection: redis.Redis, events: list[tuple[str, dict[str, Any]]], settings: Settings) -> None:
    """Enqueue as intake does."""
    route = route_for("braintree", KIND)
    assert route is not None
    envelopes = [EventEnvelope("braintree", KIND, dedupe, route, event) for dedupe, event in events]
    enqueue_events(connection, make_queues(connection), envelopes, retry_schedule=settings.retry_schedule_seconds)


def _settings(sims: _Sims) -> Settings:
    """The service's settings: Attio and Braintree are the simulators, budgets out of the way, Zoho unreachable
    (a settled sale reopens no invoice)."""
    env = dict(SERVICE_ENV)
    env.update(REDIS_URL=BENCH_REDIS_URL, ATTIO_API_URL=sims.attio.url, ATTIO_API_KEY=sims.attio.api_key,
               ATTIO_WRITES_PER_SECOND="100000", ATTIO_READS_PER_SECOND="100000",
               ZOHO_ACCOUNTS_URL="http://127.0.0.1:9", BRAINTREE_ENVIRONMENT=sims.braintree.url,
               CATALOG_SYNC_INTERVAL_MINUTES="0", RECONCILE_INTERVAL_MINUTES="0", RETRY_SCHEDULE_SECONDS="2,5,10",
               LOG_LEVEL="INFO")
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
def _throughput(sim: _Sims, settings: Settings, connection: redis.Redis, *, workers: int, delay_ms: float,
                jobs: int, timeout: float, log_dir: Path, preimport: bool = False) -> dict[str, Any]:
    """Jobs per second through ``workers`` real worker processes."""
    connection.flushdb()
    tag = f"{workers}d{int(delay_ms)}{'p' if preimport else ''}"
    events = _seed(sim, jobs, delay_ms)
    kind = _PreimportingWorker if preimport else WorkerProcess
    procs = [kind(settings, log_dir, name=f"w{tag}-{i}") for i in range(workers)]
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
    return {"workers": workers, "delay_ms": delay_ms, "preimport": preimport, "jobs": jobs, "elapsed_s": elapsed,
            "mean_run_s": _mean_run(connection),
            "jobs_per_second": finished / elapsed, "finished": finished, "failed": failed, "settled": settled}


# -- part 2: overhead per job -----------------------------------------------------------------------------------
MODES = ("handler", "entrypoint", "simple_worker", "worker")


def _one_mode(mode: str, events: list[tuple[str, dict[str, Any]]], settings: Settings,
              connection: redis.Redis) -> float:
    """Seconds per job of one way of running these jobs."""
    n = len(events)
    payloads = [{"source": "braintree", "event_type": KIND, "event_id": d, "event": e} for d, e in events]
    if mode == "handler":
        client, gateway = build_attio_client(settings, connection), build_braintree_client(settings, connection)
        started = time.perf_counter()
        for payload in payloads:
            handle_transaction_event(payload, attio=client, braintree=gateway)
        return (time.perf_counter() - started) / n
    if mode == "entrypoint":
        started = time.perf_counter()
        for payload in payloads:
            run_transaction_event(payload)
        return (time.perf_counter() - started) / n
    connection.flushdb()
    _enqueue(connection, events, settings)
    worker_class = SimpleWorker if mode == "simple_worker" else Worker
    worker = worker_class(list(make_queues(connection).values()), connection=connection,
                          serializer=JSONSerializer, exception_handlers=[handle_job_exception])
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    return (time.perf_counter() - started) / n


def _overhead(sim: _Sims, settings: Settings, connection: redis.Redis, n: int, rounds: int) -> dict[str, Any]:
    """Best per-job seconds of each mode over interleaved rounds, in this process, at 0 ms; and the jobs' effect."""
    runtime.use_settings(settings)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    settled = dict.fromkeys(MODES, 0)
    try:
        for _ in range(rounds):
            for mode in MODES:
                events = _seed(sim, n)
                times[mode].append(_one_mode(mode, events, settings, connection))
                settled[mode] += sim.ask("settled")
    finally:
        runtime.use_settings(None)
    return {"jobs": n, "rounds": rounds, "settled": settled, **{mode: min(times[mode]) for mode in MODES}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both parts; returns the figures."""
    delays = [float(d) for d in args.delays.split(",") if d.strip()]
    counts = [int(c) for c in args.workers.split(",") if c.strip()]
    preimported = [float(d) for d in args.preimported.split(",") if d.strip()]
    sim = _Sims()
    connection = make_redis(BENCH_REDIS_URL, socket_timeout=30.0)
    rounds = []
    try:
        settings = _settings(sim)
        with tempfile.TemporaryDirectory() as tmp:
            # each pre-importing round right after its plain twin, so drifting machine load hits both alike
            plan = [(d, w, p) for d in delays for w in counts for p in (False, True) if not p or d in preimported]
            for delay, workers, preimport in plan:
                rounds.append(_throughput(sim, settings, connection, workers=workers, delay_ms=delay, jobs=args.jobs,
                                          timeout=args.timeout, log_dir=Path(tmp), preimport=preimport))
        overhead = _overhead(sim, settings, connection, args.overhead_jobs, args.overhead_rounds)
    finally:
        connection.flushdb()
        sim.stop()
    return {"rounds": rounds, "overhead": overhead}


def report(result: dict[str, Any]) -> str:
    """The printed tables."""
    rows: list[tuple[str, Any]] = [("", "  jobs/s   vs 1 worker   wall s   job runs ms   finished  failed  settled")]
    base = {r["delay_ms"]: r["jobs_per_second"] for r in result["rounds"] if r["workers"] == 1 and not r["preimport"]}
    for r in result["rounds"]:
        ratio = r["jobs_per_second"] / base.get(r["delay_ms"], float("nan"))
        label = f"{r['workers']} worker(s), {r['delay_ms']:g} ms latency"
        rows.append((label + (", job modules pre-imported" if r["preimport"] else ""),
                     f"{r['jobs_per_second']:8.1f} {ratio:12.2f} {r['elapsed_s']:8.2f} "
                     f"{1000 * r['mean_run_s']:13.1f} {r['finished']:10d} "
                     f"{r['failed']:7d} {r['settled']:8d}"))
    o = result["overhead"]
    handler, settled = o["handler"], o["settled"]
    heading = f"per job, 0 ms latency, best of {o['rounds']} x {o['jobs']} jobs"
    rows.append((heading, "    ms/job   minus handler   settled"))
    for mode, label in (("handler", "handler called directly"), ("entrypoint", "entrypoint (clients per job)"),
                        ("simple_worker", "RQ SimpleWorker (no fork)"), ("worker", "RQ Worker (fork per job)")):
        rows.append((label, f"{1000 * o[mode]:10.2f} {1000 * (o[mode] - handler):15.2f} {settled[mode]:9d}"))
    rows.append(("fork's own share", f"{1000 * (o['worker'] - o['simple_worker']):10.2f} ms/job "
                                     "(Worker − SimpleWorker)"))
    head = (f"bench.worker: lifecycle {KIND} mirror (1 Braintree find + 3 Attio calls per job), each simulator in "
            "its own process; "
            f"{result['rounds'][0]['jobs'] if result['rounds'] else 0} jobs per throughput round")
    return head + "\n" + table(rows)


def main() -> None:
    """Run and print."""
    print(report(run(build_parser().parse_args())))


if __name__ == "__main__":
    main()
