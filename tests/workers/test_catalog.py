"""Workflow 1, the catalog sync: Zoho plans and addons → Attio ``services``, changes only, one run at a time.

Real Redis, the real clients and the Zoho and Attio simulators over loopback HTTP; jobs run in-process through
RQ's ``SimpleWorker``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from rq.registry import FinishedJobRegistry

from integration.clients.attio import build_attio_client
from integration.clients.zoho import build_zoho_client
from integration.errors import ServiceUnavailable
from integration.locks import hold
from integration.queueing import enqueue_job, make_queues, make_redis
from integration.routing import CATALOG_QUEUE, CATALOG_SYNC
from simulators.attio import AttioSimulator
from tests.conftest import SECRETS, TEST_REDIS_URL, LiveServer, Stack, run_until_idle, run_worker
from workers import runtime
from workers.jobs.catalog import LAST_RUN_KEY, LOCK_NAME, handle_catalog_sync
from workers.schedule import install_schedule, period_job_id, period_start
from workers.workflows.catalog import billing_interval, sync_services

SERVICE_SLUGS = ("external_id", "name", "description", "kind", "code", "price", "billing_interval", "status",
                 "zoho_product_id", "last_synced_at")  # fmt: skip
PUT_RECORDS = "/v2/objects/services/records"
PLANS = "/billing/v1/plans"


# -- helpers ----------------------------------------------------------------------------------------------------
def seed(stack: Stack, plans: int, addons: int) -> None:
    """A catalogue with every interval, status and addon type the mapping knows."""
    units = (("months", 1), ("months", 12), ("years", 1), ("months", 3))
    for i in range(plans):
        unit, interval = units[i % len(units)]
        stack.zoho.add_plan(
            f"plan-{i:04d}", f"Plan {i}", round(9.99 + i, 2), interval=interval, interval_unit=unit,
            status="inactive" if i % 10 == 0 else "active", description=f"Plan number {i}." if i % 3 else "",
        )  # fmt: skip
    for i in range(addons):
        stack.zoho.add_addon(f"addon-{i:03d}", f"Addon {i}", round(1.5 + i, 2),
                             type="one_time" if i % 5 == 0 else "recurring",
                             interval_unit="yearly" if i % 2 else "monthly")  # fmt: skip


def services(attio: AttioSimulator) -> dict[str, dict[str, Any]]:
    """Every ``services`` record's plain values, by external_id (fails on a duplicate)."""
    found: dict[str, dict[str, Any]] = {}
    for record in attio.records("services"):
        rid = record["id"]["record_id"]
        values = {slug: attio.value("services", rid, slug) for slug in SERVICE_SLUGS}
        assert values["external_id"] not in found, f"duplicate {values['external_id']}"
        found[values["external_id"]] = values
    return found


def clients(stack: Stack, conn: redis.Redis, **overrides: Any) -> dict[str, Any]:
    """The real Zoho and Attio clients wired to the simulators (high budgets)."""
    settings = stack.settings(**overrides)
    return {"zoho": build_zoho_client(settings, conn), "attio": build_attio_client(settings, conn)}


def writes(attio: AttioSimulator) -> int:
    """Attio writes the simulator accepted so far."""
    return attio.writes_ok


@pytest.fixture
def fast_attio(stack: Stack) -> Iterator[AttioSimulator]:
    """A fresh Attio workspace with the data model, without rate limits."""
    sim = AttioSimulator(writes_per_second=None, reads_per_second=None).start()
    sim.setup_schema()
    yield sim
    sim.stop()


# -- mapping ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("interval", "unit", "words"),
    [(1, "months", "every 1 month"), (12, "months", "every 12 months"), (1, "years", "every 1 year"),
     (2, "years", "every 2 years"), (1, "monthly", "every 1 month"), (1, "yearly", "every 1 year"),
     (2, "weeks", "every 2 weeks"), (None, "months", "every 1 month"), (1, None, None)],
)  # fmt: skip
def test_billing_interval_in_words(interval, unit, words):
    assert billing_interval(interval, unit) == words


