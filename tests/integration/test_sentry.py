"""Sentry for real: the SDK as the service starts it, sending envelopes over HTTP to a collector on loopback.

Web: rejections (401/400) are no events, an unexpected 500 is one event without body, signatures or PII.
Worker (real ``python -m workers`` processes): one event per failed job, after its last attempt, tagged with
source, event type and handler; a permanent failure at once; a job lost with its work horse or its whole worker.
No event carries a secret, an email address or a card number.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import sentry_sdk

from integration import Settings, create_app
from integration.observability import cron_checkin
from integration.queueing import enqueue_job
from integration.samples import attio_delivery, zoho_delivery
from tests.conftest import SECRETS, LiveServer, Stack, make_settings, run_worker
from tests.helpers import signed_braintree
from tests.processes import WorkerProcess, wait_until
from tests.workers.jobs_for_tests import CARD_NUMBER, CUSTOMER_EMAIL

JOBS = "tests.workers.jobs_for_tests"
WEB_EMAIL = "billing.contact@acme.example"
SENTINEL = "BODY-SENTINEL-5d1e"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


# -- the collector ----------------------------------------------------------------------------------------------
class Collector:
    """A Sentry ingest endpoint on loopback: ``POST /api/<project>/envelope/``, items kept as parsed JSON."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                ok = re.fullmatch(r"/api/\d+/envelope/", self.path) is not None
                if ok:
                    collector._record(raw)
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self._server.server_port}/1"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _record(self, raw: bytes) -> None:
        items, rest = [], raw.split(b"\n", 1)[1] if b"\n" in raw else b""
        while rest.strip():
            header_line, rest = rest.split(b"\n", 1)
            header = json.loads(header_line)
            if "length" in header:
                payload, rest = rest[: header["length"]], rest[header["length"]:].removeprefix(b"\n")
            else:
                payload, _, rest = rest.partition(b"\n")
            try:
                body = json.loads(payload)
            except ValueError:
                body = None
            items.append({"type": header.get("type"), "payload": body})
        with self._lock:
            self.bodies.append(raw)
            self.items.extend(items)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Payloads of the items of one type (``event``, ``check_in``, ...), in arrival order."""
        with self._lock:
            return [i["payload"] for i in self.items if i["type"] == kind]

    def events(self) -> list[dict[str, Any]]:
        """Error and message events."""
        return self.of_type("event")

    def raw(self) -> str:
        """Everything received, decoded, for scanning."""
        with self._lock:
            return b"\n".join(self.bodies).decode("utf-8", errors="replace")

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A fresh collector; the test process's Sentry client (if a test started one) is shut down after."""
    c = Collector()
    yield c
    sentry_sdk.flush(timeout=2)
    sentry_sdk.get_client().close(timeout=2)
    scope = sentry_sdk.get_global_scope()
    scope.set_client(None)
    scope.remove_tag("component")
    c.stop()


def assert_clean(collector: Collector, *also: str) -> None:
    """No secret, email address, card number or given value in anything Sentry received."""
    text = collector.raw()
    for name, secret in SECRETS.items():
        assert secret not in text, name
    assert EMAIL.search(text) is None, EMAIL.search(text)
    assert CARD_NUMBER not in text and "4111 1111" not in text
    for value in also:
        assert value not in text, value


def sentry_settings(collector: Collector, **overrides: Any) -> Settings:
    """Test settings sending to the collector, with a short retry schedule and no periodic catalog sync."""
    base: dict[str, Any] = dict(sentry_dsn=collector.dsn, sentry_environment="test", sentry_release="rel-42",
                                retry_schedule_seconds=(1, 1), catalog_sync_interval_minutes=0)
    base.update(overrides)
    return make_settings(**base)


# -- web --------------------------------------------------------------------------------------------------------
@pytest.fixture
def web(collector: Collector, redis_conn: Any) -> Iterator[LiveServer]:
    """The app, with Sentry on, over real HTTP."""
    server = LiveServer(create_app(sentry_settings(collector)))
    yield server
    server.stop()


