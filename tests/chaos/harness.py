"""The chaos engine: drive the real service with business traffic while breaking things, then check the invariants.

One run, in four parts:

1. **World** — the three simulators in-process, seeded with customers known to all three systems (some with a card
   that declines), subscriptions to activate (most with a card on file) and Zoho subscriptions whose lifecycle is
   played; a durable private Redis; the real ``web`` (a ``LiveServer`` of ``create_app``) and N real forking
   ``python -m workers``.
2. **Schedule** — a seeded ``random.Random`` draws, up front, every action of the run and its time: invoices raised
   (some declined by amount), an invoice's ``invoice_created`` sent again under a new event id, activations
   requested, renewals, Zoho subscription status changes, Braintree settlement and dispute stories, and the
   faults: ``kill -9`` of a worker (busy with a job if one is; a replacement starts after a moment), Redis
   restarted, 429 storms, 5xx bursts and slow answers (each a few seconds long), slow Attio writes, answers lost
   after the provider committed (after-commit 5xx, or a reply slower than the client's read timeout) on Braintree
   sales, Zoho payments and the other creates, and at least once a provider refusing our keys (401: a permanent
   error, so jobs land in the failed registry at once and the operator's retry has work).
3. **Postman** — every webhook (Zoho's own events as its simulator emits them, Attio record events, Braintree
   notifications) is one *delivery*, sent 1–5 times at random moments (so copies of different deliveries
   interleave in any order); a copy answered with anything but 2xx (a 503 while Redis is down, a timeout) is sent
   again later, as the providers do. A delivery is *acknowledged* once a copy got a 2xx; its answer names its jobs.
   The notifications of one Braintree story (settled, dispute opened, won) arrive as a burst, as Braintree sends
   what it queued while our endpoint was slow. A worker process that exits by itself is restarted, as Render does.
4. **Checker** — with faults cleared and the queue drained: every acknowledged delivery's jobs are finished or in
   the failed registry (nothing lost, nothing stuck), every finished job's effect is visible in the simulators
   (each invoice paid by exactly one sale recorded in Zoho and Attio, or declined and recorded ``Declined``;
   activations done; lifecycle statuses right), nothing exists twice, and the payments audit is clean except for
   invoices whose jobs sit in the failed registry. Then an operator retries the failed jobs (``retry_job``), the
   queue drains again, and everything must be clean with nothing left failed.

**Redis restarts keep their data.** The private redis-server runs with ``--appendonly yes --appendfsync always``
(Render Key Value persists the same way): a write Redis acknowledged — a dedupe record and its job, a retry
scheduled, a job's progress — survives the restart, whether Redis is stopped cleanly (SIGTERM) or killed
(SIGKILL). A Redis that forgets acknowledged writes cannot be defended against by the service (an acknowledged
webhook would be gone with its job), so the invariant is stated for a Redis that keeps what it acknowledged.

The seed fixes the schedule (what happens and when); how the real processes interleave with it is not
deterministic, so two runs of one seed differ in detail, never in the invariants.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import requests
from rq import Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from integration import Settings, create_app
from integration.audit import audit_payments
from integration.clients.attio import build_attio_client
from integration.clients.attio_values import value
from integration.clients.braintree import build_braintree_client, customer_id_for_company
from integration.clients.zoho import build_zoho_client
from integration.commands.jobs import failed_jobs, retry_job
from integration.queueing import make_queues, make_redis
from integration.samples import attio_delivery, attio_event, zoho_delivery
from simulators.base import Fault
from simulators.zoho import BASE, ORG_HEADER, SIGNATURE_HEADER, ZohoSimulator
from tests.conftest import SECRETS, LiveServer, Stack, free_port
from tests.processes import WorkerProcess, queues_idle
from workers.payments import status_of
from workers.records import ZOHO_TO_ATTIO_STATUS

__all__ = ["ChaosOptions", "Report", "run_chaos"]

PLAN_CODE = "basic-monthly"
PLAN_PRICE = 50.0
DECLINE_AMOUNT = 2000.0  # the Braintree sandbox (and its simulator) declines 2000.00–2999.99 ("Do Not Honor")
CLIENT_READ_TIMEOUT = 20.0  # the workers' HTTP read timeout (Settings.http_timeout, not set by the environment)
LIFECYCLE_STATUSES = ("live", "unpaid", "dunning", "non_renewing", "cancelled", "expired")
STORIES = {  # what Braintree tells about one charged transaction: its notification kinds, in Braintree's order
    "settled": ("transaction_settled",),
    "settlement_declined": ("transaction_settlement_declined",),
    "dispute_won": ("transaction_settled", "dispute_opened", "dispute_won"),
    "dispute_lost": ("transaction_settled", "dispute_opened", "dispute_lost"),
}
PROVIDER_PATHS = {"attio": "/v2/*", "zoho": BASE + "/*", "braintree": "/merchants/*"}
# Creates whose answer may be lost after the provider did the work (weight, provider, method, path).
AFTER_COMMIT_TARGETS = (
    (4, "braintree", "POST", "/merchants/*/transactions"),  # the sale
    (4, "zoho", "POST", BASE + "/payments"),  # the payment recorded on the invoice
    (1, "zoho", "POST", BASE + "/subscriptions"),
    (1, "zoho", "POST", BASE + "/customers"),
    (1, "braintree", "POST", "/merchants/*/customers"),
    (2, "attio", "PUT", "/v2/objects/payments/records"),  # the payments upsert
    (1, "attio", "PATCH", "/v2/objects/subscriptions/records/*"),
)
FAULT_KINDS = {"storm429": 3, "burst5xx": 3, "slow": 3, "slow_writes": 3, "after_commit": 5, "timeout": 1, "auth": 1}
FAULT_NAMES = {"storm429": "429 storm", "burst5xx": "5xx burst", "slow": "slow answers",
               "slow_writes": "slow Attio writes", "after_commit": "answer lost after commit",
               "timeout": "answer after the read timeout", "auth": "401 (keys rotated badly)"}


@dataclass
class ChaosOptions:
    """What one run does; the defaults are the short run of the test suite."""

    seed: int
    seconds: float = 75.0  # the chaos window: traffic and faults; draining and checking come after
    log_dir: Path = field(default_factory=lambda: Path("chaos-logs"))
    workers: int = 2
    customers: int = 14  # known to all three systems, invoices raised for them
    activations: int = 8  # Attio subscriptions requested during the run
    lifecycle_subjects: int = 3  # Zoho subscriptions whose status is changed during the run
    invoice_every: float = 1.2  # mean seconds between invoices raised
    fault_every: float = 3.0  # mean seconds between provider faults
    kills: int | None = None  # kill -9 of a worker; default one per 35 s of chaos
    redis_restarts: int | None = None  # default one per 60 s of chaos
    retry_schedule: tuple[int, ...] = (1, 2, 4, 8)
    drain_timeout: float = 300.0  # a killed worker's job is noticed within two minutes; breakers wait a minute
    progress_every: float = 15.0
    out: Callable[[str], None] = print


# -- the schedule ---------------------------------------------------------------------------------------------
@dataclass(order=True)
class Action:
    """Something the engine does at ``at`` seconds into the run."""

    at: float
    seq: int
    kind: str = field(compare=False)
    args: dict[str, Any] = field(compare=False, default_factory=dict)


def plan_schedule(rng: random.Random, opts: ChaosOptions) -> list[Action]:
    """Every planned action of the run, drawn from the seeded generator before anything runs."""
    seconds, seq, actions = opts.seconds, itertools.count(), []

    def add(at: float, kind: str, **args: Any) -> None:
        actions.append(Action(at, next(seq), kind, args))

    t = rng.uniform(0.2, 1.0)
    while t < 0.9 * seconds:
        index = next(seq)
        decline = rng.random() < 0.12
        amount = DECLINE_AMOUNT if decline else rng.randrange(500, 50_000) / 100
        actions.append(Action(t, index, "invoice", {"customer": rng.randrange(opts.customers), "amount": amount}))
        if rng.random() < 0.12:  # an operator (or Zoho) sends the invoice's event again, under a new event id
            add(t + rng.uniform(0.5, 8.0), "resend", invoice_action=index, event_id=f"resend-{rng.getrandbits(40)}")
        t += rng.expovariate(1 / opts.invoice_every)
    for subject in range(opts.activations):
        add(rng.uniform(0.0, 0.6 * seconds), "activate", subject=subject, key=f"chaos-{rng.getrandbits(64):016x}")
    for _ in range(opts.activations // 2):
        add(rng.uniform(0.4 * seconds, 0.9 * seconds), "renew", pick=rng.random())
    t = rng.uniform(1.0, 4.0)
    while t < 0.9 * seconds:
        add(t, "lifecycle", subject=rng.randrange(opts.lifecycle_subjects), status=rng.choice(LIFECYCLE_STATUSES))
        t += rng.expovariate(1 / 3.0)
    t = rng.uniform(5.0, 8.0)
    while t < 0.95 * seconds:
        add(t, "bt_story", story=rng.choices(list(STORIES), weights=(4, 2, 2, 2))[0], pick=rng.random())
        t += rng.expovariate(1 / 2.5)

    kills = opts.kills if opts.kills is not None else max(1, round(seconds / 35))
    for _ in range(kills):
        add(rng.uniform(0.1 * seconds, 0.75 * seconds), "kill9", pick=rng.random(), replace_after=rng.uniform(0, 3))
    restarts = opts.redis_restarts if opts.redis_restarts is not None else max(1, round(seconds / 60))
    for _ in range(restarts):
        add(rng.uniform(0.15 * seconds, 0.55 * seconds), "redis_restart",
            hard=rng.random() < 0.5, down=rng.uniform(1.0, 4.0))
    t, timeouts = rng.uniform(0.0, 2.0), 0
    while t < 0.85 * seconds:
        spec = _draw_fault(rng)
        if spec["kind"] == "timeout":
            timeouts += 1
            if timeouts > max(1, round(seconds / 60)):  # each costs a worker 20 s: a few are enough
                spec = {**spec, "kind": "after_commit"}
        add(t, "fault", spec=spec)
        t += rng.expovariate(1 / opts.fault_every)
    # At least one permanent failure: jobs go to the failed registry at once, and the operator's retry is exercised.
    add(rng.uniform(0.3 * seconds, 0.7 * seconds), "fault", spec={**_draw_fault(rng), "kind": "auth"})
    return sorted(actions)


def _draw_fault(rng: random.Random) -> dict[str, Any]:
    kind = rng.choices(list(FAULT_KINDS), weights=list(FAULT_KINDS.values()))[0]
    _, provider, method, path = rng.choices(AFTER_COMMIT_TARGETS, weights=[w[0] for w in AFTER_COMMIT_TARGETS])[0]
    timeout_target = rng.choice(AFTER_COMMIT_TARGETS[:2])
    return {
        "kind": kind,
        "provider": rng.choice(list(PROVIDER_PATHS)),
        "retry_after": rng.randint(1, 3),
        "duration": rng.uniform(1.0, 5.0),
        "status": rng.choice((500, 502, 503)),
        "times": rng.randint(2, 7),
        "delay": rng.uniform(0.5, 2.5),
        "target": (provider, method, path),
        "target_times": rng.randint(1, 2),
        "timeout_target": timeout_target[1:],
        "auth_provider": rng.choice(("attio", "braintree")),
    }


# -- infrastructure -------------------------------------------------------------------------------------------
class DurableRedis:
    """A private redis-server that keeps its data across restarts on the same port (AOF, fsync every write)."""

    def __init__(self, data_dir: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed")
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = open(self.dir / "redis.log", "ab")  # noqa: SIM115
        self.start()

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (again) on the same port and directory; returns once it answers PING with its data loaded."""
        assert self.binary is not None
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it: SIGTERM (a clean shutdown) or SIGKILL (a crash)."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(sig)
            self._proc.wait(timeout=15)

    def close(self) -> None:
        """Stop for good."""
        self.stop()
        self._log.close()


