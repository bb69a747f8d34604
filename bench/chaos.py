"""``python -m bench.chaos --seed N --seconds S``: the long chaos run of issue 9 (the test suite runs a short one).

The same engine as ``tests/chaos/test_chaos.py`` (``tests/chaos/harness.py``): the Attio, Zoho and Braintree
simulators in this process, a durable private redis-server (restarted during the run, keeping its data), the
real ``web`` app on loopback and ``--workers`` real ``python -m workers`` processes. For ``--seconds`` it raises
invoices, requests activations, renews, changes Zoho subscriptions and settles or disputes Braintree
transactions, sending every webhook 1–5 times in random order, while it kills workers with ``kill -9``, restarts
Redis and makes the providers answer 429 storms, 5xx bursts, slow answers and lost answers after commit. Then it
clears the faults, drains the queue, checks every invariant, retries the failed jobs as an operator would
(``retry_job``), drains and checks again.

Prints the seed, deliveries, faults injected by kind, jobs retried and violations; exits 1 on any violation.
Logs (worker JSON lines, redis) go to ``--log-dir`` (a temporary directory by default, kept on failure).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.chaos.harness import ChaosOptions, run_chaos


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=300.0, help="the chaos window (drain and checks follow)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--customers", type=int, default=14)
    parser.add_argument("--activations", type=int, default=None, help="default: one per 10 s of chaos, >= 8")
    parser.add_argument("--invoice-every", type=float, default=1.2, help="mean seconds between invoices")
    parser.add_argument("--fault-every", type=float, default=3.0, help="mean seconds between provider faults")
    parser.add_argument("--kills", type=int, default=None, help="kill -9 of a worker (default one per 35 s)")
    parser.add_argument("--redis-restarts", type=int, default=None, help="default one per 60 s")
    parser.add_argument("--log-dir", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run and print; 0 when every invariant held."""
    args = build_parser().parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    opts = ChaosOptions(
        seed=args.seed, seconds=args.seconds, log_dir=log_dir, workers=args.workers, customers=args.customers,
        activations=args.activations or max(8, round(args.seconds / 10)), invoice_every=args.invoice_every,
        fault_every=args.fault_every, kills=args.kills, redis_restarts=args.redis_restarts,
        out=lambda line: print(line, flush=True),
    )
    report = run_chaos(opts)
    print(report.text(), flush=True)
    if report.ok and args.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
