"""Service-layer clients, one per provider, built from injected parts (base URL, credentials, session, budget,
breaker) and speaking the provider's own domain words. Every failure surfaces as the error tree's
``ServiceUnavailable`` (retry) or ``ServiceRejected`` (fail now)."""

from .attio import AttioClient, build_attio_client
from .braintree import BraintreeClient, SaleResult, build_braintree_client, customer_id_for_company
from .zoho import ZohoClient, build_zoho_client

__all__ = [
    "AttioClient",
    "BraintreeClient",
    "SaleResult",
    "ZohoClient",
    "build_attio_client",
    "build_braintree_client",
    "build_zoho_client",
    "customer_id_for_company",
]
