"""``python -m bench.billing_run``: a month-start billing run inside Zoho's quotas (issue 20).

Zoho holds ``--invoices`` open invoices raised at once (default 1,000; ``--invoices 5000`` for the full month start)
and their signed ``invoice_created`` deliveries are posted at once to the real ``web``, served by ``--workers`` (2)
real worker processes (``bench.collection``'s harness, Braintree as the kind gateway). The budgets are the
defaults, scaled in time so the run takes minutes instead of hours: Zoho's 30 calls/min becomes
``30 × --scale`` per minute (the same budget with a minute ``--scale`` times shorter), Attio keeps its 25 writes/s
(real time). Zoho's daily quota is not enforced during the run (a day cannot pass in it): the days a run needs at
each plan's daily limit are computed from the calls per invoice measured, less the share the catalog sync takes
each day, itself measured first (``bench.catalog.daily_calls``: a 1,200-item catalogue with 10 changes a day)
BEFORE (a full reconcile every 15 minutes) and AFTER (events, and a full reconcile daily).

Prints, from the service's own counters (``integration.clients.quota``: calls per operation by provider) checked
against the simulators' logs: Zoho, Attio and Braintree calls per collected invoice; the wall time against the
floor set by the binding budget (the largest of Zoho's calls ÷ its scaled rate, Attio's writes ÷ 25/s: ratio, goal
≤ 1.15); days needed at Standard (1,000/day) and Premium (5,000/day) with the reserve, for this run and for a
5,000-invoice month start, with the catalog's daily cost before and after; 429s (0); double charges (0).
Redis: ``BENCH_REDIS_URL`` (flushed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Any

from integration.clients.quota import ZohoLedger, usage
from integration.queueing import make_redis

from . import catalog, collection
from ._common import BENCH_REDIS_URL, SERVICE_ENV, table

ZOHO_PER_MINUTE = 30  # the service's default (the stricter reading of Zoho's per-minute limit)
PLANS = (("Standard", 1000), ("Premium", 5000))
MONTH_START = 5000  # invoices raised at once at a month start (issue 20)
GOAL = 1.15
BUDGET_MARGIN = 0.05  # RateBudget's window stretch (integration.clients.budget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=int, default=30, help="Zoho's minute is this many times shorter")
    parser.add_argument("--attio-writes-per-second", type=int, default=25)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true")
    return parser


def run(args: argparse.Namespace, redis_url: str = BENCH_REDIS_URL) -> dict[str, Any]:
    """The billing run through ``bench.collection``'s harness; the figures, read before Redis is flushed."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    per_minute = ZOHO_PER_MINUTE * args.scale
    harness = argparse.Namespace(
        invoices=args.invoices, workers=args.workers, senders=32, attio_writes_per_second=args.attio_writes_per_second,
        attio_reads_per_second=100, zoho_requests_per_minute=per_minute, timeout=args.timeout, gateway="kind",
        preimport=False, service_env={"REDIS_URL": redis_url, "ZOHO_REQUESTS_PER_DAY": "1000000"},
    )
    catalog_cost = catalog.daily_calls(redis_url=redis_url)  # before the harness: it flushes the same Redis
    sims = collection._Sims(harness)
    connection = make_redis(redis_url)
    connection.flushdb()
    try:
        result = collection._run(sims, connection, harness)
        ledger = ZohoLedger(connection, SERVICE_ENV["ZOHO_ORGANIZATION_ID"], requests_per_day=1_000_000)
        counted = usage(connection, ledger)
    finally:
        sims.stop()
        connection.flushdb()
    n = args.invoices
    collected = counted["operations"].get("collection", 0)
    per_op = counted["calls_per_operation"]
    zoho_calls = counted["calls"]["zoho"].get("collection", 0)
    attio_writes = result["attio_writes_per_invoice"] * n
    # A sliding minute admits `per_minute` calls at once, then the next ones as the window slides (5 % margin):
    # C calls need at least ceil(C / limit) - 1 whole windows.
    window = 60 * (1 + BUDGET_MARGIN)
    floors = {
        f"Zoho {per_minute}/min (30/min × {args.scale})": max(0, math.ceil(zoho_calls / per_minute) - 1) * window,
        f"Attio {args.attio_writes_per_second} writes/s": attio_writes / args.attio_writes_per_second,
    }
    binding = max(floors, key=lambda k: floors[k])
    wall = result["first_to_last_payment_s"]
    zoho_per_invoice = per_op["zoho"].get("collection", math.nan)
    catalog_per_day = {when: catalog_cost[when]["zoho"] for when in ("before", "after")}
    days: dict[str, dict[str, float]] = {}
    for invoices in sorted({n, MONTH_START}):
        for plan, limit in PLANS:
            for when, cost in catalog_per_day.items():
                money_per_day = limit - min(cost, limit // 2)  # the sync stops at the reserve (half the day)
                need = math.ceil(invoices * zoho_per_invoice / money_per_day) if money_per_day > 0 else math.inf
                days.setdefault(f"{invoices} invoices on {plan}", {})[when] = need
    return {
        "invoices": n, "collected": collected, "workers": args.workers, "scale": args.scale,
        "calls_per_invoice": {p: per_op[p].get("collection") for p in ("zoho", "attio", "braintree")},
        "simulator_calls_per_invoice": result["calls_per_invoice"],
        "floors_s": floors, "binding": binding, "wall_s": wall, "ratio": wall / floors[binding],
        "days": days, "catalog_calls_per_day": catalog_per_day, "catalog": catalog_cost,
        "zoho_429": result["zoho_429"], "attio_429": result["attio_429"],
        "double_charges": result["double_charges"], "unbooked_sales": result["unbooked_sales"],
        "audit_violations": result["audit_violations"], "jobs": result["jobs"]["outcomes"],
    }


def report(r: dict[str, Any]) -> str:
    def fmt(d: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())

    rows = [
        ("invoices collected", f"{r['collected']} of {r['invoices']} ({fmt(r['jobs'])})"),
        ("calls per collected invoice", fmt(r["calls_per_invoice"]) + "  (the service's counters)"),
        ("  as the simulators saw them", fmt(r["simulator_calls_per_invoice"]) + "  (Zoho's includes OAuth)"),
        ("floors", "; ".join(f"{k}: {v:.1f} s" for k, v in r["floors_s"].items())),
        ("wall (first webhook → last payment)", f"{r['wall_s']:.1f} s = {r['ratio']:.2f} × the floor of "
                                                f"{r['binding']} (goal ≤ {GOAL})"),
        ("catalog's Zoho calls per day", f"before {r['catalog_calls_per_day']['before']:g} (full reconcile every "
                                         f"15 min), after {r['catalog_calls_per_day']['after']:g} (events + daily "
                                         f"full); 1,200 items, 10 changes a day, measured"),
        *((f"days needed, {what}", f"before {d['before']}, after {d['after']}  (daily limit less the catalog's "
                                   "calls, capped at the reserve)") for what, d in r["days"].items()),
        ("429 answers", f"Zoho {r['zoho_429']}, Attio {r['attio_429']} (target 0)"),
        ("double charges / unbooked", f"{r['double_charges']} / {r['unbooked_sales']} (target 0 / 0); audit "
                                      f"violations {r['audit_violations']}"),
    ]
    head = (f"bench.billing_run: {r['invoices']} invoices raised at once, {r['workers']} workers; Zoho's minute "
            f"scaled {r['scale']}× shorter (30/min → {30 * r['scale']}/min), Attio at real time")
    return head + "\n" + table(rows)


def main() -> None:
    args = build_parser().parse_args()
    result = run(args)
    print(json.dumps(result, indent=2, default=str) if args.json else report(result))


if __name__ == "__main__":
    main()
