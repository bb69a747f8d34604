"""``flask attio setup`` through Flask's CLI runner, against a fresh Attio simulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask.testing import FlaskCliRunner

from integration import create_app
from integration.attio_schema import CURRENCY, OBJECTS
from integration.clients.attio import build_attio_client
from simulators.attio import AttioSimulator
from tests.conftest import make_settings

UNIQUE = {("companies", "braintree_customer_id"), ("companies", "zoho_customer_id"), ("services", "external_id"),
          ("subscriptions", "zoho_subscription_id"), ("payments", "external_id")}


@pytest.fixture(scope="module")
def redis_url(module_redis_url: str) -> str:
    """This module's own redis-server (budget windows and breaker counts must not be flushed by other runs)."""
    return module_redis_url


@pytest.fixture
def redis_conn(module_redis_conn: redis.Redis) -> redis.Redis:
    """A flushed connection to this module's own Redis (overrides conftest's)."""
    return module_redis_conn


@pytest.fixture(scope="module")
def server() -> Iterator[AttioSimulator]:
    """One simulator for the module."""
    sim = AttioSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: AttioSimulator, redis_conn: redis.Redis) -> AttioSimulator:
    """A fresh workspace: only the standard companies and people objects."""
    server.reset()
    return server


@pytest.fixture
def runner(sim: AttioSimulator, redis_url: str) -> FlaskCliRunner:
    """The CLI runner of an app pointed at the simulator."""
    return create_app(make_settings(attio_api_url=sim.url, redis_url=redis_url)).test_cli_runner()


def schema_of(sim: AttioSimulator) -> dict[tuple[str, str], dict[str, Any]]:
    """(object, attribute) → the parts setup decides: type, uniqueness, options, currency, reference target."""
    slug_of = {o["id"]: o["api_slug"] for o in sim.objects.values()}
    return {
        (obj["api_slug"], a["api_slug"]): {
            "type": a["type"],
            "unique": a["is_unique"],
            "multi": a["is_multiselect"],
            "options": [o["title"] for o in a["options"]],
            "currency": (a["currency"] or {}).get("default_currency_code"),
            "targets": [slug_of[i] for i in a["allowed"]],
        }
        for obj in sim.objects.values()
        for a in obj["attrs"].values()
    }


def attribute_posts(sim: AttioSimulator) -> list[dict[str, Any]]:
    """Bodies of the create-attribute calls, in order."""
    return [c.json["data"] for c in sim.calls_to("POST", "/v2/objects/*/attributes")]


def _create_attribute(
    sim: AttioSimulator, connection: redis.Redis, obj: str, slug: str, type_: str, **extra: Any
) -> None:
    """Someone made this attribute by hand (through the shared budget, as Attio counts every write)."""
    client = build_attio_client(make_settings(attio_api_url=sim.url), connection)
    if client.get_object(obj) is None:
        client.create_object(obj, obj[:-1].capitalize(), obj.capitalize())
    body = {"title": slug, "description": None, "api_slug": slug, "type": type_, "is_required": False,
            "is_unique": False, "is_multiselect": False, "config": {}, **extra}
    client.create_attribute(obj, body)


def test_setup_creates_the_data_model(sim: AttioSimulator, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["attio", "setup"])
    assert result.exit_code == 0, result.output
    assert "object companies: already there" in result.output
    assert "object services: created" in result.output
    assert "attribute services.external_id [text, unique]: created" in result.output
    assert 'option payments.status "Dispute won": created' in result.output
    assert result.output.strip().endswith("57 created, 1 already there")

    state = schema_of(sim)
    for obj in OBJECTS:
        for spec in obj.attributes:
            got = state[(obj.slug, spec.slug)]
            assert got["type"] == spec.type and not got["multi"], spec.slug
            assert got["unique"] == ((obj.slug, spec.slug) in UNIQUE), spec.slug
            assert got["options"] == list(spec.options), spec.slug
            assert got["currency"] == (CURRENCY if spec.type == "currency" else None), spec.slug
            assert got["targets"] == ([spec.target] if spec.target else []), spec.slug
    assert state[("services", "price")]["currency"] == "USD"
    assert state[("payments", "subscription")]["targets"] == ["subscriptions"]

    # The unique attributes exist before any other is created (uniqueness is not retroactive).
    posts = attribute_posts(sim)
    assert {p["is_unique"] for p in posts[:5]} == {True} and not any(p["is_unique"] for p in posts[5:])
    assert sim.rate_limited == 0  # the shared write budget kept us under Attio's 25/s

    # The simulator's own reading of data-model.md agrees, and the service's writes work against the result.
    reference = AttioSimulator()  # not served: only its in-memory state
    reference.setup_schema()
    assert state == schema_of(reference)
    ids = sim.seed_sample_data()
    assert sim.value("subscriptions", ids["subscription"], "service") == ids["service"]


