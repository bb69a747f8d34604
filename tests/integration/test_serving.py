"""The web process under the Procfile's gunicorn command: clients that trickle or stall their bodies hold no thread.

Fifty connections send their headers and part of a body, then stall; ``/healthz`` and a signed webhook must still
answer within 100 ms each (with gthread alone, a dozen such connections held every thread)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.config import WORKER_ONLY, Settings
from integration.request_buffer import RequestBuffer

from ..conftest import free_port, make_settings, run_until_idle, run_worker
from ..helpers import job_count, signed_attio
from ..processes import ROOT, settings_env
from ..workers.test_activation import CRM, send_event


def procfile_web() -> str:
    line = next(ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.startswith("web:"))
    return line.split(":", 1)[1].strip()


@contextlib.contextmanager
def procfile_web_running(settings: Settings, log_dir: Path, **extra_env: str) -> Iterator[str]:
    """The Procfile's web command on a free loopback port, configured as the web service is on Render: from
    ``settings`` without the worker-only credentials (``integration.config.WORKER_ONLY``), which it must not need."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTIO_", "ZOHO_", "BRAINTREE_"))}
    env.update({k: v for k, v in settings_env(settings).items() if k not in WORKER_ONLY}, PORT=str(port),
               PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # the venv's gunicorn
    env.update(extra_env)
    command = procfile_web().replace("0.0.0.0:", "127.0.0.1:")
    log = open(log_dir / "web.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (log_dir / "web.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()


@pytest.fixture
def web(request, redis_conn, tmp_path: Path) -> Iterator[str]:
    """The Procfile's web command on a free loopback port (extra environment from the test's ``web_env`` mark)."""
    marker = request.node.get_closest_marker("web_env")
    with procfile_web_running(make_settings(), tmp_path, **(marker.kwargs if marker else {})) as url:
        yield url


def stalled(url: str, n: int, head: bytes) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(head)
        socks.append(s)
    return socks


def timed(call) -> float:
    started = time.perf_counter()
    resp = call()
    elapsed = time.perf_counter() - started
    assert resp.status_code in (200, 202), resp.status_code
    return elapsed


@pytest.mark.parametrize("kind", ["content-length", "chunked", "headers-only"])
def test_fifty_stalled_requests_do_not_hold_healthz_or_intake(web, queues, kind):
    head = {
        "content-length": b"POST /webhooks/attio HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100000\r\n\r\n{\"events\": [",
        "chunked": b"POST /webhooks/zoho HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\nabc",
        "headers-only": b"POST /webhooks/attio HTTP/1.1\r\nHost: x\r\nContent-Le",
    }[kind]
    socks = stalled(web, 50, head)
    try:
        time.sleep(0.5)  # every stalled request is in
        session = requests.Session()
        health = [timed(lambda: session.get(web + "/healthz", timeout=5)) for _ in range(20)]
        intake = []
        for _ in range(10):
            req = signed_attio(1)
            intake.append(timed(lambda req=req: session.post(web + "/webhooks/attio", data=req.body,
                                                             headers=req.headers, timeout=5)))
        print(f"{kind}: 50 stalled; /healthz max {max(health) * 1000:.1f} ms, webhook max {max(intake) * 1000:.1f} ms")
        assert max(health) < 0.1, health
        assert max(intake) < 0.1, intake
        assert job_count(queues) == 10
    finally:
        for s in socks:
            s.close()


@pytest.mark.web_env(WEB_CONCURRENCY="1", GUNICORN_CMD_ARGS="--worker-connections 100")
def test_more_stalled_connections_than_the_worker_takes_do_not_stop_it_accepting(web):
    # gunicorn stops accepting at worker_connections (here 100) open connections: stalled ones must not get there.
    socks = stalled(web, 150, b"POST /webhooks/attio HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    try:
        time.sleep(0.5)
        assert max(timed(lambda: requests.get(web + "/healthz", timeout=5)) for _ in range(10)) < 0.1
        socks[0].settimeout(5)
        assert socks[0].recv(4096).startswith(b"HTTP/1.1 408")  # the oldest made room
    finally:
        for s in socks:
            s.close()


def test_the_procfile_web_serves_everything_without_the_worker_only_credentials(stack, redis_conn, queues, tmp_path):
    """Intake, health, readiness and the payment page (its Braintree calls included) under the real command, with
    no Attio or Zoho credential in the process's environment; the activation's jobs run here with the worker's."""
    settings = stack.settings()
    auth = (settings.dashboard_username, settings.dashboard_password)
    with procfile_web_running(settings, tmp_path) as url:
        assert requests.get(url + "/healthz", timeout=5).status_code == 200
        assert requests.get(url + "/readyz", timeout=5).json() == {"status": "ready"}
        assert requests.get(url + "/readyz", auth=auth, timeout=5).json()["redis"] == "ok"
        req = signed_attio(1)
        assert requests.post(url + "/webhooks/attio", data=req.body, headers=req.headers, timeout=5).status_code == 202
        queues["webhooks"].empty()

        crm = CRM(stack, card=False)
        crm.request()
        assert send_event(url, crm.subscription).status_code == 202
        run_worker(redis_conn)
        assert crm.sub("status") == "Awaiting payment method"
        token = crm.sub("payment_link").rsplit("/", 1)[1]
        page = requests.get(f"{url}/pay/{token}", timeout=10)
        assert page.status_code == 200 and "clientToken" in page.text  # a client token minted by this process
        done = requests.post(f"{url}/pay/{token}", data={"payment_method_nonce": "fake-valid-nonce"}, timeout=10)
        assert done.status_code == 200, done.text
        run_until_idle(redis_conn)
        assert crm.sub("status") == "Active"
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def test_an_announced_body_over_1_mib_is_413_without_reading_it(web):
    [s] = stalled(web, 1, b"POST /webhooks/zoho HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
    s.settimeout(5)
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413") and b"payload_too_large" in answer


def test_headers_over_64_kib_are_431_without_a_thread(web):
    [s] = stalled(web, 1, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (70 * 1024))
    s.settimeout(5)
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 431")


def test_keep_alive_and_pipelined_requests_are_answered_in_order(web):
    host, port = web.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(5)
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    s.sendall(one + one + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b'{"error":"not_found"}\n'):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"200", b"404"]
    s.sendall(one)  # the connection is still usable
    data = b""
    while not data.endswith(b'{"status":"ok"}\n'):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    s.close()


def test_request_buffer_knows_where_each_kind_of_request_ends():
    assert RequestBuffer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET").end == 27
    r = RequestBuffer(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
    assert not r.complete
    r.feed(b"cdeNEXT")
    assert r.end == len(r.data) - 4
    r = RequestBuffer(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n")
    assert not r.complete
    r.feed(b"Trailer: 1\r\n\r\n")
    assert r.complete and r.end == len(r.data)
    big = RequestBuffer(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(17):
        big.feed(b"10000\r\n" + b"x" * 65536 + b"\r\n")
    assert big.too_large and not big.complete


@pytest.mark.slow
def test_a_request_that_never_completes_gets_408_and_is_closed(web):
    from integration.serving import READ_TIMEOUT

    [s] = stalled(web, 1, b"POST /webhooks/attio HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    s.settimeout(READ_TIMEOUT + 5)
    started = time.monotonic()
    answer = s.recv(4096)
    waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and READ_TIMEOUT - 1 <= waited <= READ_TIMEOUT + 2.5
    assert s.recv(4096) == b""  # closed
    s.close()


_REQUESTS = st.one_of(
    st.binary(max_size=300).map(lambda b: b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(b) + b),
    st.lists(st.binary(min_size=1, max_size=80), max_size=5).map(
        lambda parts: b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"),
    st.just(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
)


@settings(max_examples=200, deadline=None, database=None)
@given(request=_REQUESTS, next_request=st.binary(max_size=40), cuts=st.lists(st.integers(0, 1000), max_size=12))
def test_a_trickled_request_is_complete_exactly_when_its_last_byte_is_in(request, next_request, cuts):
    """However the bytes are split (a client trickling them), the request is complete exactly at its own end."""
    whole = request + next_request
    points = sorted({c % (len(whole) + 1) for c in cuts} | {len(whole)})
    buffer, fed = RequestBuffer(), 0
    for point in points:
        buffer.feed(whole[fed:point])
        fed = point
        assert buffer.complete == (fed >= len(request)), (fed, len(request))
        if buffer.complete:
            assert buffer.end == len(request)
            break
