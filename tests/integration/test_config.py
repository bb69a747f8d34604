"""Settings.from_env: defaults, strict parsing, one clear line naming every bad variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from integration.config import PROVIDER_CREDENTIALS, WEB, WORKER, WORKER_ONLY, Settings
from integration.errors import ConfigError

REQUIRED = {
    "ATTIO_API_KEY": "key-SECRET-1", "ATTIO_WEBHOOK_SECRET": "a, b", "ZOHO_CLIENT_ID": "c", "ZOHO_CLIENT_SECRET": "s",
    "ZOHO_REFRESH_TOKEN": "r", "ZOHO_ORGANIZATION_ID": "1", "ZOHO_WEBHOOK_SECRET": "z",
    "BRAINTREE_MERCHANT_ID": "m", "BRAINTREE_PUBLIC_KEY": "p", "BRAINTREE_PRIVATE_KEY": "priv-SECRET-2",
    "DASHBOARD_USERNAME": "u", "DASHBOARD_PASSWORD": "long-enough-pw",
}


def test_defaults_and_secret_lists():
    s = Settings.from_env(REQUIRED)
    assert s.attio_webhook_secrets == ("a", "b")
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.attio_writes_per_second == 25 and s.attio_reads_per_second == 100
    assert s.zoho_requests_per_minute == 30
    assert s.retry_schedule_seconds == (15, 60, 300, 900, 1800)
    assert s.braintree_environment == "sandbox"
    assert (s.reconcile_interval_minutes, s.reconcile_grace_minutes, s.settlement_check_after_hours) == (60, 30, 24)
    assert s.dunning_schedule_days == (3, 5, 7)
    assert Settings.from_env({**REQUIRED, "DUNNING_SCHEDULE_DAYS": "1,2.5"}).dunning_schedule_days == (1, 2.5)
    assert Settings.from_env({**REQUIRED, "DUNNING_SCHEDULE_DAYS": "none"}).dunning_schedule_days == ()
    assert "SECRET" not in repr(s)  # secrets stay out of repr (and so out of logs)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("ATTIO_WRITES_PER_SECOND", "fast", "ATTIO_WRITES_PER_SECOND"),
        ("RETRY_SCHEDULE_SECONDS", "15,x", "RETRY_SCHEDULE_SECONDS"),
        ("BRAINTREE_ENVIRONMENT", "staging", "BRAINTREE_ENVIRONMENT"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
        ("REDIS_URL", "localhost", "REDIS_URL"),
        ("CATALOG_SYNC_INTERVAL_MINUTES", "-1", "CATALOG_SYNC_INTERVAL_MINUTES"),
        ("RECONCILE_INTERVAL_MINUTES", "hourly", "RECONCILE_INTERVAL_MINUTES"),
        ("DUNNING_SCHEDULE_DAYS", "3,x", "DUNNING_SCHEDULE_DAYS"),
        ("DUNNING_SCHEDULE_DAYS", "7,3", "DUNNING_SCHEDULE_DAYS"),
    ],
)
def test_malformed_values_are_named(name, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env({**REQUIRED, name: value})


def test_missing_required_are_all_named():
    env = {k: v for k, v in REQUIRED.items() if k not in ("ATTIO_API_KEY", "ZOHO_WEBHOOK_SECRET")}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert "ATTIO_API_KEY" in str(info.value) and "ZOHO_WEBHOOK_SECRET" in str(info.value)


def test_production_needs_public_base_url():
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        Settings.from_env({**REQUIRED, "BRAINTREE_ENVIRONMENT": "production"})


def test_simulator_url_is_a_valid_environment():
    s = Settings.from_env({**REQUIRED, "BRAINTREE_ENVIRONMENT": "http://127.0.0.1:4567"})
    assert s.braintree_environment == "http://127.0.0.1:4567"


@pytest.mark.parametrize(("module", "named", "not_named"), [
    (["-m", "workers"], "ZOHO_CLIENT_ID", None),
    (["-c", "import integration; integration.create_app()"], "ZOHO_WEBHOOK_SECRET", "ZOHO_CLIENT_ID"),
])
def test_processes_stop_with_one_clear_line(module, named, not_named, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ATTIO_API_KEY": "k", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, *module], env=env, capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path), check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("configuration error:") and named in lines[0]
    assert not_named is None or not_named not in lines[0]  # the web process does not ask for the worker's keys


WEB_ONLY = {k: v for k, v in REQUIRED.items() if k not in WORKER_ONLY}


def test_the_roles_differ_only_in_the_attio_and_zoho_credentials():
    from integration.config import REQUIRED as BY_ROLE

    assert set(BY_ROLE[WORKER]) - set(BY_ROLE[WEB]) == set(WORKER_ONLY) == {
        "ATTIO_API_KEY", "ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"}
    assert set(BY_ROLE[WEB]) < set(BY_ROLE[WORKER])


def test_the_web_role_starts_without_the_worker_only_credentials():
    s = Settings.from_env(WEB_ONLY, role=WEB)
    assert s.missing_credentials("attio", "zoho") == WORKER_ONLY
    assert s.attio_webhook_secrets == ("a", "b") and s.braintree_key_pairs == (("p", "priv-SECRET-2"),)


def test_the_web_role_keeps_none_of_them_even_when_they_are_set():
    s = Settings.from_env(REQUIRED, role=WEB)
    assert [getattr(s, name.lower()) for name in WORKER_ONLY] == [""] * len(WORKER_ONLY)
    assert "key-SECRET-1" not in str(vars(s))


def test_the_worker_role_names_every_missing_worker_credential_in_one_line():
    with pytest.raises(ConfigError) as info:
        Settings.from_env(WEB_ONLY, role=WORKER)
    assert str(info.value) == "missing required variable(s): " + ", ".join(WORKER_ONLY)
    assert Settings.from_env(REQUIRED).attio_api_key == "key-SECRET-1"  # worker is the default role


def test_the_web_role_still_names_its_own_missing_variables():
    env = {k: v for k, v in WEB_ONLY.items() if k != "BRAINTREE_PRIVATE_KEY"}
    with pytest.raises(ConfigError, match="BRAINTREE_PRIVATE_KEY") as info:
        Settings.from_env(env, role=WEB)
    assert "ATTIO_API_KEY" not in str(info.value)
    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD must be at least"):
        Settings.from_env({**WEB_ONLY, "DASHBOARD_PASSWORD": "short"}, role=WEB)


def test_credentials_are_filled_from_the_environment_or_named():
    web = Settings.from_env(REQUIRED, role=WEB)
    full = web.with_credentials("attio", "zoho", environ=REQUIRED)
    assert (full.attio_api_key, full.zoho_refresh_token, full.zoho_organization_id) == ("key-SECRET-1", "r", "1")
    assert full.with_credentials("attio", "zoho", environ={}) is full  # nothing to read
    with pytest.raises(ConfigError) as info:
        web.with_credentials("zoho", environ={"ZOHO_CLIENT_ID": "c", "ZOHO_REFRESH_TOKEN": "  "})
    assert str(info.value) == ("missing required variable(s): "
                               "ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN")
    assert web.with_credentials("attio", environ={"ATTIO_API_KEY": "k"}).zoho_client_id == ""  # only those asked
    partial = web.with_credentials(*PROVIDER_CREDENTIALS, environ={"ATTIO_API_KEY": "k"}, strict=False)
    assert (partial.attio_api_key, partial.zoho_client_id) == ("k", "")


@pytest.mark.parametrize("url", ["ftp://default:redis-Pa55word-9@cache.internal:6379",
                                 "default:redis-Pa55word-9@cache.internal:6379"])
def test_a_bad_redis_url_is_named_without_its_password(url):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({**REQUIRED, "REDIS_URL": url})
    assert "REDIS_URL" in str(exc.value) and "cache.internal" in str(exc.value)
    assert "redis-Pa55word-9" not in str(exc.value)


def test_the_redis_password_is_a_secret_of_the_logs_and_not_in_the_repr():
    from integration.observability import secret_values

    s = Settings.from_env({**REQUIRED, "REDIS_URL": "rediss://default:redis-Pa55word-9@cache.internal:6379/0"})
    assert "redis-Pa55word-9" not in repr(s)
    assert "redis-Pa55word-9" in secret_values(s)


def test_catalog_full_sync_period_is_daily_by_default_and_configurable():
    assert Settings.from_env(REQUIRED).catalog_full_sync_hours == 24
    assert Settings.from_env({**REQUIRED, "CATALOG_FULL_SYNC_HOURS": "6"}).catalog_full_sync_hours == 6
    assert Settings.from_env({**REQUIRED, "CATALOG_FULL_SYNC_HOURS": "0"}).catalog_full_sync_hours == 0
    with pytest.raises(ConfigError, match="CATALOG_FULL_SYNC_HOURS"):
        Settings.from_env({**REQUIRED, "CATALOG_FULL_SYNC_HOURS": "daily"})
