"""/admin: basic auth on every method; POST /admin/sync/services enqueues a catalog reconcile."""

from __future__ import annotations

import base64

import pytest

from ...conftest import SECRETS


def auth(user="operator", password=SECRETS["dashboard_password"]):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_sync_services_enqueues_one_catalog_job(client, queues):
    resp = client.post("/admin/sync/services", headers=auth())
    assert resp.status_code == 202
    job = queues["catalog"].fetch_job(resp.json["jobs"][0])
    assert job.func_name == "workers.jobs.catalog.run_catalog_sync"
    assert queues["catalog"].count == 1


@pytest.mark.parametrize("headers", [{}, auth(password="wrong"), auth(user="root"), {"Authorization": "Bearer x"},
                                     {"Authorization": "Basic !!!"}])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_unauthenticated_is_refused(client, queues, headers, method):
    resp = client.open("/admin/sync/services", method=method, headers=headers)
    assert resp.status_code == 401
    assert "Basic" in resp.headers["WWW-Authenticate"]
    assert queues["catalog"].count == 0


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                     {"Referer": "https://evil.example/form.html"}, {"Sec-Fetch-Site": "cross-site"}])
def test_a_cross_site_post_is_refused_even_with_credentials(client, queues, headers):
    resp = client.post("/admin/sync/services", headers={**auth(), **headers})
    assert resp.status_code == 403 and resp.json == {"error": "cross_origin"}
    assert queues["catalog"].count == 0


def test_a_same_origin_post_passes(client, queues):
    headers = {**auth(), "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/admin/sync/services", headers=headers).status_code == 202
