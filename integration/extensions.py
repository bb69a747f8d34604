"""Access to the app's resources from request code: settings, Redis, queues, the Braintree verifier."""

from __future__ import annotations

from typing import Any

import redis
from flask import current_app
from rq import Queue

from .config import Settings
from .verify import BraintreeVerifier

__all__ = ["braintree_verifier", "intake_resources", "queues", "redis_conn", "settings"]


def settings() -> Settings:
    """The app's settings."""
    result: Settings = current_app.extensions["settings"]
    return result


def redis_conn() -> redis.Redis:
    """The app's Redis client (connects lazily, on first use)."""
    result: redis.Redis = current_app.extensions["redis"]
    return result


def queues() -> dict[str, Queue]:
    """Every queue of the service, by name."""
    result: dict[str, Queue] = current_app.extensions["queues"]
    return result


def intake_resources() -> tuple[Settings, redis.Redis, dict[str, Queue]]:
    """Settings, Redis client and queues in one lookup of the app (every webhook needs all three)."""
    ext = current_app.extensions
    return ext["settings"], ext["redis"], ext["queues"]


def braintree_verifier() -> BraintreeVerifier:
    """The Braintree webhook verifier, built on first use."""
    ext: dict[str, Any] = current_app.extensions
    if "braintree_verifier" not in ext:
        s = settings()
        ext["braintree_verifier"] = BraintreeVerifier(
            s.braintree_environment, s.braintree_merchant_id, s.braintree_key_pairs
        )
    result: BraintreeVerifier = ext["braintree_verifier"]
    return result