class Fleet:
    """The worker processes, in slots: a killed one is replaced after a moment, one that exits by itself too."""

    def __init__(self, settings: Settings, log_dir: Path, size: int) -> None:
        self.settings, self.log_dir = settings, log_dir
        self._names = itertools.count(1)
        self.slots: list[WorkerProcess | None] = [self._spawn() for _ in range(size)]
        self._due: dict[int, float] = {}  # empty slot → when to start its replacement (monotonic)
        self.events: Counter[str] = Counter()

    def _spawn(self) -> WorkerProcess:
        return WorkerProcess(self.settings, self.log_dir, name=f"worker-{next(self._names)}")

    def kill9(self, pick: float, replace_after: float, connection: redis.Redis) -> str:
        """``kill -9`` a worker (and its work horse), one running a job if any; its replacement starts
        ``replace_after`` seconds later. Returns whether it was mid-job."""
        live = [i for i, w in enumerate(self.slots) if w is not None]
        if not live:
            return "no live worker"
        try:
            busy_pids = {w.pid for w in Worker.all(connection=connection) if w.get_current_job_id()}
        except redis.exceptions.RedisError:
            busy_pids = set()
        busy = [i for i in live if self.slots[i].proc.pid in busy_pids]  # type: ignore[union-attr]
        slot = (busy or live)[int(pick * len(busy or live))]
        worker = self.slots[slot]
        assert worker is not None
        worker.kill9()
        worker.stop()
        self.slots[slot] = None
        self._due[slot] = time.monotonic() + replace_after
        return "mid-job" if busy else "idle"

    def supervise(self) -> None:
        """Start due replacements; replace a worker that exited by itself (as Render restarts a crashed process)."""
        now = time.monotonic()
        for slot, worker in enumerate(self.slots):
            if worker is not None and worker.proc.poll() is not None:
                self.events[f"worker exited by itself (code {worker.proc.returncode})"] += 1
                worker.stop()
                self.slots[slot] = None
                self._due[slot] = now + 1.0
            elif worker is None and self._due.get(slot, 0.0) <= now:
                self.slots[slot] = self._spawn()
                self._due.pop(slot, None)

    def fill(self) -> None:
        """Every slot running now."""
        for slot in list(self._due):
            self._due[slot] = 0.0
        self.supervise()

    def stop(self) -> None:
        """Warm shutdown of every worker."""
        for worker in self.slots:
            if worker is not None:
                worker.stop()


