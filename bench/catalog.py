"""``python -m bench.catalog``: the catalog sync (workflow 1) against the Attio write budget.

The bench starts the simulators itself: Zoho Billing in this process (1,000 plans and 200 addons by default, read
in 7 calls), Attio in a spawned process of its own, so the simulator does not share a GIL with the service it
measures (as in ``bench.worker``). It then runs the reconcile twice through the real clients, budgets and
breakers (Redis: ``BENCH_REDIS_URL``, flushed), with the job's writers (``WRITERS`` Attio clients in parallel):
the first sync creates every ``services`` record, the second finds nothing to change. The Attio write budget is
B per second (``--budget``, default 100) and the Attio simulator enforces the same B, answering 429 over it.

``--quota`` measures instead what the catalogue costs in Zoho's daily quota (issue 20): with a catalogue of
``--plans`` + ``--addons`` items (1,200 by default, 200 rows a list page) it counts, against the simulators, the
Zoho and Attio calls of one full reconcile, of one schedule tick that finds the full reconcile not due, and of one
catalogue event (the mean of ``--changes`` events: plan and addon edits and a deletion, their payloads taken from
the Zoho simulator's event log and validated as the intake does). From these it prints the calls per day with
``--changes`` changes a day: BEFORE, a full reconcile every ``CATALOG_SYNC_INTERVAL_MINUTES`` (15), and AFTER,
each change mirrored from its event and a full reconcile every ``CATALOG_FULL_SYNC_HOURS`` (24).

Prints, for the first sync, the wall time, the ideal time the budget allows (writes ÷ B) and their ratio (target
≤ 1.15; the floor is 1.05, the budget stretching its 1 s window by 5 % against clock jitter), the same ratio for
each half of the writes (the simulator's upsert cost grows with the records it holds), the simulator's 429 count;
for the re-sync, its wall time and its Attio calls (reads only).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import redis

from integration.clients.attio import build_attio_client
from integration.clients.zoho import build_zoho_client
from integration.config import Settings
from integration.errors import ServiceUnavailable
from integration.schemas.zoho import ZohoEventSchema
from simulators.attio import AttioSimulator
from simulators.zoho import ZohoSimulator
from workers.jobs.catalog import handle_catalog_sync
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


# -- the catalogue's share of Zoho's daily quota -----------------------------------------------------------------
TICK_MINUTES = 15  # CATALOG_SYNC_INTERVAL_MINUTES' default
FULL_SYNC_HOURS = 24  # CATALOG_FULL_SYNC_HOURS' default


def daily_calls(
    *, plans: int = 1000, addons: int = 200, changes: int = 10, redis_url: str = BENCH_REDIS_URL
) -> dict[str, Any]:
    """Zoho and Attio calls per day of the catalog sync, before and after change-driven sync, from counted calls.

    Everything goes through ``handle_catalog_sync`` (the job's handler) and the real clients; Redis is flushed.
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    attio_sim = AttioSimulator(writes_per_second=None, reads_per_second=None).start()
    attio_sim.setup_schema()
    zoho_sim = ZohoSimulator().start()
    _seed(zoho_sim, plans, addons)
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    try:
        settings = _settings(attio_sim.url, attio_sim.api_key, zoho_sim, 1000)
        clients = {"zoho": build_zoho_client(settings, connection), "attio": build_attio_client(settings, connection)}
        start = datetime.now(UTC)

        def counted(payload: dict[str, Any], at: datetime, **kw: Any) -> tuple[dict[str, Any], int, int]:
            zoho_before = sum(1 for c in zoho_sim.calls if c.path.startswith("/billing/v1/"))
            attio_before = len(attio_sim.calls)
            result = handle_catalog_sync(payload, **clients, redis=connection, now=at, **kw)
            zoho_calls = sum(1 for c in zoho_sim.calls if c.path.startswith("/billing/v1/")) - zoho_before
            return result, zoho_calls, len(attio_sim.calls) - attio_before

        admin = {"trigger": "admin", "source": "admin"}
        tick = {"trigger": "schedule", "source": "schedule"}
        loaded = counted(admin, start)[0]  # the first load (every record created): not a daily cost
        full, full_zoho, full_attio = counted(tick, start + timedelta(hours=FULL_SYNC_HOURS),
                                              full_sync_hours=FULL_SYNC_HOURS, tick_minutes=TICK_MINUTES)
        idle, idle_zoho, idle_attio = counted(tick, start + timedelta(hours=FULL_SYNC_HOURS + 1),
                                              full_sync_hours=FULL_SYNC_HOURS, tick_minutes=TICK_MINUTES)
        assert (full["outcome"], idle["outcome"]) == ("synced", "skipped"), (full, idle)
        zoho_sim.catalog_events = True
        for i in range(changes):  # edits of plans and addons, and one plan deleted
            if i == changes - 1:
                zoho_sim.remove_plan(f"plan-{i:05d}")
            elif i % 4 == 3 and addons:
                zoho_sim.update_addon(f"addon-{i % addons:04d}", name=f"Addon {i}, renamed")
            else:
                zoho_sim.update_plan(f"plan-{i:05d}", recurring_price=100.0 + i)
        events = [ZohoEventSchema().load(json.loads(e["payload"])) for e in zoho_sim.events[-changes:]]
        event_zoho = event_attio = 0
        for n, event in enumerate(events):
            payload = {"source": "zoho", "event_type": event["event_type"], "event_id": event["event_id"],
                       "received_at": (start + timedelta(hours=FULL_SYNC_HOURS + 2)).isoformat(), "event": event}
            result, z, a = counted(payload, start + timedelta(hours=FULL_SYNC_HOURS + 2, seconds=n))
            assert result["outcome"] == "mirrored", result
            event_zoho, event_attio = event_zoho + z, event_attio + a
    finally:
        connection.flushdb()
        attio_sim.stop()
        zoho_sim.stop()
    ticks = 24 * 60 // TICK_MINUTES
    fulls = 24 / FULL_SYNC_HOURS
    per_event_zoho, per_event_attio = event_zoho / max(changes, 1), event_attio / max(changes, 1)
    before = {"zoho": ticks * full_zoho, "attio": ticks * full_attio}
    after = {
        "zoho": fulls * full_zoho + (ticks - fulls) * idle_zoho + changes * per_event_zoho,
        "attio": fulls * full_attio + (ticks - fulls) * idle_attio + changes * per_event_attio,
    }
    return {
        "items": plans + addons, "changes_per_day": changes, "loaded": loaded["created"],
        "full_run": {"zoho": full_zoho, "attio": full_attio},
        "idle_tick": {"zoho": idle_zoho, "attio": idle_attio},
        "event": {"zoho": per_event_zoho, "attio": per_event_attio},
        "ticks_per_day": ticks, "full_runs_per_day": fulls,
        "before": before, "after": after,
        # with a Zoho workflow already sending events, each one used to start a full reconcile as well
        "before_with_events": {"zoho": before["zoho"] + changes * full_zoho},
    }


def quota_report(r: dict[str, Any]) -> str:
    """The catalogue's calls per day, before and after, as a table."""
    head = (f"bench.catalog --quota: {r['items']} catalogue items (200 a list page), {r['changes_per_day']} changes "
            f"a day; calls counted against the simulators through the job's handler")
    return head + "\n" + table([
        ("one full reconcile", f"Zoho {r['full_run']['zoho']}, Attio {r['full_run']['attio']} (no change to write)"),
        ("one tick, full reconcile not due", f"Zoho {r['idle_tick']['zoho']}, Attio {r['idle_tick']['attio']}"),
        ("one catalogue event (mean)", f"Zoho {r['event']['zoho']:g}, Attio {r['event']['attio']:g}"),
        (f"BEFORE: full reconcile every {TICK_MINUTES} min",
         f"Zoho {r['before']['zoho']:g}/day ({r['ticks_per_day']} × {r['full_run']['zoho']}), "
         f"Attio {r['before']['attio']:g}/day"),
        ("  (and with a Zoho workflow sending events)",
         f"Zoho {r['before_with_events']['zoho']:g}/day (each event ran a full reconcile too)"),
        (f"AFTER: events + full every {FULL_SYNC_HOURS} h",
         f"Zoho {r['after']['zoho']:g}/day ({r['full_runs_per_day']:g} × {r['full_run']['zoho']} + "
         f"{r['changes_per_day']} × {r['event']['zoho']:g}), Attio {r['after']['attio']:g}/day"),
    ])  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--budget", type=int, default=100, help="Attio writes per second (client and simulator)")
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--addons", type=int, default=200)
    parser.add_argument("--writers", type=int, default=WRITERS, help="Attio clients writing in parallel")
    parser.add_argument("--quota", action="store_true", help="Zoho calls per day, before / after (see above)")
    parser.add_argument("--changes", type=int, default=10, help="catalogue changes a day (with --quota)")
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
    args = build_parser().parse_args()
    if args.quota:
        print(quota_report(daily_calls(plans=args.plans, addons=args.addons, changes=args.changes)))
        return
    print(report(run(args)))


if __name__ == "__main__":
    main()
