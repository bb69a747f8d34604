"""``python -m bench.catalog``: the catalog sync (workflow 1) against the Attio write budget.

The bench starts the simulators itself: Zoho Billing in this process (1,000 plans and 200 addons by default, read
in 7 calls), Attio in a spawned process of its own, so the simulator does not share a GIL with the service it
measures (as in ``bench.worker``). It then runs the reconcile twice through the real clients, budgets and
breakers (Redis: ``BENCH_REDIS_URL``, flushed), with the job's writers (``WRITERS`` Attio clients in parallel):
the first sync creates every ``services`` record, the second finds nothing to change. The Attio write budget is
B per second (``--budget``, default 100) and the Attio simulator enforces the same B, answering 429 over it.

Prints, for the first sync, the wall time, the ideal time the budget allows (writes ÷ B) and their ratio (target
≤ 1.15; the floor is 1.05, the budget stretching its 1 s window by 5 % against clock jitter), the simulator's 429
count; for the re-sync, its wall time and its Attio calls (reads only).

The stock Attio simulator recomputes, on every upsert, a JSON key for the unique value of every record, twice
(``tests/simulators/attio.py``: ``_key``): about 15–20 ms per write at 1,200 records, more than the 10 ms slot of
a 100/s budget, which would measure the simulator rather than the service. So by default its keys are computed
once per stored value (``_MemoAttio``: same equality); ``--stock-simulator`` runs it unmodified.
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
from tests.simulators.zoho import ZohoSimulator
from workers.workflows.catalog import WRITERS, SyncSummary, sync_services

from ._common import BENCH_REDIS_URL, SERVICE_ENV, table

_KEY_FIELDS = ("value", "currency_value", "target_record_id", "email_address", "domain", "full_name")


# -- the Attio simulator's process ------------------------------------------------------------------------------
def _memo_simulator(**kwargs: Any) -> Any:
    """The Attio simulator with each stored value's key computed once (a tuple: the same equality as its JSON)."""
    from tests.simulators.attio import AttioSimulator

    class _MemoAttio(AttioSimulator):
        def __init__(self, **kw: Any) -> None:
            # id(value) → (value, key); holding the value keeps its id from being reused by another object
            self._keys: dict[int, tuple[dict[str, Any], Any]] = {}
            super().__init__(**kw)

        def _key(self, attr: dict[str, Any], fields: dict[str, Any]) -> Any:  # type: ignore[override]
            hit = self._keys.get(id(fields))
            if hit is not None and hit[0] is fields:
                return hit[1]
            if "option" in fields:
                key: Any = fields["option"]["id"]["option_id"]
            else:
                key = tuple((k, fields[k]) for k in _KEY_FIELDS if k in fields)
            self._keys[id(fields)] = (fields, key)
            return key

    return _MemoAttio(**kwargs)


def _serve_attio(conn: Connection, budget: int, stock: bool) -> None:
    """Run the Attio simulator (write limit = budget) and answer ``counters`` / ``stop`` messages."""
    from tests.simulators.attio import AttioSimulator

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    options = {"writes_per_second": budget, "reads_per_second": 100}
    sim = (AttioSimulator(**options) if stock else _memo_simulator(**options)).start()
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

    def __init__(self, budget: int, stock: bool) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_attio, args=(child, budget, stock), daemon=True)
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


def main() -> None:
    """Seed, sync twice, print the comparison with the budget."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--budget", type=int, default=100, help="Attio writes per second (client and simulator)")
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--addons", type=int, default=200)
    parser.add_argument("--writers", type=int, default=WRITERS, help="Attio clients writing in parallel")
    parser.add_argument("--stock-simulator", action="store_true", help="the unmodified (slower) Attio simulator")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    attio_sim = _AttioProcess(args.budget, args.stock_simulator)
    zoho_sim = ZohoSimulator().start()
    _seed(zoho_sim, args.plans, args.addons)
    connection = redis.Redis.from_url(BENCH_REDIS_URL)
    connection.flushdb()
    try:
        settings = _settings(attio_sim.url, attio_sim.api_key, zoho_sim, args.budget)
        zoho, attio = build_zoho_client(settings, connection), build_attio_client(settings, connection)
        writers = [build_attio_client(settings, connection) for _ in range(args.writers)]

        def sync() -> SyncSummary:
            return sync_services(zoho=zoho, attio=attio, now=datetime.now(UTC), writers=writers)

        first, first_wall, first_failures = _timed(sync)
        after_first = attio_sim.counters()
        again, again_wall, again_failures = _timed(sync)
        after_again = attio_sim.counters()
    finally:
        connection.flushdb()
        attio_sim.stop()
        zoho_sim.stop()

    writes = first.created + first.updated + first.removed
    ideal = writes / args.budget
    resync_calls = after_again["calls"] - after_first["calls"]
    resync_writes = after_again["writes"] - after_first["writes"]
    print(f"bench.catalog: {args.plans} plans + {args.addons} addons; Attio write budget B = {args.budget}/s "
          f"(client and simulator); {args.writers} writers; "
          f"{'stock' if args.stock_simulator else 'memoised'} Attio simulator in its own process")
    print(table([
        ("first sync", first.line()),
        ("  wall time", f"{first_wall:.2f} s"),
        ("  ideal (writes / B)", f"{ideal:.2f} s ({writes} writes)"),
        ("  ratio wall / ideal", f"{first_wall / ideal:.3f} (target <= 1.15, floor 1.05)" if ideal else "n/a"),
        ("  Attio 429 answers", after_first["rate_limited"]),
        ("  failed attempts re-run", first_failures),
        ("re-sync (no change)", again.line()),
        ("  wall time", f"{again_wall:.2f} s"),
        ("  Attio calls", f"{resync_calls} ({resync_writes} writes, {after_again['reads'] - after_first['reads']} "
                          f"reads)"),
        ("  Attio 429 answers", after_again["rate_limited"] - after_first["rate_limited"]),
        ("  failed attempts re-run", again_failures),
        ("services records in Attio", after_again["records"]),
    ]))


if __name__ == "__main__":
    main()