def test_setup_fills_in_a_partial_workspace_and_a_second_run_creates_nothing(
    sim: AttioSimulator, runner: FlaskCliRunner, redis_conn: redis.Redis
) -> None:
    _create_attribute(sim, redis_conn, "services", "external_id", "text", is_unique=True)
    first = runner.invoke(args=["attio", "setup"])
    assert first.exit_code == 0, first.output
    assert "object services: already there" in first.output
    assert "attribute services.external_id [text, unique]: already there" in first.output
    assert first.output.strip().endswith("55 created, 3 already there")

    writes_before = len([c for c in sim.calls if c.method != "GET"])
    again = runner.invoke(args=["attio", "setup"])
    assert again.exit_code == 0, again.output
    assert ": created" not in again.output
    assert again.output.strip().endswith("0 created, 58 already there")
    assert len([c for c in sim.calls if c.method != "GET"]) == writes_before


def test_a_conflicting_attribute_type_exits_1_and_creates_nothing(
    sim: AttioSimulator, runner: FlaskCliRunner, redis_conn: redis.Redis
) -> None:
    _create_attribute(sim, redis_conn, "services", "price", "text")
    calls_before = len(sim.calls)
    result = runner.invoke(args=["attio", "setup"])
    assert result.exit_code == 1
    assert "services.price exists as text, but the service needs currency (USD)" in result.output
    assert "nothing was created or changed" in result.output
    assert all(c.method == "GET" for c in sim.calls[calls_before:])
    assert {o["api_slug"] for o in sim.objects.values()} == {"companies", "people", "services"}


def test_an_external_id_that_is_not_unique_exits_1(
    sim: AttioSimulator, runner: FlaskCliRunner, redis_conn: redis.Redis
) -> None:
    _create_attribute(sim, redis_conn, "payments", "external_id", "text")
    result = runner.invoke(args=["attio", "setup"])
    assert result.exit_code == 1
    assert "payments.external_id exists but is not unique" in result.output


def test_a_wrong_api_key_exits_2_with_a_hint(sim: AttioSimulator, redis_url: str) -> None:
    settings = make_settings(attio_api_url=sim.url, attio_api_key="wrong", redis_url=redis_url)
    runner = create_app(settings).test_cli_runner()
    result = runner.invoke(args=["attio", "setup"])
    assert result.exit_code == 2  # could not finish
    assert "HTTP 401" in result.output and "ATTIO_API_KEY" in result.output


# -- --check, plan limits, the webhook ------------------------------------------------------------------------------
def test_check_reports_what_is_missing_and_writes_nothing(sim: AttioSimulator, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["attio", "setup", "--check"])
    assert result.exit_code == 1
    assert "missing: object services (a custom object)" in result.output
    assert "missing: attribute companies.zoho_customer_id [text, unique]" in result.output
    assert not [c for c in sim.calls if c.method != "GET"]
    assert runner.invoke(args=["attio", "setup"]).exit_code == 0
    again = runner.invoke(args=["attio", "setup", "--check"])
    assert again.exit_code == 0, again.output
    assert "holds the data model" in again.output


def test_a_plan_with_too_few_custom_objects_is_reported(sim: AttioSimulator, runner: FlaskCliRunner) -> None:
    sim.max_custom_objects = 2
    result = runner.invoke(args=["attio", "setup"])
    assert result.exit_code == 1
    assert "Attio refused to create the custom object payments (billing_error" in result.output
    assert "needs 3 custom objects (services, subscriptions, payments)" in result.output
    assert "seems to allow fewer" in result.output


def test_unique_attributes_refused_on_companies_are_reported(sim: AttioSimulator, runner: FlaskCliRunner) -> None:
    sim.unique_on_standard_objects = False
    result = runner.invoke(args=["attio", "setup"])
    assert result.exit_code == 1
    assert "Attio refused the unique attribute companies.braintree_customer_id (billing_error" in result.output
    assert "seems not to allow unique custom attributes on the standard companies object" in result.output


def test_setup_registers_the_webhook_filtered_on_subscriptions_once(
    sim: AttioSimulator, runner: FlaskCliRunner
) -> None:
    url = "https://billing.example.com/webhooks/attio"
    result = runner.invoke(args=["attio", "setup", "--webhook-url", url])
    assert result.exit_code == 0, result.output
    [hook] = sim.webhooks
    assert "set ATTIO_WEBHOOK_SECRET to this secret" in result.output and hook["secret"] in result.output
    subscriptions_id = next(o["id"] for o in sim.objects.values() if o["api_slug"] == "subscriptions")
    assert [s["event_type"] for s in hook["subscriptions"]] == ["record.created", "record.updated"]
    assert hook["subscriptions"][0]["filter"] == {"$and": [
        {"field": "id.object_id", "operator": "equals", "value": subscriptions_id},
        {"field": "actor.type", "operator": "not_equals", "value": "api-token"},
    ]}  # fmt: skip
    again = runner.invoke(args=["attio", "setup", "--webhook-url", url])
    assert again.exit_code == 0 and f"webhook {url}: already there" in again.output
    assert len(sim.webhooks) == 1
    assert runner.invoke(args=["attio", "setup", "--check", "--webhook-url", url]).exit_code == 0
    other = runner.invoke(args=["attio", "setup", "--check", "--webhook-url", "https://elsewhere.example/x"])
    assert other.exit_code == 1 and "no active webhook for https://elsewhere.example/x" in other.output
