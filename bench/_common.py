"""Helpers shared by the benchmarks: environment for the service, process management, tables."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")

SERVICE_ENV = {
    "ATTIO_API_KEY": "bench-attio-key",
    "ATTIO_WEBHOOK_SECRET": "bench-attio-secret",
    "ZOHO_CLIENT_ID": "test-client",
    "ZOHO_CLIENT_SECRET": "test-secret",
    "ZOHO_REFRESH_TOKEN": "1000.test-refresh",
    "ZOHO_ORGANIZATION_ID": "10234695",
    "ZOHO_WEBHOOK_SECRET": "benchzohosecret1",
    "BRAINTREE_MERCHANT_ID": "test-merchant",
    "BRAINTREE_PUBLIC_KEY": "test-public",
    "BRAINTREE_PRIVATE_KEY": "test-private",
    "DASHBOARD_USERNAME": "operator",
    "DASHBOARD_PASSWORD": "bench-password",
    "LOG_LEVEL": "INFO",
}


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def procfile_command(name: str) -> str:
    """The command line of a Procfile process."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def start(cmd: str, env: dict[str, str], *, log: Path | None = None, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """Start a shell command in its own process group (so it can be stopped whole)."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        ["bash", "-c", f"exec {cmd}"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process group started by ``start``."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until a URL answers (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def env_with(**extra: str) -> dict[str, str]:
    """The current environment plus the service's settings, the venv's bin first on PATH."""
    env = dict(os.environ)
    env.update(SERVICE_ENV)
    env.update(extra)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def table(rows: list[tuple[str, Any]]) -> str:
    """Two aligned columns."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def quote(s: str) -> str:
    """Shell-quote."""
    return shlex.quote(s)
