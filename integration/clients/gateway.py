"""Build a ``braintree.BraintreeGateway`` from ``BRAINTREE_ENVIRONMENT`` (sandbox, production or a simulator URL)."""

from __future__ import annotations

from urllib.parse import urlparse

import braintree

__all__ = ["braintree_environment", "make_gateway"]


def braintree_environment(name: str) -> braintree.Environment:
    """The SDK environment for ``sandbox``, ``production`` or ``http://host:port`` (a local gateway simulator)."""
    if name == "sandbox":
        return braintree.Environment.Sandbox
    if name == "production":
        return braintree.Environment.Production
    parsed = urlparse(name)
    if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
        raise ValueError(f"not a Braintree environment: {name!r}")
    # The SDK picks http:// for any port but "443", and the port must be a str (reference/braintree.md §1).
    return braintree.Environment("simulator", parsed.hostname, str(parsed.port), "http://auth.invalid", False, None)


def make_gateway(
    environment: str,
    merchant_id: str,
    public_key: str,
    private_key: str,
    *,
    timeout: tuple[float, float] = (3.05, 20.0),
) -> braintree.BraintreeGateway:
    """A gateway with a connect/read timeout whose transport errors surface as braintree exceptions."""
    config = braintree.Configuration(
        braintree_environment(environment),
        merchant_id=merchant_id,
        public_key=public_key,
        private_key=private_key,
        timeout=timeout,  # type: ignore[arg-type]  # stubs say int; the SDK hands it to requests: (connect, read)
        wrap_http_exceptions=True,
    )
    return braintree.BraintreeGateway(config)