# -- the reconcile ----------------------------------------------------------------------------------------------
def test_full_catalog_first_sync_then_no_writes_then_only_the_changes(stack, fast_attio, redis_conn):
    """1,000 plans + 200 addons over several Zoho pages: create all, then nothing, then exactly 3 + 2 writes."""
    attio = fast_attio
    seed(stack, plans=1000, addons=200)
    manual = attio.add_record("services", {"external_id": "manual-42", "name": "Hand-made", "status": "Active"})
    c = clients(stack, redis_conn, attio_api_url=attio.url)

    first = sync_services(**c, now=datetime.now(UTC))

    assert (first.created, first.updated, first.unchanged, first.removed) == (1200, 0, 0, 0)
    assert len(stack.zoho.calls_to("GET", PLANS)) == 5  # 200 per page
    state = services(attio)
    assert len(state) == 1201
    assert state["zoho-plan:plan-0000"] | {"last_synced_at": None} == {
        "external_id": "zoho-plan:plan-0000", "name": "Plan 0", "description": None, "kind": "Plan",
        "code": "plan-0000", "price": 9.99, "billing_interval": "every 1 month", "status": "Inactive",
        "zoho_product_id": stack.zoho.plans["plan-0000"]["product_id"], "last_synced_at": None,
    }  # fmt: skip
    assert state["zoho-plan:plan-0001"]["billing_interval"] == "every 12 months"
    assert state["zoho-plan:plan-0002"]["billing_interval"] == "every 1 year"
    assert state["zoho-plan:plan-0001"]["description"] == "Plan number 1."
    assert state["zoho-plan:plan-0999"]["price"] == 1008.99
    assert state["zoho-addon:addon-000"] | {"last_synced_at": None} == {
        "external_id": "zoho-addon:addon-000", "name": "Addon 0", "description": None, "kind": "Addon",
        "code": "addon-000", "price": 1.5, "billing_interval": "one time", "status": "Active",
        "zoho_product_id": stack.zoho.addons["addon-000"]["product_id"], "last_synced_at": None,
    }  # fmt: skip
    assert state["zoho-addon:addon-001"]["billing_interval"] == "every 1 year"
    assert state["zoho-addon:addon-002"]["billing_interval"] == "every 1 month"
    assert state["zoho-plan:plan-0005"]["last_synced_at"].startswith(datetime.now(UTC).strftime("%Y-%m-%d"))

    # Unchanged catalogue: Attio is read (one query, paged), never written.
    before, calls_before = writes(attio), len(attio.calls)
    again = sync_services(**c, now=datetime.now(UTC))
    assert (again.created, again.updated, again.unchanged, again.removed) == (0, 0, 1200, 0)
    assert writes(attio) == before
    assert {call.method for call in attio.calls[calls_before:]} == {"POST"}  # records/query only
    assert all(call.path.endswith("/records/query") for call in attio.calls[calls_before:])

    # 3 plans change, 1 plan and 1 addon disappear.
    stack.zoho.update_plan("plan-0003", recurring_price=12.5)
    stack.zoho.update_plan("plan-0004", name="Plan four, renamed", description="")
    stack.zoho.update_plan("plan-0007", status="inactive")
    stack.zoho.remove_plan("plan-0008")
    stack.zoho.remove_addon("addon-007")
    before = writes(attio)
    third = sync_services(**c, now=datetime.now(UTC))
    assert (third.created, third.updated, third.unchanged, third.removed) == (0, 3, 1195, 2)
    assert writes(attio) - before == 5
    assert sorted(ch.describe() for ch in third.changes) == [
        "remove zoho-addon:addon-007", "remove zoho-plan:plan-0008", "update zoho-plan:plan-0003 (price)",
        "update zoho-plan:plan-0004 (name, description)", "update zoho-plan:plan-0007 (status)",
    ]  # fmt: skip
    after = services(attio)
    assert after["zoho-plan:plan-0003"]["price"] == 12.5
    assert after["zoho-plan:plan-0004"]["name"] == "Plan four, renamed"
    assert after["zoho-plan:plan-0004"]["description"] is None
    assert after["zoho-plan:plan-0007"]["status"] == "Inactive"
    removed = after["zoho-plan:plan-0008"]
    assert removed["status"] == "Removed"
    assert {k: v for k, v in removed.items() if k not in ("status", "last_synced_at")} == {
        k: v for k, v in state["zoho-plan:plan-0008"].items() if k not in ("status", "last_synced_at")
    }
    assert after["zoho-addon:addon-007"]["status"] == "Removed"
    assert attio.value("services", manual, "status") == "Active"  # not ours: never touched
    assert len(after) == 1201

    assert {call.method for call in stack.zoho.calls if call.path.startswith("/billing")} == {"GET"}  # read only

    # Removed records stay Removed without being rewritten.
    before = writes(attio)
    fourth = sync_services(**c, now=datetime.now(UTC))
    assert (fourth.updated, fourth.removed, writes(attio) - before) == (0, 0, 0)


