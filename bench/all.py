"""``python -m bench.all``: every benchmark at modest sizes, their key figures in one table.

Runs intake, catalog (when ``bench/catalog.py`` exists), collection, budget and worker one after the other, each
through its ``run(args) -> dict`` (catalog, which has no ``run`` yet, as a subprocess whose table is read back
line by line), and prints one table: bench, figure, value, target. A bench that fails is reported as such and
the others still run. ``--full`` prints each bench's own report as well. Redis: ``BENCH_REDIS_URL`` (flushed).
Sizes are smaller than each bench's defaults, so figures are noisier; run a bench alone for a closer look.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from ._common import ROOT

Rows = list[tuple[str, str, str]]  # (figure, value, target)

INTAKE_ARGS = ["--seconds", "4", "--baselines", ""]
CATALOG_ARGS = ["--plans", "300", "--addons", "60"]
COLLECTION_ARGS = ["--invoices", "60"]
BUDGET_ARGS = ["--seconds", "5"]
WORKER_ARGS = ["--jobs", "30", "--overhead-jobs", "50", "--overhead-rounds", "2"]


def _intake(result: dict[str, Any]) -> Rows:
    web, bare = result["web"], result["bare"]
    return [
        ("bare Flask requests/s", f"{bare['rps']:.0f}", ""),
        ("web requests/s", f"{web['rps']:.0f}", ""),
        ("ratio web / bare", f"{result['ratio']:.2f}", ">= 0.5"),
        ("web p50 / p99", f"{web['p50']:.2f} / {web['p99']:.2f} ms", "p99 <= 15 ms"),
        ("web non-2xx", f"{web['non2xx']:.0f}", "0"),
    ]


def _collection(result: dict[str, Any]) -> Rows:
    return [
        ("invoices paid", f"{result['recorded']} of {result['invoices']} ({result['workers']} workers)", "all"),
        ("first webhook → last payment", f"{result['first_to_last_payment_s']:.2f} s", ""),
        ("invoices per second", f"{result['invoices_per_second']:.1f}", ""),
        ("per invoice p50 / p99", f"{1000 * result['p50_s']:.0f} / {1000 * result['p99_s']:.0f} ms", ""),
        ("mean job run", f"{1000 * result['jobs']['mean_run_s']:.0f} ms", ""),
        ("wall / jobs' own time", f"{result['wall_vs_jobs']:.2f}", "near 1"),
        ("jobs retried", str(result["jobs"]["retried"]), "0"),
        ("429 answers (Attio, Zoho)", f"{result['attio_429']}, {result['zoho_429']}", "0"),
        ("audit violations", f"{result['audit_violations']} ({result['audit_checked']} sales checked)", "0"),
    ]


def _budget(result: dict[str, Any]) -> Rows:
    return [
        ("Attio writes per second", f"{result['writes_per_second']:.2f} (budget {result['budget']})", ""),
        ("fraction of the budget", f"{result['fraction']:.3f}", ">= 0.90"),
        ("simulator 429 answers", str(result["sim_429"]), "0"),
        ("client errors (writers)", str(result["client_errors"]), "0"),
    ]


def _worker(result: dict[str, Any]) -> Rows:
    rows: Rows = []
    one = {r["delay_ms"]: r["jobs_per_second"] for r in result["rounds"] if r["workers"] == 1 and not r["preimport"]}
    for r in result["rounds"]:
        scale = "" if (r["workers"] == 1 and not r["preimport"]) or r["delay_ms"] not in one else \
            f" ({r['jobs_per_second'] / one[r['delay_ms']]:.2f}x 1 worker)"
        label = f"jobs/s, {r['workers']} worker(s), {r['delay_ms']:g} ms" + (", pre-imported" if r["preimport"] else "")
        rows.append((label, f"{r['jobs_per_second']:.1f}{scale}", "" if not r["failed"] else "0 failed"))
    o = result["overhead"]
    rows += [
        ("handler's own time per job", f"{1000 * o['handler']:.2f} ms", ""),
        ("SimpleWorker per job (overhead)", f"{1000 * o['simple_worker']:.2f} ms "
                                            f"(+{1000 * (o['simple_worker'] - o['handler']):.2f})", ""),
        ("Worker per job, fork (overhead)", f"{1000 * o['worker']:.2f} ms (+{1000 * (o['worker'] - o['handler']):.2f})",
         ""),
    ]
    return rows


def _table_lines(text: str) -> Rows:
    """Rows from a bench's printed two-column table (its first line is the heading)."""
    rows: Rows = []
    for line in text.splitlines()[1:]:
        parts = line.strip().split("  ", 1)
        if len(parts) == 2 and parts[0]:
            rows.append((parts[0].strip(), parts[1].strip(), ""))
    return rows


def _catalog(full: bool) -> Rows:
    """bench.catalog through its ``run`` when it has one, else as a subprocess; or 'not available'."""
    if not (ROOT / "bench" / "catalog.py").exists():
        return [("catalog", "not available", "")]
    module = importlib.import_module("bench.catalog")
    if hasattr(module, "run") and hasattr(module, "build_parser"):
        result = module.run(module.build_parser().parse_args(CATALOG_ARGS))
        if full and hasattr(module, "report"):
            print(module.report(result))
        return [(k, str(v), "") for k, v in _flatten(result)]
    proc = subprocess.run([sys.executable, "-m", "bench.catalog", *CATALOG_ARGS], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.catalog exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    if full:
        print(proc.stdout)
    return _table_lines(proc.stdout)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of nested dicts as (dotted key, value)."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if isinstance(value, list | tuple) else [(prefix, value)]


def _module_bench(name: str, argv: list[str], figures: Callable[[dict[str, Any]], Rows], full: bool) -> Rows:
    """Run ``bench.<name>`` through its ``run(args)``; its key figures."""
    module = importlib.import_module(f"bench.{name}")
    result = module.run(module.build_parser().parse_args(argv))
    if full:
        print(module.report(result))
    return figures(result)


def main() -> None:
    """Run every bench and print one table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--full", action="store_true", help="also print each bench's own report")
    parser.add_argument("--only", default="", help="comma-separated subset: intake,catalog,collection,budget,worker")
    args = parser.parse_args()
    benches: list[tuple[str, Callable[[], Rows]]] = [
        ("intake", lambda: _module_bench("intake", INTAKE_ARGS, _intake, args.full)),
        ("catalog", lambda: _catalog(args.full)),
        ("collection", lambda: _module_bench("collection", COLLECTION_ARGS, _collection, args.full)),
        ("budget", lambda: _module_bench("budget", BUDGET_ARGS, _budget, args.full)),
        ("worker", lambda: _module_bench("worker", WORKER_ARGS, _worker, args.full)),
    ]
    wanted = {b.strip() for b in args.only.split(",") if b.strip()}
    table: list[tuple[str, str, str, str]] = []
    durations: list[str] = []
    for name, bench in benches:
        if wanted and name not in wanted:
            continue
        print(f"bench.all: running {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            rows = bench()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one failed bench must not hide the others
            traceback.print_exc(file=sys.stderr)
            rows = [("failed", f"{type(exc).__name__}: {exc}", "")]
        durations.append(f"{name} {time.monotonic() - started:.0f} s")
        table += [(name, *row) for row in rows]
    widths = [max(len(r[i]) for r in [("bench", "figure", "value", "target"), *table]) for i in range(4)]
    print("bench.all: key figures (" + ", ".join(durations) + ")")
    for row in [("bench", "figure", "value", "target"), *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
