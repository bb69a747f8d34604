"""Basic auth of /rq and /admin: failures logged with user and address, throttled per address, password length."""

from __future__ import annotations

import base64
import logging

import pytest

from integration import create_app
from integration.auth import FAILURES_PER_MINUTE
from integration.config import Settings
from integration.errors import ConfigError

from ..conftest import SECRETS, make_settings
from .test_config import REQUIRED


def auth(user="operator", password=SECRETS["dashboard_password"]):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_a_failure_is_logged_with_the_user_and_the_address(client, queues, caplog):
    with caplog.at_level(logging.WARNING, logger="integration.auth"):
        for user in ("operator", "mallory", "operator" + SECRETS["dashboard_password"]):  # the last: a typo
            resp = client.get("/rq/", headers=auth(user, "guess-1"), environ_base={"REMOTE_ADDR": "203.0.113.7"})
            assert resp.status_code == 401
    messages = [r.getMessage() for r in caplog.records if r.name == "integration.auth"]
    assert len(messages) == 3 and all("address=203.0.113.7" in m and "guess-1" not in m for m in messages)
    assert "user=operator " in messages[0]
    # Any other name only as a fingerprint (stable, so attempts can be followed), never the text typed.
    assert messages[1].startswith("basic auth failed user=other#") and "mallory" not in messages[1]
    assert SECRETS["dashboard_password"] not in messages[2]
    assert messages[1].split()[3] != messages[2].split()[3]


def test_the_eleventh_bad_password_in_a_minute_is_429_even_if_right(client, queues):
    addr = {"REMOTE_ADDR": "198.51.100.4"}
    for n in range(FAILURES_PER_MINUTE):
        assert client.get("/admin/x", headers=auth(password=f"guess-{n}"), environ_base=addr).status_code == 401
    resp = client.post("/admin/sync/services", headers=auth(), environ_base=addr)
    assert resp.status_code == 429 and 0 < int(resp.headers["Retry-After"]) <= 60
    assert queues["catalog"].count == 0
    # Another address is not affected; requests without credentials are not counted as guesses.
    other = {"REMOTE_ADDR": "198.51.100.5"}
    for _ in range(FAILURES_PER_MINUTE + 2):
        assert client.get("/rq/", environ_base=other).status_code == 401
    assert client.post("/admin/sync/services", headers=auth(), environ_base=other).status_code == 202


def test_behind_a_trusted_proxy_the_forwarded_address_counts_not_one_the_client_wrote(redis_conn, queues):
    client = create_app(make_settings(trusted_proxy_hops=1)).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for n in range(FAILURES_PER_MINUTE):
        # The client varies its own X-Forwarded-For entry; the proxy appends the real address last.
        headers = {**auth(password="nope"), "X-Forwarded-For": f"1.2.3.{n}, 192.0.2.9"}
        assert client.get("/rq/", headers=headers, environ_base=proxy).status_code == 401
    blocked = client.get("/rq/", headers={**auth(), "X-Forwarded-For": "192.0.2.9"}, environ_base=proxy)
    assert blocked.status_code == 429
    fine = client.get("/rq/", headers={**auth(), "X-Forwarded-For": "192.0.2.10"}, environ_base=proxy)
    assert fine.status_code == 200


@pytest.mark.parametrize("password", ["short", "x" * 11])
def test_a_short_dashboard_password_stops_the_start(password):
    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD must be at least 12 characters"):
        Settings.from_env({**REQUIRED, "DASHBOARD_PASSWORD": password})
    assert Settings.from_env({**REQUIRED, "DASHBOARD_PASSWORD": "x" * 12}).dashboard_password == "x" * 12