def test_webhook_rejections_are_not_errors(web: LiveServer, collector: Collector) -> None:
    body = json.dumps({"event_type": "invoice_created", "data": {"email": WEB_EMAIL}}).encode()
    unsigned = requests.post(f"{web.url}/webhooks/zoho", data=body, timeout=10,
                             headers={"Content-Type": "application/json", "X-Zoho-Webhook-Signature": "00" * 32})
    assert unsigned.status_code == 401
    invalid = attio_delivery([{"event_type": "record.updated", "actor": {"email": WEB_EMAIL}}],
                             secret=SECRETS["attio_webhook_secret"])
    resp = requests.post(f"{web.url}/webhooks/attio", data=invalid.body, headers=invalid.headers, timeout=10)
    assert resp.status_code == 400
    sentry_sdk.flush(timeout=5)
    assert collector.events() == []


def test_unexpected_error_is_one_event_without_body_signature_or_pii(
    web: LiveServer, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        envelopes = args[2]  # a local holding the customer's data: must not reach Sentry
        raise RuntimeError(f"enqueue exploded after {len(envelopes)} envelope(s)")

    monkeypatch.setattr("integration.routes._intake.enqueue_events", explode)
    delivery = zoho_delivery(
        "invoice_created",
        {"invoice": {"invoice_id": "903000000079426", "email": WEB_EMAIL, "card": CARD_NUMBER,
                     "notes": SENTINEL}},
        secret=SECRETS["zoho_webhook_secret"], event_id="ev-500",
    )
    resp = requests.post(f"{web.url}/webhooks/zoho", data=delivery.body, headers=delivery.headers, timeout=10)
    assert resp.status_code == 500 and resp.json() == {"error": "internal"}
    sentry_sdk.flush(timeout=5)

    [event] = collector.events()
    [exc] = event["exception"]["values"]
    assert exc["type"] == "RuntimeError" and "enqueue exploded" in exc["value"]
    assert event["environment"] == "test" and event["release"] == "rel-42"
    assert event["tags"]["source"] == "zoho" and event["tags"]["component"] == "web"
    request = event["request"]
    assert "data" not in request and "query_string" not in request
    assert request["headers"].get("X-Zoho-Webhook-Signature") == "[Filtered]"
    assert all("vars" not in frame for frame in exc["stacktrace"]["frames"])
    assert_clean(collector, delivery.headers["X-Zoho-Webhook-Signature"], SENTINEL, delivery.body.decode())


# -- worker processes -------------------------------------------------------------------------------------------
def failed_job_ids(queue: Any) -> list[str]:
    """Ids in the failed registry."""
    return list(queue.failed_job_registry.get_job_ids())


def enqueue(queue: Any, func: str, *, schedule: tuple[int, ...], event_id: str, **payload: Any) -> str:
    """Enqueue a test job as intake would: ids in meta and payload, customer data in the payload."""
    ids = {"source": "zoho", "event_type": "invoice_created", "event_id": event_id}
    body = {**ids, "event": {"email": CUSTOMER_EMAIL, "card": CARD_NUMBER, "notes": SENTINEL}, **payload}
    return enqueue_job(queue, func, body, retry_schedule=schedule, meta=ids)


def assert_tagged(event: dict[str, Any], job_id: str, func: str) -> None:
    """The event names the job: source, event type, handler, ids."""
    tags = event["tags"]
    assert tags["source"] == "zoho" and tags["event_type"] == "invoice_created"
    assert tags["handler"] == func and tags["job_id"] == job_id
    assert tags["component"] == "worker"
    assert event["environment"] == "test" and event["release"] == "rel-42"


def assert_quiet(proc: WorkerProcess) -> None:
    """The worker's log lines are JSON and hold no customer data, payload or secret."""
    output = proc.output()
    for line in output.splitlines():
        json.loads(line)
    for value in (CUSTOMER_EMAIL, CARD_NUMBER, SENTINEL, *SECRETS.values()):
        assert value not in output, value


def worker(settings: Settings, tmp_path: Path, name: str = "worker") -> WorkerProcess:
    """A real worker process with Sentry's environment and release set."""
    return WorkerProcess(settings, tmp_path, name=name, SENTRY_ENVIRONMENT="test", SENTRY_RELEASE="rel-42")


def test_job_failing_transiently_sends_one_event_after_its_last_attempt(
    collector: Collector, redis_conn: Any, queues: dict[str, Any], tmp_path: Path
) -> None:
    q = queues["webhooks"]
    func = f"{JOBS}.fail_transient_with_customer_data"
    job_id = enqueue(q, func, schedule=(1, 1), event_id="ev-transient")
    proc = worker(sentry_settings(collector), tmp_path)
    try:
        wait_until(lambda: failed_job_ids(q) == [job_id], timeout=20, message="the job to fail for good")
        wait_until(lambda: collector.events(), timeout=10, message="the Sentry event")
        time.sleep(1)  # nothing else is on its way
    finally:
        proc.stop()
    [event] = collector.events()
    assert event["exception"]["values"][-1]["type"] == "ServiceUnavailable"
    assert_tagged(event, job_id, func)
    assert q.fetch_job(job_id).retries_left == 0
    assert proc.output().count("retrying") == 2  # three attempts, one event: after the last
    assert_clean(collector, SENTINEL)
    assert_quiet(proc)


def test_not_now_is_silent_until_its_deadline_then_one_event(
    collector: Collector, redis_conn: Any, queues: dict[str, Any], tmp_path: Path
) -> None:
    """A 429, an open circuit and a busy lock in turn cost no attempt and no event; "not now" past
    JOB_DEADLINE_HOURS fails the job with one event saying so."""
    q = queues["webhooks"]
    func = f"{JOBS}.scripted"
    storm_id = enqueue(q, func, schedule=(1,), event_id="ev-storm", counter="runs-storm",
                       script=["429", "open", "busy"], retry_after=0)
    ids = {"source": "zoho", "event_type": "invoice_created", "event_id": "ev-late"}
    first = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    late_id = enqueue_job(q, func, {**ids, "counter": "runs-late", "script": ["429"]}, retry_schedule=(1, 1),
                          meta={**ids, "first_run_at": first})
    proc = worker(sentry_settings(collector), tmp_path)
    try:
        wait_until(lambda: q.fetch_job(storm_id).get_status() == "finished", timeout=40,
                   message="the deferred job to succeed")
        wait_until(lambda: collector.events(), timeout=10, message="the Sentry event")
        time.sleep(1)  # nothing else is on its way
    finally:
        proc.stop()
    assert failed_job_ids(q) == [late_id]
    [event] = collector.events()
    assert event["exception"]["values"][-1]["type"] == "DeferredTooLong"
    assert "not now for 25.0 h (deadline 24 h" in event["exception"]["values"][-1]["value"]
    assert_tagged(event, late_id, func)
    assert q.fetch_job(storm_id).meta["deferrals"] == 3 and "retrying" not in proc.output()
    assert proc.output().count("job deferred") == 3
    assert_quiet(proc)


def test_permanent_failure_sends_one_event_at_once(
    collector: Collector, redis_conn: Any, queues: dict[str, Any], tmp_path: Path
) -> None:
    q = queues["webhooks"]
    func = f"{JOBS}.fail_permanent_with_customer_data"
    job_id = enqueue(q, func, schedule=(1, 1, 1), event_id="ev-permanent")
    proc = worker(sentry_settings(collector), tmp_path)
    try:
        wait_until(lambda: collector.events(), timeout=15, message="the Sentry event")
        time.sleep(1)
    finally:
        proc.stop()
    [event] = collector.events()
    assert event["exception"]["values"][-1]["type"] == "ServiceRejected"
    assert_tagged(event, job_id, func)
    assert failed_job_ids(q) == [job_id] and "retrying" not in proc.output()  # one attempt
    assert_clean(collector, SENTINEL)
    assert_quiet(proc)


def test_job_whose_work_horse_is_killed_is_reported(
    collector: Collector, redis_conn: Any, queues: dict[str, Any], tmp_path: Path
) -> None:
    q = queues["webhooks"]
    marker = tmp_path / "marker"
    func = f"{JOBS}.sleep_then_succeed"
    job_id = enqueue(q, func, schedule=(), event_id="ev-oom", marker=str(marker), seconds=30)
    proc = worker(sentry_settings(collector), tmp_path)
    try:
        wait_until(marker.exists, timeout=15, message="the job to start")
        horse = int(marker.read_text().split()[1])
        os.kill(horse, signal.SIGKILL)  # as the OOM killer would
        wait_until(lambda: collector.events(), timeout=15, message="the Sentry event")
        time.sleep(1)
    finally:
        proc.stop()
    [event] = collector.events()
    [exc] = event["exception"]["values"]
    assert exc["type"] == "AbandonedJobError" and "signal 9" in exc["value"]
    assert_tagged(event, job_id, func)
    assert failed_job_ids(q) == [job_id]
    assert_clean(collector, SENTINEL)


@pytest.mark.slow
def test_job_lost_with_its_worker_is_reported_once_no_retry_is_left(
    collector: Collector, redis_conn: Any, queues: dict[str, Any], tmp_path: Path
) -> None:
    q = queues["webhooks"]
    func = f"{JOBS}.sleep_once_then_succeed"
    lost = enqueue(q, func, schedule=(), event_id="ev-lost", marker=str(tmp_path / "lost"), seconds=600)
    retried = enqueue(q, func, schedule=(1,), event_id="ev-retried", marker=str(tmp_path / "retried"), seconds=600)
    settings = sentry_settings(collector)
    first = [worker(settings, tmp_path, name=f"first{i}") for i in range(2)]
    try:
        wait_until(lambda: (tmp_path / "lost").exists() and (tmp_path / "retried").exists(), timeout=20,
                   message="both jobs to start")
        for proc in first:
            proc.kill9()  # worker and work horse gone: no exception handler runs, the jobs stay "started"
    finally:
        for proc in first:
            proc.stop()
    assert collector.events() == []
    second = worker(settings, tmp_path, name="second")
    try:
        wait_until(lambda: failed_job_ids(q) == [lost] and q.fetch_job(retried).get_status() == "finished",
                   timeout=180, interval=0.5, message="the maintenance pass to fail one job and retry the other")
        wait_until(lambda: collector.events(), timeout=10, message="the Sentry event")
        time.sleep(1)
    finally:
        second.stop()
    [event] = collector.events()
    assert event["exception"]["values"][-1]["type"] == "AbandonedJobError"
    assert_tagged(event, lost, func)
    assert_clean(collector, SENTINEL)


# -- in process: a dispute warning, the catalog's cron check-in ------------------------------------------------
def test_dispute_opened_is_a_tagged_warning(collector: Collector, stack: Stack, redis_conn: Any) -> None:
    from workers import runtime

    settings = stack.settings(sentry_dsn=collector.dsn, sentry_environment="test")
    runtime.use_settings(settings)
    # A real sale with a chargeback in Braintree: the job re-reads the transaction and its disputes.
    stack.braintree.add_customer("co_dp", email="ap@acme.example")
    sale = stack.braintree.gateway().transaction.sale(
        {"amount": "49.00", "customer_id": "co_dp", "options": {"submit_for_settlement": True}})
    assert sale.is_success
    notification = stack.braintree.notification("dispute_opened", sale.transaction.id)
    server = LiveServer(create_app(settings))
    try:
        resp = requests.post(f"{server.url}/webhooks/braintree", data=notification, timeout=10)
        assert resp.status_code == 202, resp.text
    finally:
        server.stop()
    run_worker(redis_conn)
    sentry_sdk.flush(timeout=5)
    [warning] = collector.events()
    assert warning["level"] == "warning" and "dispute opened" in warning["message"]
    assert warning["tags"]["source"] == "braintree" and warning["tags"]["event_type"] == "dispute_opened"
    assert warning["tags"]["handler"] == "workers.jobs.lifecycle.run_dispute_event"
    assert_clean(collector)


def test_cron_checkin_reports_progress_then_outcome(collector: Collector, redis_conn: Any) -> None:
    create_app(sentry_settings(collector))  # starts Sentry in this process as the web does
    with cron_checkin("catalog-sync", interval_minutes=15):
        pass
    with pytest.raises(RuntimeError), cron_checkin("catalog-sync", interval_minutes=15):
        raise RuntimeError("sync failed")
    sentry_sdk.flush(timeout=5)
    checkins = collector.of_type("check_in")
    assert [c["status"] for c in checkins] == ["in_progress", "ok", "in_progress", "error"]
    assert {c["monitor_slug"] for c in checkins} == {"catalog-sync"}
    assert checkins[0]["check_in_id"] == checkins[1]["check_in_id"] != checkins[2]["check_in_id"]
    assert checkins[0]["monitor_config"]["schedule"] == {"type": "interval", "value": 15, "unit": "minute"}


def test_cron_checkin_without_sentry_just_runs_the_block() -> None:
    ran = []
    with cron_checkin("catalog-sync", interval_minutes=15):
        ran.append(True)
    with pytest.raises(KeyError), cron_checkin("catalog-sync"):
        raise KeyError("propagates")
    assert ran == [True]