def test_dry_run_plans_but_writes_nothing(stack, redis_conn):
    stack.zoho.seed_sample_data()
    c = clients(stack, redis_conn)
    summary = sync_services(**c, now=datetime.now(UTC), dry_run=True)
    assert (summary.created, summary.dry_run) == (5, True)
    assert "create zoho-plan:basic-monthly" in [ch.describe() for ch in summary.changes]
    assert writes(stack.attio) == 0
    assert stack.attio.records("services") == []


def test_a_record_marked_removed_comes_back_when_zoho_lists_it_again(stack, redis_conn):
    stack.zoho.seed_sample_data()
    c = clients(stack, redis_conn)
    sync_services(**c, now=datetime.now(UTC))
    plan = stack.zoho.plans["basic-monthly"]
    stack.zoho.remove_plan("basic-monthly")
    assert sync_services(**c, now=datetime.now(UTC)).removed == 1
    stack.zoho.add_plan("basic-monthly", plan["name"], plan["recurring_price"], description=plan["description"],
                        product_id=plan["product_id"])  # fmt: skip
    back = sync_services(**c, now=datetime.now(UTC))
    assert [ch.describe() for ch in back.changes] == ["update zoho-plan:basic-monthly (status)"]
    assert services(stack.attio)["zoho-plan:basic-monthly"]["status"] == "Active"


# -- the job ----------------------------------------------------------------------------------------------------
def test_job_survives_attio_429_and_zoho_503_and_converges_without_duplicates(stack, redis_conn):
    """Zoho 503 twice, then Attio 429 (Retry-After) and a lost write answer mid-run: retries converge.

    The 429's one-second Retry-After is waited in place (INLINE_WAIT_SECONDS): it costs no attempt and no restart.
    """
    seed(stack, plans=150, addons=30)
    runtime.use_settings(stack.settings(catalog_sync_interval_minutes=0, retry_schedule_seconds=(1,) * 6))
    stack.zoho.faults.add("GET", PLANS, status=503, times=2)
    throttle = lost = None
    stop = threading.Event()

    def inject_mid_run() -> None:
        nonlocal throttle, lost
        while not stop.is_set():
            if throttle is None and writes(stack.attio) >= 60:
                throttle = stack.attio.faults.add("PUT", PUT_RECORDS, status=429, headers={"Retry-After": "1"})
            if throttle is not None and throttle.fired and lost is None and writes(stack.attio) >= 120:
                lost = stack.attio.faults.add("PUT", PUT_RECORDS, after=502)  # written, answer lost
            time.sleep(0.002)

    watcher = threading.Thread(target=inject_mid_run, daemon=True)
    watcher.start()
    queue = make_queues(redis_conn)[CATALOG_QUEUE]
    job_id = enqueue_job(queue, CATALOG_SYNC.job, {"trigger": "admin"}, retry_schedule=(1,) * 6)
    try:
        run_until_idle(redis_conn, rounds=10)
    finally:
        stop.set()
        watcher.join()

    job = queue.fetch_job(job_id)
    assert job.get_status() == "finished", job.latest_result().exc_string
    assert stack.zoho.calls_to("GET", PLANS)[0].status == 503
    assert throttle is not None and throttle.fired == 1 and lost is not None and lost.fired == 1
    assert job.retries_left == 3  # three failed attempts: two 503s, one lost answer (the 429 was waited out)
    assert len(services(stack.attio)) == 180  # every item once: no duplicate from the retries
    assert job.return_value()["outcome"] == "synced"
    assert stack.attio.calls_to("PUT", PUT_RECORDS)[-1].status == 200
    counts = Counter(c.status for c in stack.attio.calls_to("PUT", PUT_RECORDS))
    assert counts[429] == 1 and counts[502] == 1


