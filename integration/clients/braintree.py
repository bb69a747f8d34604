"""The Braintree client: customers, vault, client tokens and sales in our words, over the official SDK.

Every SDK call goes through ``BraintreeClient._call``, which applies the shared circuit breaker and turns the
SDK's exceptions into the service's tree (``reference/braintree.md`` §6):

- timeouts, connection errors, 408, 429, 500, 503, 504 and 502 → ``ServiceUnavailable`` (RQ retries);
- 401, 403, 426, configuration errors and any other unexpected status → ``ServiceRejected``;
- 404 → ``ServiceRejected`` with status 404, which the look-up methods turn into ``None``;
- an open breaker → ``CircuitOpen``.

Declines and gateway rejections of a sale are outcomes (``SaleResult``), not exceptions. A ``ServiceUnavailable``
from ``sale`` means the outcome is unknown: the charge may have happened (``find_successful_sale`` tells).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

import braintree
import pybreaker
import redis
import requests
from braintree import Transaction
from braintree import TransactionSearch as TS
from braintree import exceptions as bt
from braintree.exceptions.braintree_error import BraintreeError
from braintree.exceptions.http.connection_error import ConnectionError as TransportConnectionError
from braintree.exceptions.http.timeout_error import TimeoutError as TransportTimeoutError

from ..config import Settings
from ..errors import CircuitOpen, RateLimited, ServiceError, ServiceRejected, ServiceUnavailable
from .breaker import make_breaker
from .gateway import make_gateway
from .quota import CallMeter

__all__ = ["CHARGED_STATUSES", "PROVIDER", "BraintreeClient", "SaleResult", "build_braintree_client",
           "customer_id_for_company"]

PROVIDER = "braintree"
T = TypeVar("T")

# Statuses that mean the money was (or is being) taken: a sale in one of these must never be repeated.
CHARGED_STATUSES = (
    Transaction.Status.Authorizing, Transaction.Status.Authorized, Transaction.Status.SubmittedForSettlement,
    Transaction.Status.SettlementPending, Transaction.Status.Settling, Transaction.Status.Settled,
    Transaction.Status.SettlementConfirmed,
)
_DECLINED = (Transaction.Status.ProcessorDeclined, Transaction.Status.SettlementDeclined)
_CUSTOMER_ID_IN_USE = "91609"
# api_request_key codes that mean "try the same request again later" (reference/braintree.md §4.4)
_KEY_RETRY_LATER = {"915233": "in flight", "915235": "server error"}
_KEY_NOT_ALLOWED = "915231"  # ApiRequestKeyNotAllowed: the merchant does not have the feature

_STATUS_OF: dict[type[Exception], int] = {
    bt.AuthenticationError: 401, bt.AuthorizationError: 403, bt.NotFoundError: 404, bt.RequestTimeoutError: 408,
    bt.UpgradeRequiredError: 426, bt.TooManyRequestsError: 429, bt.ServerError: 500,
    bt.ServiceUnavailableError: 503, bt.GatewayTimeoutError: 504,
}
_TRANSIENT = (TransportTimeoutError, TransportConnectionError, bt.RequestTimeoutError, bt.TooManyRequestsError,
              bt.ServerError, bt.ServiceUnavailableError, bt.GatewayTimeoutError)
# requests errors the SDK wraps in a bare UnexpectedError: a body cut off mid-answer is a transport failure too
_TRANSPORT = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
              requests.exceptions.ContentDecodingError)


def customer_id_for_company(attio_record_id: str) -> str:
    """The Braintree customer id of an Attio company: ``co_`` + the record UUID's 32 hex digits (35 chars)."""
    try:
        return "co_" + uuid.UUID(attio_record_id).hex  # any spelling of the same UUID gives the same id
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"not an Attio record id (a UUID): {attio_record_id!r}") from exc


