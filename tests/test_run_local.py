"""The README's run command, ``scripts/run-local``: it comes up, a sample webhook gets processed, Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Service configuration a developer's or CI's shell may hold: the local run must not pick any of it up.
CONFIG_PREFIXES = ("ATTIO_", "ZOHO_", "BRAINTREE_", "DASHBOARD_", "SENTRY_", "PAYMENT_LINK_", "CATALOG_SYNC_")
CONFIG_NAMES = {"REDIS_URL", "PUBLIC_BASE_URL", "RETRY_SCHEDULE_SECONDS", "LOG_LEVEL", "PORT", "WEB_CONCURRENCY"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any service configuration, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES) and k not in CONFIG_NAMES}
    env.update(extra)
    return env


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren, …), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def answers(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except requests.RequestException:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_run_local_serves_a_sample_webhook_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """``scripts/run-local`` on free ports: ready, Globex's activation runs to a collected payment, SIGINT ends all."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    web_port = free_port()
    redis_port = free_port()
    while redis_port == web_port:
        redis_port = free_port()
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "run-local")], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=clean_env(PORT=str(web_port), LOCAL_REDIS_PORT=str(redis_port), LOCAL_RUN_DIR=str(run_dir)),
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    children: set[int] = set()
    web = f"http://127.0.0.1:{web_port}"
    try:
        eventually(lambda: any("Ctrl-C stops everything" in line for line in output) or proc.poll() is not None,
                   "the run's banner", timeout=180)
        assert proc.poll() is None, "".join(output)
        banner = "".join(output)
        attio = re.search(r"simulators\s+attio (\S+)", banner)
        globex = re.search(r"# Globex .*\n.*webhooks send attio record\.updated --id (\S+)", banner)
        assert attio and globex, banner
        assert requests.get(f"{web}/readyz", timeout=5).status_code == 200
        children = descendants(proc.pid)
        assert len(children) >= 5, children  # redis, simulators, web (+ its workers), worker

        env_file = run_dir / "local.env"
        local = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        sent = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "integration", "webhooks", "send", "attio", "record.updated",
             "--id", globex[1]],
            cwd=ROOT, env=clean_env(**{**local, "PUBLIC_BASE_URL": web}), capture_output=True, text=True, timeout=60,
        )
        assert sent.returncode == 0 and sent.stdout.startswith("202 "), sent.stdout + sent.stderr

        def subscription() -> dict[str, Any]:
            resp = requests.get(f"{attio[1]}/v2/objects/subscriptions/records/{globex[1]}",
                                headers={"Authorization": "Bearer test-attio-key"}, timeout=5)
            resp.raise_for_status()
            return dict(resp.json()["data"]["values"])

        def status() -> str | None:
            values = subscription().get("status") or [{}]
            return values[0].get("option", {}).get("title")

        eventually(lambda: status() == "Active", "the Globex subscription to become Active")
        eventually(lambda: subscription().get("last_payment_at"), "the first invoice to be collected")

        def idle() -> bool:
            operator = (local["DASHBOARD_USERNAME"], local["DASHBOARD_PASSWORD"])  # figures are for operators
            queues = requests.get(f"{web}/readyz", auth=operator, timeout=5).json()["queues"]
            return all(q["queued"] == 0 and q["started"] == 0 and q["failed"] == 0 for q in queues.values())

        eventually(idle, "the queues to drain with no failed job")
        children = descendants(proc.pid)

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(timeout=60) == 0, "".join(output)
        eventually(lambda: not [pid for pid in children if running(pid)], "every child to stop", timeout=10)
        assert not answers(web_port) and not answers(redis_port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in children:  # the run's own children, in their own sessions: never leave one behind
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        reader.join(timeout=5)
