"""``python -m bench.catalog``: the catalog sync (workflow 1) against the Attio write budget.

Starts the Zoho and Attio simulators in-process (1,000 plans and 200 addons by default), then runs the reconcile
twice through the real clients, budgets and breakers (Redis DB 12): the first sync creates every ``services``
record, the second finds nothing to change. The Attio write budget is B per second (``--budget``, default 100),
and the Attio simulator enforces the same B, so a write sent over budget comes back 429.

Prints, for the first sync, the wall time, the ideal time the budget allows (writes ÷ B) and their ratio (target
≤ 1.15), and for the re-sync the number of Attio calls (reads only), plus the simulator's 429 count.

The stock Attio simulator scans every record twice per upsert, serialising each value to JSON to compare it
(``tests/simulators/attio.py``: ``_key``): about 20 ms per write at 1,200 records, more than the 10 ms a 100/s
budget allows, so it would measure the simulator rather than the service. By default the bench therefore runs a
subclass whose value keys are tuples (same equality for these values, about 3x cheaper); ``--stock-simulator``
runs the unmodified one.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from integration.clients.attio import build_attio_client
from integration.clients.zoho import build_zoho_client
from integration.config import Settings
from integration.errors import ServiceUnavailable
from tests.simulators.attio import AttioSimulator
from tests.simulators.zoho import ZohoSimulator
from workers.workflows.catalog import SyncSummary, sync_services

from ._common import BENCH_REDIS_URL, SERVICE_ENV, table

_KEY_FIELDS = ("value", "currency_value", "target_record_id", "email_address", "domain", "full_name")


class _IndexedAttio(AttioSimulator):
    """The Attio simulator with cheap value keys (tuples instead of JSON strings); behaviour unchanged here."""

    @staticmethod
    def _key(attr: dict[str, Any], fields: dict[str, Any]) -> Any:
        if "option" in fields:
            return fields["option"]["id"]["option_id"]
        return tuple((k, fields[k]) for k in _KEY_FIELDS if k in fields)


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


def _settings(attio: AttioSimulator, zoho: ZohoSimulator, budget: int) -> Settings:
    env = dict(SERVICE_ENV)
    env.update(
        REDIS_URL=BENCH_REDIS_URL,
        ATTIO_API_URL=attio.url,
        ATTIO_API_KEY=attio.api_key,
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
    parser.add_argument("--stock-simulator", action="store_true", help="the unmodified (slower) Attio simulator")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    sim_class = AttioSimulator if args.stock_simulator else _IndexedAttio
    attio_sim = sim_class(writes_per_second=args.budget, reads_per_second=100).start()
    zoho_sim = ZohoSimulator().start()
    attio_sim.setup_schema()
    _seed(zoho_sim, args.plans, args.addons)
    connection = redis.Redis.from_url(BENCH_REDIS_URL)
    connection.flushdb()
    try:
        settings = _settings(attio_sim, zoho_sim, args.budget)
        zoho, attio = build_zoho_client(settings, connection), build_attio_client(settings, connection)

        def sync() -> SyncSummary:
            return sync_services(zoho=zoho, attio=attio, now=datetime.now(UTC))

        first, first_wall, first_failures = _timed(sync)
        first_429 = attio_sim.rate_limited
        calls_before = len(attio_sim.calls)
        writes_before = attio_sim.writes_ok
        again, again_wall, again_failures = _timed(sync)
        resync_calls = attio_sim.calls[calls_before:]
        resync_writes = attio_sim.writes_ok - writes_before
    finally:
        connection.flushdb()
        attio_sim.stop()
        zoho_sim.stop()

    writes = first.created + first.updated + first.removed
    ideal = writes / args.budget
    print(f"bench.catalog: {args.plans} plans + {args.addons} addons, Attio write budget B = {args.budget}/s "
          f"(client and simulator), {'stock' if args.stock_simulator else 'indexed'} Attio simulator")
    print(table([
        ("first sync", first.line()),
        ("  wall time", f"{first_wall:.2f} s"),
        ("  ideal (writes / B)", f"{ideal:.2f} s ({writes} writes)"),
        ("  ratio wall / ideal", f"{first_wall / ideal:.3f} (target <= 1.15)" if ideal else "n/a"),
        ("  failed attempts re-run", first_failures),
        ("  Attio 429 answers", first_429),
        ("re-sync (no change)", again.line()),
        ("  wall time", f"{again_wall:.2f} s"),
        ("  Attio calls", f"{len(resync_calls)} ({resync_writes} writes)"),
        ("  failed attempts re-run", again_failures),
        ("  Attio 429 answers (total)", attio_sim.rate_limited),
    ]))


if __name__ == "__main__":
    main()