@dataclass(frozen=True)
class SaleResult:
    """What a sale did; ``outcome`` is charged, declined, rejected (gateway) or failed (processor)."""

    outcome: Literal["charged", "declined", "rejected", "failed"]
    transaction_id: str | None
    status: str | None
    amount: Decimal | None
    processor_code: str | None
    message: str
    rejection_reason: str | None = None  # "duplicate": probably charged already, search before anything else
    keyed: bool = True  # whether Braintree took the api_request_key (False: a merchant without the feature)
    response_type: str | None = None  # approved | soft_declined | hard_declined (a hard decline needs a new card)

    @property
    def charged(self) -> bool:
        """Whether the money was taken."""
        return self.outcome == "charged"


def _translate(exc: Exception) -> ServiceError:
    """The error-tree exception for an SDK (or raw requests) exception."""
    status = next((s for cls, s in _STATUS_OF.items() if isinstance(exc, cls)), None)
    message = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    cause = exc.args[0] if exc.args else None
    if isinstance(exc, bt.TooManyRequestsError):
        # Braintree is up and asks us to slow down: retried, but not a breaker failure (a burst of page views must
        # not open the circuit that collections share).
        return RateLimited(PROVIDER, message, status=status)
    # The http.* transport classes subclass UnexpectedError: test them before calling UnexpectedError permanent.
    if isinstance(exc, bt.TooManyRequestsError):  # "not now": never a breaker failure (make_breaker excludes it)
        return RateLimited(PROVIDER, message, status=status)
    if isinstance(exc, (*_TRANSIENT, requests.RequestException)) or isinstance(cause, _TRANSPORT):
        return ServiceUnavailable(PROVIDER, message, status=status)
    if isinstance(exc, bt.UnexpectedError) and str(exc).endswith("HTTP_RESPONSE 502"):
        return ServiceUnavailable(PROVIDER, message, status=502)
    return ServiceRejected(PROVIDER, message, status=status)


def _mapped(fn: Callable[..., T], *args: Any) -> T:
    """Run one SDK call, raising only the error tree (inside the breaker, so 4xx don't count as failures)."""
    try:
        return fn(*args)
    except (BraintreeError, requests.RequestException) as exc:
        raise _translate(exc) from exc


def _first_error(result: Any) -> tuple[str | None, str]:
    """(code, message) of a validation ErrorResult, Braintree's words."""
    errors = result.errors.deep_errors
    return (str(errors[0].code) if errors else None), str(result.message)


def _utc(moment: datetime) -> datetime:
    # The SDK writes a datetime as "%Y-%m-%dT%H:%M:%SZ" without converting: hand it UTC (naive = already UTC).
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _amount_text(amount: Decimal) -> str:
    """``amount`` as the 2-decimal string Braintree takes; floats, non-positive and sub-cent amounts refused."""
    if not isinstance(amount, Decimal):
        raise ValueError(f"amount must be a Decimal, got {type(amount).__name__}")
    try:
        cents = amount.quantize(Decimal("0.01"))
    except InvalidOperation as exc:
        raise ValueError(f"amount is not a finite money amount: {amount}") from exc
    if cents != amount or cents <= 0:
        raise ValueError(f"amount must be positive with at most 2 decimals, got {amount}")
    return f"{cents:f}"


