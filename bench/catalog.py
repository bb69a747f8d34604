"""``python -m bench.catalog``: the catalog sync (workflow 1) against the Attio write budget.

The bench starts the simulators itself: Zoho Billing in this process (1,000 plans and 200 addons by default, read
in 7 calls), Attio in a spawned process of its own, so the simulator does not share a GIL with the service it
measures (as in ``bench.worker``). It then runs the reconcile twice through the real clients, budgets and
breakers (Redis: ``BENCH_REDIS_URL``, flushed), with the job's writers (``WRITERS`` Attio clients in parallel):
the first sync creates every ``services`` record, the second finds nothing to change. The Attio write budget is
B per second (``--budget``, default 100) and the Attio simulator enforces the same B, answering 429 over it.

Prints, for the first sync, the wall time, the ideal time the budget allows (writes ÷ B) and their ratio (target
≤ 1.15; the floor is 1.05, the budget stretching its 1 s window by 5 % against clock jitter), the same ratio for
each half of the writes (the simulator's upsert cost grows with the records it holds), the simulator's 429 count;
for the re-sync, its wall time and its Attio calls (reads only).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import redis

from integration.clients.attio import build_attio_client
from integration.clients.zoho import build_zoho_client
from integration.config import Settings
from integration.errors import ServiceUnavailable
from simulators.zoho import ZohoSimulator
from workers.workflows.catalog import WRITERS, SyncSummary, sync_services

from ._common import BENCH_REDIS_URL, SERVICE_ENV, table


# -- the Attio simulator's process ------------------------------------------------------------------------------
def _serve_attio(conn: Connection, budget: int) -> None:
    """Run the Attio simulator (write limit = budget) and answer ``counters`` / ``stop`` messages."""
    from simulators.attio import AttioSimulator

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sim = AttioSimulator(writes_per_second=budget, reads_per_second=100)
    sim.start()
    sim.setup_schema()
    conn.send((sim.url, sim.api_key))
    while True:
        command = conn.recv()
        if command == "counters":
            conn.send({"calls": len(sim.calls), "writes": sim.writes_ok, "reads": sim.reads_ok,
                       "rate_limited": sim.rate_limited, "records": len(sim.records("services"))})  # fmt: skip
        elif command == "stop":
            sim.stop()
            conn.send(None)
            return


class _AttioProcess:
    """The Attio simulator in a spawned process, driven through a pipe."""

    def __init__(self, budget: int) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_attio, args=(child, budget), daemon=True)
        self._proc.start()
        self.url, self.api_key = self._conn.recv()

    def counters(self) -> dict[str, int]:
        """Calls, accepted writes and reads, 429s, records."""
        self._conn.send("counters")
        result: dict[str, int] = self._conn.recv()
        return result

    def stop(self) -> None:
        """Stop the simulator and its process."""
        if self._proc.is_alive():
            self._conn.send("stop")
            self._conn.recv()
            self._proc.join(timeout=10)


# -- the run ----------------------------------------------------------------------------------------------------
def _seed(zoho: ZohoSimulator, plans: int, addons: int) -> None:
    """A catalogue with every interval and status the mapping knows."""
    units = (("months", 1), ("months", 12), ("years", 1), ("months", 3))
    for i in range(plans):
        unit, interval = units[i % len(units)]
        zoho.add_plan(
            f"plan-{i:05d}", f"Plan {i}", round(9.99 + i, 2), interval=interval, interval_unit=unit,
            status="inactive" if i % 10 == 0 else "active", description=f"Plan number {i}." if i % 3 else "",
        )  # fmt: skip
    for i in range(addons):
        kind = "one_time" if i % 5 == 0 else "recurring"
        zoho.add_addon(f"addon-{i:04d}", f"Addon {i}", round(1.5 + i, 2), type=kind,
                       interval_unit="yearly" if i % 2 else "monthly")  # fmt: skip


def _settings(attio_url: str, attio_key: str, zoho: ZohoSimulator, budget: int) -> Settings:
    env = dict(SERVICE_ENV)
    env.update(
        REDIS_URL=BENCH_REDIS_URL,
        ATTIO_API_URL=attio_url,
        ATTIO_API_KEY=attio_key,
        ZOHO_ACCOUNTS_URL=zoho.url,
        ATTIO_WRITES_PER_SECOND=str(budget),
        CATALOG_SYNC_INTERVAL_MINUTES="0",
        RECONCILE_INTERVAL_MINUTES="0",
    )
    return Settings.from_env(env)


def _timed(run: Callable[[], SyncSummary]) -> tuple[SyncSummary, float, int]:
    """Run a sync as the job would be retried: after a transient failure, wait its Retry-After and run again."""
    started, failures = time.monotonic(), 0
    while True:
        try:
            summary = run()
            return summary, time.monotonic() - started, failures
        except ServiceUnavailable as exc:
            failures += 1
            if failures > 20:
                raise
            time.sleep(exc.retry_after or 1.0)


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--budget", type=int, default=100, help="Attio writes per second (client and simulator)")
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--addons", type=int, default=200)
    parser.add_argument("--writers", type=int, default=WRITERS, help="Attio clients writing in parallel")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed, sync twice; the figures of both syncs."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    attio_sim = _AttioProcess(args.budget)
    zoho_sim = ZohoSimulator()
    zoho_sim.start()
    _seed(zoho_sim, args.plans, args.addons)
    connection = redis.Redis.from_url(BENCH_REDIS_URL)
    connection.flushdb()
    try:
        settings = _settings(attio_sim.url, attio_sim.api_key, zoho_sim, args.budget)
        zoho, attio = build_zoho_client(settings, connection), build_attio_client(settings, connection)
        writers = [build_attio_client(settings, connection) for _ in range(args.writers)]
        halfway: list[float] = []  # when the first half of the writes was done

        def note(done: int, total: int) -> None:
            if not halfway and total and done >= total // 2:
                halfway.append(time.monotonic())

        def sync() -> SyncSummary:
            return sync_services(zoho=zoho, attio=attio, now=datetime.now(UTC), writers=writers, progress=note)

        started = time.monotonic()
        first, first_wall, first_failures = _timed(sync)
        first_half = halfway[0] - started if halfway else float("nan")
        after_first = attio_sim.counters()
        again, again_wall, again_failures = _timed(sync)
        after_again = attio_sim.counters()
    finally:
        connection.flushdb()
        attio_sim.stop()
        zoho_sim.stop()

    writes = first.created + first.updated + first.removed
    half = writes / args.budget / 2
    return {
        "plans": args.plans,
        "addons": args.addons,
        "budget": args.budget,
        "writers": args.writers,
        "first_sync": {
            "summary": first.line(),
            "writes": writes,
            "wall_s": round(first_wall, 3),
            "ideal_s": round(2 * half, 3),
            "ratio": round(first_wall / (2 * half), 3) if half else None,
            "ratio_first_half": round(first_half / half, 3) if half else None,
            "ratio_second_half": round((first_wall - first_half) / half, 3) if half else None,
            "attio_429": after_first["rate_limited"],
            "failed_attempts": first_failures,
        },
        "resync": {
            "summary": again.line(),
            "wall_s": round(again_wall, 3),
            "attio_calls": after_again["calls"] - after_first["calls"],
            "attio_writes": after_again["writes"] - after_first["writes"],
            "attio_reads": after_again["reads"] - after_first["reads"],
            "attio_429": after_again["rate_limited"] - after_first["rate_limited"],
            "failed_attempts": again_failures,
        },
        "records": after_again["records"],
    }


def report(result: dict[str, Any]) -> str:
    """The figures as a table, under a one-line description of the run."""
    first, again = result["first_sync"], result["resync"]
    head = (f"bench.catalog: {result['plans']} plans + {result['addons']} addons; Attio write budget "
            f"B = {result['budget']}/s (client and simulator); {result['writers']} writers; "
            "Attio simulator in its own process")  # fmt: skip
    return head + "\n" + table([
        ("first sync", first["summary"]),
        ("  wall time", f"{first['wall_s']:.2f} s"),
        ("  ideal (writes / B)", f"{first['ideal_s']:.2f} s ({first['writes']} writes)"),
        ("  ratio wall / ideal", f"{first['ratio']:.3f} (target <= 1.15, floor 1.05)"),
        ("    first half / second half", f"{first['ratio_first_half']:.3f} / {first['ratio_second_half']:.3f}"),
        ("  Attio 429 answers", first["attio_429"]),
        ("  failed attempts re-run", first["failed_attempts"]),
        ("re-sync (no change)", again["summary"]),
        ("  wall time", f"{again['wall_s']:.2f} s"),
        ("  Attio calls", f"{again['attio_calls']} ({again['attio_writes']} writes, {again['attio_reads']} reads)"),
        ("  Attio 429 answers", again["attio_429"]),
        ("  failed attempts re-run", again["failed_attempts"]),
        ("services records in Attio", result["records"]),
    ])  # fmt: skip


def main() -> None:
    """Run with the command line's arguments and print the report."""
    print(report(run(build_parser().parse_args())))


if __name__ == "__main__":
    main()
