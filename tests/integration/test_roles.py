"""Per-role settings: the web app runs without the Attio and Zoho credentials and builds no client needing them;
the CLI commands that call those providers name the missing variables in one line (exit 2); the others work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from integration import create_app
from integration.clients.attio import AttioClient
from integration.clients.zoho import ZohoClient
from integration.clients.zoho_auth import ZohoTokens
from integration.config import PROVIDER_CREDENTIALS, WORKER_ONLY, Settings

from ..conftest import SECRETS, LiveServer, Stack, make_settings, run_until_idle, run_worker
from ..helpers import signed_attio, signed_braintree, signed_zoho
from ..processes import ROOT, settings_env
from ..workers.test_activation import CRM, send_event

NEEDS_ATTIO_AND_ZOHO = {"sync services", "audit payments", "doctor", "reconcile", "explain invoice",
                        "explain subscription"}
NEEDS_ATTIO = {"attio setup"}
WITHOUT = {name.lower(): "" for name in WORKER_ONLY}


def web_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings, **extra: str) -> None:
    """The process environment of a web service configured as render.yaml's (no worker-only variable)."""
    for name in list(os.environ):
        if name.startswith(("ATTIO_", "ZOHO_", "BRAINTREE_", "DASHBOARD_", "PAYMENT_LINK_", "SENTRY_")):
            monkeypatch.delenv(name)
    for name, value in settings_env(settings).items():
        if name not in WORKER_ONLY:
            monkeypatch.setenv(name, value)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no developer's .env


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Attio / Zoho client (or Zoho token source) built outside the test's own thread (the live server's)."""
    seen: list[str] = []
    main = threading.current_thread()
    for cls in (AttioClient, ZohoClient, ZohoTokens):
        original = cls.__init__

        def spy(self: Any, *args: Any, _cls: type = cls, _original: Any = original, **kwargs: Any) -> None:
            if threading.current_thread() is not main or _building_app:
                seen.append(_cls.__name__)
                raise AssertionError(f"the web process built a {_cls.__name__}")
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    return seen


_building_app = False


def web_role_app() -> Any:
    global _building_app
    _building_app = True
    try:
        return create_app()
    finally:
        _building_app = False


@pytest.fixture
def web(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, built: list[str]) -> Iterator[LiveServer]:
    web_environment(monkeypatch, tmp_path, stack.settings())
    server = LiveServer(web_role_app())
    yield server
    server.stop()


def test_the_web_app_serves_every_route_and_builds_no_attio_or_zoho_client(stack, web, built, redis_conn, queues):
    settings = stack.settings()
    auth = (settings.dashboard_username, settings.dashboard_password)
    url = web.url
    assert requests.get(url + "/healthz", timeout=5).status_code == 200
    assert requests.get(url + "/readyz", timeout=5).status_code == 200
    assert requests.get(url + "/readyz", auth=auth, timeout=5).json()["redis"] == "ok"
    assert requests.get(url + "/rq/", auth=auth, timeout=5).status_code == 200
    for path in ("/admin/sync/services", "/admin/reconcile"):
        assert requests.post(url + path, auth=auth, timeout=5).status_code == 202, path
    attio, zoho = signed_attio(1), signed_zoho()
    assert requests.post(url + "/webhooks/attio", data=attio.body, headers=attio.headers, timeout=5).status_code == 202
    assert requests.post(url + "/webhooks/zoho", data=zoho.body, headers=zoho.headers, timeout=5).status_code == 202
    assert requests.post(url + "/webhooks/braintree", data=signed_braintree(), timeout=5).status_code == 202
    for q in queues.values():
        q.empty()

    crm = CRM(stack, card=False)
    crm.request()
    assert send_event(url, crm.subscription).status_code == 202
    run_worker(redis_conn)  # the jobs, in this thread, with the worker's settings (the stack fixture's)
    token = crm.sub("payment_link").rsplit("/", 1)[1]
    assert requests.get(f"{url}/pay/{token}", timeout=10).status_code == 200
    done = requests.post(f"{url}/pay/{token}", data={"payment_method_nonce": "fake-valid-nonce"}, timeout=10)
    assert done.status_code == 200, done.text
    run_until_idle(redis_conn)
    assert crm.sub("status") == "Active"
    assert built == []
    # The web process reads the worker's daily Zoho ledger: the same organization, so the same counters.
    from integration.clients.quota import zoho_ledger
    used = zoho_ledger(settings, redis_conn).used()
    assert used > 0
    assert requests.get(url + "/readyz", auth=auth, timeout=5).json()["quota"]["zoho"]["used"] == used


def test_the_spy_sees_a_route_that_would_build_an_attio_client(stack, built):
    """The check above is live: a client built while serving a request is seen."""
    from flask import Blueprint

    from integration.clients.attio import build_attio_client
    from integration.extensions import redis_conn, settings

    app = create_app(stack.settings(**WITHOUT))
    bp = Blueprint("bad", __name__)
    bp.get("/bad")(lambda: (build_attio_client(settings(), redis_conn()), "")[1])
    app.register_blueprint(bp)
    server = LiveServer(app)
    try:
        assert requests.get(server.url + "/bad", timeout=5).status_code == 500
    finally:
        server.stop()
    assert built == ["AttioClient"]


def test_the_web_app_keeps_no_worker_only_value_even_when_set_but_masks_it(monkeypatch, tmp_path, built, capsys):
    key = "attio-key-SHARED-GROUP-1"
    web_environment(monkeypatch, tmp_path, make_settings(), ATTIO_API_KEY=key, ZOHO_REFRESH_TOKEN="1000.refresh-SHARED")
    app = web_role_app()
    settings = app.extensions["settings"]
    assert settings.missing_credentials(*PROVIDER_CREDENTIALS) == WORKER_ONLY
    assert key not in repr(vars(settings))
    import logging

    logging.getLogger("integration.test").warning("environment dump: ATTIO_API_KEY=%s", key)
    out = capsys.readouterr().out
    assert "environment dump" in out and key not in out


def test_commands_that_call_attio_or_zoho_are_exactly_these(app):
    found: dict[str, tuple[str, ...]] = {}

    def walk(cmd: Any, name: str) -> None:
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{name} {sub_name}".strip())
        if not hasattr(cmd, "commands"):
            found[name] = getattr(cmd.callback, "needs_credentials", ())

    walk(app.cli, "")
    assert {n for n, p in found.items() if p == ("attio", "zoho")} == NEEDS_ATTIO_AND_ZOHO
    assert {n for n, p in found.items() if p == ("attio",)} == NEEDS_ATTIO
    assert all(p == () for n, p in found.items() if n not in NEEDS_ATTIO | NEEDS_ATTIO_AND_ZOHO)


@pytest.fixture
def web_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, built: list[str], stack: Stack) -> Any:
    web_environment(monkeypatch, tmp_path, stack.settings())
    return web_role_app().test_cli_runner()


@pytest.mark.parametrize("args", [["sync", "services"], ["attio", "setup", "--check"], ["doctor"], ["reconcile"],
                                  ["audit", "payments"], ["explain", "invoice", "INV-1"],
                                  ["explain", "subscription", "sub-1"]])
def test_a_provider_command_without_the_credentials_names_them_in_one_line(web_cli, built, args):
    result = web_cli.invoke(args=args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("configuration error: missing required variable(s): ATTIO_API_KEY")
    assert ("ZOHO_REFRESH_TOKEN" in lines[0]) == (args != ["attio", "setup", "--check"])
    assert "Traceback" not in result.output and built == []


def test_a_provider_command_reads_the_credentials_from_the_environment(web_cli, built, stack, monkeypatch):
    monkeypatch.setenv("ATTIO_API_KEY", SECRETS["attio_api_key"])
    result = web_cli.invoke(args=["attio", "setup", "--check"])
    assert result.exit_code == 0, result.output
    assert built == []  # built in the command's own (this) thread, not by the web app


def test_commands_that_call_neither_work_without_the_credentials(web_cli, built, web, redis_conn):
    assert web_cli.invoke(args=["jobs", "failed"]).exit_code == 0
    assert web_cli.invoke(args=["dunning", "status"]).exit_code == 0
    assert web_cli.invoke(args=["explain", "event", "attio", "ev-1"]).exit_code == 0
    sent = web_cli.invoke(args=["webhooks", "send", "zoho", "invoice_created", "--url", web.url, "--id", "1"])
    assert sent.exit_code == 0 and "202 " in sent.output, sent.output
    assert built == []


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)


def _process_env(settings: Settings, *, worker_only: bool) -> dict[str, str]:
    env = {k: v for k, v in settings_env(settings).items() if worker_only or k not in WORKER_ONLY}
    return {**env, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}


def test_the_flask_cli_names_the_missing_variables_and_still_runs_the_rest(redis_conn, tmp_path):
    env = _process_env(make_settings(), worker_only=False)
    refused = _run(["-m", "flask", "--app", "integration", "sync", "services"], env, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == (
        "configuration error: missing required variable(s): " + ", ".join(WORKER_ONLY)
        + " (sync services calls Attio and Zoho; run it where the worker's environment is set)")
    listed = _run(["-m", "flask", "--app", "integration", "jobs", "failed"], env, tmp_path)
    assert listed.returncode == 0 and "0 failed job(s)" in listed.stdout, listed.stderr


def test_the_worker_refuses_to_start_without_them_in_one_line(tmp_path):
    proc = _run(["-m", "workers", "--burst"], _process_env(make_settings(), worker_only=False), tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "configuration error: missing required variable(s): " + ", ".join(WORKER_ONLY)
