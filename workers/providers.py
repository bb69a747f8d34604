"""The provider surfaces the workflows call, as ``typing.Protocol``s: the one place that says what a workflow needs
of Attio, Zoho Billing and Braintree.

Each protocol is the narrowest surface its callers use, so a handler can be driven by any object with those
methods; the real clients (``integration.clients``) satisfy them structurally, which mypy checks where the jobs pass
``runtime.*_client()`` in. A method added to a protocol must exist, with a compatible signature, on the client.
(The catalog's ``ZohoCatalog`` / ``AttioServices`` still live in ``workflows.catalog``.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from integration.clients.braintree import SaleResult

__all__ = [
    "AttioLike",
    "BraintreeCharger",
    "BraintreeReader",
    "BraintreeVault",
    "ZohoAccounts",
    "ZohoBooks",
    "ZohoLike",
    "ZohoReader",
]


# -- Attio ----------------------------------------------------------------------------------------------------
class AttioLike(Protocol):
    """The part of ``AttioClient`` the workflows use: records read, found, queried, asserted and updated."""

    def get_record(self, object: str, record_id: str) -> dict[str, Any] | None: ...
    def find_records(self, object: str, attribute: str, value: Any) -> list[dict[str, Any]]: ...
    def query_records(self, object: str, filter: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...
    def assert_record(self, object: str, matching_attribute: str, values: Mapping[str, Any]) -> dict[str, Any]: ...
    def update_record(self, object: str, record_id: str, values: Mapping[str, Any]) -> dict[str, Any]: ...


# -- Zoho Billing -----------------------------------------------------------------------------------------------
class ZohoReader(Protocol):
    """The Zoho Billing reads the lifecycle events need (each None when Zoho has no such resource)."""

    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None: ...
    def get_payment(self, payment_id: str) -> dict[str, Any] | None: ...
    def get_invoice(self, invoice_id: str) -> dict[str, Any] | None: ...


class ZohoBooks(Protocol):
    """What a collection does in Zoho Billing: read the invoice (and its subscription), book or unbook a sale."""

    def get_invoice(self, invoice_id: str) -> dict[str, Any] | None: ...
    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None: ...
    def record_payment(
        self, *, customer_id: str, invoice_id: str, amount: Decimal, reference_number: str, date: dt.date,
        description: str, amount_applied: Decimal | None = None,
    ) -> dict[str, Any]: ...
    def delete_payment(self, payment_id: str) -> bool: ...


class ZohoAccounts(Protocol):
    """What an activation does in Zoho Billing: find or make the customer and the subscription."""

    def get_customer(self, customer_id: str) -> dict[str, Any] | None: ...
    def find_customer_by_email(self, email: str) -> dict[str, Any] | None: ...
    def create_customer(self, display_name: str, email: str) -> dict[str, Any]: ...
    def find_subscription_by_reference(self, customer_id: str, reference_id: str) -> dict[str, Any] | None: ...
    def create_subscription(
        self, customer_id: str, plan_code: str, reference_id: str, *, auto_collect: bool = False, quantity: int = 1
    ) -> dict[str, Any]: ...


class ZohoLike(ZohoReader, ZohoBooks, Protocol):
    """What the reconciliation sweeps need: the lists they compare, and what the workflows they replay need."""

    def list_invoices(self, customer_id: str | None = None, status: str = "All") -> list[dict[str, Any]]: ...
    def list_subscriptions(self) -> list[dict[str, Any]]: ...


# -- Braintree --------------------------------------------------------------------------------------------------
class BraintreeReader(Protocol):
    """A transaction by id (None when Braintree has none): what the settlement and dispute events re-read."""

    def find_transaction(self, transaction_id: str) -> Any | None: ...


class BraintreeCharger(BraintreeReader, Protocol):
    """What a collection does in Braintree: find the card, find an earlier sale, sell."""

    def default_payment_method(self, customer_id: str) -> str | None: ...
    def find_successful_sale(self, order_id: str, *, keeps: Callable[[Any], bool] | None = None) -> Any | None: ...
    def sale(
        self, *, order_id: str, amount: Decimal, customer_id: str, payment_method_token: str | None = None,
        api_request_key: str | None, merchant_account_id: str | None = None, resend_without_key: bool = True,
    ) -> SaleResult: ...


class BraintreeVault(Protocol):
    """What an activation and the payment page do in Braintree: the customer and its saved card."""

    def ensure_customer(self, customer_id: str, *, email: str | None, company: str | None) -> Any: ...
    def default_payment_method(self, customer_id: str) -> str | None: ...
    def add_payment_method(self, customer_id: str, nonce: str) -> str: ...