def test_a_429_storm_longer_than_the_schedule_ends_synced_with_no_failed_job(stack, redis_conn):
    """Attio answers 30 writes with 429 (Retry-After 1 s) against a schedule of 2 retries: each run waits one 429
    out in place, is deferred on the next, and resumes; no attempt is spent, nothing fails (issue 16)."""
    seed(stack, plans=60, addons=0)
    runtime.use_settings(stack.settings(catalog_sync_interval_minutes=0, retry_schedule_seconds=(1, 1)))
    storm = stack.attio.faults.add("PUT", PUT_RECORDS, status=429, headers={"Retry-After": "1"}, skip=10, times=30)
    queue = make_queues(redis_conn)[CATALOG_QUEUE]
    job_id = enqueue_job(queue, CATALOG_SYNC.job, {"trigger": "admin"}, retry_schedule=(1, 1))
    run_until_idle(redis_conn, rounds=30)
    job = queue.fetch_job(job_id)
    assert job.get_status() == "finished", job.latest_result().exc_string
    assert storm.fired == 30
    assert job.meta["deferrals"] > 2  # more "not now" than the schedule has retries
    assert job.retries_left == 2  # none of them spent an attempt
    assert all(q.failed_job_registry.count == 0 for q in make_queues(redis_conn).values())
    assert len(services(stack.attio)) == 60


def test_overlapping_runs_are_refused(stack, redis_conn):
    """A run that finds another one holding the lock ends at once as skipped, without calling anyone."""
    stack.zoho.seed_sample_data()
    c = clients(stack, redis_conn)
    stack.attio.faults.add("POST", "/v2/objects/services/records/query", delay=1.0)  # a slow first run
    results: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: results.update(first=handle_catalog_sync({}, **c, redis=redis_conn, now=datetime.now(UTC)))
    )
    first.start()
    deadline = time.monotonic() + 5
    while not redis_conn.exists(f"lock:{LOCK_NAME}") and time.monotonic() < deadline:
        time.sleep(0.01)
    # Clients pointing at a closed port: any call the second run made would raise.
    unreachable = clients(stack, redis_conn, attio_api_url="http://127.0.0.1:9", zoho_api_url="http://127.0.0.1:9")
    second = handle_catalog_sync({"trigger": "admin"}, **unreachable, redis=redis_conn, now=datetime.now(UTC))
    assert second["outcome"] == "skipped"
    first.join()
    assert results["first"]["outcome"] == "synced" and results["first"]["created"] == 5
    with hold(redis_conn, LOCK_NAME, ttl=5, wait=0):  # released after the run
        pass


def _event(received: datetime) -> dict[str, Any]:
    """The job payload of a Zoho catalogue webhook received at ``received``."""
    return {"source": "zoho", "event_type": "plan_updated", "event_id": "90300000099",
            "received_at": received.isoformat(), "event": {"event_type": "plan_updated"}}  # fmt: skip


def test_a_burst_of_catalog_events_reads_the_catalogue_once_per_run(stack, redis_conn):
    """An event's run is skipped when a complete run started after the event arrived; a newer event runs."""
    stack.zoho.seed_sample_data()
    c = clients(stack, redis_conn)
    unreachable = clients(stack, redis_conn, attio_api_url="http://127.0.0.1:9", zoho_api_url="http://127.0.0.1:9")
    now = datetime.now(UTC)
    assert handle_catalog_sync({"trigger": "admin"}, **c, redis=redis_conn, now=now)["created"] == 5

    earlier = handle_catalog_sync(_event(now - timedelta(seconds=60)), **unreachable, redis=redis_conn, now=now)
    assert earlier["outcome"] == "skipped"
    later = handle_catalog_sync(_event(now + timedelta(seconds=1)), **c, redis=redis_conn, now=now)
    assert (later["outcome"], later["unchanged"]) == ("synced", 5)


def test_an_event_run_retries_rather_than_skip_while_a_sync_is_running(stack, redis_conn):
    """The sync in progress may have read Zoho before the event's change: the event's job must run after it."""
    c = clients(stack, redis_conn)
    with hold(redis_conn, LOCK_NAME, ttl=30, wait=0), pytest.raises(ServiceUnavailable):
        handle_catalog_sync(_event(datetime.now(UTC)), **c, redis=redis_conn, now=datetime.now(UTC))
    assert stack.zoho.calls == [] and stack.attio.calls == []


# -- the schedule ---------------------------------------------------------------------------------------------
def _clear_of_boundary(period: int) -> float:
    """Now, unless a period boundary is less than 5 s away (then just after it): a test must not straddle one."""
    now = time.time()
    if period - now % period < 5:
        time.sleep(period - now % period + 0.1)
        now = time.time()
    return now


