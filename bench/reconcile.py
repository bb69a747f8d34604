"""``python -m bench.reconcile``: the invoices sweep over a large Zoho organisation where some webhooks were lost.

The three simulators run in this process, with the same limits as the service's budgets (Zoho enforces its
per-minute budget and 5 concurrent calls, so a call over budget comes back 429 and is counted). ``--invoices``
invoices exist in Zoho, spread over ``--customers`` customers known to all three systems (an Attio company and
subscription, a Braintree customer with a valid card); all are paid except ``--lost`` open ones whose
``invoice_created`` never reached the service. Redis: ``BENCH_REDIS_URL`` (flushed).

The sweep runs as its RQ job (as the schedule or ``POST /admin/reconcile`` starts it) in an in-process worker
serving only the ``catalog`` queue, then the collections it queued run in a worker serving ``webhooks``. Prints
the sweep's wall time, the provider calls it made per invoice looked at, its Zoho calls against the Zoho budget
over its run (a sliding minute: over T seconds the budget allows ceil(T / 60) minutes' worth), the time until
every lost invoice was collected, the lost invoices collected (must be all) and the
double charges found in the Braintree simulator (must be 0); then a second sweep, which must queue nothing.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Any

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from integration.clients.braintree import customer_id_for_company
from integration.config import Settings
from integration.queueing import enqueue_job, make_queue, make_queues, make_redis
from integration.routing import CATALOG_QUEUE, RECONCILE, WEBHOOK_QUEUE
from simulators.attio import AttioSimulator
from simulators.braintree import BraintreeSimulator
from simulators.zoho import ZohoSimulator
from workers import runtime
from workers.failures import handle_job_exception

from ._common import BENCH_REDIS_URL, SERVICE_ENV, table


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--invoices", type=int, default=5000, help="invoices in Zoho")
    parser.add_argument("--lost", type=int, default=50, help="open invoices whose invoice_created never came")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--zoho-requests-per-minute", type=int, default=300,
                        help="the service's Zoho budget, enforced by the simulator too")
    return parser


def _settings(sims: dict[str, Any], args: argparse.Namespace) -> Settings:
    return Settings(
        attio_api_url=sims["attio"].url, attio_api_key=sims["attio"].api_key,
        attio_webhook_secrets=(SERVICE_ENV["ATTIO_WEBHOOK_SECRET"],), zoho_accounts_url=sims["zoho"].url,
        zoho_client_id=SERVICE_ENV["ZOHO_CLIENT_ID"], zoho_client_secret=SERVICE_ENV["ZOHO_CLIENT_SECRET"],
        zoho_refresh_token=SERVICE_ENV["ZOHO_REFRESH_TOKEN"], zoho_organization_id=SERVICE_ENV["ZOHO_ORGANIZATION_ID"],
        zoho_webhook_secrets=(SERVICE_ENV["ZOHO_WEBHOOK_SECRET"],), braintree_environment=sims["braintree"].url,
        braintree_merchant_id=SERVICE_ENV["BRAINTREE_MERCHANT_ID"],
        braintree_public_key=SERVICE_ENV["BRAINTREE_PUBLIC_KEY"],
        braintree_private_key=SERVICE_ENV["BRAINTREE_PRIVATE_KEY"], dashboard_username="operator",
        dashboard_password="bench-pass", redis_url=BENCH_REDIS_URL, attio_writes_per_second=1000,
        attio_reads_per_second=1000, zoho_requests_per_minute=args.zoho_requests_per_minute,
        retry_schedule_seconds=(2, 5, 10), catalog_sync_interval_minutes=0, reconcile_interval_minutes=0,
        reconcile_grace_minutes=0, dunning_schedule_days=(), log_level="WARNING",
    )


def _seed(sims: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Customers in all three systems, ``--invoices`` invoices, all paid but ``--lost``; the lost ones' ids."""
    zoho, attio, braintree = sims["zoho"], sims["attio"], sims["braintree"]
    customers = []
    for i in range(args.customers):
        email = f"billing@customer{i}.example"
        zoho_customer = zoho.add_customer(f"Customer {i} Ltd", email)
        company = attio.add_record("companies", {"name": f"Customer {i} Ltd", "billing_email": email,
                                                 "zoho_customer_id": zoho_customer})
        bt_customer = customer_id_for_company(company)
        braintree.add_customer(bt_customer, email=email, card="valid")
        attio.set_values("companies", company, {"braintree_customer_id": bt_customer})
        sub = f"bench-sub-{i:05d}"
        attio.add_record("subscriptions", {"name": f"Customer {i} Basic", "status": "Active",
                                           "zoho_subscription_id": sub,
                                           "company": {"target_object": "companies", "target_record_id": company}})
        customers.append((zoho_customer, sub))
    lost = []
    for n in range(args.invoices):
        customer, sub = customers[n % len(customers)]
        status = "sent" if n % (args.invoices // max(1, args.lost)) == 0 and len(lost) < args.lost else "paid"
        invoice = zoho.raise_invoice(customer, 10.0 + (n % 90) + 0.5, subscription_id=sub, status=status)
        if status == "sent":
            lost.append(str(invoice["invoice_id"]))
    return lost


def _worker(connection: Any, queue: str) -> SimpleWorker:
    return SimpleWorker([make_queue(queue, connection)], connection=connection, serializer=JSONSerializer,
                        exception_handlers=[handle_job_exception])


def _drain(connection: Any, queue_name: str, timeout: float = 600.0) -> None:
    """Run the queue's jobs (and its retries as they fall due) until none is left."""
    queue = make_queues(connection)[queue_name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        registry = queue.scheduled_job_registry
        for job_id in registry.get_jobs_to_schedule(int(time.time()) + 1):
            job = queue.fetch_job(job_id)
            registry.remove(job_id)
            if job is not None:
                queue.enqueue_job(job)
        if queue.count == 0:
            if registry.count == 0:
                return
            time.sleep(0.2)
            continue
        _worker(connection, queue_name).work(burst=True)
    raise RuntimeError(f"{queue_name} not drained in {timeout:.0f} s")


def _sweep(connection: Any) -> tuple[dict[str, Any], float]:
    """One invoices sweep as its job; its result and wall time."""
    queue = make_queue(CATALOG_QUEUE, connection)
    started = time.perf_counter()
    job_id = enqueue_job(queue, RECONCILE.job, {"trigger": "admin", "sweep": "invoices"}, retry_schedule=(2, 5, 10))
    _drain(connection, CATALOG_QUEUE)
    elapsed = time.perf_counter() - started
    return queue.fetch_job(job_id).return_value() or {}, elapsed


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed, sweep, collect, sweep again; the figures."""
    sims = {"attio": AttioSimulator(writes_per_second=None, reads_per_second=None).start(),
            "zoho": ZohoSimulator(requests_per_minute=args.zoho_requests_per_minute, max_concurrent=5).start(),
            "braintree": BraintreeSimulator().start()}
    sims["attio"].setup_schema()
    try:
        settings = _settings(sims, args)
        runtime.use_settings(settings)
        connection = make_redis(BENCH_REDIS_URL)
        connection.flushdb()
        lost = _seed(sims, args)
        for sim in sims.values():
            sim.calls.clear()

        result, sweep_s = _sweep(connection)
        sweep_calls = {name: len(sim.calls) for name, sim in sims.items()}
        started = time.perf_counter()
        _drain(connection, WEBHOOK_QUEUE)
        collect_s = time.perf_counter() - started
        total_calls = {name: len(sim.calls) for name, sim in sims.items()}
        zoho, braintree = sims["zoho"], sims["braintree"]
        collected = sum(1 for i in lost if zoho.invoice(i)["status"] == "paid"
                        and len(zoho.payments_for_invoice(i)) == 1 and len(braintree.sales_for_order(i)) == 1)
        orders: dict[str, int] = {}
        for sale in braintree.transactions:
            if sale["type"] == "sale" and sale["status"] in ("authorized", "submitted_for_settlement", "settled"):
                orders[sale["order_id"]] = orders.get(sale["order_id"], 0) + 1
        double = sum(n - 1 for n in orders.values() if n > 1)
        for sim in sims.values():
            sim.calls.clear()
        again, again_s = _sweep(connection)
        connection.flushdb()
        return {
            "args": args, "result": result, "sweep_s": sweep_s, "sweep_calls": sweep_calls,
            "collect_s": collect_s, "total_calls": total_calls, "collected": collected, "lost": len(lost),
            "double": double, "rate_limited": zoho.rate_limited, "again": again, "again_s": again_s,
            "again_calls": {name: len(sim.calls) for name, sim in sims.items()},
        }
    finally:
        runtime.use_settings(None)
        for sim in sims.values():
            sim.stop()


def report(r: dict[str, Any]) -> str:
    """The figures as a table."""
    args, result, calls = r["args"], r["result"], r["sweep_calls"]
    looked = max(1, r["lost"])  # the open invoices Zoho's list gave (an interrupted run's retry counts only its part)
    # The budget is a sliding minute: over T seconds it allows at most ceil(T / 60) minutes' worth.
    budget_over_sweep = args.zoho_requests_per_minute * math.ceil(max(r["sweep_s"], 1.0) / 60)
    budget_over_run = args.zoho_requests_per_minute * math.ceil(max(r["sweep_s"] + r["collect_s"], 1.0) / 60)
    return table([
        ("invoices in Zoho / open / customers", f"{args.invoices} / {r['lost']} / {args.customers}"),
        ("sweep wall time", f"{r['sweep_s']:.2f} s (its last attempt: looked at {result.get('looked_at')}, "
                            f"enqueued {result.get('enqueued')}, skipped {result.get('skipped')})"),
        ("sweep calls per open invoice", ", ".join(f"{k} {v / looked:.2f}" for k, v in calls.items())),
        ("sweep Zoho calls vs budget", f"{calls['zoho']} calls; budget {args.zoho_requests_per_minute}/min: "
                                       f"{calls['zoho'] / budget_over_sweep:.0%} of the budget over the sweep"),
        ("run Zoho calls vs budget", f"{r['total_calls']['zoho']} calls (sweep + collections) in "
                                     f"{r['sweep_s'] + r['collect_s']:.1f} s: "
                                     f"{r['total_calls']['zoho'] / budget_over_run:.0%} of the budget over the run"),
        ("Zoho 429s", r["rate_limited"]),
        ("lost invoices collected", f"{r['collected']} of {r['lost']} in {r['collect_s']:.2f} s after the sweep"),
        ("double charges", r["double"]),
        ("second sweep", f"{r['again_s']:.2f} s, enqueued {r['again'].get('enqueued')}, calls "
                         + ", ".join(f"{k} {v}" for k, v in r["again_calls"].items())),
    ])


def main(argv: list[str] | None = None) -> int:
    """Run and print; exit 1 when a lost invoice was not collected or one was charged twice."""
    args = build_parser().parse_args(argv)
    logging.disable(logging.WARNING)
    figures = run(args)
    print(report(figures))
    return 0 if figures["collected"] == figures["lost"] and figures["double"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