def locked(sim: Any, read: Callable[[], Any]) -> Any:
    """Read a simulator's state under its lock (its request threads change it meanwhile)."""
    with sim._lock:
        return read()


# -- deliveries -----------------------------------------------------------------------------------------------
@dataclass
class Delivery:
    """One webhook delivery (one event id / idempotency key / payload), sent in several copies."""

    number: int
    source: str  # attio | zoho | braintree
    kind: str  # the event type
    subject: str  # invoice id, Attio record id, Zoho subscription id, payment id, transaction id
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] | None = None
    copies: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    job_ids: set[str] = field(default_factory=set)
    acked: bool = False
    rejected: bool = False
    failures: int = 0
    order: int = 0  # Zoho's position of the event in its log (lifecycle ordering)

    @property
    def label(self) -> str:
        """How a line names it."""
        return f"{self.source} {self.kind} {self.subject} (delivery #{self.number})"


class Postman:
    """Sends every delivery 1–5 times at random moments; a copy that did not get a 2xx is sent again later."""

    SPREAD = 6.0  # seconds over which the copies of one delivery are spread

    def __init__(self, url: str, rng: random.Random, zoho: ZohoSimulator) -> None:
        self.url, self.rng, self.zoho = url, rng, zoho
        self.deliveries: list[Delivery] = []
        self._heap: list[tuple[float, int, int]] = []  # (due, tiebreak, delivery number)
        self._tiebreak = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="chaos-postman")
        self._inflight: dict[Future[tuple[str, list[str]]], Delivery] = {}
        self._zoho_seen = len(zoho.events)
        self.sends = 0

    def add(self, delivery: Delivery, now: float, spread: float | None = None) -> Delivery:
        """Schedule the copies of a new delivery over the next ``spread`` seconds."""
        delivery.number = len(self.deliveries)
        delivery.copies = self.rng.randint(1, 5)
        self.deliveries.append(delivery)
        for _ in range(delivery.copies):
            self._push(now + self.rng.uniform(0.0, self.SPREAD if spread is None else spread), delivery)
        return delivery

    def _push(self, due: float, delivery: Delivery) -> None:
        heapq.heappush(self._heap, (due, next(self._tiebreak), delivery.number))

    def collect_zoho_events(self, now: float) -> None:
        """Every event the Zoho simulator emitted since the last look becomes a delivery (Zoho's webhook)."""
        events = self.zoho.events[self._zoho_seen:]
        for position, record in enumerate(events, start=self._zoho_seen):
            body = str(record["payload"]).encode()
            event = json.loads(body)
            resource = next(iter(event["data"]))  # invoice | subscription | payment
            subject = str(event["data"][resource].get(f"{resource}_id"))
            headers = {"Content-Type": "application/json",
                       SIGNATURE_HEADER: ZohoSimulator.sign(body, SECRETS["zoho_webhook_secret"])}
            self.add(Delivery(0, "zoho", str(event["event_type"]), subject, "/webhooks/zoho", body=body,
                              headers=headers, order=position), now)
        self._zoho_seen += len(events)

    def pump(self, now: float) -> None:
        """Take in finished sends (rescheduling failed copies), start the due ones."""
        for future in [f for f in self._inflight if f.done()]:
            delivery = self._inflight.pop(future)
            answer, jobs = future.result()
            delivery.answers[answer] += 1
            if answer.startswith(("200", "202")):
                delivery.acked = True
                delivery.job_ids.update(jobs)
            elif answer.startswith("4"):
                delivery.rejected = True  # the harness built a bad delivery: a violation, never resent
            else:
                delivery.failures += 1  # 503, timeout, connection refused: the sender tries again later
                backoff = min(8.0, 0.5 * 2 ** min(delivery.failures, 5)) * self.rng.uniform(0.8, 1.2)
                self._push(now + backoff, delivery)
        while self._heap and self._heap[0][0] <= now:
            _, _, number = heapq.heappop(self._heap)
            delivery = self.deliveries[number]
            self.sends += 1
            self._inflight[self._pool.submit(self._send, delivery)] = delivery

    def idle(self) -> bool:
        """Nothing due, nothing in flight."""
        return not self._heap and not self._inflight

    def _send(self, delivery: Delivery) -> tuple[str, list[str]]:
        try:
            if delivery.form is not None:
                resp = requests.post(self.url + delivery.path, data=delivery.form, timeout=15)
            else:
                resp = requests.post(self.url + delivery.path, data=delivery.body, headers=delivery.headers,
                                     timeout=15)
        except requests.RequestException as exc:
            return type(exc).__name__, []
        if resp.status_code in (200, 202):
            body = resp.json()
            return f"{resp.status_code} {body.get('status')}", [str(j) for j in body.get("jobs") or []]
        return str(resp.status_code), []

    def close(self) -> None:
        """Stop the sender threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- the world: what exists in the three systems, what the run asked for --------------------------------------
@dataclass
class Customer:
    """A customer known to all three systems (as workflow 2 leaves it)."""

    company: str
    zoho_customer: str
    card: str  # valid | declining
    subscription: str  # Attio record


@dataclass
class Subject:
    """A subscription requested in Attio during the run."""

    record: str
    company: str
    card: bool
    requested: bool = False


class World:
    """Seeds the simulators and carries what the run did to them (the checker's expectations)."""

    def __init__(self, stack: Stack, opts: ChaosOptions) -> None:
        self.stack = stack
        zoho, attio, braintree = stack.zoho, stack.attio, stack.braintree
        zoho.add_plan(PLAN_CODE, "Basic", PLAN_PRICE)
        self.service = attio.add_record("services", {
            "external_id": f"zoho-plan:{PLAN_CODE}", "name": "Basic", "kind": "Plan", "code": PLAN_CODE,
            "price": PLAN_PRICE, "billing_interval": "every 1 month", "status": "Active"})  # fmt: skip
        self.customers: list[Customer] = []
        for i in range(opts.customers):
            card = "declining" if i % 7 == 3 else "valid"  # two of the default 14 decline every charge
            name, email = f"Chaos Customer {i}", f"billing@customer{i}.chaos.example"
            zoho_customer = zoho.add_customer(name, email)
            company = attio.add_record("companies", {"name": name, "billing_email": email,
                                                     "zoho_customer_id": zoho_customer})
            bt_customer = customer_id_for_company(company)
            braintree.add_customer(bt_customer, email=email, card=card)
            attio.set_values("companies", company, {"braintree_customer_id": bt_customer})
            subscription = attio.add_record("subscriptions", {
                "name": f"{name} Basic", "status": "Active", "zoho_subscription_id": f"chaos-sub-{i:04d}",
                "company": {"target_object": "companies", "target_record_id": company}})  # fmt: skip
            self.customers.append(Customer(company, zoho_customer, card, subscription))
        self.by_zoho_customer = {c.zoho_customer: c for c in self.customers}

        self.subjects: list[Subject] = []
        for j in range(opts.activations):
            name, email = f"Chaos Prospect {j}", f"billing@prospect{j}.chaos.example"
            company = attio.add_record("companies", {"name": name, "billing_email": email})
            card = j % 4 != 1  # a quarter have no card yet: they get a payment link
            if card:
                braintree.add_customer(customer_id_for_company(company), email=email, card="valid")
            record = attio.add_record("subscriptions", {
                "name": f"{name} Basic",
                "service": {"target_object": "services", "target_record_id": self.service},
                "company": {"target_object": "companies", "target_record_id": company}})  # fmt: skip
            self.subjects.append(Subject(record, company, card))

        self.lifecycle: list[tuple[str, str]] = []  # (Zoho subscription id, Attio record)
        token = zoho.issue_token()
        for k in range(opts.lifecycle_subjects):
            zoho_customer = zoho.add_customer(f"Chaos Member {k}", f"billing@member{k}.chaos.example")
            record = attio.add_record("subscriptions", {"name": f"Chaos Member {k}", "status": "Active"})
            resp = requests.post(
                f"{zoho.url}{BASE}/subscriptions", timeout=10,
                headers={"Authorization": f"Zoho-oauthtoken {token}", ORG_HEADER: zoho.organization_id},
                json={"customer_id": zoho_customer, "plan": {"plan_code": PLAN_CODE}, "auto_collect": False,
                      "reference_id": record})  # fmt: skip
            resp.raise_for_status()
            sub_id = str(resp.json()["subscription"]["subscription_id"])
            attio.set_values("subscriptions", record, {"zoho_subscription_id": sub_id})
            self.lifecycle.append((sub_id, record))
        # What happened before the run (the lifecycle subjects' first invoices) is not delivered: the Postman
        # starts reading Zoho's event log after this point.

        self.invoices_by_action: dict[int, str] = {}
        self.stories: dict[str, str] = {}  # Braintree transaction id → story

    def expects_decline(self, invoice: dict[str, Any]) -> bool:
        """Whether charging this invoice must be declined (a declining card, or a declined amount)."""
        customer = self.by_zoho_customer.get(str(invoice.get("customer_id")))
        return (customer is not None and customer.card == "declining") or \
            DECLINE_AMOUNT <= float(invoice.get("total") or 0) < 3001


# -- the engine -----------------------------------------------------------------------------------------------
@dataclass
class Check:
    """What the checker found at one point."""

    violations: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # jobs in the failed registry (an operator's), with the error
    pending: list[str] = field(default_factory=list)  # audit findings on invoices whose jobs are failed
    status: dict[str, JobStatus] = field(default_factory=dict)
    applied: Counter[str] = field(default_factory=Counter)
    jobs: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    rq_retries: int = 0
    audit_checked: int = 0


@dataclass
class Report:
    """Everything a run prints."""

    seed: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)
    copies: int = 0
    sends: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)
    processes: Counter[str] = field(default_factory=Counter)
    before: Check = field(default_factory=Check)
    after: Check = field(default_factory=Check)
    retried: int = 0
    drained: dict[str, bool] = field(default_factory=dict)
    log_dir: str = ""

    @property
    def violations(self) -> list[str]:
        """Every violation, before and after the operator's retry."""
        return self.before.violations + self.after.violations

    @property
    def ok(self) -> bool:
        """No violation; after the retry nothing failed and nothing pending; both drains finished."""
        return (not self.violations and not self.after.failed and not self.after.pending
                and all(self.drained.values()))

    def text(self) -> str:
        """The printed figures."""
        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"

        before, after = self.before, self.after
        return "\n".join([
            f"chaos seed={self.seed} window={self.seconds:.0f}s; "
            + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items()),
            f"deliveries: {sum(self.deliveries.values())} ({counts(self.deliveries)})",
            f"copies: {self.copies} planned (1-5 per delivery), {self.sends} HTTP sends with the senders' retries; "
            f"answers: {counts(self.answers)}",
            f"business actions: {counts(self.actions)}",
            f"faults injected: {sum(self.faults.values())} ({counts(self.faults)})",
            f"provider requests hit by those faults: {counts(self.fired)}",
            f"worker processes: {counts(self.processes)}",
            f"jobs: {counts(before.jobs)}; automatic retries by RQ: {before.rq_retries}",
            f"job outcomes: {counts(before.outcomes)}",
            f"applied (checked in the simulators): {counts(before.applied)}",
            "drained: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in self.drained.items()),
            f"failed registry before the retry: {len(before.failed)} job(s); audit findings on their invoices: "
            f"{len(before.pending)}",
            *[f"  failed {line}" for line in before.failed[:25]],
            *[f"  pending {line}" for line in before.pending[:25]],
            f"jobs retried (retry_job): {self.retried}",
            f"after the retry: {counts(after.applied)}; failed registry {len(after.failed)}, pending "
            f"{len(after.pending)}",
            *[f"  still failed {line}" for line in after.failed[:25]],
            f"payments audit: {before.audit_checked} sale(s) checked before the retry, {after.audit_checked} after",
            f"violations: {len(self.violations)} (before the retry {len(before.violations)}, after "
            f"{len(after.violations)})",
            *[f"  VIOLATION {line}" for line in self.violations[:60]],
            f"logs: {self.log_dir}",
        ])