def test_one_run_per_period_however_many_workers(stack, redis_conn):
    """Two workers start (install twice, two connections); two workers run: one job per period, one run each."""
    settings = stack.settings(catalog_sync_interval_minutes=15)
    runtime.use_settings(settings)
    stack.zoho.seed_sample_data()
    period = 900
    now = _clear_of_boundary(period)
    current = period_start(now, period)
    other = make_redis(TEST_REDIS_URL)
    try:
        created_a = install_schedule(settings, redis_conn, now=now)
        created_b = install_schedule(settings, other, now=now + 1)
    finally:
        other.close()
    assert created_a == [period_job_id(current), period_job_id(current + period)]
    assert created_b == []
    queue = make_queues(redis_conn)[CATALOG_QUEUE]
    assert queue.get_job_ids() == [period_job_id(current)]
    assert queue.scheduled_job_registry.get_job_ids() == [period_job_id(current + period)]

    run_worker(redis_conn)
    run_worker(redis_conn)  # the second worker finds nothing to do
    finished = FinishedJobRegistry(queue=queue)
    assert finished.get_job_ids() == [period_job_id(current)]
    assert len(stack.zoho.calls_to("GET", PLANS)) == 1

    # The next period comes due (RQ's scheduler would move it): it runs once and chains the one after.
    registry = queue.scheduled_job_registry
    job = queue.fetch_job(period_job_id(current + period))
    registry.remove(job)
    queue.enqueue_job(job)
    install_schedule(settings, redis_conn)  # a worker restarting meanwhile adds nothing
    run_worker(redis_conn)
    run_worker(redis_conn)
    assert sorted(finished.get_job_ids()) == sorted([period_job_id(current), period_job_id(current + period)])
    assert registry.get_job_ids() == [period_job_id(current + 2 * period)]
    # ... and reads nothing: the full reconcile is daily by default, and the last one began a tick ago
    assert queue.fetch_job(period_job_id(current + period)).return_value()["outcome"] == "skipped"
    assert len(stack.zoho.calls_to("GET", PLANS)) == 1


def test_schedule_off_when_interval_is_zero(stack, redis_conn):
    assert install_schedule(stack.settings(catalog_sync_interval_minutes=0), redis_conn) == []
    queue = make_queues(redis_conn)[CATALOG_QUEUE]
    assert queue.count == 0 and queue.scheduled_job_registry.count == 0


# -- change-driven: one event, one item ---------------------------------------------------------------------------
BILLING = "/billing/v1/"


def zoho_billing_calls(stack: Stack, since: int) -> list[str]:
    """The Billing API calls Zoho saw after the first ``since`` calls (``GET /billing/v1/plans/x``), OAuth left out."""
    return [f"{c.method} {c.path}" for c in stack.zoho.calls[since:] if c.path.startswith(BILLING)]


@pytest.fixture
def catalog_events(stack: Stack, live_server: LiveServer) -> Iterator[Stack]:
    """Zoho posting catalogue events (as a Zoho workflow would) to the real web app."""
    stack.zoho.webhook_target = (f"{live_server.url}/webhooks/zoho", SECRETS["zoho_webhook_secret"])
    stack.zoho.catalog_events = True
    yield stack


def _deliver(stack: Stack, redis_conn: redis.Redis) -> None:
    assert stack.zoho.flush_webhooks(10)
    run_worker(redis_conn)


def test_a_plan_event_mirrors_that_plan_with_one_zoho_read_and_one_attio_write(catalog_events, redis_conn):
    """A catalogue of 1,200 items over 7 list pages: one changed plan costs one Zoho call, not seven."""
    stack = catalog_events
    stack.zoho.catalog_events = False  # the seed is not 1,200 events
    seed(stack, plans=1000, addons=200)
    assert handle_catalog_sync({"trigger": "admin"}, **clients(stack, redis_conn), redis=redis_conn,
                               now=datetime.now(UTC))["created"] == 1200  # fmt: skip
    stack.zoho.catalog_events = True
    zoho_mark, attio_mark, before = len(stack.zoho.calls), len(stack.attio.calls), writes(stack.attio)

    stack.zoho.update_plan("plan-0003", recurring_price=12.5, name="Plan three")
    _deliver(stack, redis_conn)

    assert zoho_billing_calls(stack, zoho_mark) == ["GET /billing/v1/plans/plan-0003"]
    attio_calls = [f"{c.method} {c.path.rsplit('/', 1)[-1]}" for c in stack.attio.calls[attio_mark:]]
    assert attio_calls == ["POST query", "PUT records"]  # the one record read, then upserted
    assert writes(stack.attio) - before == 1
    state = services(stack.attio)
    assert (state["zoho-plan:plan-0003"]["price"], state["zoho-plan:plan-0003"]["name"]) == (12.5, "Plan three")
    [job] = FinishedJobRegistry(queue=make_queues(redis_conn)[CATALOG_QUEUE]).get_job_ids()
    result = make_queues(redis_conn)[CATALOG_QUEUE].fetch_job(job).return_value()
    assert (result["outcome"], result["item"], result["updated"]) == ("mirrored", "plan plan-0003", 1)


