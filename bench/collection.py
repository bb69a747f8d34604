"""``python -m bench.collection``: N open invoices collected end to end through web and real workers (issue 6).

The Zoho, Braintree and Attio simulators run in this process. ``--invoices`` customers are seeded in all three
(an Attio company and subscription, a Braintree customer with a valid card, a Zoho customer), each with one open
renewal invoice raised in the Zoho simulator. Then every invoice's signed ``invoice_created`` webhook is posted at
once (a thread pool of ``--senders``) to the real ``web`` (gunicorn, the Procfile's command) with ``--workers``
real ``python -m workers`` processes serving the queue. Each collection is the whole workflow: Zoho invoice read,
Attio look-ups, Braintree search and sale, Zoho payment, Attio payment and subscription writes.

Budgets (``ATTIO_WRITES_PER_SECOND``, ``ATTIO_READS_PER_SECOND``, ``ZOHO_REQUESTS_PER_MINUTE``) are high unless
flags say otherwise; the simulators enforce the same limits (Zoho also its 5 concurrent calls), so a call sent
over budget comes back 429 and is counted. Redis: ``BENCH_REDIS_URL`` (flushed).

Prints the time from the first webhook sent to the last Zoho payment recorded (the simulator's state, polled
every 10 ms), invoices per second, p50/p99 per invoice (its webhook sent → its Zoho payment recorded), the time
until every job finished (Attio written), job outcomes and retries, the mean time a job ran and the ratio of the
wall time to the jobs' own time measured in the same run (invoices × mean run ÷ workers: the baseline; the excess
is intake, dequeue and fork), calls per invoice, 429s, and the payments audit over the three simulators
(``audit_payments``: target 0 violations).

``--gateway`` picks Braintree's behaviour: ``kind`` (request keys allowed, no duplicate check, search instant) or
``realistic`` (keys refused with 915231 and the 30 s duplicate check on, a search index 30 s behind, a quarter of the
invoices delivered twice under new event ids, and one sale answer in ten and one Zoho payment answer in twenty lost
after the provider committed); ``both`` (the default) runs one then the other and prints them side by side, with
double charges and unbooked sales counted in the simulators (both must be 0) and invoices per second against the
ceiling the Attio write budget sets (writes per invoice measured).
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import requests
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from integration.audit import audit_payments
from integration.clients.attio import build_attio_client
from integration.clients.braintree import build_braintree_client, customer_id_for_company
from integration.clients.zoho import build_zoho_client
from integration.config import Settings
from integration.queueing import make_redis
from integration.samples import zoho_delivery
from simulators.attio import AttioSimulator
from simulators.braintree import BraintreeSimulator
from simulators.zoho import ZohoSimulator
from tests.processes import WorkerProcess, queues_idle

from ._common import BENCH_REDIS_URL, SERVICE_ENV, env_with, free_port, procfile_command, start, stop, table, wait_http
from .worker import _PreimportingWorker

POLL = 0.01  # seconds between looks at the Zoho simulator's payments
RETRY_SCHEDULE = "2,5,10,20,30"  # short, so a retried job shows up in the figures instead of stalling the run
REALISTIC_LAG = 30.0  # seconds Braintree's search index stays behind a new sale in the realistic gateway
REALISTIC_BOUND = 45  # SALE_SEARCH_LAG_SECONDS for that run: above the lag, as production's 600 s is


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--invoices", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="python -m workers processes")
    parser.add_argument("--senders", type=int, default=32, help="threads posting the webhooks")
    parser.add_argument("--attio-writes-per-second", type=int, default=1000)
    parser.add_argument("--attio-reads-per-second", type=int, default=1000)
    parser.add_argument("--zoho-requests-per-minute", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds to wait for the last payment")
    parser.add_argument("--gateway", choices=("kind", "realistic", "both"), default="both",
                        help="Braintree as a kind simulator, as it really behaves, or one run of each")
    parser.add_argument("--preimport", action="store_true",
                        help="workers import the job modules before forking (see bench.worker)")
    return parser


class _Sims:
    """The three simulators, limits equal to the service's budgets."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.attio = AttioSimulator(writes_per_second=args.attio_writes_per_second,
                                    reads_per_second=args.attio_reads_per_second).start()
        self.zoho = ZohoSimulator(requests_per_minute=args.zoho_requests_per_minute, max_concurrent=5).start()
        self.braintree = BraintreeSimulator().start()
        self.attio.setup_schema()
        self.realistic = args.gateway == "realistic"
        if self.realistic:
            self.braintree.configure_merchant("no-keys", search_lag_seconds=REALISTIC_LAG)

    def unlimit(self) -> None:
        """Lift the simulators' limits (for the audit, which is not what is measured)."""
        self.attio.writes_per_second = self.attio.reads_per_second = None
        self.zoho.requests_per_minute = self.zoho.max_concurrent = None

    def stop(self) -> None:
        """Stop all three."""
        for sim in (self.attio, self.zoho, self.braintree):
            sim.stop()