class ChaosRun:
    """One run: world, schedule, chaos window, drain, check, operator retry, drain, check."""

    STORY_GRACE = 60.0  # seconds after the window a postponed Braintree story may still start

    def __init__(self, opts: ChaosOptions) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.report = Report(opts.seed, opts.seconds, log_dir=str(opts.log_dir))
        self._heap: list[Action] = []
        self._dynamic = itertools.count(1_000_000)
        self._faults: list[tuple[str, Fault]] = []
        self._t0 = 0.0

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> Report:
        """Run everything; the report (the caller asserts on it)."""
        opts, report = self.opts, self.report
        opts.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.redis = DurableRedis(opts.log_dir / "redis")
        self.stack = Stack()
        web: LiveServer | None = None
        fleet: Fleet | None = None
        postman: Postman | None = None
        try:
            self.settings = self.stack.settings(redis_url=self.redis.url, retry_schedule_seconds=opts.retry_schedule)
            self.world = World(self.stack, opts)
            self.since = datetime.now(UTC) - timedelta(minutes=5)
            schedule = plan_schedule(self.rng, opts)
            web = LiveServer(create_app(replace(self.settings, log_level="ERROR")))
            self.fleet = fleet = Fleet(self.settings, opts.log_dir, opts.workers)
            self.postman = postman = Postman(web.url, random.Random(self.rng.getrandbits(64)), self.stack.zoho)
            self.conn = make_redis(self.redis.url)
            self._timeline = open(opts.log_dir / "timeline.log", "w", buffering=1)  # noqa: SIM115
            self._wait_for_workers()
            opts.out(f"chaos: seed {opts.seed}, {len(schedule)} planned actions over {opts.seconds:.0f}s, "
                     f"{opts.workers} workers, logs in {opts.log_dir}")

            self._t0 = time.monotonic()
            for action in schedule:
                heapq.heappush(self._heap, action)
            self._loop(until=lambda now: now >= opts.seconds and not any(a.at <= opts.seconds for a in self._heap))
            report.timings["chaos"] = time.monotonic() - self._t0

            self._quiesce()
            t = time.monotonic()
            report.drained["first drain"] = self._drain(opts.drain_timeout)
            report.timings["drain"] = time.monotonic() - t
            report.before = self._check()

            t = time.monotonic()
            report.retried = self._operator_retry()
            report.drained["drain after retry"] = self._drain(opts.drain_timeout)
            report.timings["retry+drain"] = time.monotonic() - t
            report.after = self._check()
        finally:
            if postman is not None:
                postman.close()
                report.sends = postman.sends
                for d in postman.deliveries:
                    report.deliveries[f"{d.source} {d.kind}"] += 1
                    report.copies += d.copies
                    report.answers.update(d.answers)
            if fleet is not None:
                fleet.stop()
                report.processes.update(fleet.events)
            for kind, fault in self._faults:
                report.fired[kind] += fault.fired
            if web is not None:
                web.stop()
            if hasattr(self, "_timeline"):
                self._timeline.close()
            if hasattr(self, "conn"):
                self.conn.close()
            self.stack.stop()
            self.redis.close()
            report.timings["total"] = time.monotonic() - started
        return report

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + 60
        while Worker.count(connection=self.conn) < self.opts.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not register")
            time.sleep(0.1)

    def _loop(self, until: Callable[[float], bool]) -> None:
        """Run due actions, deliver, supervise, until ``until(now)``."""
        next_progress = self.opts.progress_every
        while True:
            now = self._now()
            while self._heap and self._heap[0].at <= now:
                self._do(heapq.heappop(self._heap), now)
            self.postman.collect_zoho_events(now)
            self.postman.pump(now)
            self.fleet.supervise()
            if now >= next_progress:
                next_progress += self.opts.progress_every
                self._progress(now)
            if until(now):
                return
            time.sleep(0.05)

    def _progress(self, now: float) -> None:
        acked = sum(d.acked for d in self.postman.deliveries)
        try:
            q = make_queues(self.conn)["webhooks"]
            depth = (f"queued {q.count} started {q.started_job_registry.count} "
                     f"scheduled {q.scheduled_job_registry.count} failed {q.failed_job_registry.count}")
        except redis.exceptions.RedisError:
            depth = "redis unreachable"
        self.opts.out(f"  t={now:5.0f}s deliveries {len(self.postman.deliveries)} (acked {acked}), "
                      f"faults {sum(self.report.faults.values())}, {depth}")

    def _later(self, delay: float, kind: str, **args: Any) -> None:
        heapq.heappush(self._heap, Action(self._now() + delay, next(self._dynamic), kind, args))

    # -- actions ----------------------------------------------------------------------------------------------
    def _do(self, action: Action, now: float) -> None:
        args, world, stack = action.args, self.world, self.stack
        kind = action.kind
        self._timeline.write(f"{now:8.2f} {kind} {_brief(args)}\n")
        if kind == "invoice":
            customer = world.customers[args["customer"]]
            invoice = stack.zoho.raise_invoice(customer.zoho_customer, args["amount"],
                                               subscription_id=f"chaos-sub-{args['customer']:04d}")
            world.invoices_by_action[action.seq] = str(invoice["invoice_id"])
        elif kind == "resend":
            invoice_id = world.invoices_by_action.get(args["invoice_action"])
            if invoice_id is None:
                return
            req = zoho_delivery("invoice_created", {"invoice": {"invoice_id": invoice_id}},
                                secret=SECRETS["zoho_webhook_secret"], event_id=args["event_id"])
            self.postman.add(Delivery(0, "zoho", "invoice_created", invoice_id, "/webhooks/zoho", body=req.body,
                                      headers=req.headers), now)
        elif kind == "activate":
            subject = world.subjects[args["subject"]]
            stack.attio.set_values("subscriptions", subject.record, {"status": "Requested"})
            subject.requested = True
            req = attio_delivery([attio_event("record.updated", object_id="subscriptions-object",
                                              record_id=subject.record, attribute_id="status-attr")],
                                 secret=SECRETS["attio_webhook_secret"], idempotency_key=args["key"])
            self.postman.add(Delivery(0, "attio", "record.updated", subject.record, "/webhooks/attio",
                                      body=req.body, headers=req.headers), now)
        elif kind == "renew":
            records = {s.record for s in world.subjects}
            live = sorted(locked(stack.zoho, lambda: [sid for sid, sub in stack.zoho.subscriptions.items()
                                                      if sub.get("reference_id") in records]))
            if not live:
                self.report.actions["renew skipped (nothing activated yet)"] += 1
                return
            stack.zoho.renew_subscription(live[int(args["pick"] * len(live))])
        elif kind == "lifecycle":
            sub_id, _ = world.lifecycle[args["subject"]]
            stack.zoho.set_subscription_status(sub_id, args["status"])
        elif kind == "bt_story":
            if not self._story(args["story"], args["pick"], now):
                # No charged transaction recorded yet (retries may be waiting): try again a little later.
                if now < self.opts.seconds + self.STORY_GRACE:
                    self._later(2.0, "bt_story", **args)
                else:
                    self.report.actions["bt_story dropped (no transaction ready)"] += 1
                return
        elif kind == "kill9":
            state = self.fleet.kill9(args["pick"], args["replace_after"], self.conn)
            self.report.faults["kill -9 worker"] += 1
            self.report.processes[f"killed -9 {state}"] += 1
        elif kind == "redis_restart":
            if not self.redis.running:
                return
            self.redis.stop(signal.SIGKILL if args["hard"] else signal.SIGTERM)
            self.report.faults[f"redis restart ({'SIGKILL' if args['hard'] else 'SIGTERM'})"] += 1
            self._later(args["down"], "redis_up")
        elif kind == "redis_up":
            if not self.redis.running:
                self.redis.start()
        elif kind == "fault":
            self._provider_fault(args["spec"])
        elif kind == "expire":
            fault: Fault = args["fault"]
            fault.times = fault.fired  # spent: matches nothing from now on
        if kind in ("invoice", "resend", "activate", "renew", "lifecycle", "bt_story"):
            self.report.actions[kind] += 1

    def _story(self, story: str, pick: float, now: float) -> bool:
        """Play a Braintree story on a transaction the service charged and recorded (settlement comes later)."""
        stack, world = self.stack, self.world
        recorded = {value(r, "external_id") for r in stack.attio.records("payments")}
        ready = sorted(t["id"] for t in stack.braintree.transactions
                       if t["type"] == "sale" and t["status"] == "submitted_for_settlement"
                       and t["id"] not in world.stories and f"braintree:{t['id']}" in recorded)
        if not ready:
            return False
        txn = ready[int(pick * len(ready))]
        world.stories[txn] = story
        kinds = STORIES[story]
        if story == "settlement_declined":
            stack.braintree.decline_settlement(txn)
        else:
            stack.braintree.settle(txn)
        for kind in kinds:  # queued at Braintree (our endpoint was slow, or it batches): they arrive in a burst
            fields = stack.braintree.notification(kind, txn)
            self.postman.add(Delivery(0, "braintree", kind, txn, "/webhooks/braintree", form=fields), now,
                             spread=1.5)
        return True

    def _provider_fault(self, spec: dict[str, Any]) -> None:
        kind = spec["kind"]
        sims = {"attio": self.stack.attio, "zoho": self.stack.zoho, "braintree": self.stack.braintree}
        provider = spec["provider"]
        sim, path = sims[provider], PROVIDER_PATHS[provider]
        if kind == "storm429":
            fault = sim.faults.add("*", path, status=429, headers={"Retry-After": str(spec["retry_after"])},
                                   times=None)
            self._later(spec["duration"], "expire", fault=fault)
            label = f"429 storm {provider}"
        elif kind == "burst5xx":  # up to `times` errors within a few seconds (an outage is bounded in time, not
            # in requests: with the breaker open a count-bounded burst would last one probe a minute)
            fault = sim.faults.add("*", path, status=spec["status"], times=spec["times"])
            self._later(spec["duration"], "expire", fault=fault)
            label = f"5xx burst {provider}"
        elif kind == "slow":
            fault = sim.faults.add("*", path, delay=spec["delay"], times=None)
            self._later(spec["duration"], "expire", fault=fault)
            label = f"slow {provider}"
        elif kind == "slow_writes":  # Attio answers reads at once but takes its time over writes
            for method in ("PUT", "PATCH"):
                fault = self.stack.attio.faults.add(method, "/v2/objects/*/records*", delay=spec["delay"], times=None)
                self._faults.append((FAULT_NAMES[kind], fault))
                self._later(spec["duration"] * 2, "expire", fault=fault)
            self.report.faults["slow Attio writes"] += 1
            return
        elif kind == "after_commit":  # the next one or two such calls succeed but their answers are lost
            provider, method, path = spec["target"]
            fault = sims[provider].faults.add(method, path, after=spec["status"], times=spec["target_times"])
            self._later(30.0, "expire", fault=fault)
            label = f"after-commit {provider} {method} {path.rsplit('/', 1)[-1] or path}"
        elif kind == "auth":  # a provider refuses our keys for a moment: a permanent error, the job fails at once
            provider = spec["auth_provider"]
            fault = sims[provider].faults.add("*", PROVIDER_PATHS[provider], status=401, times=None)
            self._later(spec["duration"], "expire", fault=fault)
            label = f"401 {provider}"
        else:  # timeout: the provider does the work after the client gave up waiting (an answer lost)
            provider, method, path = spec["timeout_target"]
            fault = sims[provider].faults.add(method, path, delay=CLIENT_READ_TIMEOUT + 1.0, times=1)
            self._later(30.0, "expire", fault=fault)
            label = f"timeout {provider} {method} {path.rsplit('/', 1)[-1]}"
        self._faults.append((FAULT_NAMES[kind], fault))
        self.report.faults[label] += 1

    # -- after the window -------------------------------------------------------------------------------------
    def _quiesce(self) -> None:
        """Faults cleared, Redis up, every worker slot running; the restorative actions still pending done now."""
        for sim in (self.stack.attio, self.stack.zoho, self.stack.braintree):
            sim.faults.clear()
        self._heap = [a for a in self._heap if a.kind not in ("expire", "fault")]
        if not self.redis.running:
            self.redis.start()
        self.fleet.fill()

    def _drain(self, timeout: float) -> bool:
        """Deliver everything (Zoho keeps emitting events as jobs pay invoices) and wait for an idle queue."""
        deadline = time.monotonic() + timeout
        stable, next_progress = 0, self._now() + self.opts.progress_every
        while time.monotonic() < deadline:
            now = self._now()
            while self._heap and self._heap[0].at <= now:
                self._do(heapq.heappop(self._heap), now)
            self.postman.collect_zoho_events(now)
            self.postman.pump(now)
            self.fleet.supervise()
            try:
                idle = self.postman.idle() and not self._heap and queues_idle(self.conn)
            except redis.exceptions.RedisError:
                idle = False
            stable = stable + 1 if idle else 0
            if stable >= 6:  # idle for ~1.5 s: no job left to emit a Zoho event we have not seen
                return True
            if now >= next_progress:
                next_progress = now + self.opts.progress_every
                self._progress(now)
            time.sleep(0.25)
        return False

    def _operator_retry(self) -> int:
        """``flask jobs retry --all`` for the webhooks queue, through ``retry_job``."""
        queue = make_queues(self.conn)["webhooks"]
        count = 0
        for job in list(failed_jobs(queue)):
            retry_job(queue, job, self.settings.retry_schedule_seconds)
            count += 1
        return count

    # -- the checker ------------------------------------------------------------------------------------------
    def _check(self) -> Check:
        check = Check()
        self._load_jobs(check)
        self._check_invoices(check)
        self._check_activations(check)
        self._check_lifecycle(check)
        self._check_stories(check)
        self._check_nothing_twice(check)
        self._check_audit(check)
        return check

    def _load_jobs(self, check: Check) -> None:
        """Every acknowledged delivery's jobs are finished, or failed and in the failed registry."""
        queue = make_queues(self.conn)["webhooks"]
        in_registry = set(queue.failed_job_registry.get_job_ids())
        ids = sorted({j for d in self.postman.deliveries for j in d.job_ids})
        jobs = dict(zip(ids, Job.fetch_many(ids, connection=self.conn, serializer=JSONSerializer), strict=True))
        for d in self.postman.deliveries:
            if d.rejected:
                check.violations.append(f"rejected: {d.label} answered {dict(d.answers)}")
            if not d.acked:
                check.violations.append(f"unacknowledged: {d.label} after {sum(d.answers.values())} sends "
                                        f"{dict(d.answers)}")
                continue
            if not d.job_ids and not any(a.endswith("ignored") for a in d.answers):
                check.violations.append(f"acknowledged without a job: {d.label} {dict(d.answers)}")
            for job_id in sorted(d.job_ids):
                job = jobs.get(job_id)
                if job is None:
                    check.violations.append(f"lost: job {job_id} of {d.label} is not in Redis")
                    continue
                status = job.get_status(refresh=False)
                if job_id in check.status:
                    continue  # a job named by two deliveries (an Attio delivery of several events)
                check.status[job_id] = status
                check.jobs[str(getattr(status, "value", status))] += 1
                check.rq_retries += _retries_used(job)
                if status == JobStatus.FINISHED:
                    result = job.return_value()
                    outcome = result.get("outcome") if isinstance(result, dict) else None
                    check.outcomes[f"{d.kind} {outcome}"] += 1
                elif status == JobStatus.FAILED and job_id in in_registry:
                    check.failed.append(f"{job_id} {d.kind} {d.subject}: {_last_error(job)}")
                else:
                    check.violations.append(
                        f"stuck: job {job_id} of {d.label} is {getattr(status, 'value', status)}"
                        + (" but not in the failed registry" if status == JobStatus.FAILED else ""))

    def _finished(self, check: Check, d: Delivery) -> bool:
        return any(check.status.get(j) == JobStatus.FINISHED for j in d.job_ids)

    def _subject_state(self, check: Check, subject: str) -> set[str]:
        """'finished' if a job about the subject finished, 'failed' if one waits in the failed registry."""
        state = set()
        for d in self.postman.deliveries:
            if d.subject == subject:
                for j in d.job_ids:
                    status = check.status.get(j)
                    state.add("finished" if status == JobStatus.FINISHED else "failed" if status else "none")
        return state

    def _check_invoices(self, check: Check) -> None:
        """A finished collection leaves its invoice paid by exactly one sale, in Zoho and Attio, or declined."""
        zoho, braintree, attio = self.stack.zoho, self.stack.braintree, self.stack.attio
        records = {value(r, "external_id"): r for r in attio.records("payments")}
        sales = [t for t in braintree.transactions if t["type"] == "sale"]
        invoice_ids = sorted({d.subject for d in self.postman.deliveries if d.kind == "invoice_created"})
        for invoice_id in invoice_ids:
            if "finished" not in self._subject_state(check, invoice_id):
                continue  # its jobs wait in the failed registry: the operator's retry tells
            invoice = zoho.invoice(invoice_id)
            txns = [t for t in sales if t["order_id"] == invoice_id]
            charged = [t for t in txns if any(h["status"] == "submitted_for_settlement" for h in t["status_history"])]
            declined = [t for t in txns if t["status"] == "processor_declined"]
            refs = [p["reference_number"] for p in zoho.payments_for_invoice(invoice_id)]
            where = f"invoice {invoice_id} ({invoice['total']:.2f}, {invoice['status']})"
            problems = []
            if self.world.expects_decline(invoice):
                if charged:
                    problems.append(f"charged by {[t['id'] for t in charged]}")
                if not declined:
                    problems.append("no declined sale")
                for t in declined:
                    status = value(records.get(f"braintree:{t['id']}") or {}, "status")
                    if status != "Declined":
                        problems.append(f"declined sale {t['id']} is {status!r} in Attio")
                if refs:
                    problems.append(f"Zoho payments {refs}")
                outcome = "invoices declined and recorded Declined"
            elif any(t["status"] == "settlement_declined" for t in charged) and all(
                    t["status"] == "settlement_declined" for t in charged):
                # The money never arrived: the sale's Zoho payment is gone (the invoice is open to collect again)
                # and its Attio record says Failed.
                for t in charged:
                    if invoice["status"] == "paid" or t["id"] in refs:
                        problems.append(f"paid in Zoho by the declined settlement of {t['id']} (payments {refs})")
                    status = value(records.get(f"braintree:{t['id']}") or {}, "status")
                    if status != "Failed":
                        problems.append(f"declined settlement {t['id']} is {status!r} in Attio")
                outcome = "invoices reopened after a declined settlement"
            else:
                charged = [t for t in charged if t["status"] != "settlement_declined"]  # collected again after one
                if len(charged) != 1:
                    problems.append(f"{len(charged)} successful sales {[t['id'] for t in charged]}")
                if invoice["status"] != "paid":
                    problems.append("not paid in Zoho")
                if charged and refs != [charged[0]["id"]]:
                    problems.append(f"Zoho payments {refs}")
                if charged and f"braintree:{charged[0]['id']}" not in records:
                    problems.append("no Attio payments record")
                outcome = "invoices paid by exactly one sale"
            if problems:
                check.violations.append(f"not applied: {where}: {'; '.join(problems)}")
            else:
                check.applied[outcome] += 1

    def _check_activations(self, check: Check) -> None:
        """A finished activation: Active with exactly one Zoho subscription, or waiting on its payment link."""
        zoho, attio = self.stack.zoho, self.stack.attio
        zsubs = locked(zoho, lambda: [dict(s) for s in zoho.subscriptions.values()])
        for subject in self.world.subjects:
            if not subject.requested or "finished" not in self._subject_state(check, subject.record):
                continue
            status = attio.value("subscriptions", subject.record, "status")
            mine = [s for s in zsubs if s.get("reference_id") == subject.record]
            where = f"activation of {subject.record}"
            if subject.card:
                zoho_id = attio.value("subscriptions", subject.record, "zoho_subscription_id")
                if status != "Active" or len(mine) != 1 or zoho_id != mine[0]["subscription_id"]:
                    check.violations.append(f"not applied: {where}: status {status!r}, {len(mine)} Zoho "
                                            f"subscription(s), zoho_subscription_id {zoho_id!r}")
                else:
                    check.applied["activations Active"] += 1
            else:
                link = attio.value("subscriptions", subject.record, "payment_link")
                if status != "Awaiting payment method" or not link or mine:
                    check.violations.append(f"not applied: {where}: status {status!r}, link {bool(link)}, "
                                            f"{len(mine)} Zoho subscription(s)")
                else:
                    check.applied["activations awaiting a card"] += 1

    def _check_lifecycle(self, check: Check) -> None:
        """Once the newest event of a Zoho subscription is applied, Attio shows Zoho's current status."""
        zoho, attio = self.stack.zoho, self.stack.attio
        for sub_id, record in self.world.lifecycle:
            events = [d for d in self.postman.deliveries if d.source == "zoho" and d.subject == sub_id]
            if not events or not self._finished(check, max(events, key=lambda d: d.order)):
                continue  # no event, or the newest one's job waits in the failed registry
            zoho_status = zoho.subscription(sub_id)["status"]
            expected = ZOHO_TO_ATTIO_STATUS[zoho_status]
            status = attio.value("subscriptions", record, "status")
            if status != expected:
                check.violations.append(f"not applied: subscription {sub_id} is {zoho_status} in Zoho, "
                                        f"{status!r} in Attio (expected {expected!r})")
            else:
                check.applied["lifecycle subscriptions in step with Zoho"] += 1

    def _check_stories(self, check: Check) -> None:
        """A transaction's payment shows the status Braintree has now once any of its notifications was applied
        (each re-reads the transaction: the order in which they arrived does not matter)."""
        records = {value(r, "external_id"): r for r in self.stack.attio.records("payments")}
        for txn, story in sorted(self.world.stories.items()):
            applied = [d.kind for d in self.postman.deliveries
                       if d.source == "braintree" and d.subject == txn and self._finished(check, d)]
            if not applied:
                continue
            finder = self.stack.braintree.gateway().transaction.find
            expected = status_of(finder(txn), finder)
            status = value(records.get(f"braintree:{txn}") or {}, "status")
            if status != expected:
                check.violations.append(f"not applied: transaction {txn} ({story}; applied {applied}) is "
                                        f"{status!r} in Attio (expected {expected!r})")
            else:
                check.applied["braintree settlement/dispute stories"] += 1

    def _check_nothing_twice(self, check: Check) -> None:
        """No second Zoho customer, subscription or payment, Attio record, charged sale, or mirror of our own."""
        zoho, attio, braintree = self.stack.zoho, self.stack.attio, self.stack.braintree
        customers, subs, payments = locked(zoho, lambda: (
            [dict(c) for c in zoho.customers.values()], [dict(s) for s in zoho.subscriptions.values()],
            [dict(p) for p in zoho.payments]))

        def twice(what: str, counts: Counter[Any]) -> None:
            check.violations.extend(f"twice: {n} {what} {key}" for key, n in counts.items() if n > 1)

        twice("Zoho customers with email", Counter(c["email"].lower() for c in customers))
        twice("Zoho subscriptions with reference_id", Counter(s["reference_id"] for s in subs if s["reference_id"]))
        twice("Zoho payments on invoice", Counter(i["invoice_id"] for p in payments for i in p["invoices"]))
        external = Counter(value(r, "external_id") for r in attio.records("payments"))
        twice("Attio payments records", external)
        twice("charged sales for invoice", Counter(  # a sale whose settlement was declined took no money
            t["order_id"] for t in braintree.transactions
            if t["type"] == "sale" and t["status"] != "settlement_declined"
            and any(h["status"] == "submitted_for_settlement" for h in t["status_history"])))
        ours = {t["id"] for t in braintree.transactions}
        for payment in payments:
            for applied in payment["invoices"] if payment["reference_number"] in ours else []:
                mirror = f"zoho-invoice:{applied['invoice_id']}:{payment['payment_id']}"
                if mirror in external:
                    check.violations.append(f"twice: our own payment {payment['payment_id']} mirrored as {mirror}")

    def _check_audit(self, check: Check) -> None:
        """The payments audit, through the service's own clients (on a Redis DB of their own: fresh breakers)."""
        audit_conn = make_redis(self.redis.url.rsplit("/", 1)[0] + "/1")
        try:
            violations, checked = audit_payments(
                braintree=build_braintree_client(self.settings, audit_conn),
                zoho=build_zoho_client(self.settings, audit_conn),
                attio=build_attio_client(self.settings, audit_conn), since=self.since,
            )
        finally:
            audit_conn.close()
        check.audit_checked = checked
        for violation in violations:
            if self._subject_state(check, violation.invoice_id) == {"failed"}:
                check.pending.append(f"audit, its job failed: {violation.line()}")
            else:
                check.violations.append(f"audit: {violation.line()}")