def test_created_and_deleted_events_create_and_mark_removed(catalog_events, redis_conn):
    """``addon_created`` creates the record; ``*_deleted`` re-reads (Zoho: no such addon) and marks it Removed."""
    stack = catalog_events
    stack.zoho.add_addon("extra-ip", "Extra IP", 4.0)
    stack.zoho.add_plan("starter", "Starter", 9.0)
    _deliver(stack, redis_conn)
    state = services(stack.attio)
    assert {k: v["status"] for k, v in state.items()} == {
        "zoho-addon:extra-ip": "Active", "zoho-plan:starter": "Active"}  # fmt: skip

    zoho_mark = len(stack.zoho.calls)
    stack.zoho.remove_addon("extra-ip")
    _deliver(stack, redis_conn)
    assert zoho_billing_calls(stack, zoho_mark) == ["GET /billing/v1/addons/extra-ip"]  # answered "Invalid AddonCode"
    after = services(stack.attio)
    assert after["zoho-addon:extra-ip"]["status"] == "Removed"
    assert after["zoho-addon:extra-ip"]["price"] == 4.0  # the rest left as it was
    assert after["zoho-plan:starter"]["status"] == "Active"


def test_an_event_is_a_hint_so_a_late_delivery_cannot_undo_a_newer_state(stack, redis_conn):
    """A ``plan_deleted`` delivered after the plan was created again writes what Zoho has now: the plan, Active."""
    stack.zoho.add_plan("starter", "Starter", 9.0)
    c = clients(stack, redis_conn)
    late = {"source": "zoho", "event_type": "plan_deleted", "event_id": "903000000001",
            "received_at": datetime.now(UTC).isoformat(), "event": {"data": {"plan": {"plan_code": "starter"}}}}
    result = handle_catalog_sync(late, **c, redis=redis_conn, now=datetime.now(UTC))
    assert (result["outcome"], result["created"]) == ("mirrored", 1)
    assert services(stack.attio)["zoho-plan:starter"]["status"] == "Active"


def test_a_product_event_rereads_that_products_plans_and_addons(catalog_events, redis_conn):
    """A product's event lists its plans and addons only; one moved to another product is re-read, not removed."""
    stack = catalog_events
    stack.zoho.catalog_events = False
    hosting, mail = stack.zoho.add_product("Hosting"), stack.zoho.add_product("Mail")
    stack.zoho.add_plan("web-basic", "Web basic", 5.0, product_id=hosting)
    stack.zoho.add_plan("web-pro", "Web pro", 15.0, product_id=hosting)
    stack.zoho.add_addon("mailbox", "Mailbox", 1.0, product_id=mail)
    handle_catalog_sync({"trigger": "admin"}, **clients(stack, redis_conn), redis=redis_conn, now=datetime.now(UTC))
    stack.zoho.update_plan("web-pro", recurring_price=16.0, product_id=mail)  # moved, repriced
    stack.zoho.remove_plan("web-basic")
    stack.zoho.catalog_events = True
    zoho_mark = len(stack.zoho.calls)

    stack.zoho.update_product(hosting, name="Web hosting")
    _deliver(stack, redis_conn)

    assert sorted(zoho_billing_calls(stack, zoho_mark)) == [
        "GET /billing/v1/addons", "GET /billing/v1/plans", "GET /billing/v1/plans/web-basic",
        "GET /billing/v1/plans/web-pro"]  # fmt: skip
    assert all(c.query.get("product_id") == hosting for c in stack.zoho.calls[zoho_mark:]
               if c.path in (PLANS, "/billing/v1/addons"))  # fmt: skip
    state = services(stack.attio)
    assert state["zoho-plan:web-basic"]["status"] == "Removed"
    assert (state["zoho-plan:web-pro"]["status"], state["zoho-plan:web-pro"]["price"],
            state["zoho-plan:web-pro"]["zoho_product_id"]) == ("Active", 16.0, mail)  # fmt: skip
    assert state["zoho-addon:mailbox"]["status"] == "Active"