def _service_env(sims: _Sims, args: argparse.Namespace) -> dict[str, str]:
    """The variables the web and worker processes get (on top of ``SERVICE_ENV``)."""
    return {
        "REDIS_URL": BENCH_REDIS_URL,
        "ATTIO_API_URL": sims.attio.url,
        "ATTIO_API_KEY": sims.attio.api_key,
        "ZOHO_ACCOUNTS_URL": sims.zoho.url,
        "BRAINTREE_ENVIRONMENT": sims.braintree.url,
        "ATTIO_WRITES_PER_SECOND": str(args.attio_writes_per_second),
        "ATTIO_READS_PER_SECOND": str(args.attio_reads_per_second),
        "ZOHO_REQUESTS_PER_MINUTE": str(args.zoho_requests_per_minute),
        "RETRY_SCHEDULE_SECONDS": RETRY_SCHEDULE,
        "SALE_SEARCH_LAG_SECONDS": str(REALISTIC_BOUND),
        "CATALOG_SYNC_INTERVAL_MINUTES": "0",
        "RECONCILE_INTERVAL_MINUTES": "0",
        "LOG_LEVEL": "INFO",
        "ZOHO_REQUESTS_PER_DAY": "1000000",  # this bench measures speed: the daily quota is bench.billing_run's
        **getattr(args, "service_env", {}),
    }