def _brief(args: dict[str, Any]) -> str:
    """An action's arguments on one line (a fault's spec reduced to what applies to its kind)."""
    spec = args.get("spec")
    if spec is not None:
        keys = {"storm429": ("provider", "duration", "retry_after"), "burst5xx": ("provider", "status", "times"),
                "slow": ("provider", "delay", "duration"), "slow_writes": ("delay", "duration"),
                "after_commit": ("target", "status", "target_times"), "timeout": ("timeout_target",),
                "auth": ("auth_provider", "duration")}[spec["kind"]]
        return spec["kind"] + " " + " ".join(f"{k}={spec[k]}" for k in keys)
    return " ".join(f"{k}={v}" for k, v in args.items() if k != "fault")


def _retries_used(job: Job) -> int:
    """Automatic retries a job went through (RQ 2.12 counts them down in ``retries_left`` only)."""
    return max(0, len(job.retry_intervals or ()) - (job.retries_left or 0))


def _last_error(job: Job) -> str:
    try:
        result = job.latest_result()
    except Exception:  # noqa: BLE001 - a report line, never a crash
        result = None
    text = (result.exc_string if result is not None else None) or job.exc_info or ""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no traceback: retries exhausted or abandoned)"


def run_chaos(opts: ChaosOptions) -> Report:
    """One chaos run; the report of its figures and violations."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return ChaosRun(opts).run()
