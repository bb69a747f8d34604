"""Money first: a catalog sync and an audit never hold a charge back for long (issue 16).

The mixed load of ``bench/_mixed.py``, scaled down in time ten times (Zoho's 30 calls a minute become 30 calls per
6 s, the simulator enforcing the same): a catalog sync of 300 plans and an audit-like reader run while 20
``invoice_created`` collections arrive, one every 0.25 s, worked by 4 threads with their own clients. Real Redis
budgets, real clients, the three simulators.

The bound: every invoice is charged before the sync finishes, and no collection waits for budget slots longer
than one Zoho window and a second (7.3 s: what the invoices alone make each other wait, ``bench.budget --mixed``
measuring about 5 s for them alone). Without the lanes the sync and the audit take their share first and the last
charge comes after the sync (``bench.budget --mixed``: 19 s against a 13 s sync).
"""

from __future__ import annotations

import pytest

from bench._mixed import run_mixed
from tests.conftest import TEST_REDIS_URL, Stack

ZOHO_WINDOW = 6.0  # seconds: Zoho's minute, ten times faster


@pytest.mark.slow
def test_charges_go_first_when_a_sync_and_an_audit_compete_for_the_budgets(stack: Stack, redis_conn) -> None:
    stack.attio.writes_per_second, stack.attio.reads_per_second = 25, 100
    settings = stack.settings(attio_writes_per_second=25, attio_reads_per_second=100, zoho_requests_per_minute=30)
    try:
        result = run_mixed(settings=settings, zoho_sim=stack.zoho, attio_sim=stack.attio,
                           braintree_sim=stack.braintree, redis_url=TEST_REDIS_URL, plans=300, invoices=20,
                           zoho_window=ZOHO_WINDOW)
    finally:
        stack.attio.writes_per_second = stack.attio.reads_per_second = None
        stack.zoho.requests_per_minute, stack.zoho.rate_window = None, 60
    assert result.errors == []
    assert result.outcomes == {"charged": 20} and len(stack.braintree.transactions) == 20
    assert result.sync_writes == 300
    assert max(result.charged_after_start) < result.sync_seconds  # every charge before the sync is done
    assert max(result.collection_waits) <= ZOHO_WINDOW * 1.05 + 1.0  # what a money call waits in place at most
    assert (result.zoho_429, result.attio_429) == (0, 0)  # our own pacing never overshoots
