"""``flask sync services [--dry-run]`` through Flask's CLI runner, and ``POST /admin/sync/services`` end to end,
against the Zoho and Attio simulators."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from integration import create_app
from integration.locks import catalog_lock, hold
from tests.conftest import Stack, run_until_idle
from tests.integration.routes.test_admin import auth
from workers import runtime


@pytest.fixture
def app(stack: Stack) -> Any:
    """The app wired to the simulators (overrides conftest's); jobs in this process use the same settings."""
    settings = stack.settings(catalog_sync_interval_minutes=0)
    runtime.use_settings(settings)  # the stack fixture puts the default back
    return create_app(settings)


def _sync(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["sync", "services", *args])


def _summary(output: str) -> tuple[int, ...]:
    """(created, updated, unchanged, removed) from the summary line."""
    m = re.search(r"(\d+) (?:would be )?created, (\d+) (?:would be )?updated, (\d+) unchanged, "
                  r"(\d+) (?:would be )?removed in [\d.]+s", output)  # fmt: skip
    assert m, output
    return tuple(int(g) for g in m.groups())


def test_sync_prints_a_summary_and_writes_only_changes(app, stack):
    stack.zoho.seed_sample_data()

    first = _sync(app)
    assert first.exit_code == 0, first.output
    assert _summary(first.output) == (5, 0, 0, 0)
    assert len(stack.attio.records("services")) == 5

    writes = stack.attio.writes_ok
    again = _sync(app)
    assert again.exit_code == 0, again.output
    assert _summary(again.output) == (0, 0, 5, 0)
    assert stack.attio.writes_ok == writes

    stack.zoho.update_plan("pro-annual", recurring_price=550.0)
    stack.zoho.remove_addon("migration")
    third = _sync(app)
    assert _summary(third.output) == (0, 1, 3, 1)
    assert stack.attio.writes_ok == writes + 2


def test_dry_run_prints_the_plan_and_writes_nothing(app, stack):
    stack.zoho.seed_sample_data()
    result = _sync(app, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "create zoho-plan:basic-monthly" in result.output
    assert "create zoho-addon:migration" in result.output
    assert "5 would be created" in result.output
    assert _summary(result.output) == (5, 0, 0, 0)
    assert stack.attio.writes_ok == 0
    assert stack.attio.records("services") == []


def test_sync_waits_for_another_sync_then_gives_up(app, stack, redis_conn):
    stack.zoho.seed_sample_data()
    with hold(redis_conn, catalog_lock(), ttl=30, wait=0):
        result = _sync(app, "--patience", "1")
    assert result.exit_code == 2, result.output
    assert "sync services could not finish: lock: catalog-sync is held by another worker" in result.output
    assert stack.attio.writes_ok == 0


def test_a_provider_outage_past_the_patience_is_one_clear_line_and_exit_2(app, stack):
    stack.zoho.seed_sample_data()
    stack.zoho.faults.add("GET", "/billing/v1/plans", status=503, times=None)
    started = time.monotonic()
    result = _sync(app, "--patience", "3")
    assert result.exit_code == 2, result.output
    assert "sync services: transient: zoho" in result.output and "waiting 2s, then try 2" in result.output
    assert "sync services could not finish: zoho" in result.output and "run it again later" in result.output
    assert "Traceback" not in result.output
    assert 2 <= time.monotonic() - started < 5  # waited 2 s; the next wait (4 s) did not fit: gave up at once
    assert len(stack.zoho.calls_to("GET", "/billing/v1/plans")) == 2


def test_sync_survives_a_zoho_503_on_page_2_and_an_attio_429_storm(app, stack):
    """300 plans (two pages): page 2 answers 503 once; then Attio answers a storm of 429s (Retry-After 1 s) to
    writes. The command waits both out, prints what it waits for, and exits 0 with every plan in Attio, once."""
    for i in range(300):
        stack.zoho.add_plan(f"plan-{i:04d}", f"Plan {i}", 10.0 + i, interval=1, interval_unit="months")
    page2 = stack.zoho.faults.add("GET", "/billing/v1/plans", status=503, skip=1)
    storm = stack.attio.faults.add("PUT", "/v2/objects/services/records", status=429, headers={"Retry-After": "1"},
                                   skip=50, times=12)
    result = _sync(app)
    assert result.exit_code == 0, result.output
    assert page2.fired == 1 and storm.fired == 12
    assert "sync services: transient: zoho" in result.output  # the 503 on page 2, waited out
    assert "sync services: not now: attio" in result.output  # a second 429 in a row, waited out
    records = stack.attio.records("services")
    assert len(records) == 300
    assert len({stack.attio.value("services", r["id"]["record_id"], "external_id") for r in records}) == 300
    again = _sync(app)
    assert again.exit_code == 0 and _summary(again.output) == (0, 0, 300, 0)


def test_admin_endpoint_enqueues_a_sync_that_runs(app, stack, redis_conn):
    stack.zoho.seed_sample_data()
    client = app.test_client()
    assert client.post("/admin/sync/services").status_code == 401
    resp = client.post("/admin/sync/services", headers=auth())
    assert resp.status_code == 202
    run_until_idle(redis_conn)
    assert len(stack.attio.records("services")) == 5
