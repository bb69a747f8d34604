"""``python -m bench.budget``: how much of Attio's write budget 4 competing processes actually get (issue 3).

Four writer processes (multiprocessing, spawned), each with its own Redis connection and its own
``build_attio_client(settings, connection)``, upsert ``services`` records (``assert_record`` by ``external_id``) as
fast as they can for ``--seconds`` against the in-process Attio simulator, whose write limit is set equal to
``ATTIO_WRITES_PER_SECOND`` (``--budget``, default 25). Every write goes through the real client: the shared
sliding-window budget in Redis (``BENCH_REDIS_URL``), the breaker, the timeouts.

The writers start 1 s before the measured window opens (a cold budget admits a first burst of B at once), and
the window is rounded to a whole number of the budget's windows (1.05 s: the limiter stretches its 1 s window by
5 % against clock jitter): writers that always wait for a slot are admitted in bursts that repeat every 1.05 s,
so a window of any other length would count one burst more or less depending on where it started.

Prints the writes Attio accepted per second inside the window, the fraction of the budget that is (the ceiling
is 1 / 1.05 ≈ 0.952), the spread of accepted writes per simulator second, the simulator's 429 count and what each
writer saw. Targets: ≥ 90 % of the budget, zero 429s.

``--mixed`` runs instead the mixed load of issue 16 (``bench/_mixed.py``): a catalog sync, an audit-like reader and
a stream of ``invoice_created`` collections sharing the Zoho and Attio budgets, with money-first lanes and then
without (the baseline). It prints each class's share of each budget, the p50/p99 delay budget waits add to a
collection, and the simulators' 429 counts (target 0: our own pacing).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import statistics
import time
from collections import Counter
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import redis

from integration.clients.attio import build_attio_client
from integration.config import Settings
from integration.errors import ServiceError
from integration.queueing import make_redis
from simulators.attio import AttioSimulator

from ._common import BENCH_REDIS_URL, SERVICE_ENV, table

WRITE_PATH = "/v2/objects/services/records"
WARM_UP = 1.0  # seconds the writers run before the window opens
BUDGET_WINDOW = 1.05  # seconds: RateBudget's period (1 s) stretched by its 5 % margin


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measured window")
    parser.add_argument("--budget", type=int, default=25, help="ATTIO_WRITES_PER_SECOND = the simulator's limit")
    parser.add_argument("--writers", type=int, default=4, help="writer processes")
    parser.add_argument("--records", type=int, default=20, help="distinct external ids each writer cycles through")
    parser.add_argument("--mixed", action="store_true", help="the mixed run: sync + audit + invoices (issue 16)")
    parser.add_argument("--plans", type=int, default=300, help="--mixed: plans the catalog sync writes")
    parser.add_argument("--invoices", type=int, default=20, help="--mixed: invoice_created collections")
    parser.add_argument("--zoho-window", type=float, default=6.0,
                        help="--mixed: seconds of Zoho's 30-call window (60 = real time; 6 = ten times faster)")
    return parser


def run_mixed_both(args: argparse.Namespace) -> str:
    """The mixed run with lanes, then without; the printed report."""
    from simulators.braintree import BraintreeSimulator
    from simulators.zoho import ZohoSimulator

    from ._mixed import run_mixed, summary_rows

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("workers").setLevel(logging.WARNING)
    logging.getLogger("integration").setLevel(logging.WARNING)
    out = []
    for lanes, bulk in ((True, True), (False, True), (True, False)):
        attio = AttioSimulator(writes_per_second=25, reads_per_second=100).start()
        attio.setup_schema()
        zoho, braintree = ZohoSimulator().start(), BraintreeSimulator().start()
        connection = redis.Redis.from_url(BENCH_REDIS_URL)
        connection.flushdb()
        env = dict(SERVICE_ENV)
        env.update(REDIS_URL=BENCH_REDIS_URL, ATTIO_API_URL=attio.url, ATTIO_API_KEY=attio.api_key,
                   ZOHO_ACCOUNTS_URL=zoho.url, BRAINTREE_ENVIRONMENT=braintree.url,
                   CATALOG_SYNC_INTERVAL_MINUTES="0")
        try:
            result = run_mixed(settings=Settings.from_env(env), zoho_sim=zoho, attio_sim=attio, braintree_sim=braintree,
                               redis_url=BENCH_REDIS_URL, plans=args.plans, invoices=args.invoices,
                               zoho_window=args.zoho_window, lanes=lanes, bulk=bulk)
        finally:
            for sim in (attio, zoho, braintree):
                sim.stop()
            connection.flushdb()
        title = ("money first (lanes)" if lanes else "baseline: one lane, no reserve") if bulk else \
            "reference: the invoices alone (no sync, no audit)"
        out.append(f"-- {title}\n" + table(summary_rows(result)))
    head = (f"bench.budget --mixed: catalog sync of {args.plans} plans + audit-like reads + {args.invoices} invoices; "
            f"Zoho 30 calls / {args.zoho_window:g} s, Attio 25 writes/s and 100 reads/s (simulators enforce both)")
    return head + "\n" + "\n".join(out)


def _settings(attio: AttioSimulator, budget: int) -> Settings:
    """The service's settings pointed at the simulator, with this write budget."""
    env = dict(SERVICE_ENV)
    env.update(REDIS_URL=BENCH_REDIS_URL, ATTIO_API_URL=attio.url, ATTIO_API_KEY=attio.api_key,
               ATTIO_WRITES_PER_SECOND=str(budget), ATTIO_READS_PER_SECOND="100",
               CATALOG_SYNC_INTERVAL_MINUTES="0", RECONCILE_INTERVAL_MINUTES="0")
    return Settings.from_env(env)