def test_lost_events_are_healed_by_the_daily_full_reconcile(catalog_events, redis_conn):
    """Zoho loses some deliveries; the ticks before the full period read nothing, the daily one heals everything."""
    stack = catalog_events
    stack.zoho.catalog_events = False
    seed(stack, plans=30, addons=5)
    c = clients(stack, redis_conn)
    start = datetime.now(UTC)
    handle_catalog_sync({"trigger": "admin"}, **c, redis=redis_conn, now=start)
    stack.zoho.catalog_events, stack.zoho.webhook_loss = True, 0.5
    for i in range(10):
        stack.zoho.update_plan(f"plan-{i:04d}", recurring_price=100.0 + i)
    stack.zoho.remove_addon("addon-004")
    _deliver(stack, redis_conn)
    lost = stack.zoho.webhooks_lost
    assert 0 < lost < 11

    def stale() -> set[str]:
        state = services(stack.attio)
        prices = {f"zoho-plan:plan-{i:04d}" for i in range(10) if state[f"zoho-plan:plan-{i:04d}"]["price"] != 100 + i}
        return prices | ({"zoho-addon:addon-004"} if state["zoho-addon:addon-004"]["status"] != "Removed" else set())

    behind = stale()
    assert len(behind) == lost  # exactly the lost ones are behind, the delivered ones mirrored at once

    tick = {"trigger": "schedule", "source": "schedule"}
    zoho_mark = len(stack.zoho.calls)
    for hours in (1, 12, 23.8):  # ticks inside the day: no Zoho call at all
        result = handle_catalog_sync(tick, **c, redis=redis_conn, now=start + timedelta(hours=hours),
                                     full_sync_hours=24, tick_minutes=15)  # fmt: skip
        assert result["outcome"] == "skipped"
    assert zoho_billing_calls(stack, zoho_mark) == []
    assert len(stale()) == lost

    day = handle_catalog_sync(tick, **c, redis=redis_conn, now=start + timedelta(hours=24),
                              full_sync_hours=24, tick_minutes=15)  # fmt: skip
    assert day["outcome"] == "synced"
    lost_removal = "zoho-addon:addon-004" in behind
    assert (day["updated"], day["removed"]) == (lost - lost_removal, int(lost_removal))
    assert stale() == set()
    assert float(redis_conn.get(LAST_RUN_KEY)) == (start + timedelta(hours=24)).timestamp()


def test_the_full_period_is_configurable_and_zero_means_every_tick(stack, redis_conn):
    stack.zoho.seed_sample_data()
    c = clients(stack, redis_conn)
    now = datetime.now(UTC)
    tick = {"trigger": "schedule", "source": "schedule"}

    first = handle_catalog_sync(tick, **c, redis=redis_conn, now=now, full_sync_hours=6, tick_minutes=15)
    assert first["outcome"] == "synced"  # no full run on record: due at once
    later = now + timedelta(hours=5)
    assert handle_catalog_sync(tick, **c, redis=redis_conn, now=later, full_sync_hours=6)["outcome"] == "skipped"
    later = now + timedelta(hours=6)
    assert handle_catalog_sync(tick, **c, redis=redis_conn, now=later, full_sync_hours=6)["outcome"] == "synced"
    # a tick a few seconds early still counts as the period's (half a tick of slack)
    early = later + timedelta(hours=6, seconds=-30)
    assert handle_catalog_sync(tick, **c, redis=redis_conn, now=early, full_sync_hours=6,
                               tick_minutes=15)["outcome"] == "synced"  # fmt: skip
    for _ in range(2):  # 0: every tick reconciles in full, as before
        assert handle_catalog_sync(tick, **c, redis=redis_conn, now=early, full_sync_hours=0)["outcome"] == "synced"
    # an admin run is never "not due"
    assert handle_catalog_sync({"trigger": "admin"}, **c, redis=redis_conn, now=early,
                               full_sync_hours=6)["outcome"] == "synced"  # fmt: skip
