"""Builds what jobs need from the environment: settings, Redis, and the three provider clients.

Built per job (RQ forks a process per job, so anything cached would die with it anyway); the clients' shared
state — rate budgets, breakers, the Zoho token — lives in Redis, not here.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import redis

from integration.config import WORKER, Settings, load_dotenv_if_present
from integration.queueing import make_redis

if TYPE_CHECKING:  # the clients (and the Braintree SDK) load when a job first needs them
    from integration.clients.attio import AttioClient
    from integration.clients.braintree import BraintreeClient
    from integration.clients.zoho import ZohoClient

__all__ = [
    "attio_client",
    "braintree_client",
    "redis_connection",
    "settings",
    "use_settings",
    "zoho_client",
]

_override: Settings | None = None


def use_settings(value: Settings | None) -> None:
    """Run jobs in this process with these settings instead of the environment's (tests, in-process runs)."""
    global _override
    _override = value
    _from_env.cache_clear()
    redis_connection.cache_clear()


@functools.cache
def _from_env() -> Settings:
    load_dotenv_if_present()
    return Settings.from_env(role=WORKER)  # every provider credential required: jobs call all three


def settings() -> Settings:
    """The worker's settings (read once per process)."""
    return _override if _override is not None else _from_env()


@functools.cache
def redis_connection() -> redis.Redis:
    """The worker's Redis client (bytes mode, as RQ and the breaker need)."""
    return make_redis(settings().redis_url, socket_timeout=30.0)


def attio_client() -> AttioClient:
    """An Attio client wired to the shared budget and breaker."""
    from integration.clients.attio import build_attio_client

    return build_attio_client(settings(), redis_connection())


def zoho_client() -> ZohoClient:
    """A Zoho Billing client wired to the shared token, budget and breaker."""
    from integration.clients.zoho import build_zoho_client

    return build_zoho_client(settings(), redis_connection())


def braintree_client() -> BraintreeClient:
    """A Braintree client wired to the shared breaker."""
    from integration.clients.braintree import build_braintree_client

    return build_braintree_client(settings(), redis_connection())
