"""Real ``python -m workers`` processes for tests that need forking workers, concurrency or ``kill -9``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from rq import Queue

from integration.config import Settings
from integration.queueing import make_queues

ROOT = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make ``Settings.from_env()`` equal these settings (what the tests vary)."""
    return {
        "REDIS_URL": settings.redis_url,
        "ATTIO_API_URL": settings.attio_api_url,
        "ATTIO_API_KEY": settings.attio_api_key,
        "ATTIO_WEBHOOK_SECRET": ",".join(settings.attio_webhook_secrets),
        "ZOHO_ACCOUNTS_URL": settings.zoho_accounts_url,
        **({"ZOHO_API_URL": settings.zoho_api_url} if settings.zoho_api_url else {}),
        "ZOHO_CLIENT_ID": settings.zoho_client_id,
        "ZOHO_CLIENT_SECRET": settings.zoho_client_secret,
        "ZOHO_REFRESH_TOKEN": settings.zoho_refresh_token,
        "ZOHO_ORGANIZATION_ID": settings.zoho_organization_id,
        "ZOHO_WEBHOOK_SECRET": ",".join(settings.zoho_webhook_secrets),
        "BRAINTREE_ENVIRONMENT": settings.braintree_environment,
        "BRAINTREE_MERCHANT_ID": settings.braintree_merchant_id,
        "BRAINTREE_PUBLIC_KEY": settings.braintree_public_key,
        "BRAINTREE_PRIVATE_KEY": settings.braintree_private_key,
        "PUBLIC_BASE_URL": settings.public_base_url,
        "DASHBOARD_USERNAME": settings.dashboard_username,
        "DASHBOARD_PASSWORD": settings.dashboard_password,
        "ATTIO_WRITES_PER_SECOND": str(settings.attio_writes_per_second),
        "ATTIO_READS_PER_SECOND": str(settings.attio_reads_per_second),
        "ZOHO_REQUESTS_PER_MINUTE": str(settings.zoho_requests_per_minute),
        "ZOHO_REQUESTS_PER_DAY": str(settings.zoho_requests_per_day),
        "ZOHO_DAILY_RESERVE_PERCENT": str(settings.zoho_daily_reserve_percent),
        "CATALOG_SYNC_INTERVAL_MINUTES": str(settings.catalog_sync_interval_minutes),
        "RECONCILE_INTERVAL_MINUTES": str(settings.reconcile_interval_minutes),
        "RECONCILE_GRACE_MINUTES": str(settings.reconcile_grace_minutes),
        "DUNNING_SCHEDULE_DAYS": ",".join(f"{d:g}" for d in settings.dunning_schedule_days) or "none",
        "SETTLEMENT_CHECK_AFTER_HOURS": str(settings.settlement_check_after_hours),
        "RETRY_SCHEDULE_SECONDS": ",".join(str(s) for s in settings.retry_schedule_seconds),
        "JOB_DEADLINE_HOURS": str(settings.job_deadline_hours),
        "INLINE_WAIT_SECONDS": str(settings.inline_wait_seconds),
        "SALE_SEARCH_LAG_SECONDS": str(settings.sale_search_lag_seconds),
        "BRAINTREE_DUPLICATE_WINDOW_SECONDS": str(settings.braintree_duplicate_window_seconds),
        **({"BRAINTREE_MERCHANT_ACCOUNTS": ",".join(f"{c}:{a}" for c, a in settings.braintree_merchant_accounts)}
           if settings.braintree_merchant_accounts else {}),
        "LOG_LEVEL": settings.log_level,
        **({"SENTRY_DSN": settings.sentry_dsn} if settings.sentry_dsn else {}),
    }


class WorkerProcess:
    """One ``python -m workers`` in its own process group, its output in a log file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str = "worker", **extra_env: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTIO_", "ZOHO_", "BRAINTREE_"))}
        env.update(settings_env(settings))
        env.update(extra_env)
        env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        """``kill -9`` the worker and every descendant (RQ's work horse runs in a process group of its own), as a
        crashed machine would."""
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()

    def output(self) -> str:
        """What the worker printed so far."""
        return self.log_path.read_text(errors="replace")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def wait_until(predicate: Any, *, timeout: float, interval: float = 0.1, message: str = "condition") -> None:
    """Poll until ``predicate()`` is truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def queues_idle(connection: redis.Redis, names: tuple[str, ...] = ("webhooks",)) -> bool:
    """No job queued, started or scheduled in these queues (the catalog queue always holds the next sync)."""
    qs: dict[str, Queue] = make_queues(connection)
    # A job a worker has just dequeued sits in RQ's intermediate list before the started registry: count it too.
    return all(q.count == 0 and connection.llen(q.intermediate_queue_key) == 0
               and q.started_job_registry.count == 0 and q.scheduled_job_registry.count == 0
               for name, q in qs.items() if name in names)