class BraintreeClient:
    """Braintree through one gateway: customers, payment methods, client tokens, sales and searches."""

    def __init__(self, *, gateway: braintree.BraintreeGateway, breaker: pybreaker.CircuitBreaker | None = None,
                 meter: CallMeter | None = None) -> None:
        self._gateway = gateway
        self._breaker = breaker
        self._meter = meter  # counts calls per operation (integration.clients.quota)

    # -- customers and vault ----------------------------------------------------------------------------------
    def find_customer(self, customer_id: str) -> braintree.Customer | None:
        """The customer, or None when Braintree has none with this id."""
        return self._lookup(self._gateway.customer.find, customer_id)

    def ensure_customer(self, customer_id: str, *, email: str | None, company: str | None) -> braintree.Customer:
        """The customer with this id, created (with email and company) if it does not exist yet."""
        found = self.find_customer(customer_id)
        if found is not None:
            return found
        params = {k: v for k, v in (("id", customer_id), ("email", email), ("company", company)) if v is not None}
        result = self._call(self._gateway.customer.create, params)
        if result is None:  # the SDK's answer to an empty or unknown body: a retry finds the customer if it was made
            raise ServiceUnavailable(PROVIDER, f"customer create for {customer_id}: unreadable answer")
        if isinstance(result, braintree.SuccessfulResult):
            customer: braintree.Customer = result.customer
            return customer
        code, message = _first_error(result)
        if any(str(e.code) == _CUSTOMER_ID_IN_USE for e in result.errors.deep_errors):
            # Created meanwhile by a concurrent job, or by our own earlier create whose answer was lost.
            found = self.find_customer(customer_id)
            if found is not None:
                return found
            raise ServiceUnavailable(PROVIDER, f"customer {customer_id} is in use but not found yet", code=code)
        raise ServiceRejected(PROVIDER, f"customer create refused: {message}", status=422, code=code)

    def default_payment_method(self, customer_id: str) -> str | None:
        """The token of the customer's default payment method; None if it has none (or no such customer)."""
        customer = self.find_customer(customer_id)
        methods = customer.payment_methods if customer is not None else []
        return next((m.token for m in methods if getattr(m, "default", False)), None)

    def add_payment_method(self, customer_id: str, nonce: str) -> str:
        """Vault the nonce's payment method as the customer's default; returns its token."""
        params = {"customer_id": customer_id, "payment_method_nonce": nonce,
                  "options": {"make_default": True, "fail_on_duplicate_payment_method": False}}
        result = self._call(self._gateway.payment_method.create, params)
        if result.is_success:
            return str(result.payment_method.token)
        code, message = _first_error(result)
        raise ServiceRejected(PROVIDER, f"payment method refused: {message}", status=422, code=code)

    def client_token(self, customer_id: str | None = None) -> str:
        """A Drop-in client token; bound to a customer only when one is named (its holder then sees, and may
        delete, that customer's vaulted methods: the payment page names none)."""

        def generate() -> str:
            try:
                params = {"customer_id": customer_id} if customer_id is not None else {}
                return str(self._gateway.client_token.generate(params))
            except ValueError as exc:  # how the SDK reports an api-error-response here (reference §3)
                raise ServiceRejected(PROVIDER, f"client token refused: {exc}", status=422) from exc

        return self._call(generate)

    # -- transactions -----------------------------------------------------------------------------------------
    def find_successful_sale(
        self, order_id: str, *, keeps: Callable[[Transaction], bool] | None = None
    ) -> Transaction | None:
        """The oldest sale for this order that charged (authorizing … settled) as Braintree has it now, and that
        ``keeps`` keeps (the collection's: not refunded in full), or None.

        A search hit is only a candidate: Braintree's search index may lag behind a status change (a settlement
        declined, a sale voided or refunded since) as it lags behind a new sale, so each hit is read again by id
        (``find`` is immediate) before its status is trusted: one more call per hit, none when nothing matches."""
        hits = self._call(lambda: list(self._gateway.transaction.search(
            [TS.order_id == order_id, TS.type == Transaction.Type.Sale, TS.status.in_list(list(CHARGED_STATUSES))]
        ).items))
        # Oldest first, not the first hit: several charged sales would be a bug, but every retry must then pick the
        # same one.
        for hit in sorted(hits, key=lambda t: (t.created_at, t.id)):
            txn = self.find_transaction(str(hit.id))
            if txn is not None and str(txn.status) in CHARGED_STATUSES and (keeps is None or keeps(txn)):
                return txn
        return None

    def sale(
        self,
        *,
        order_id: str,
        amount: Decimal,
        customer_id: str,
        payment_method_token: str | None = None,
        api_request_key: str | None,
        merchant_account_id: str | None = None,
        resend_without_key: bool = True,
    ) -> SaleResult:
        """Charge and submit for settlement; ServiceUnavailable means the outcome is unknown (search first).

        ``SaleResult.keyed`` says whether Braintree took the ``api_request_key``: a merchant without the feature
        refuses it (915231) and the sale is sent again without it (nothing was created by the refused one). A caller
        that knows the merchant refuses keys passes None and saves that round trip. A replay of an attempt whose
        outcome is unknown passes ``resend_without_key=False``: a keyless resend would be a new sale, so the refusal
        is raised (``ServiceRejected`` with code 915231) instead."""
        if not order_id or len(order_id) > 255 or (api_request_key is not None
                                                     and not 0 < len(api_request_key) <= 255):
            raise ValueError("order_id and api_request_key must be 1–255 characters")
        params: dict[str, Any] = {
            "amount": _amount_text(amount), "order_id": order_id, "customer_id": customer_id,
            "options": {"submit_for_settlement": True},
        }
        if api_request_key is not None:
            params["api_request_key"] = api_request_key
        if payment_method_token is not None:
            params["payment_method_token"] = payment_method_token  # else: the customer's default method
        if merchant_account_id:
            params["merchant_account_id"] = merchant_account_id  # else: the merchant's default account
        result = self._call(self._gateway.transaction.sale, params)
        if result is None:  # the SDK's answer to an empty or unknown body: we cannot tell whether it charged
            raise ServiceUnavailable(PROVIDER, f"sale for {order_id}: unreadable answer, outcome unknown")
        txn = result.transaction
        if txn is None:  # a validation error: nothing was created
            code, message = _first_error(result)
            if code == _KEY_NOT_ALLOWED and "api_request_key" in params and resend_without_key:
                # The merchant lacks Braintree's at-most-once keys (a per-merchant feature). Nothing was created, so
                # sending the sale without the key is safe; the caller's order_id search and lock still protect it.
                params.pop("api_request_key")
                result = self._call(self._gateway.transaction.sale, params)
                if result is None:
                    raise ServiceUnavailable(PROVIDER, f"sale for {order_id}: unreadable answer, outcome unknown")
                txn = result.transaction
                if txn is not None:
                    return self._sale_result(txn, None if result.is_success else str(result.message), keyed=False)
                code, message = _first_error(result)
            if code in _KEY_RETRY_LATER:
                raise ServiceUnavailable(PROVIDER, f"sale for {order_id}: request key {_KEY_RETRY_LATER[code]}",
                                         code=code)
            raise ServiceRejected(PROVIDER, f"sale for {order_id} refused: {message} ({code})", status=422,
                                  code=code)
        return self._sale_result(txn, None if result.is_success else str(result.message),
                                 keyed="api_request_key" in params)

    def find_transaction(self, transaction_id: str) -> Transaction | None:
        """The transaction, or None when Braintree has none with this id."""
        return self._lookup(self._gateway.transaction.find, transaction_id)

    def transactions_for_order(self, order_id: str) -> list[Transaction]:
        """Every transaction (sales and credits, any status) with this ``order_id``, oldest first."""
        found = self._call(lambda: list(self._gateway.transaction.search([TS.order_id == order_id]).items))
        return sorted(found, key=lambda t: (t.created_at, t.id))

    def search_sales(
        self, *, since: datetime, order_id_prefix: str | None = None, until: datetime | None = None
    ) -> list[Transaction]:
        """Every sale created since ``since`` (and before ``until``; naive = UTC), in any status, by order id prefix."""
        created = TS.created_at >= _utc(since) if until is None else TS.created_at.between(_utc(since), _utc(until))
        criteria = [TS.type == Transaction.Type.Sale, created]
        if order_id_prefix:
            criteria.append(TS.order_id.starts_with(order_id_prefix))
        return self._call(lambda: list(self._gateway.transaction.search(criteria).items))

    # -- the merchant (read by ``doctor``) ---------------------------------------------------------------------
    def merchant_accounts(self) -> list[dict[str, Any]]:
        """The merchant's accounts: id, status, currency and whether it is the default (reads only)."""
        accounts = self._call(lambda: list(self._gateway.merchant_account.all().merchant_accounts.items))
        return [
            {
                "id": str(a.id),
                "status": str(getattr(a, "status", "")),
                "currency_iso_code": str(getattr(a, "currency_iso_code", "")),
                "default": bool(getattr(a, "default", False)),
            }
            for a in accounts
        ]

    def probe_request_keys(self) -> bool | None:
        """Whether the merchant accepts ``api_request_key``, asked without charging: a sale with no payment method
        (validation refuses it, nothing is created). False on 915231, True when refused for other reasons only,
        None when the answer says neither (then only the first real sale tells)."""
        params = {"amount": "1.00", "api_request_key": f"doctor-probe-{uuid.uuid4().hex}"}
        result = self._call(self._gateway.transaction.sale, params)
        if result is None or result.transaction is not None:
            return None
        codes = {str(e.code) for e in result.errors.deep_errors}
        if _KEY_NOT_ALLOWED in codes:
            return False
        return True if codes else None

    # -- internals --------------------------------------------------------------------------------------------
    @staticmethod
    def _sale_result(txn: Transaction, error_message: str | None, *, keyed: bool = True) -> SaleResult:
        status = str(txn.status)
        reason = getattr(txn, "gateway_rejection_reason", None) or None
        outcome: Literal["charged", "declined", "rejected", "failed"]
        if status in CHARGED_STATUSES:
            outcome = "charged"
        elif status in _DECLINED:
            outcome = "declined"
        elif status == Transaction.Status.GatewayRejected:
            outcome = "rejected"
        else:  # failed (3000), or a replayed key whose sale was voided or expired since: not charged
            outcome = "failed"
        text = error_message or getattr(txn, "processor_response_text", None) or status
        if outcome == "rejected" and reason and reason not in text:
            text = f"{text} ({reason})"
        code = getattr(txn, "processor_response_code", None) or None
        return SaleResult(outcome, str(txn.id), status, txn.amount, code, text, rejection_reason=reason, keyed=keyed,
                          response_type=getattr(txn, "processor_response_type", None) or None)

    def _lookup(self, fn: Callable[[str], T], key: str) -> T | None:
        """``fn(key)``, or None on a 404 (including the SDK's local check of the id's characters)."""
        try:
            return self._call(fn, key)
        except ServiceRejected as exc:
            if exc.status == 404:
                return None
            raise

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """One SDK call through the breaker, raising only the error tree."""
        if self._meter is not None:
            self._meter.count()
        if self._breaker is None:
            return _mapped(fn, *args)
        sent: list[ServiceError] = []

        def guarded() -> T:
            try:
                return _mapped(fn, *args)
            except ServiceError as exc:
                sent.append(exc)
                raise

        try:
            return self._breaker.call(guarded)
        except pybreaker.CircuitBreakerError as exc:
            if sent:
                # This very call was sent and its failure tripped the breaker: report its own error, because
                # CircuitOpen promises that nothing was sent (for a sale: that nothing can have been charged).
                raise sent[0] from sent[0].__cause__
            raise CircuitOpen(PROVIDER, f"circuit open: {exc}", retry_after=self._breaker_remaining()) from exc

    def _breaker_remaining(self) -> float:
        assert self._breaker is not None
        opened_at = self._breaker._state_storage.opened_at  # pybreaker has no public accessor
        elapsed = (datetime.now(UTC) - opened_at).total_seconds() if opened_at is not None else 0.0
        return max(1.0, float(self._breaker.reset_timeout) - elapsed)


def build_braintree_client(settings: Settings, connection: redis.Redis) -> BraintreeClient:
    """A client for the configured merchant (first key pair), with the shared ``braintree`` breaker."""
    public_key, private_key = settings.braintree_key_pairs[0]
    gateway = make_gateway(settings.braintree_environment, settings.braintree_merchant_id, public_key, private_key,
                           timeout=settings.http_timeout)
    return BraintreeClient(gateway=gateway, breaker=make_breaker(connection, PROVIDER),
                           meter=CallMeter(connection, PROVIDER))