def _seed(sims: _Sims, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """N customers known to all three systems, each with an open renewal invoice; their signed webhooks."""
    deliveries = []
    for i in range(n):
        email = f"billing@customer{i}.example"
        zoho_customer = sims.zoho.add_customer(f"Customer {i} Ltd", email)
        company = sims.attio.add_record("companies", {"name": f"Customer {i} Ltd", "billing_email": email,
                                                      "zoho_customer_id": zoho_customer})
        bt_customer = customer_id_for_company(company)
        sims.braintree.add_customer(bt_customer, email=email, card="valid")
        sims.attio.set_values("companies", company, {"braintree_customer_id": bt_customer})
        zoho_sub = f"bench-sub-{i:05d}"
        sims.attio.add_record("subscriptions", {
            "name": f"Customer {i} Basic", "status": "Active", "zoho_subscription_id": zoho_sub,
            "company": {"target_object": "companies", "target_record_id": company},
        })
        invoice = sims.zoho.raise_invoice(zoho_customer, 10.0 + (i % 90) + 0.5, subscription_id=zoho_sub)
        event_id = str(sims.zoho.events[-1]["event_id"])
        req = zoho_delivery("invoice_created", {"invoice": invoice}, secret=SERVICE_ENV["ZOHO_WEBHOOK_SECRET"],
                            event_id=event_id)
        deliveries.append((str(invoice["invoice_id"]), req.body, req.headers))
    if sims.realistic:
        # Zoho sends invoice_created again under a new event id (a quarter of the invoices), and answers get lost
        # after the provider committed: one sale in ten, one Zoho payment in twenty.
        for i in range(0, n, 4):
            invoice_id = deliveries[i][0]
            again = zoho_delivery("invoice_created", {"invoice": {"invoice_id": invoice_id}},
                                  secret=SERVICE_ENV["ZOHO_WEBHOOK_SECRET"], event_id=f"again-{invoice_id}")
            deliveries.append((invoice_id, again.body, again.headers))
        sims.braintree.faults.add("POST", "/merchants/*/transactions", after=503, times=max(1, n // 10))
        sims.zoho.faults.add("POST", "/billing/v1/payments", after=503, times=max(1, n // 20))
    return deliveries


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _wait_workers(connection: redis.Redis, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` RQ workers have registered."""
    deadline = time.monotonic() + timeout
    while Worker.count(connection=connection) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not register")
        time.sleep(0.1)


def _job_figures(connection: redis.Redis, job_ids: list[str], retries: int) -> dict[str, Any]:
    """Outcomes and statuses of the collection jobs, and how many were retried."""
    outcomes: dict[str, int] = {}
    retried = 0
    durations: list[float] = []
    for job in Job.fetch_many(job_ids, connection=connection, serializer=JSONSerializer):
        if job is None:
            outcomes["missing"] = outcomes.get("missing", 0) + 1
            continue
        status = job.get_status()
        name = str(getattr(status, "value", status))
        if (job.retries_left or 0) < retries:
            retried += 1
        result = job.return_value() if name == "finished" else None
        outcome = str(result.get("outcome")) if isinstance(result, dict) else name
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if job.started_at and job.ended_at:
            durations.append((job.ended_at - job.started_at).total_seconds())
    return {"outcomes": outcomes, "retried": retried,
            "mean_run_s": sum(durations) / len(durations) if durations else math.nan}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed, start web and workers, post every webhook at once, wait for the payments, audit; the figures."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sims = _Sims(args)
    connection = make_redis(BENCH_REDIS_URL)
    connection.flushdb()
    try:
        return _run(sims, connection, args)
    finally:
        sims.stop()
        connection.flushdb()


def _run(sims: _Sims, connection: redis.Redis, args: argparse.Namespace) -> dict[str, Any]:
    """The body of ``run``: the simulators and Redis are the caller's to clean up."""
    since = datetime.now(UTC) - timedelta(minutes=1)
    deliveries = _seed(sims, args.invoices)
    env = _service_env(sims, args)
    settings = Settings.from_env({**SERVICE_ENV, **env})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workers: list[WorkerProcess] = []
    with tempfile.TemporaryDirectory() as tmp:
        web = start(procfile_command("web"), env_with(PORT=str(port), **env), log=Path(tmp) / "web.log")
        try:
            wait_http(f"{url}/healthz")
            kind = _PreimportingWorker if args.preimport else WorkerProcess
            workers = [kind(settings, Path(tmp), name=f"worker-{i}") for i in range(args.workers)]
            _wait_workers(connection, args.workers)
            result = _measure(sims, url, deliveries, args)
            idle_deadline = time.monotonic() + args.timeout
            while not queues_idle(connection) and time.monotonic() < idle_deadline:
                time.sleep(0.05)
            result["all_jobs_done_s"] = time.monotonic() - result.pop("_t0")
            result["jobs"] = _job_figures(connection, result.pop("_job_ids"), len(RETRY_SCHEDULE.split(",")))
        finally:
            for worker in workers:
                worker.stop()
            stop(web)
    n = args.invoices
    result["wall_vs_jobs"] = result["first_to_last_payment_s"] / (n * result["jobs"]["mean_run_s"] / args.workers)
    result["calls_per_invoice"] = {name: len(sim.calls) / n for name, sim in
                                   (("zoho", sims.zoho), ("braintree", sims.braintree), ("attio", sims.attio))}
    result["attio_429"], result["zoho_429"] = sims.attio.rate_limited, sims.zoho.rate_limited
    result.update(_money_figures(sims, n, args))
    result["zoho_max_in_flight"], result["zoho_tokens"] = sims.zoho.max_in_flight_seen, sims.zoho.tokens_minted
    sims.unlimit()
    violations, checked = audit_payments(
        braintree=build_braintree_client(settings, connection), zoho=build_zoho_client(settings, connection),
        attio=build_attio_client(settings, connection), since=since,
    )
    result.update(
        invoices=n, workers=args.workers, preimport=args.preimport, senders=args.senders, audit_checked=checked,
        gateway=args.gateway,
        audit_violations=len(violations), audit_lines=[v.line() for v in violations[:5]],
        budgets={"ATTIO_WRITES_PER_SECOND": args.attio_writes_per_second,
                 "ATTIO_READS_PER_SECOND": args.attio_reads_per_second,
                 "ZOHO_REQUESTS_PER_MINUTE": args.zoho_requests_per_minute, "Zoho concurrent calls": 5},
    )
    return result


def _money_figures(sims: _Sims, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Double charges and unbooked sales counted in the simulators, and the Attio-write ceiling."""
    sales: dict[str, list[str]] = {}
    for txn in sims.braintree.transactions:
        if txn["type"] == "sale" and txn["status"] in ("submitted_for_settlement", "settled", "settling"):
            sales.setdefault(str(txn["order_id"]), []).append(txn["id"])
    booked = {p["reference_number"] for p in sims.zoho.payments}
    writes = [c for c in sims.attio.calls if c.method in ("PUT", "PATCH", "POST", "DELETE")
              and not c.path.endswith("/query")]
    writes_per_invoice = len(writes) / n
    ceiling = args.attio_writes_per_second / writes_per_invoice if writes_per_invoice else math.nan
    return {
        "double_charges": sum(1 for ids in sales.values() if len(ids) > 1),
        "unbooked_sales": sum(1 for ids in sales.values() for t in ids if t not in booked),
        "attio_writes_per_invoice": writes_per_invoice,
        "attio_write_ceiling": ceiling,
    }


def _measure(sims: _Sims, url: str, deliveries: list[tuple[str, bytes, dict[str, str]]],
             args: argparse.Namespace) -> dict[str, Any]:
    """Post every webhook at once and poll the Zoho simulator until every invoice has its payment."""
    sent: dict[str, float] = {}
    answers: dict[int, requests.Response] = {}
    session_pool = [requests.Session() for _ in range(args.senders)]

    def post(index: int, invoice_id: str, body: bytes, headers: dict[str, str]) -> None:
        session = session_pool[index % len(session_pool)]
        sent.setdefault(invoice_id, time.monotonic())  # a repeated delivery counts from the first
        answers[index] = session.post(f"{url}/webhooks/zoho", data=body, headers=headers, timeout=30)

    recorded: dict[str, float] = {}
    seen = len(sims.zoho.payments)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.senders) as pool:
        futures = [pool.submit(post, i, *d) for i, d in enumerate(deliveries)]
        deadline = t0 + args.timeout
        while len(recorded) < len({d[0] for d in deliveries}) and time.monotonic() < deadline:
            payments = sims.zoho.payments[seen:]
            now = time.monotonic()
            seen += len(payments)
            for payment in payments:
                for applied in payment["invoices"]:
                    recorded.setdefault(str(applied["invoice_id"]), now)
            time.sleep(POLL)
        for future in futures:
            future.result()
    sends_done = max(sent.values()) - t0
    latencies = [recorded[i] - sent[i] for i in recorded if i in sent]
    last = max(recorded.values()) if recorded else math.nan
    first = min(sent.values())
    job_ids = [j for r in answers.values() if r.status_code == 202 for j in r.json().get("jobs", [])]
    return {
        "_t0": first, "_job_ids": job_ids,
        "accepted": sum(1 for r in answers.values() if r.status_code == 202),
        "not_accepted": sum(1 for r in answers.values() if r.status_code != 202),
        "sends_done_s": sends_done,
        "recorded": len(recorded),
        "first_to_last_payment_s": last - first,
        "invoices_per_second": len(recorded) / (last - first) if recorded else 0.0,
        "p50_s": _percentile(latencies, 50), "p99_s": _percentile(latencies, 99), "max_s": max(latencies or [0]),
    }


def report(result: dict[str, Any]) -> str:
    """The printed table."""
    jobs = result["jobs"]
    calls = result["calls_per_invoice"]
    rows: list[tuple[str, Any]] = [
        ("budgets (client = simulator)", ", ".join(f"{k} {v}" for k, v in result["budgets"].items())),
        ("webhooks accepted (202)", f"{result['accepted']} of {result['invoices']} "
                                    f"({result['not_accepted']} other answers), all sent after "
                                    f"{result['sends_done_s']:.2f} s"),
        ("Zoho payments recorded", f"{result['recorded']} of {result['invoices']}"),
        ("first webhook → last payment", f"{result['first_to_last_payment_s']:.2f} s"),
        ("invoices per second", f"{result['invoices_per_second']:.1f}"),
        ("per invoice (sent → paid) p50", f"{1000 * result['p50_s']:.0f} ms"),
        ("per invoice (sent → paid) p99", f"{1000 * result['p99_s']:.0f} ms (max {1000 * result['max_s']:.0f} ms)"),
        ("first webhook → all jobs done", f"{result['all_jobs_done_s']:.2f} s (Attio written too)"),
        ("job outcomes", ", ".join(f"{k} {v}" for k, v in sorted(jobs["outcomes"].items()))),
        ("jobs retried", jobs["retried"]),
        ("mean job run time", f"{1000 * jobs['mean_run_s']:.0f} ms (RQ started → ended, in the work horse)"),
        ("wall / jobs' own time", f"{result['wall_vs_jobs']:.2f} (wall ÷ (invoices × mean run ÷ workers); "
                                  "1.0 = the workers never idle between jobs)"),
        ("calls per invoice", ", ".join(f"{k} {v:.1f}" for k, v in calls.items())),
        ("429 answers", f"Attio {result['attio_429']}, Zoho {result['zoho_429']}"),
        ("Zoho", f"max {result['zoho_max_in_flight']} calls in flight, {result['zoho_tokens']} token(s) minted"),
        ("audit", f"{result['audit_checked']} successful sale(s) checked, {result['audit_violations']} violation(s)"
                  " (target 0)"),
        ("double charges / unbooked sales", f"{result['double_charges']} / {result['unbooked_sales']} (target 0 / 0)"),
        ("Attio writes per invoice", f"{result['attio_writes_per_invoice']:.2f}: ceiling "
                                     f"{result['attio_write_ceiling']:.0f} invoices/s at "
                                     f"{result['budgets']['ATTIO_WRITES_PER_SECOND']} writes/s; measured "
                                     f"{result['invoices_per_second'] / result['attio_write_ceiling']:.2f} of it"),
    ]
    rows += [("  violation", line) for line in result["audit_lines"]]
    head = (f"bench.collection ({result['gateway']} gateway): {result['invoices']} invoices, webhooks posted by "
            f"{result['senders']} threads to "
            f"web (Procfile gunicorn), {result['workers']} worker processes"
            f"{' (job modules pre-imported)' if result['preimport'] else ''}, simulators in-process")
    return head + "\n" + table(rows)


def main() -> None:
    """Run and print (both gateways: one after the other, then side by side)."""
    args = build_parser().parse_args()
    kinds = ("kind", "realistic") if args.gateway == "both" else (args.gateway,)
    results = []
    for kind in kinds:
        results.append(run(argparse.Namespace(**{**vars(args), "gateway": kind})))
        print(report(results[-1]), flush=True)
    if len(results) == 2:
        keys = [("invoices per second", "invoices_per_second", "{:.1f}"), ("p50 s", "p50_s", "{:.2f}"),
                ("p99 s", "p99_s", "{:.2f}"), ("double charges", "double_charges", "{}"),
                ("unbooked sales", "unbooked_sales", "{}"), ("audit violations", "audit_violations", "{}"),
                ("Braintree calls per invoice", None, "{:.2f}")]
        rows = []
        for label, key, fmt in keys:
            values = [r["calls_per_invoice"]["braintree"] if key is None else r[key] for r in results]
            rows.append((label, "   ".join(fmt.format(v) for v in values)))
        print("\nside by side (kind   realistic)\n" + table(rows))


if __name__ == "__main__":
    main()
