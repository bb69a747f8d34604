"""Shared fixtures: real Redis on loopback (a dedicated DB, flushed), settings, the app, a live HTTP server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sentry_sdk
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from werkzeug.serving import make_server

from integration import Settings, create_app
from integration.clients.quota import ZohoLedger
from integration.queueing import make_queues, make_redis
from workers.failures import handle_job_exception

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

SECRETS = {
    "attio_api_key": "test-attio-key",
    "attio_webhook_secret": "attio-whsec-3f9a1c",
    "zoho_webhook_secret": "zohowhsec7b2e4d81",
    "braintree_public_key": "test-public",
    "braintree_private_key": "test-private",
    "dashboard_password": "dash-pass-91c2",
}


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: fixed secrets, the test Redis DB, fast retries."""
    base: dict[str, Any] = dict(
        attio_api_key=SECRETS["attio_api_key"],
        attio_webhook_secrets=(SECRETS["attio_webhook_secret"],),
        zoho_client_id="test-client",
        zoho_client_secret="test-secret",
        zoho_refresh_token="1000.test-refresh",
        zoho_organization_id="10234695",
        zoho_webhook_secrets=(SECRETS["zoho_webhook_secret"],),
        braintree_merchant_id="test-merchant",
        braintree_public_key=SECRETS["braintree_public_key"],
        braintree_private_key=SECRETS["braintree_private_key"],
        dashboard_username="operator",
        dashboard_password=SECRETS["dashboard_password"],
        redis_url=TEST_REDIS_URL,
        retry_schedule_seconds=(1, 2, 4),
        public_base_url="http://127.0.0.1:5000",
        reconcile_interval_minutes=0,  # no periodic sweeps in a test's worker unless it asks
    )
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def redis_conn() -> Iterator[redis.Redis]:
    """A real Redis connection on the test DB, flushed before and after."""
    conn = make_redis(TEST_REDIS_URL)
    conn.flushdb()
    # As a running service: the Zoho organization's time zone was learned today (else the first Zoho call of every
    # test would ask for it first: tests that count calls would count that one; tests of the ask remove this).
    ZohoLedger(conn, make_settings().zoho_organization_id, requests_per_day=1).remember_time_zone("UTC")
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def settings(redis_conn: redis.Redis) -> Settings:
    """Test settings pointing at the flushed test DB."""
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> Any:
    """The Flask app."""
    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Any:
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def queues(redis_conn: redis.Redis) -> dict[str, Any]:
    """The service's queues on the test DB."""
    return make_queues(redis_conn)


class LiveServer:
    """The app served over real HTTP on loopback, in a thread."""

    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def live_server(app: Any) -> Iterator[LiveServer]:
    """The app on a real loopback port."""
    server = LiveServer(app)
    yield server
    server.stop()


def run_worker(redis_conn: redis.Redis, *, max_jobs: int | None = None) -> SimpleWorker:
    """Run every queued job in-process (burst), with the service's exception handler."""
    worker = SimpleWorker(
        list(make_queues(redis_conn).values()),
        connection=redis_conn,
        serializer=JSONSerializer,
        exception_handlers=[handle_job_exception],
    )
    worker.work(burst=True, max_jobs=max_jobs)
    return worker


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, so a test can stop it (the shared one stays up)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        """Stop the server (as an outage would)."""
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


@pytest.fixture(scope="module")
def module_redis_url() -> Iterator[str]:
    """A redis-server for one test module (for tests whose Redis state must not be flushed by a concurrent run);
    the shared test DB when no redis-server binary exists."""
    if shutil.which("redis-server") is None:
        yield TEST_REDIS_URL
        return
    server = PrivateRedis()
    yield server.url
    server.stop()


@pytest.fixture
def module_redis_conn(module_redis_url: str) -> Iterator[redis.Redis]:
    """A connection to the module's own Redis, flushed before and after."""
    conn = make_redis(module_redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A disposable redis-server on a free port."""
    server = PrivateRedis()
    yield server
    server.stop()


class Stack:
    """The three provider simulators on loopback, Attio's schema in place, and settings pointing at them."""

    def __init__(self) -> None:
        from simulators.attio import AttioSimulator
        from simulators.braintree import BraintreeSimulator
        from simulators.zoho import ZohoSimulator

        self.attio = AttioSimulator(writes_per_second=None, reads_per_second=None).start()
        self.zoho = ZohoSimulator().start()
        self.braintree = BraintreeSimulator().start()
        self.attio.setup_schema()

    def settings(self, **overrides: Any) -> Settings:
        """Test settings wired to the simulators (budgets high unless overridden)."""
        base: dict[str, Any] = dict(
            attio_api_url=self.attio.url,
            zoho_accounts_url=self.zoho.url,
            braintree_environment=self.braintree.url,
            braintree_merchant_id="test-merchant",
            attio_writes_per_second=1000,
            attio_reads_per_second=1000,
            zoho_requests_per_minute=100000,
            http_timeout=(2.0, 5.0),
            catalog_sync_interval_minutes=0,  # no periodic sync unless a test asks for one
            reconcile_interval_minutes=0,  # nor periodic sweeps
            dunning_schedule_days=(),  # nor dunning retries (tests that want them give a short schedule)
        )
        base.update(overrides)
        return make_settings(**base)

    def reset(self) -> None:
        """Fresh simulators (schema re-created)."""
        for sim in (self.attio, self.zoho, self.braintree):
            sim.reset()
        self.attio.setup_schema()

    def stop(self) -> None:
        """Stop every simulator."""
        for sim in (self.attio, self.zoho, self.braintree):
            sim.stop()


@pytest.fixture(scope="session")
def _stack_session() -> Iterator[Stack]:
    stack = Stack()
    yield stack
    stack.stop()


@pytest.fixture
def stack(_stack_session: Stack, redis_conn: redis.Redis) -> Iterator[Stack]:
    """The simulators, reset, with jobs in this process configured to use them."""
    from workers import runtime

    _stack_session.reset()
    runtime.use_settings(_stack_session.settings())
    yield _stack_session
    runtime.use_settings(None)
    _stack_session.attio.webhook_target = None
    _stack_session.zoho.webhook_target = None


def run_until_idle(redis_conn: redis.Redis, *, rounds: int = 10) -> None:
    """Run queued jobs in-process, moving scheduled retries due at once, until nothing is left to run."""
    queues = make_queues(redis_conn)
    for _ in range(rounds):
        moved = 0
        for queue in queues.values():
            registry = queue.scheduled_job_registry
            for job_id in registry.get_job_ids():
                job = queue.fetch_job(job_id)
                registry.remove(job_id)
                if job is not None:
                    queue.enqueue_job(job)
                    moved += 1
        if moved == 0 and all(q.count == 0 for q in queues.values()):
            return
        run_worker(redis_conn)


class _MemoryTransport(Transport):
    """Keeps Sentry's events in a list instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event" and item.payload.json is not None:
                self.events.append(item.payload.json)


@pytest.fixture
def sentry_events() -> Iterator[list[dict[str, Any]]]:
    """Sentry events captured in memory while the test runs; the previous client is put back after."""
    transport = _MemoryTransport()
    client = sentry_sdk.Client(dsn="http://public@127.0.0.1:9/1", transport=transport, default_integrations=False)
    scope = sentry_sdk.get_global_scope()
    previous = scope.client
    scope.set_client(client)
    yield transport.events
    scope.set_client(previous)
