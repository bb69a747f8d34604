"""Logs: a whole collection flow (signed webhook over HTTP → worker → three providers) read back from stdout.

Every line is JSON; the request line and the job's step lines carry the ids; no line holds a secret, a
signature, a body, an email address or a card number.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import string
import sys
from typing import Any

import hypothesis
import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from integration import create_app
from integration.clients.braintree import customer_id_for_company
from integration.observability import logs, redaction
from integration.samples import zoho_delivery
from tests.conftest import SECRETS, LiveServer, Stack, run_worker

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CUSTOMER_EMAIL = "billing@acme.example"
CARD = "4111111111111111"  # the simulator's valid Visa
SENTINEL = "BODY-SENTINEL-91ab"
HANDLER = "workers.jobs.collection.run_invoice_created"


def lines(out: str) -> list[dict[str, Any]]:
    """Every stdout line, parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def customer_with_open_invoice(stack: Stack) -> str:
    """A customer known to Zoho, Attio and Braintree (with a card), and an open Zoho invoice; its id."""
    stack.zoho.add_plan("basic-monthly", "Basic", 50.0)
    zoho_customer = stack.zoho.add_customer("Acme Ltd", CUSTOMER_EMAIL)
    company = stack.attio.add_record("companies", {"name": "Acme Ltd", "billing_email": CUSTOMER_EMAIL,
                                                   "zoho_customer_id": zoho_customer})
    bt_customer = customer_id_for_company(company)
    stack.braintree.add_customer(bt_customer, email=CUSTOMER_EMAIL, card="valid")
    stack.attio.set_values("companies", company, {"braintree_customer_id": bt_customer})
    stack.attio.add_record("subscriptions", {"name": "Acme Basic", "status": "Active", "zoho_subscription_id": "sub-1",
                                             "company": {"target_object": "companies", "target_record_id": company}})
    return str(stack.zoho.raise_invoice(zoho_customer, 50.0, subscription_id="sub-1")["invoice_id"])


@pytest.fixture
def web(stack: Stack, redis_conn: Any) -> Any:
    """The app over real HTTP, wired to the simulators."""
    server = LiveServer(create_app(stack.settings()))
    yield server
    server.stop()


