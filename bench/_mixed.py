"""The mixed run of ``python -m bench.budget --mixed`` (issue 16): money work and bulk work share the budgets.

Three kinds of work run together against the simulators, through the real clients and the shared budgets in Redis:

- **bulk**: a catalog sync of ``plans`` Zoho plans into Attio (``sync_services`` with its parallel writers), and an
  audit-like reader listing Zoho invoices and Attio services page after page until the sync is done;
- **money**: ``invoices`` ``invoice_created`` collections (``handle_invoice_created``: one Braintree sale each, a
  Zoho payment, Attio records), one arriving every ``arrival`` seconds from just after the sync starts, worked by
  ``workers`` threads (the worker processes), each with its own clients. A collection that meets "not now" (a
  budget wait longer than the client's wait) waits the time named and starts again, as a deferred job; that
  pause counts as budget wait.

Zoho's budget is ``zoho_limit`` calls per ``zoho_window`` seconds. Its real window is a minute; by default the run
is time-scaled ten times (30 calls per 6 s: the same ratio of budget to work, in a tenth of the time). Attio's
budgets are its real per-second ones. The simulators enforce the same limits, so a 429 from them means our own
pacing let one call too many through.

``lanes=False`` is the baseline without priorities: every call in one lane, no reserve; ``bulk=False`` runs the
collections alone, the reference for what the budget itself costs them.

Each budget admission is metered (a ``Limiter`` around the real one): the calls each class got per provider, and
the seconds each collection spent waiting for budget slots (the delay budget waits add to a charge).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import requests

from integration.clients._http import Limiter
from integration.clients.attio import ATTIO_MONEY_RESERVE, AttioClient, AttioLimiter
from integration.clients.braintree import build_braintree_client, customer_id_for_company
from integration.clients.breaker import make_breaker
from integration.clients.budget import MONEY_RESERVE
from integration.clients.zoho import ZohoClient, ZohoLimiter
from integration.clients.zoho_auth import ZohoTokens
from integration.config import Settings
from integration.errors import NotNow
from integration.queueing import make_redis
from integration.worklane import BULK, MONEY, Lane, lane
from simulators.attio import AttioSimulator
from simulators.braintree import BraintreeSimulator
from simulators.zoho import ZohoSimulator
from workers.jobs.collection import handle_invoice_created
from workers.workflows.catalog import WRITERS, sync_services

__all__ = ["MixedResult", "percentile", "run_mixed"]

_CLASS: ContextVar[str] = ContextVar("bench_class", default="money")  # what the work is, whatever its lane
_WAITS: ContextVar[list[float] | None] = ContextVar("bench_waits", default=None)  # one collection's budget waits


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class MixedResult:
    """What the mixed run measured."""

    lanes: bool
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (provider, class) → admitted calls
    collection_waits: list[float] = field(default_factory=list)  # seconds of budget waits per collection
    collection_seconds: list[float] = field(default_factory=list)  # arrival → done, per collection
    charge_seconds: list[float] = field(default_factory=list)  # arrival → the sale, per collection
    charged_after_start: list[float] = field(default_factory=list)  # run start → the sale, per collection
    deferrals: int = 0  # collections that met "not now" and started again
    outcomes: Counter[str] = field(default_factory=Counter)
    sync_seconds: float = 0.0
    sync_writes: int = 0
    sync_restarts: int = 0
    audit_pages: int = 0
    zoho_429: int = 0
    attio_429: int = 0
    errors: list[str] = field(default_factory=list)

    def share(self, provider: str) -> dict[str, float]:
        """Each class's share of the calls admitted to ``provider``."""
        total = sum(n for (p, _), n in self.calls.items() if p == provider)
        return {c: n / total for (p, c), n in self.calls.items() if p == provider} if total else {}