def _writer(index: int, settings: Settings, records: int, ready: Barrier, go: Event, start_at: Any,
            seconds: float, out: Any) -> None:
    """One writer process: its own Redis connection and client; upsert as fast as the budget lets it."""
    connection = make_redis(settings.redis_url)
    client = build_attio_client(settings, connection)
    client.list_attributes("services")  # a read: opens the HTTP connection outside the window
    ready.wait()
    go.wait()
    deadline = start_at.value + seconds  # the window's end; the writers start WARM_UP before its start
    ok, errors, latencies = 0, Counter[str](), []
    i = 0
    while time.time() < deadline:
        started = time.monotonic()
        try:
            client.assert_record("services", "external_id", {
                "external_id": f"budget-{index}-{i % records}", "name": f"Service {index}/{i}", "kind": "Plan",
            })
            ok += 1
            latencies.append(time.monotonic() - started)
        except ServiceError as exc:
            errors[f"{type(exc).__name__} {getattr(exc, 'status', '') or ''}".strip()] += 1
        i += 1
    connection.close()
    out.put({"index": index, "ok": ok, "errors": dict(errors),
             "mean_call_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan")})


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the writers against the simulator; returns the figures."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sim = AttioSimulator(writes_per_second=args.budget, reads_per_second=100).start()
    sim.setup_schema()
    connection = redis.Redis.from_url(BENCH_REDIS_URL)
    connection.flushdb()
    settings = _settings(sim, args.budget)
    measured = max(1, round(args.seconds / BUDGET_WINDOW)) * BUDGET_WINDOW
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Barrier(args.writers + 1), ctx.Event(), ctx.Queue()
    start_at = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_writer, args=(i, settings, args.records, ready, go, start_at, measured, out),
                         daemon=True) for i in range(args.writers)]
    try:
        for p in procs:
            p.start()
        ready.wait(timeout=60)
        start_at.value = time.time() + WARM_UP
        go.set()
        writers = sorted((out.get(timeout=measured + 60) for _ in procs), key=lambda w: w["index"])
        for p in procs:
            p.join(timeout=10)
        window = (start_at.value, start_at.value + measured)
        accepted = [c.at for c in sim.calls_to("PUT", WRITE_PATH) if c.status == 200]
        refused = sum(1 for c in sim.calls_to("PUT", WRITE_PATH) if c.status == 429)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        sim.stop()
        connection.flushdb()
    inside = [t for t in accepted if window[0] <= t < window[1]]
    per_second = Counter(int(t) for t in inside)
    whole = [per_second.get(s, 0) for s in range(int(window[0]) + 1, int(window[1]))]  # full seconds only
    rate = len(inside) / measured
    return {
        "seconds": measured, "budget": args.budget, "writers": writers,
        "writes": len(inside), "writes_per_second": rate, "fraction": rate / args.budget,
        "sim_429": sim.rate_limited, "write_429": refused,
        "per_sim_second": (min(whole), statistics.median(whole), max(whole)) if whole else (0, 0, 0),
        "client_errors": sum(sum(w["errors"].values()) for w in writers),
    }


def report(result: dict[str, Any]) -> str:
    """The printed table."""
    lo, mid, hi = result["per_sim_second"]
    rows: list[tuple[str, Any]] = [
        ("Attio writes accepted in the window", f"{result['writes']}"),
        ("writes per second", f"{result['writes_per_second']:.2f}"),
        ("fraction of the budget used", f"{result['fraction']:.3f} (target >= 0.90; ceiling 1/1.05 = 0.952)"),
        ("writes per simulator second", f"min {lo}  median {mid:g}  max {hi} (limit {result['budget']})"),
        ("simulator 429 answers", f"{result['sim_429']} (target 0)"),
        ("client errors (all writers)", f"{result['client_errors']}"),
    ]
    for w in result["writers"]:
        errors = ", ".join(f"{k}: {v}" for k, v in w["errors"].items()) or "none"
        rows.append((f"  writer {w['index']}", f"{w['ok']} writes (warm-up too), mean call "
                                               f"{w['mean_call_ms']:.1f} ms (budget wait included), errors: {errors}"))
    head = (f"bench.budget: {len(result['writers'])} writer processes, window {result['seconds']:.2f} s "
            f"(after {WARM_UP:g} s of warm-up), "
            f"ATTIO_WRITES_PER_SECOND = simulator limit = {result['budget']}")
    return head + "\n" + table(rows)


def main() -> None:
    """Run and print."""
    args = build_parser().parse_args()
    print(run_mixed_both(args) if args.mixed else report(run(args)))


if __name__ == "__main__":
    main()
