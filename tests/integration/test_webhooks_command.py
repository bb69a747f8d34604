"""``flask webhooks send SOURCE EVENT``: correctly signed samples, posted to a running service."""

from __future__ import annotations

import pytest

from integration import create_app

from ..conftest import make_settings


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.fixture
def cli(live_server):
    return create_app(make_settings(public_base_url=live_server.url)).test_cli_runner()


@pytest.mark.parametrize(
    ("source", "event"),
    [("attio", "record.updated"), ("zoho", "invoice_created"), ("zoho", "subscription_renewed"),
     ("zoho", "payment_thankyou"), ("braintree", "transaction_settled"), ("braintree", "dispute_opened")],
)
def test_send_is_accepted_by_the_service(cli, queues, source, event):
    result = cli.invoke(args=["webhooks", "send", source, event, "--id", "abc123"])
    assert result.exit_code == 0, result.output
    answer = last_line(result.output)  # the service runs in this process: its log lines are in the output too
    assert answer.startswith("202 ") and '"accepted"' in answer
    assert sum(q.count for q in queues.values()) == 1


def test_unknown_event_is_refused_and_help_lists_events(cli):
    bad = cli.invoke(args=["webhooks", "send", "zoho", "card_expiring"])
    assert bad.exit_code != 0 and "invoice_created" in bad.output
    help_text = cli.invoke(args=["webhooks", "send", "--help"]).output
    for event in ("record.updated", "invoice_created", "dispute_lost"):
        assert event in help_text


def test_wrong_secret_is_reported_as_a_failure(live_server, queues):
    cli = create_app(make_settings(public_base_url=live_server.url, attio_webhook_secrets=("wrong",))).test_cli_runner()
    result = cli.invoke(args=["webhooks", "send", "attio", "record.created"])
    assert result.exit_code == 1 and last_line(result.output).startswith("401 ")
