"""Security headers on every answer a browser could see: pages, JSON, errors, auth challenges."""

from __future__ import annotations

import base64

import pytest

from ..conftest import SECRETS
from ..helpers import signed_attio, signed_braintree, signed_zoho

AUTH = {"Authorization": "Basic " + base64.b64encode(f"operator:{SECRETS['dashboard_password']}".encode()).decode()}

# (method, path, request kwargs, expected status) for every kind of answer the app gives.
ROUTES = [
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    ("GET", "/no/such/path", {}, 404),
    ("POST", "/healthz", {}, 405),
    ("POST", "/webhooks/attio", {"data": b"{}"}, 401),
    ("POST", "/webhooks/attio", "attio", 202),
    ("POST", "/webhooks/zoho", "zoho", 202),
    ("POST", "/webhooks/braintree", "braintree", 202),
    ("GET", "/webhooks/braintree?bt_challenge=0123456789abcdef0123", {}, 200),
    ("POST", "/webhooks/zoho", {"data": b"x" * (1024 * 1024 + 1)}, 413),
    ("GET", "/pay/not-a-token", {}, 404),
    ("GET", "/rq/", {}, 401),
    ("GET", "/rq/", {"headers": AUTH}, 200),
    ("GET", "/rq/0/data/queues.json", {"headers": AUTH}, 200),
    ("GET", "/admin/sync/services", {}, 401),
    ("POST", "/admin/sync/services", {"headers": AUTH}, 202),
]


def _kwargs(spec):
    if spec == "attio":
        req = signed_attio(1)
        return {"data": req.body, "headers": req.headers}
    if spec == "zoho":
        req = signed_zoho()
        return {"data": req.body, "headers": req.headers}
    if spec == "braintree":
        return {"data": signed_braintree()}
    return spec


@pytest.mark.parametrize(("method", "path", "spec", "status"), ROUTES,
                         ids=[f"{m} {p[:40]} {s}" for m, p, _, s in ROUTES])
def test_every_answer_carries_the_security_headers(client, queues, method, path, spec, status):
    resp = client.open(path, method=method, **_kwargs(spec))
    assert resp.status_code == status, resp.get_data()[:200]
    h = resp.headers
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Strict-Transport-Security"].startswith("max-age=31536000")
    csp = h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert "'unsafe-inline'" not in directives.get("script-src", directives["default-src"])
    if resp.mimetype in ("text/html", "application/json", "text/plain"):
        assert h["Cache-Control"] == "no-store"


def test_static_files_of_the_dashboard_keep_their_own_caching(client):
    resp = client.get("/rq/static/js/jquery-3.5.1.min.js", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers.get("Cache-Control") != "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