def test_a_collection_flow_logs_ids_and_nothing_private(
    stack: Stack, web: LiveServer, redis_conn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    invoice_id = customer_with_open_invoice(stack)
    delivery = zoho_delivery("invoice_created",
                             {"invoice": {"invoice_id": invoice_id, "email": CUSTOMER_EMAIL, "notes": SENTINEL}},
                             secret=SECRETS["zoho_webhook_secret"], event_id="ev-logs-1")
    capsys.readouterr()

    url = f"{web.url}/webhooks/zoho"
    accepted = requests.post(url, data=delivery.body, headers=delivery.headers, timeout=10)
    assert accepted.status_code == 202
    [job_id] = accepted.json()["jobs"]
    forged = {**delivery.headers, "X-Zoho-Webhook-Signature": "ab" * 32}
    assert requests.post(url, data=delivery.body, headers=forged, timeout=10).status_code == 401
    run_worker(redis_conn)
    assert stack.braintree.sales_for_order(invoice_id)  # the flow ran: the card was charged

    out = capsys.readouterr().out
    records = lines(out)

    requests_ = [r for r in records if r["logger"] == "integration.request"]
    assert [(r["method"], r["path"], r["status"]) for r in requests_] == [
        ("POST", "/webhooks/zoho", 202), ("POST", "/webhooks/zoho", 401)]
    assert all(isinstance(r["duration_ms"], float) and r["source"] == "zoho" for r in requests_)
    assert requests_[0]["event_ids"] == ["ev-logs-1"] and requests_[0]["job_ids"] == [job_id]

    steps = [r for r in records if r["logger"] == "workers.job"]
    assert [r["step"] for r in steps] == ["start", "finish"]
    for r in steps:
        assert (r["source"], r["event_type"], r["event_id"], r["job_id"], r["handler"]) == (
            "zoho", "invoice_created", "ev-logs-1", job_id, HANDLER)
    assert steps[1]["outcome"] and isinstance(steps[1]["duration_ms"], float)
    inside = [r for r in records if r["logger"].startswith(("workers.workflows", "integration.clients"))]
    assert all(r.get("job_id") == job_id for r in inside)  # the job's own lines carry its ids too

    settings = stack.settings()
    forbidden = {
        *SECRETS.values(), settings.zoho_client_secret, settings.zoho_refresh_token, *stack.zoho.live_tokens(),
        delivery.headers["X-Zoho-Webhook-Signature"], forged["X-Zoho-Webhook-Signature"],
        delivery.body.decode(), SENTINEL, CARD,
    }
    for value in forbidden:
        assert value not in out, value
    assert EMAIL.search(out) is None, EMAIL.search(out)


def test_the_net_catches_what_code_should_not_have_logged(settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    create_app(settings)  # sets up logging as the web does, with the secrets of these settings
    capsys.readouterr()
    logging.getLogger("rq.worker").error(
        "job failed for %s with key %s, card %s", CUSTOMER_EMAIL, SECRETS["attio_api_key"], "4111 1111 1111 1111",
        extra={"arguments": [{"email": CUSTOMER_EMAIL}], "func": "workers.jobs.collection.run_invoice_created",
               "note": f"mailto:{CUSTOMER_EMAIL.replace('@', '%40')}"},
    )
    [record] = lines(capsys.readouterr().out)
    assert record["message"] == "job failed for [email] with key [secret], card [card]"
    assert "arguments" not in record and record["note"] == "mailto:[email]"
    assert record["func"] == "workers.jobs.collection.run_invoice_created"


def test_a_credential_in_the_url_path_is_not_logged(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    token = "pay-link-token-3c9e1f0b"
    capsys.readouterr()
    client.get(f"/pay/{token}")
    out = capsys.readouterr().out
    [line] = [r for r in lines(out) if r["logger"] == "integration.request"]
    assert line["path"] == "/pay/[secret]" and line["method"] == "GET"
    assert token not in out


@pytest.mark.parametrize(("method", "path"), [("GET", "/pay/{t}/more"), ("PUT", "/pay/{t}"), ("DELETE", "/pay/{t}"),
                                             ("GET", "/pay/{t}/")])
def test_a_payment_token_is_not_logged_when_no_route_matches(client: Any, capsys: pytest.CaptureFixture[str],
                                                            method: str, path: str) -> None:
    token = "pay-link-token-7d2a90c4"
    capsys.readouterr()
    resp = client.open(path.format(t=token), method=method)
    assert resp.status_code in (404, 405, 308)
    out = capsys.readouterr().out
    assert token not in out
    [line] = [r for r in lines(out) if r["logger"] == "integration.request"]
    assert line["path"].startswith("/pay/[secret]")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"note": "nothing private", "ids": ["k1796030847496027490-0:0"]},
         {"note": "nothing private", "ids": ["k1796030847496027490-0:0"]}),
        ({"note": f"to {CUSTOMER_EMAIL}"}, {"note": "to [email]"}),
        ({"note": f"key {SECRETS['zoho_webhook_secret']}"}, {"note": "key [secret]"}),
        ({"note": "card 4111-1111-1111-1111"}, {"note": "card [card]"}),
        ({"card": 4111111111111111}, {"card": "[card]"}),
        ({"note": "line\n4111111111111111"}, {"note": "line\n[card]"}),  # escaped as "\\n" in the line
        ({"note": "cell\t4111 1111 1111 1111"}, {"note": "cell\t[card]"}),
        ({"note": r"repr 'x\n4111111111111111'"}, {"note": r"repr 'x\n[card]'"}),  # a backslash and an n
        ({"invoice": "2000000012345678"}, {"invoice": "2000000012345678"}),  # long, but no card (Luhn fails)
    ],
)
def test_each_kind_of_private_value_is_caught_on_its_own(
    settings: Any, capsys: pytest.CaptureFixture[str], extra: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A line is searched once as a whole and rebuilt field by field only on a hit: each kind alone must hit."""
    create_app(settings)
    capsys.readouterr()
    logging.getLogger("integration.request").info("one line", extra=extra)
    [record] = lines(capsys.readouterr().out)
    assert {k: record[k] for k in expected} == expected
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"])


def test_a_logged_exception_carries_its_traceback_redacted_and_odd_fields_as_text(
    settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(settings)
    capsys.readouterr()
    when = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    try:
        raise ValueError(f"refused for {CUSTOMER_EMAIL}")
    except ValueError:
        logging.getLogger("workers.job").exception(
            "job failed", extra={"when": when, "kinds": ("a",), "obj": _Odd(), "status": 500, "ok": False})
    [record] = lines(capsys.readouterr().out)
    assert (record["level"], record["logger"], record["message"]) == ("ERROR", "workers.job", "job failed")
    assert record["exc_info"].startswith("Traceback (most recent call last):")
    assert record["exc_info"].endswith("ValueError: refused for [email]")
    assert (record["when"], record["kinds"], record["obj"]) == ("2026-11-30T09:00:00+00:00", ["a"], "odd thing")
    assert (record["status"], record["ok"]) == (500, False)
    assert "lineno" not in record and "thread" not in record  # only what was passed, not the record's internals


class _Odd:
    def __str__(self) -> str:
        return "odd thing"


# -- the nets, as properties: whatever the secret, the card and what surrounds them, neither survives a line ---------
_SECRET_CHARS = string.ascii_letters + string.digits + "-_.~+/=!$%^&*:'\"\\ é€"
_BRANDS = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16),
           ("65", 19), ("3528", 16), ("36", 14), ("300", 14)]


@st.composite
def cards(draw: st.DrawFn) -> str:
    """A card number that passes the brand and Luhn checks, grouped as people write it."""
    prefix, length = draw(st.sampled_from(_BRANDS))
    body = prefix + draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    for check in "0123456789":
        if _luhn_ok(body + check):
            digits = body + check
            break
    group = draw(st.sampled_from([0, 4, 5]))
    separator = draw(st.sampled_from([" ", "-"]))
    return separator.join(digits[i:i + group] for i in range(0, length, group)) if group else digits


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


# What may stand right before a card number: nothing, punctuation, a control character (escaped in the JSON line:
# "\n", "\u000b"), or the two characters of an escape already in the text (a repr: backslash, then n or t).
_BEFORE = ["", " ", ":", "=", "(", '"', "'", "\n", "\t", "\r", "\x0b", "\x0c", "\b", "\\n", "\\t", "\\r"]
_AFTER = ["", " ", ".", ",", ")", '"', "\n", "\t", "\\n"]


@pytest.fixture
def registered_secrets() -> Any:
    """The secrets ``setup_logging`` knows, put back as they were after the test (hypothesis registers many)."""
    saved = (set(redaction._secrets), redaction._secret_re, redaction._secret_forms)
    yield
    redaction._secrets.clear()
    redaction._secrets.update(saved[0])
    redaction._secret_re, redaction._secret_forms = saved[1], saved[2]


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    secret=st.none() | st.text(_SECRET_CHARS, min_size=8, max_size=40).map(str.strip).filter(lambda s: len(s) >= 8),
    card=cards(),
    before=st.sampled_from(_BEFORE),
    after=st.sampled_from(_AFTER),
    where=st.sampled_from(["message", "extra", "nested", "traceback"]),
)
def test_no_secret_and_no_card_survives_a_line(
    registered_secrets: Any, secret: str | None, card: str, before: str, after: str, where: str
) -> None:
    """A line is searched as a whole and rebuilt only on a hit: the card must be a hit on its own, too."""
    if secret is not None:
        redaction.register_secrets([secret])
    text = f"key {secret or 'none'} card:{before}{card}{after} ok"
    record = logging.makeLogRecord({"name": "workers.job", "levelno": logging.ERROR, "levelname": "ERROR",
                                    "msg": text if where == "message" else "job failed"})
    if where == "extra":
        record.note = text
    elif where == "nested":
        record.steps = [{"said": text}, 1]
    elif where == "traceback":
        try:
            raise ValueError(text)
        except ValueError:
            record.exc_info = sys.exc_info()
    line = logs._JsonLines("web").format(record)
    json.loads(line)  # still one JSON object
    digits = re.sub(r"\D", "", card)
    for value in (card, digits, *((secret, json.dumps(secret)[1:-1]) if secret else ())):
        assert value not in line, (value, line)
    assert card not in redaction.redact(text)  # and redact() alone, on the raw text (what Sentry's events get)


def test_a_zoho_signature_mismatch_says_what_was_tried(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    req = zoho_delivery("invoice_created", {"invoice": {"invoice_id": "1"}}, secret="not-the-configured-secret")
    capsys.readouterr()
    assert client.post("/webhooks/zoho?a=1", data=req.body, headers=req.headers).status_code == 401
    out = capsys.readouterr().out
    [line] = [r for r in lines(out) if r["message"].startswith("rejected")]
    assert "header present (hex, 64 chars)" in line["message"]
    assert "HMAC-SHA256" in line["message"] and "hex and base64" in line["message"]
    assert "1 query pair(s) + the raw body" in line["message"] and "1 secret(s)" in line["message"]
    signature = req.headers["X-Zoho-Webhook-Signature"]
    assert signature not in out and SECRETS["zoho_webhook_secret"] not in out