class _Metered(Limiter):
    """The real limiter, timed: counts each admission by class and adds its wait to the current collection's."""

    def __init__(self, inner: Limiter, provider: str, result: MixedResult, lock: threading.Lock) -> None:
        self._inner, self._provider, self._result, self._lock = inner, provider, result, lock

    @contextlib.contextmanager
    def enter(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        with self._inner.enter(kind):
            waited = time.perf_counter() - started
            with self._lock:
                self._result.calls[(self._provider, _CLASS.get())] += 1
            waits = _WAITS.get()
            if waits is not None:
                waits.append(waited)
            yield


@dataclass
class _Wiring:
    settings: Settings
    redis_url: str
    zoho_limit: int
    zoho_window: float
    lanes: bool
    result: MixedResult
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connection(self) -> redis.Redis:
        return make_redis(self.redis_url)

    def zoho(self, connection: redis.Redis) -> ZohoClient:
        s = self.settings
        limiter = ZohoLimiter(connection, s.zoho_organization_id, requests_per_minute=self.zoho_limit,
                              max_concurrent=s.zoho_max_concurrent, period=self.zoho_window,
                              lease=sum(s.http_timeout) + 15.0, reserve=MONEY_RESERVE if self.lanes else 0.0)
        http = requests.Session()
        return ZohoClient(tokens=ZohoTokens.from_settings(s, connection, http=http),
                          organization_id=s.zoho_organization_id, http=http, timeout=s.http_timeout,
                          api_url=s.zoho_api_url, breaker=make_breaker(connection, "zoho"),
                          limiter=_Metered(limiter, "zoho", self.result, self.lock),
                          inline_wait=s.inline_wait_seconds)

    def attio(self, connection: redis.Redis) -> AttioClient:
        s = self.settings
        limiter = AttioLimiter(connection, reads_per_second=s.attio_reads_per_second,
                               writes_per_second=s.attio_writes_per_second,
                               reserve=ATTIO_MONEY_RESERVE if self.lanes else 0.0)
        return AttioClient(base_url=s.attio_api_url, token=s.attio_api_key, http=requests.Session(),
                           timeout=s.http_timeout, breaker=make_breaker(connection, "attio"),
                           limiter=_Metered(limiter, "attio", self.result, self.lock),
                           inline_wait=s.inline_wait_seconds)

    @contextlib.contextmanager
    def work(self, kind: str) -> Iterator[None]:
        """Run as ``kind`` (money | bulk); without lanes everything shares the money lane."""
        token = _CLASS.set(kind)
        chosen: Lane = (BULK if kind == "bulk" else MONEY) if self.lanes else MONEY
        try:
            with lane(chosen):
                yield
        finally:
            _CLASS.reset(token)


def _seed(zoho: ZohoSimulator, attio: AttioSimulator, braintree: BraintreeSimulator, plans: int,
          invoices: int) -> list[str]:
    """``plans`` plans to sync, and one customer known everywhere with ``invoices`` open invoices; their ids."""
    for i in range(plans):
        zoho.add_plan(f"mixed-plan-{i:04d}", f"Plan {i}", 10.0 + i, interval=1, interval_unit="months")
    customer = zoho.add_customer("Acme Ltd", "billing@acme.example")
    company = attio.add_record("companies", {"name": "Acme Ltd", "billing_email": "billing@acme.example",
                                             "zoho_customer_id": customer})
    bt_customer = customer_id_for_company(company)
    braintree.add_customer(bt_customer, email="billing@acme.example", card="valid")
    attio.set_values("companies", company, {"braintree_customer_id": bt_customer})
    # A subscription the service manages (Attio knows its Zoho id): only such invoices are charged.
    attio.add_record("subscriptions", {"name": "Acme Basic", "status": "Active", "zoho_subscription_id": "mixed-sub",
                                       "company": {"target_object": "companies", "target_record_id": company}})
    return [str(zoho.raise_invoice(customer, 20.0 + i, subscription_id="mixed-sub")["invoice_id"])
            for i in range(invoices)]


def run_mixed(
    *,
    settings: Settings,
    zoho_sim: ZohoSimulator,
    attio_sim: AttioSimulator,
    braintree_sim: BraintreeSimulator,
    redis_url: str,
    plans: int = 300,
    invoices: int = 20,
    zoho_limit: int = 30,
    zoho_window: float = 6.0,
    arrival: float = 0.25,
    workers: int = 4,
    lanes: bool = True,
    bulk: bool = True,
) -> MixedResult:
    """Run the mixed load once (see the module docstring); the simulators must be fresh, Redis's DB flushed."""
    result = MixedResult(lanes=lanes)
    ids_plans = plans if bulk else 0
    wiring = _Wiring(settings, redis_url, zoho_limit, zoho_window, lanes, result)
    ids = _seed(zoho_sim, attio_sim, braintree_sim, ids_plans, invoices)
    zoho_sim.requests_per_minute, zoho_sim.rate_window = zoho_limit, zoho_window
    rate_limited = (zoho_sim.rate_limited, attio_sim.rate_limited)
    started = time.monotonic()
    sync_done = threading.Event()
    arrivals: queue.SimpleQueue[tuple[str, float] | None] = queue.SimpleQueue()

    def sync() -> None:
        connection = wiring.connection()
        with wiring.work("bulk"):
            try:
                while True:
                    try:
                        summary = sync_services(zoho=wiring.zoho(connection), attio=wiring.attio(connection),
                                                now=datetime.now(UTC),
                                                writers=[wiring.attio(connection) for _ in range(WRITERS)])
                        result.sync_writes += summary.created + summary.updated + summary.removed
                        break
                    except NotNow as exc:  # the job is deferred, then runs again: it writes what is missing
                        result.sync_restarts += 1
                        time.sleep(max(1.0, exc.retry_after or 1.0))
            except Exception as exc:  # noqa: BLE001 - reported in the result
                result.errors.append(f"sync: {type(exc).__name__}: {exc}")
            finally:
                result.sync_seconds = time.monotonic() - started
                sync_done.set()

    def audit() -> None:
        connection = wiring.connection()
        zoho, attio = wiring.zoho(connection), wiring.attio(connection)
        with wiring.work("bulk"):
            while not sync_done.is_set():
                try:
                    zoho.list_invoices()
                    attio.query_records("services")
                    result.audit_pages += 2
                except NotNow as exc:
                    time.sleep(exc.retry_after or 1.0)

    def collector() -> None:
        connection = wiring.connection()
        zoho, attio = wiring.zoho(connection), wiring.attio(connection)
        braintree = build_braintree_client(settings, connection)
        charged: dict[str, float] = {}
        sale = braintree.sale

        def timed_sale(*args: Any, **kwargs: Any) -> Any:
            outcome = sale(*args, **kwargs)
            charged.setdefault(current[0], time.monotonic())
            return outcome

        braintree.sale = timed_sale  # type: ignore[method-assign]
        current = [""]
        with wiring.work("money"):
            while (item := arrivals.get()) is not None:
                invoice_id, arrived = item
                current[0] = invoice_id
                waits: list[float] = []
                token = _WAITS.set(waits)
                payload = {"event_id": f"ev-{invoice_id}",
                           "event": {"event_id": f"ev-{invoice_id}", "data": {"invoice": {"invoice_id": invoice_id}}}}
                try:
                    while True:
                        try:
                            outcome = handle_invoice_created(payload, zoho=zoho, braintree=braintree, attio=attio,
                                                             connection=connection)
                            break
                        except NotNow as exc:  # a deferred job, run again when named: the wait is the budget's
                            result.deferrals += 1
                            pause = max(1.0, exc.retry_after or 1.0)
                            waits.append(pause)
                            time.sleep(pause)
                    result.outcomes[str(outcome.get("outcome"))] += 1
                except Exception as exc:  # noqa: BLE001 - reported in the result
                    result.errors.append(f"collection {invoice_id}: {type(exc).__name__}: {exc}")
                finally:
                    _WAITS.reset(token)
                done = time.monotonic()
                result.collection_waits.append(sum(waits))
                result.collection_seconds.append(done - arrived)
                if invoice_id in charged:
                    result.charge_seconds.append(charged[invoice_id] - arrived)
                    result.charged_after_start.append(charged[invoice_id] - started)

    threads = [threading.Thread(target=sync, daemon=True), threading.Thread(target=audit, daemon=True)] if bulk else []
    if not bulk:
        sync_done.set()
    threads += [threading.Thread(target=collector, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the sync and the audit have started reading
    for invoice_id in ids:
        arrivals.put((invoice_id, time.monotonic()))
        time.sleep(arrival)
    for _ in range(workers):
        arrivals.put(None)
    for thread in threads:
        thread.join(timeout=600)
    result.zoho_429 = zoho_sim.rate_limited - rate_limited[0]
    result.attio_429 = attio_sim.rate_limited - rate_limited[1]
    return result


def summary_rows(result: MixedResult) -> list[tuple[str, Any]]:
    """Rows for ``bench._common.table``."""
    rows: list[tuple[str, Any]] = []
    for provider in ("zoho", "attio"):
        share = result.share(provider)
        calls = {c: n for (p, c), n in result.calls.items() if p == provider}
        rows.append((f"{provider}: calls by class", ", ".join(
            f"{c} {calls.get(c, 0)} ({share.get(c, 0.0):.0%})" for c in ("money", "bulk"))))
    waits, seconds = result.collection_waits, result.collection_seconds
    rows += [
        ("collection: budget waits p50 / p99 / max", _three(waits)),
        ("collection: arrival → charged p50 / p99 / max", _three(result.charge_seconds)),
        ("collection: arrival → done p50 / p99 / max", _three(seconds)),
        ("collections deferred (not now, started again)", result.deferrals),
        ("outcomes", dict(result.outcomes)),
        ("last charge / sync done (s after start)",
         f"{max(result.charged_after_start, default=float('nan')):.1f} / {result.sync_seconds:.1f}"),
        ("sync writes (restarts), audit pages", f"{result.sync_writes} ({result.sync_restarts}), {result.audit_pages}"),
        ("429s from the simulators (zoho, attio)", f"{result.zoho_429}, {result.attio_429} (target 0, 0)"),
    ]
    if result.errors:
        rows.append(("errors", "; ".join(result.errors[:5])))
    return rows


def _three(values: list[float]) -> str:
    return (f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f} / "
            f"{max(values, default=float('nan')):.2f} s")
