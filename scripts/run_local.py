"""The offline local run: Redis (if none answers), the simulators with demo data, web and worker, one Ctrl-C.

Started by ``scripts/run-local``. Everything listens on loopback; nothing needs an account anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.__main__ import LOCAL_SECRETS  # noqa: E402

WEB_PORT = int(os.environ.get("PORT", "8000"))
REDIS_PORT = int(os.environ.get("LOCAL_REDIS_PORT", "6379"))
LOG_DIR = Path(os.environ.get("LOCAL_RUN_DIR") or ROOT / "run").resolve()  # logs and local.env


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _procfile(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def main() -> int:
    """Start everything, print what to try, wait for Ctrl-C, stop everything."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(LOG_DIR / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log if name != "simulators" else subprocess.PIPE,
                                stderr=log, start_new_session=True)
        procs.append((name, proc))
        return proc

    def stop_all(*_: object) -> None:
        for name, proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    # Ctrl-C must stop everything even when this was started with SIGINT ignored (a background job of a
    # non-interactive shell, or a CI runner): Python keeps an inherited SIG_IGN, so install the handler here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    try:
        if not _answers(REDIS_PORT):
            server = shutil.which("redis-server")
            if server is None:
                print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
                return 1
            start("redis", [server, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no"], env)
            for _ in range(50):
                if _answers(REDIS_PORT):
                    break
                time.sleep(0.1)
        web_url = f"http://127.0.0.1:{WEB_PORT}"
        sims = start("simulators", [sys.executable, "-m", "simulators", "--web", web_url], env)
        assert sims.stdout is not None
        line = sims.stdout.readline()
        if not line:
            print(f"the simulators did not start; see {LOG_DIR}/simulators.log", file=sys.stderr)
            return 1
        info = json.loads(line)
        local = {
            "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
            "PORT": str(WEB_PORT),
            "ATTIO_API_URL": info["attio"],
            "ATTIO_API_KEY": "test-attio-key",
            "ATTIO_WEBHOOK_SECRET": LOCAL_SECRETS["attio_webhook_secret"],
            "ZOHO_ACCOUNTS_URL": info["zoho"],
            "ZOHO_CLIENT_ID": "test-client",
            "ZOHO_CLIENT_SECRET": "test-secret",
            "ZOHO_REFRESH_TOKEN": "1000.test-refresh",
            "ZOHO_ORGANIZATION_ID": "10234695",
            "ZOHO_WEBHOOK_SECRET": LOCAL_SECRETS["zoho_webhook_secret"],
            "BRAINTREE_ENVIRONMENT": info["braintree"],
            "BRAINTREE_MERCHANT_ID": "test-merchant",
            "BRAINTREE_PUBLIC_KEY": "test-public",
            "BRAINTREE_PRIVATE_KEY": "test-private",
            "PUBLIC_BASE_URL": web_url,
            "DASHBOARD_USERNAME": "operator",
            "DASHBOARD_PASSWORD": "local-operator",
            "ZOHO_REQUESTS_PER_MINUTE": "600",
            "RETRY_SCHEDULE_SECONDS": "5,15,60",
            "CATALOG_SYNC_INTERVAL_MINUTES": "15",
        }
        service_env = {**env, **local}
        with open(LOG_DIR / "local.env", "w") as fh:  # all of it: the shell that sources it may have none
            fh.writelines(f"{k}={v}\n" for k, v in local.items())
        # The Procfile binds every interface (as a host needs); locally, loopback only like everything else.
        web_cmd = _procfile("web").replace("--bind 0.0.0.0:", "--bind 127.0.0.1:")
        start("web", ["bash", "-c", "exec " + web_cmd], service_env)
        start("worker", ["bash", "-c", "exec " + _procfile("worker")], service_env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{web_url}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            print(f"web did not become ready; see {LOG_DIR}/web.log", file=sys.stderr)
            return 1
        acme, globex = info["ids"]["acme"], info["ids"]["globex"]
        env_file = os.path.relpath(LOG_DIR / "local.env", ROOT)
        print(f"""
Everything is up (logs in {LOG_DIR}/):
  web            {web_url}          ready: {web_url}/readyz
  rq-dashboard   {web_url}/rq/      user operator / password local-operator
  simulators     attio {info['attio']}  zoho {info['zoho']}  braintree {info['braintree']}

Try (in another terminal, from {ROOT}):
  set -a; . {env_file}; set +a
  # Globex has a card on file: its Requested subscription activates, Zoho raises the invoice, it is collected.
  .venv/bin/flask --app integration webhooks send attio record.updated --id {globex['subscription']}
  # Acme has no card: the subscription waits for a payment method; open the payment_link it gets in Attio
  .venv/bin/flask --app integration webhooks send attio record.updated --id {acme['subscription']}
  .venv/bin/flask --app integration jobs failed
  .venv/bin/flask --app integration audit payments

Ctrl-C stops everything.""", flush=True)
        while all(proc.poll() is None for _, proc in procs):
            time.sleep(0.5)
        dead = [name for name, proc in procs if proc.poll() is not None]
        print(f"stopped unexpectedly: {', '.join(dead)} (see {LOG_DIR}/)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
