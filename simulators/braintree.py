"""A loopback Braintree gateway that the real ``braintree`` SDK talks to unchanged.

Point the SDK at it with a custom environment (``sim.gateway()`` builds exactly that)::

    env = braintree.Environment("simulator", "127.0.0.1", str(sim.port), "http://auth.invalid", False, None)

It speaks the gateway's XML under ``/merchants/<merchant_id>/`` (HTTP Basic ``public_key:private_key``): customers,
payment methods from the sandbox nonces, client tokens, sales with the sandbox amounts (2000.00–2999.99 decline,
3000.00 fails), ``api_request_key`` replay, optional duplicate checking, refunds, voids, settlement, and transaction
search with paging. Helpers seed state, move transactions through settlement and sign webhook notifications about
them. The wire format lives in ``braintree_xml.py`` (see also ``/work/shared/reference/braintree.md`` §7).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import random
import re
import string
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import wraps
from typing import Any

import braintree
from flask import Blueprint, Flask, Response, g, request

from simulators.base import Simulator
from simulators.braintree_xml import (
    ParseError,
    api_error_response,
    card_fields,
    collection,
    customer_fields,
    dispute_fields,
    document,
    echo_params,
    element,
    matches,
    parse_request,
    search_results,
    text_matches,
    transaction_fields,
)

__all__ = ["BraintreeSimulator"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
ALNUM = string.ascii_lowercase + string.digits
EXPIRY_YEAR = str(datetime.now(UTC).year + 5)

# Sandbox nonces (braintree/test/nonces.py) -> (card type, number, whether its sales always decline: True is the
# sandbox's 2000 Do Not Honor, a soft decline; a number is that processor code).
CARD_NONCES: dict[str, tuple[str, str, bool | int]] = {
    "fake-valid-nonce": ("Visa", "4111111111111111", False),
    "fake-valid-visa-nonce": ("Visa", "4111111111111111", False),
    "fake-valid-mastercard-nonce": ("MasterCard", "5555555555554444", False),
    "fake-valid-amex-nonce": ("American Express", "378282246310005", False),
    "fake-valid-discover-nonce": ("Discover", "6011111111111117", False),
    "fake-processor-declined-visa-nonce": ("Visa", "4000111111111115", True),
    "fake-processor-declined-mastercard-nonce": ("MasterCard", "5105105105105100", True),
    # The sandbox's declined nonces all answer 2000 (soft); this one answers 2004 Expired Card, a hard decline, so
    # that tests can reach one with an ordinary amount (simulator only).
    "fake-processor-declined-amex-nonce": ("American Express", "378734493671000", 2004),
}
CONSUMED_NONCE = "fake-consumed-nonce"
CARD_KINDS = {
    "valid": "fake-valid-visa-nonce",
    "mastercard": "fake-valid-mastercard-nonce",
    "declining": "fake-processor-declined-visa-nonce",
    "hard-declining": "fake-processor-declined-amex-nonce",
}

# Processor responses for the sandbox decline amounts (2000.00-2999.99: the code is the integer amount).
DECLINE_TEXTS = {
    2000: "Do Not Honor", 2001: "Insufficient Funds", 2002: "Limit Exceeded",
    2003: "Cardholder's Activity Limit Exceeded", 2004: "Expired Card", 2005: "Invalid Credit Card Number",
    2006: "Invalid Expiration Date", 2007: "No Account", 2010: "Card Issuer Declined CVV",
    2012: "Processor Declined - Possible Lost Card", 2013: "Processor Declined - Possible Stolen Card",
    2014: "Processor Declined - Fraud Suspected", 2015: "Transaction Not Allowed", 2046: "Declined",
}
HARD_DECLINES = {2004, 2005, 2007, 2012, 2013, 2014, 2015}
FAILED_TEXT = "Processor Network Unavailable - Try Again"

# Statuses that count as a charge (``sales_for_order``), and those duplicate checking compares against.
CHARGED = {"authorizing", "authorized", "submitted_for_settlement", "settlement_pending", "settling", "settled",
           "settlement_confirmed"}
DUPLICATE_BASIS = CHARGED | {"voided"}
UNSUCCESSFUL = {"processor_declined", "gateway_rejected", "failed"}
# A refund (credit) in one of these gave nothing back.
REFUND_GAVE_NOTHING = UNSUCCESSFUL | {"voided", "settlement_declined", "settlement_failed"}
TRANSACTION_KINDS = {"transaction_settled", "transaction_settlement_declined"}
DISPUTE_KINDS = {
    "dispute_opened": "open", "dispute_won": "won", "dispute_lost": "lost", "dispute_accepted": "accepted",
    "dispute_auto_accepted": "auto_accepted", "dispute_disputed": "disputed", "dispute_expired": "expired",
    "dispute_under_review": "under_review",
}
CUSTOMER_FIELDS = ("first_name", "last_name", "company", "email", "phone", "fax", "website")

Error = tuple[tuple[str, ...], str, str, str]  # (path, code, attribute, message)
Card = dict[str, Any]


class _Rejected(Exception):
    """A validation failure, answered as a 422 api-error-response without a transaction."""

    def __init__(self, *errors: Error, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(errors[0][3])
        self.errors = errors
        self.params = params


def _err(code: str, attribute: str, message: str, on: str = "transaction") -> _Rejected:
    return _Rejected(((on,), code, attribute, message))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _xml(body: str, status: int = 200) -> Response:
    return Response(body, status=status, content_type="application/xml; charset=utf-8")


def _fingerprint(number: str) -> str:
    return hashlib.md5(number.encode()).hexdigest()  # an identifier, not security


class BraintreeSimulator(Simulator):
    """Braintree's gateway on loopback for the real SDK; state lives in memory for the simulator's lifetime."""

    name = "braintree"
    error_content_type = "application/xml"

    def __init__(
        self,
        merchant_id: str = "test-merchant",
        public_key: str = "test-public",
        private_key: str = "test-private",
        duplicate_checking: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.merchant_id = merchant_id
        self.public_key = public_key
        self.private_key = private_key
        self.duplicate_checking = duplicate_checking
        self.request_keys_allowed = True  # False: a merchant without Braintree's at-most-once request keys
        self.duplicate_window = timedelta(seconds=30)
        # Braintree's search index lags behind a new transaction (not documented as instant; seconds to minutes in
        # incidents): a transaction younger than this is not found by a search, only by ``find`` with its id.
        self.search_lag_seconds = 0.0
        # Unkind, and undocumented either way: the index may lag behind a transaction's changes too (a settlement
        # declined, a void, a refund): for this long after a change, searches still match and answer the
        # transaction as it was before it (``find`` answers it as it is).
        self.search_status_lag_seconds = 0.0
        self._lock = threading.RLock()
        self._rng = random.Random()
        self.reset_state()
        super().__init__(host=host, port=port)

    # -- Simulator hooks --------------------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget customers, cards, transactions, idempotency keys and disputes."""
        with self._lock:
            self._customers: dict[str, dict[str, Any]] = {}
            self._cards: dict[str, Card] = {}
            self._txns: dict[str, dict[str, Any]] = {}
            self._request_keys: dict[str, dict[str, Any]] = {}
            self._disputes: dict[str, dict[str, Any]] = {}
            self._indexed_at: dict[str, float] = {}  # when each transaction becomes visible to searches
            self._made_at: dict[str, float] = {}  # monotonic creation times (created_at has whole seconds)
            # (monotonic time, the lagging fields then) per transaction, for an index that lags behind changes
            self._snapshots: dict[str, list[tuple[float, dict[str, Any]]]] = {}
            # GET /merchant_accounts: what the SDK's MerchantAccountGateway.all() reads (braintree_python 4.48.0,
            # merchant_account_gateway.py: a paginated <merchant-accounts> collection of <merchant-account> items).
            self.merchant_accounts: list[dict[str, Any]] = [
                {"id": f"{self.merchant_id}_usd", "status": "active", "currency_iso_code": "USD", "default": True}
            ]

    def fault_body(self, status: int) -> str:
        """An injected error: an api-error-response for 422 (the SDK parses it), a small XML note otherwise."""
        if status == 422:
            return api_error_response("Injected fault", [(("transaction",), "81000", "base", "Injected fault")])
        return document("error", {"status": status, "message": "injected fault"})

    def build_app(self, app: Flask) -> None:
        """Register the gateway's routes under ``/merchants/<merchant_id>``."""
        bp = Blueprint("braintree", __name__, url_prefix="/merchants/<merchant_id>")

        @bp.url_value_preprocessor
        def _pop_merchant(endpoint: str | None, values: dict[str, Any] | None) -> None:
            g.merchant_id = (values or {}).pop("merchant_id", None)

        @bp.before_request
        def _authenticate() -> Response | None:
            auth = request.authorization
            if auth is None or (auth.username, auth.password) != (self.public_key, self.private_key):
                return _xml("", 401)
            return _xml("", 404) if g.merchant_id != self.merchant_id else None

        def route(rule: str, method: str, fn: Callable[..., Response]) -> None:
            @wraps(fn)
            def handler(**kw: Any) -> Response:
                with self._lock:
                    try:
                        return fn(**kw)
                    except _Rejected as exc:
                        return _xml(api_error_response(str(exc), exc.errors, params=exc.params), 422)
                    except ParseError as exc:
                        return _xml(document("error", {"message": f"malformed XML: {exc}"}), 400)

            bp.add_url_rule(rule, f"{method}:{rule}", handler, methods=[method])

        route("/customers", "POST", self._create_customer)
        route("/customers/<customer_id>", "GET", self._find_customer)
        route("/customers/<customer_id>", "PUT", self._update_customer)
        route("/customers/<customer_id>", "DELETE", self._delete_customer)
        route("/customers/advanced_search_ids", "POST", self._customer_search_ids)
        route("/customers/advanced_search", "POST", self._customer_search_page)
        route("/payment_methods", "POST", self._create_payment_method)
        route("/payment_methods/<kind>/<token>", "GET", self._find_payment_method)
        route("/payment_methods/<kind>/<token>", "PUT", self._update_payment_method)
        route("/payment_methods/<kind>/<token>", "DELETE", self._delete_payment_method)
        route("/client_token", "POST", self._client_token)
        route("/merchant_accounts/", "GET", self._merchant_accounts)
        route("/transactions", "POST", self._create_transaction)
        route("/transactions/<txn_id>", "GET", self._find_transaction)
        route("/transactions/<txn_id>/submit_for_settlement", "PUT", self._submit_for_settlement)
        route("/transactions/<txn_id>/void", "PUT", self._void)
        route("/transactions/<txn_id>/refund", "POST", self._refund)
        route("/transactions/advanced_search_ids", "POST", self._transaction_search_ids)
        route("/transactions/advanced_search", "POST", self._transaction_search_page)
        app.register_blueprint(bp)

    # -- public helpers ---------------------------------------------------------------------------------------
    def environment(self) -> braintree.Environment:
        """The SDK environment pointing at this simulator (the port is known once ``start()`` has run)."""
        return braintree.Environment("simulator", self.host, str(self.port), "http://auth.invalid", False, None)

    def gateway(
        self,
        timeout: float | tuple[float, float] = 5,
        *,
        merchant_id: str | None = None,
        public_key: str | None = None,
        private_key: str | None = None,
    ) -> braintree.BraintreeGateway:
        """A real SDK gateway configured as the service configures it (ids and keys overridable for auth tests)."""
        config = braintree.Configuration(
            self.environment(),
            merchant_id or self.merchant_id,
            public_key or self.public_key,
            private_key or self.private_key,
            timeout=timeout,
            wrap_http_exceptions=True,
        )
        return braintree.BraintreeGateway(config)

    def add_customer(
        self, customer_id: str, email: str | None = None, card: str | None = "valid", **fields: Any
    ) -> dict[str, Any]:
        """Create a customer, with a default card unless ``card`` is None (``valid``, ``mastercard``, ``declining``)."""
        if card is not None and card not in CARD_KINDS:
            raise ValueError(f"card must be one of {sorted(CARD_KINDS)} or None")
        with self._lock:
            errors = self._id_errors(customer_id)
            if errors:
                raise ValueError(errors[0][3])
            self._new_customer(customer_id, {"email": email, **fields})
            if card is not None:
                self._vault_card(customer_id, CARD_NONCES[CARD_KINDS[card]], make_default=True)
            return self._customer_view(customer_id)

    def add_card(self, customer_id: str, card: str = "valid", *, make_default: bool = True) -> str:
        """Vault another card for a customer (as the payment page would); returns its token."""
        if card not in CARD_KINDS:
            raise ValueError(f"card must be one of {sorted(CARD_KINDS)}")
        with self._lock:
            return str(self._vault_card(customer_id, CARD_NONCES[CARD_KINDS[card]], make_default=make_default)["token"])

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """A customer (a copy) with its ``credit_cards`` and ``default_token``, or None."""
        with self._lock:
            return self._customer_view(customer_id) if customer_id in self._customers else None

    @property
    def transactions(self) -> list[dict[str, Any]]:
        """Every transaction, oldest first, as copies (``amount`` is a str, ``created_at`` an aware datetime)."""
        with self._lock:
            return [copy.deepcopy(t) for t in self._txns.values()]

    def transaction(self, txn_id: str) -> dict[str, Any] | None:
        """One transaction (a copy), or None."""
        with self._lock:
            return copy.deepcopy(self._txns[txn_id]) if txn_id in self._txns else None

    def sales_for_order(self, order_id: str, successful_only: bool = True) -> list[dict[str, Any]]:
        """Sales with this order id; by default only those that charged (declined, failed and voided excluded)."""
        return [
            t for t in self.transactions
            if t["type"] == "sale" and t["order_id"] == order_id and (not successful_only or t["status"] in CHARGED)
        ]

    def add_sale(self, customer_id: str, amount: Any, *, order_id: str | None = None, settle: bool = False
                 ) -> dict[str, Any]:
        """A sale of ``amount`` on the customer's default card, submitted for settlement, made in-process exactly as
        a ``POST /transactions`` makes it (the sandbox amounts decide its outcome); ``settle``: the nightly batch has
        run since. For seeding many transactions without a round trip each; returns a copy."""
        with self._lock:
            txn = self._new_transaction({"type": "sale", "amount": str(amount), "order_id": order_id,
                                         "customer_id": customer_id, "options": {"submit_for_settlement": True}})
            if settle and txn["status"] == "submitted_for_settlement":
                self.settle(txn["id"])
            return copy.deepcopy(txn)

    def settle(self, txn_id: str) -> dict[str, Any]:
        """Move a submitted transaction to ``settled``, as the nightly batch would."""
        return self._settlement(txn_id, "settled", "4000", "Settled")

    def decline_settlement(self, txn_id: str) -> dict[str, Any]:
        """Move a submitted transaction to ``settlement_declined``; a ``settled`` one too, as an ACH debit the bank
        returns after it settled (Braintree documents that a settlement decline may follow ``transaction_settled``
        for ACH)."""
        return self._settlement(txn_id, "settlement_declined", "4001", "Settlement Declined", after_settled=True)

    def notification(self, kind: str, subject_id: str) -> dict[str, str]:
        """A webhook about a real transaction (``subject_id``), signed as Braintree signs with this simulator's keys.

        Transaction kinds carry the transaction as it is now (call ``settle``/``decline_settlement`` first); dispute
        kinds carry a chargeback around it (one dispute per transaction, its status following the kind).
        """
        with self._lock:
            if kind == "check":
                subject = '<check type="boolean">true</check>'
            elif kind in TRANSACTION_KINDS:
                subject = element("transaction", self._txn_fields(self._txn_or_raise(subject_id)))
            elif kind in DISPUTE_KINDS:
                txn = self._txn_or_raise(subject_id)
                subject = element("dispute", dispute_fields(self._dispute(txn, DISPUTE_KINDS[kind]), txn))
            else:
                supported = sorted(TRANSACTION_KINDS | set(DISPUTE_KINDS) | {"check"})
                raise ValueError(f"unsupported notification kind {kind!r}; supported: {supported}")
        xml = f"<notification>{element('timestamp', _now())}{element('kind', kind)}<subject>{subject}</subject>"
        # As braintree/webhook_testing_gateway.py: base64 with a newline every 76 characters, then
        # HMAC-SHA1 of that base64 text keyed by sha1(private key), sent as "public_key|hexdigest".
        payload = base64.encodebytes((xml + "</notification>").encode("utf-8"))
        key = hashlib.sha1(self.private_key.encode("ascii")).digest()
        signature = hmac.new(key, payload, hashlib.sha1).hexdigest()
        return {"bt_signature": f"{self.public_key}|{signature}", "bt_payload": payload.decode("ascii")}

    # -- merchant kinds (how the real gateway may be configured) ---------------------------------------------------
    MERCHANT_KINDS = ("keys", "no-keys")

    def configure_merchant(self, kind: str, *, search_lag_seconds: float = 0.0,
                           duplicate_window_seconds: float = 30.0, status_lag_seconds: float = 0.0) -> None:
        """``keys``: the merchant has ``api_request_key`` (Braintree enables it per merchant) and duplicate checking
        off; ``no-keys``: keys refused with 915231 and the 30 s duplicate check on, as most merchants run. Both with
        a search index that lags ``search_lag_seconds`` behind a new transaction and ``status_lag_seconds`` behind
        a change of one (its status, its refunds)."""
        if kind not in self.MERCHANT_KINDS:
            raise ValueError(f"merchant kind is one of {self.MERCHANT_KINDS}, not {kind!r}")
        with self._lock:
            self.request_keys_allowed = kind == "keys"
            self.duplicate_checking = kind == "no-keys"
            self.duplicate_window = timedelta(seconds=duplicate_window_seconds)
            self.search_lag_seconds = search_lag_seconds
            self.search_status_lag_seconds = status_lag_seconds

    def void(self, txn_id: str) -> dict[str, Any]:
        """Void a sale in-process (as a person in the Control Panel would); returns a copy."""
        with self._lock:
            txn = self._txn_or_raise(txn_id)
            self._set_status(txn, "voided")
            return copy.deepcopy(txn)

    def seed_sample_data(self) -> dict[str, Any]:
        """Create ``demo-customer`` with a valid default Visa (idempotent); returns it."""
        with self._lock:
            if "demo-customer" in self._customers:
                return self._customer_view("demo-customer")
            return self.add_customer("demo-customer", email="demo@example.com", first_name="Demo", last_name="Customer")

    # -- customers --------------------------------------------------------------------------------------------
    def _create_customer(self) -> Response:
        params = self._body("customer")
        customer_id = params.get("id")
        if customer_id is None:
            customer_id = self._fresh_id(self._customers, string.digits, 9)
        elif errors := self._id_errors(str(customer_id)):
            raise _Rejected(*errors, params={"customer": echo_params(params)})
        self._check_email(params)
        nonce = params.get("payment_method_nonce")
        spec = self._nonce_card(nonce, "customer") if nonce else None
        token = (params.get("credit_card") or {}).get("token")
        if token is not None and token in self._cards:
            raise _Rejected((("customer", "credit_card"), "91719", "token", "Token is in use."))
        self._new_customer(customer_id, params)
        if spec:
            self._vault_card(customer_id, spec, make_default=True, token=token)
        return _xml(document("customer", self._customer_fields(customer_id)), 201)

    def _find_customer(self, customer_id: str) -> Response:
        if customer_id not in self._customers:
            return _xml("", 404)
        return _xml(document("customer", self._customer_fields(customer_id)))

    def _update_customer(self, customer_id: str) -> Response:
        if customer_id not in self._customers:
            return _xml("", 404)
        params = self._body("customer")
        self._check_email(params)
        if nonce := params.get("payment_method_nonce"):
            options = (params.get("credit_card") or {}).get("options") or {}
            self._vault_card(customer_id, self._nonce_card(nonce, "customer"), bool(options.get("make_default")))
        record = self._customers[customer_id]
        record.update({k: params[k] for k in CUSTOMER_FIELDS if k in params}, updated_at=_now())
        return _xml(document("customer", self._customer_fields(customer_id)))

    def _delete_customer(self, customer_id: str) -> Response:
        if self._customers.pop(customer_id, None) is None:
            return _xml("", 404)
        for card in self._customer_cards(customer_id):
            del self._cards[card["token"]]
        return _xml("")

    def _customer_search_ids(self) -> Response:
        criteria = self._body("search")
        return _xml(search_results([c for c in reversed(self._customers) if self._customer_matches(c, criteria)]))

    def _customer_search_page(self) -> Response:
        criteria = self._body("search")
        found = [c for c in criteria.get("ids") or [] if c in self._customers and self._customer_matches(c, criteria)]
        items = "".join(element("customer", self._customer_fields(c)) for c in found)
        return _xml(collection("customers", items, len(found)))

    # -- payment methods --------------------------------------------------------------------------------------
    def _create_payment_method(self) -> Response:
        params = self._body("payment_method")
        customer_id, nonce, token = params.get("customer_id"), params.get("payment_method_nonce"), params.get("token")
        options = params.get("options") or {}
        if not customer_id:
            raise _err("93104", "customer_id", "Customer ID is required.", on="payment_method")
        if not nonce:
            raise _err("93103", "payment_method_nonce", "Nonce is required.", on="payment_method")
        if customer_id not in self._customers:
            raise _err("91705", "customer_id", "Customer ID is invalid.", on="credit_card")
        spec = self._nonce_card(nonce, "payment_method")
        if token is not None and not ID_PATTERN.match(token):
            raise _err("91718", "token", "Token is invalid.", on="credit_card")
        if token is not None and token in self._cards:
            raise _err("91719", "token", "Token is in use.", on="credit_card")
        if options.get("fail_on_duplicate_payment_method") and any(
            c["unique_number_identifier"] == _fingerprint(spec[1]) for c in self._cards.values()
        ):
            raise _err("81724", "number", "Duplicate card exists in the vault.", on="credit_card")
        card = self._vault_card(customer_id, spec, make_default=bool(options.get("make_default")), token=token)
        return _xml(document("credit_card", card_fields(card, self.merchant_id)), 201)

    def _find_payment_method(self, kind: str, token: str) -> Response:
        card = self._cards.get(token) if kind in ("any", "credit_card") else None
        if card is None:
            return _xml("", 404)
        return _xml(document("credit_card", card_fields(card, self.merchant_id)))

    def _update_payment_method(self, kind: str, token: str) -> Response:
        card = self._cards.get(token) if kind in ("any", "credit_card") else None
        if card is None:
            return _xml("", 404)
        params = self._body("payment_method" if kind == "any" else "credit_card")
        if (params.get("options") or {}).get("make_default"):
            self._make_default(card)
        card["updated_at"] = _now()
        return _xml(document("credit_card", card_fields(card, self.merchant_id)))

    def _delete_payment_method(self, kind: str, token: str) -> Response:
        card = self._cards.pop(token, None) if kind in ("any", "credit_card") else None
        if card is None:
            return _xml("", 404)
        remaining = self._customer_cards(card["customer_id"])
        if card["default"] and remaining:
            self._make_default(remaining[-1])  # the most recently added method takes over
        return _xml("")

    # -- client token -----------------------------------------------------------------------------------------
    def _client_token(self) -> Response:
        params = self._body("client_token")
        customer_id, version = params.get("customer_id"), params.get("version") or 2
        if customer_id is not None and customer_id not in self._customers:
            raise _err("92804", "customer_id", "Customer specified by customer_id does not exist", on="client_token")
        if version not in (1, 2, 3):
            raise _err("92806", "version", "Unsupported client token version", on="client_token")
        created = _now().strftime("%Y-%m-%dT%H:%M:%S+0000")
        secret = f"{customer_id}|{created}|{self._rng.random()}".encode()
        fingerprint = hmac.new(self.private_key.encode(), secret, hashlib.sha256).hexdigest()
        base = f"{self.url}/merchants/{self.merchant_id}"
        payload: dict[str, Any] = {
            "version": version,
            "authorizationFingerprint": f"{fingerprint}|created_at={created}&merchant_id={self.merchant_id}"
            f"&public_key={self.public_key}",
            "configUrl": f"{base}/client_api/v1/configuration",
            "clientApiUrl": f"{base}/client_api",
            "environment": "development",
            "merchantId": self.merchant_id,
            "challenges": [],
        }
        if customer_id is not None:
            payload["customerId"] = customer_id
        value = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")
        return _xml(document("client_token", {"value": value}), 201)

    # -- transactions -----------------------------------------------------------------------------------------
    def _merchant_accounts(self) -> Response:
        items = "".join(element("merchant_account", dict(a)) for a in self.merchant_accounts)
        total = len(self.merchant_accounts)
        return _xml(collection("merchant_accounts", items, total, page_size=max(total, 1)))

    def _create_transaction(self) -> Response:
        params = self._body("transaction")
        return self._idempotent(params, "/transactions", lambda: self._new_transaction(params))

    def _new_transaction(
        self, params: dict[str, Any], source: tuple[str | None, str | None, Card] | None = None
    ) -> dict[str, Any]:
        """Validate and run a sale or credit; ``source`` (customer, token, card) skips the lookup (refunds)."""
        kind = params.get("type")
        if kind not in ("sale", "credit"):
            code, text = ("91523", "Type is invalid.") if kind else ("91524", "Transaction type is required.")
            raise _Rejected((("transaction",), code, "type", text), params={"transaction": echo_params(params)})
        amount = self._amount(params)
        order_id = params.get("order_id")
        if order_id is not None and len(order_id) > 255:
            raise _err("91501", "order_id", "Order ID is too long.")
        customer_id, token, card = source or self._resolve_payment_method(params)
        options = params.get("options") or {}
        outcome = self._decide(kind, amount, order_id, card)
        history = [outcome["status"]]
        if outcome["status"] == "authorized" and options.get("submit_for_settlement"):
            history.append("submitted_for_settlement")
        now = _now()
        txn = {
            "id": self._fresh_id(self._txns, ALNUM, 8),
            "type": kind,
            "status": history[-1],
            "amount": str(amount),
            "order_id": order_id,
            "customer_id": customer_id,
            "payment_method_token": token,
            "api_request_key": params.get("api_request_key"),
            "merchant_account_id": params.get("merchant_account_id") or self.merchant_id,
            "created_at": now,
            "updated_at": now,
            "processor_response_code": outcome.get("code"),
            "processor_response_text": outcome.get("text"),
            "processor_response_type": outcome.get("response_type"),
            "processor_authorization_code": outcome.get("auth_code"),
            "gateway_rejection_reason": outcome.get("rejection"),
            "refund_ids": [],
            "refunded_transaction_id": None,
            "card": {k: card[k] for k in ("token", "bin", "last_4", "card_type", "expiration_month",
                                          "expiration_year", "unique_number_identifier", "declines")},
            "status_history": [{"status": s, "timestamp": now, "amount": str(amount)} for s in history],
        }
        self._txns[txn["id"]] = txn
        self._touch(txn)
        self._indexed_at[txn["id"]] = time.monotonic() + self.search_lag_seconds
        self._made_at[txn["id"]] = time.monotonic()
        nonce = params.get("payment_method_nonce")
        store = options.get("store_in_vault") or options.get("store_in_vault_on_success")
        if nonce and store and txn["status"] in CHARGED:
            owner = customer_id or self._new_customer(self._fresh_id(self._customers, string.digits, 9), {})["id"]
            vaulted = self._vault_card(owner, CARD_NONCES[nonce], make_default=False)
            txn.update(customer_id=owner, payment_method_token=vaulted["token"])
            txn["card"]["token"] = vaulted["token"]
        return txn

    def _amount(self, params: Mapping[str, Any]) -> Decimal:
        raw = params.get("amount")
        if raw is None or raw == "":
            raise _Rejected((("transaction",), "81502", "amount", "Amount is required."),
                            params={"transaction": echo_params(params)})
        try:
            amount = Decimal(str(raw))
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
            raise _err("81503", "amount", "Amount is an invalid format.")
        if amount <= 0:
            raise _err("81531", "amount", "Amount must be greater than zero.")
        return amount.quantize(Decimal("0.01"))

    def _resolve_payment_method(self, params: Mapping[str, Any]) -> tuple[str | None, str | None, Card]:
        customer_id = params.get("customer_id")
        token, nonce = params.get("payment_method_token"), params.get("payment_method_nonce")
        if customer_id is not None and customer_id not in self._customers:
            raise _err("91510", "customer_id", "Customer ID is invalid.")
        if token is not None:
            card = self._cards.get(token)
            if card is None:
                raise _err("91518", "payment_method_token", "Payment method token is invalid.")
            if customer_id is not None and card["customer_id"] != customer_id:
                raise _err("91516", "payment_method_token", "Payment method does not belong to this customer.")
            return card["customer_id"], token, card
        if nonce is not None:
            spec = self._nonce_card(nonce, "transaction")
            return customer_id, None, self._card_from(spec, token=None, customer_id=customer_id)
        if customer_id is not None:
            default = next((c for c in self._customer_cards(customer_id) if c["default"]), None)
            if default is None:
                raise _err("91511", "customer_id", "Customer does not have any credit cards.")
            return customer_id, default["token"], default
        raise _err("91508", "base", "Cannot determine payment method.")

    def _decide(self, kind: str, amount: Decimal, order_id: str | None, card: Card) -> dict[str, Any]:
        """The sandbox outcome of a new transaction (braintree/test/transaction_amounts.py)."""
        if kind == "credit":
            return {"status": "submitted_for_settlement", "code": "1002", "text": "Processed",
                    "response_type": "approved"}
        if self.duplicate_checking and self._is_duplicate(amount, order_id, card):
            return {"status": "gateway_rejected", "rejection": "duplicate"}
        if card["declines"] or Decimal("2000") <= amount < Decimal("3000"):
            declines = card["declines"]
            code = (2000 if declines is True else int(declines)) if declines else int(amount)
            return {"status": "processor_declined", "code": str(code), "text": DECLINE_TEXTS.get(code, "Declined"),
                    "response_type": "hard_declined" if code in HARD_DECLINES else "soft_declined"}
        if Decimal("3000") <= amount < Decimal("3001"):
            return {"status": "failed", "code": "3000", "text": FAILED_TEXT, "response_type": "soft_declined"}
        return {"status": "authorized", "code": "1000", "text": "Approved", "response_type": "approved",
                "auth_code": "".join(self._rng.choices(string.ascii_uppercase + string.digits, k=6))}

    def _is_duplicate(self, amount: Decimal, order_id: str | None, card: Card) -> bool:
        # Braintree's rule: an earlier successful sale within the window with the same amount, order id (when one
        # is given) and card number and expiry.
        since = time.monotonic() - self.duplicate_window.total_seconds()
        return any(
            t["type"] == "sale" and t["status"] in DUPLICATE_BASIS and self._made_at.get(t["id"], 0.0) >= since
            and Decimal(t["amount"]) == amount and (order_id is None or t["order_id"] == order_id)
            and t["card"]["unique_number_identifier"] == card["unique_number_identifier"]
            and t["card"]["expiration_year"] == card["expiration_year"]
            for t in self._txns.values()
        )

    def _find_transaction(self, txn_id: str) -> Response:
        if txn_id not in self._txns:
            return _xml("", 404)
        return _xml(document("transaction", self._txn_fields(self._txns[txn_id])))

    def _submit_for_settlement(self, txn_id: str) -> Response:
        if (txn := self._txns.get(txn_id)) is None:
            return _xml("", 404)
        params = self._body("transaction")

        def submit() -> dict[str, Any]:
            if txn["status"] != "authorized":
                raise _err("91507", "base", "Cannot submit for settlement unless status is authorized.")
            if params.get("amount") is not None:
                if (amount := self._amount(params)) > Decimal(txn["amount"]):
                    raise _err("91522", "amount", "Settlement amount is too large.")
                txn["amount"] = str(amount)
            self._set_status(txn, "submitted_for_settlement")
            return txn

        return self._idempotent(params, f"/transactions/{txn_id}/submit_for_settlement", submit, created=200)

    def _void(self, txn_id: str) -> Response:
        if (txn := self._txns.get(txn_id)) is None:
            return _xml("", 404)
        params = self._body("transaction")

        def void() -> dict[str, Any]:
            if txn["status"] not in ("authorized", "submitted_for_settlement", "settlement_pending"):
                raise _err("91504", "base", "Transaction can only be voided if status is authorized, "
                           "submitted_for_settlement, or - for PayPal - settlement_pending.")
            self._set_status(txn, "voided")
            return txn

        return self._idempotent(params, f"/transactions/{txn_id}/void", void, created=200)

    def _refund(self, txn_id: str) -> Response:
        if (original := self._txns.get(txn_id)) is None:
            return _xml("", 404)
        params = self._body("transaction")

        def refund() -> dict[str, Any]:
            if original["type"] == "credit":
                raise _err("91505", "base", "Cannot refund a credit.")
            if original["status"] not in ("settled", "settling"):
                raise _err("91506", "base", "Cannot refund a transaction unless it is settled.")
            # A voided or declined refund gave nothing back: its amount may be refunded again (its id stays listed).
            left = Decimal(original["amount"]) - sum(Decimal(self._txns[r]["amount"]) for r in original["refund_ids"]
                                                     if self._txns[r]["status"] not in REFUND_GAVE_NOTHING)
            if left <= 0:
                raise _err("91512", "base", "Transaction has already been fully refunded.")
            amount = self._amount(params) if params.get("amount") is not None else left
            if amount > left:
                raise _err("91521", "amount", "Refund amount is too large.")
            credit = self._new_transaction(
                {"type": "credit", "amount": str(amount), "order_id": params.get("order_id") or original["order_id"]},
                source=(original["customer_id"], original["payment_method_token"], dict(original["card"])),
            )
            credit["refunded_transaction_id"] = original["id"]
            original["refund_ids"].append(credit["id"])
            original["updated_at"] = _now()
            self._touch(original)
            return credit

        return self._idempotent(params, f"/transactions/{txn_id}/refund", refund)

    def _transaction_search_ids(self) -> Response:
        criteria = self._body("search")  # newest first, as the gateway lists them
        now = time.monotonic()
        return _xml(search_results([t["id"] for t in reversed(self._txns.values())
                                    if self._indexed_at.get(t["id"], 0.0) <= now
                                    and self._txn_matches(self._indexed(t, now), criteria)]))

    def _transaction_search_page(self) -> Response:
        # The SDK does not filter a page itself: answer exactly the requested ids that still match.
        criteria = self._body("search")
        now = time.monotonic()
        found = [self._indexed(self._txns[i], now) for i in criteria.get("ids") or [] if i in self._txns]
        items = "".join(element("transaction", self._txn_fields(t)) for t in found if self._txn_matches(t, criteria))
        return _xml(collection("credit_card_transactions", items, items.count("<transaction>")))

    # -- internals --------------------------------------------------------------------------------------------
    def _body(self, root: str) -> dict[str, Any]:
        tag, value = parse_request(request.get_data())
        if tag is not None and (tag != root or not isinstance(value, dict)):
            raise ParseError(f"expected <{root}>, got <{tag}>")
        return value if tag is not None else {}

    def _idempotent(
        self, params: dict[str, Any], path: str, work: Callable[[], dict[str, Any]], created: int = 201
    ) -> Response:
        """Run ``work`` (returning a transaction) once per ``api_request_key``; a replay answers the same one."""
        key = params.get("api_request_key")
        if key is not None and not self.request_keys_allowed:
            raise _err("915231", "api_request_key", "API request key is not allowed for this merchant.")
        if key is not None and len(key) > 255:
            raise _err("915230", "api_request_key", "API request key is too long.")
        seen = self._request_keys.get(key) if key is not None else None
        if seen is not None and seen["request"] != (path, params):
            raise _err("915232", "api_request_key", "API request key can be reused only with the same request.")
        if seen is not None:
            txn = self._txns[seen["txn_id"]]
        else:
            txn = work()  # a validation error raises before anything is stored, so the key stays free
            if key is not None:
                self._request_keys[key] = {"request": (path, copy.deepcopy(params)), "txn_id": txn["id"]}
        if txn["status"] in UNSUCCESSFUL:
            message = txn["processor_response_text"] or f"Gateway Rejected: {txn['gateway_rejection_reason']}"
            body = api_error_response(message, params={"transaction": echo_params(params)},
                                      transaction=self._txn_fields(txn))
            return _xml(body, 422)
        return _xml(document("transaction", self._txn_fields(txn)), created)

    def _set_status(self, txn: dict[str, Any], status: str) -> None:
        now = _now()
        txn["status"], txn["updated_at"] = status, now
        txn["status_history"].append({"status": status, "timestamp": now, "amount": txn["amount"]})
        self._touch(txn)

    # The fields a lagging index shows as they were (``search_status_lag_seconds``).
    _LAGGING = ("status", "status_history", "refund_ids", "updated_at", "processor_settlement_response_code",
                "processor_settlement_response_text", "settlement_batch_id")

    def _touch(self, txn: dict[str, Any]) -> None:
        """Remember the transaction's lagging fields as they are now (the index catches up with them later)."""
        fields = {k: copy.deepcopy(txn[k]) for k in self._LAGGING if k in txn}
        self._snapshots.setdefault(txn["id"], []).append((time.monotonic(), fields))

    def _indexed(self, txn: dict[str, Any], now: float) -> dict[str, Any]:
        """The transaction as the search index has it at ``now``: its latest change older than the lag (its first
        state if every change is younger)."""
        snapshots = self._snapshots.get(txn["id"]) or []
        if self.search_status_lag_seconds <= 0 or not snapshots:
            return txn
        cutoff = now - self.search_status_lag_seconds
        seen = [fields for at, fields in snapshots if at <= cutoff] or [snapshots[0][1]]
        view = {k: v for k, v in txn.items() if k not in self._LAGGING}
        return {**view, **copy.deepcopy(seen[-1])}

    def _settlement(self, txn_id: str, status: str, code: str, text: str, *, after_settled: bool = False
                    ) -> dict[str, Any]:
        with self._lock:
            txn = self._txn_or_raise(txn_id)
            settled = ("settled",) if after_settled else ()
            if txn["status"] not in ("submitted_for_settlement", "settling", "settlement_pending", *settled):
                raise ValueError(f"transaction {txn_id} is {txn['status']}, not submitted for settlement")
            self._set_status(txn, status)
            txn["processor_settlement_response_code"], txn["processor_settlement_response_text"] = code, text
            txn["settlement_batch_id"] = _now().strftime("%Y-%m-%d_") + self.merchant_id
            self._touch(txn)
            return copy.deepcopy(txn)

    def _txn_or_raise(self, txn_id: str) -> dict[str, Any]:
        if txn_id not in self._txns:
            raise KeyError(f"no transaction {txn_id!r}")
        return self._txns[txn_id]

    def _txn_fields(self, txn: Mapping[str, Any]) -> dict[str, Any]:
        dispute = self._disputes.get(txn["id"])
        return transaction_fields(txn, self._customers.get(txn["customer_id"] or ""),
                                  [dispute_fields(dispute, txn)] if dispute else [])

    def _dispute(self, txn: Mapping[str, Any], status: str) -> dict[str, Any]:
        now = _now()
        if (dispute := self._disputes.get(txn["id"])) is None:
            dispute = self._disputes[txn["id"]] = {
                "id": self._fresh_id(self._disputes, ALNUM, 16), "case_number": f"CB-{len(self._disputes) + 1:06d}",
                "merchant_account_id": txn["merchant_account_id"], "created_at": now, "updated_at": now,
                "status": "open", "history": [("open", now)],
            }
        if dispute["status"] != status:
            dispute["status"], dispute["updated_at"] = status, now
            dispute["history"].append((status, now))
        return dispute

    def _id_errors(self, customer_id: str) -> list[Error]:
        if not ID_PATTERN.match(customer_id):
            return [(("customer",), "91610", "id", "Customer ID is invalid.")]
        if len(customer_id) > 36:
            return [(("customer",), "91612", "id", "Customer ID is too long.")]
        if customer_id in ("all", "new"):
            return [(("customer",), "91611", "id", "Customer ID is not allowed.")]
        if customer_id in self._customers:
            return [(("customer",), "91609", "id", "Customer ID has already been taken.")]
        return []

    def _check_email(self, params: Mapping[str, Any]) -> None:
        email = params.get("email")
        if email and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
            raise _err("81604", "email", "Email is an invalid format.", on="customer")

    def _new_customer(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        now = _now()
        record = {f: params.get(f) for f in CUSTOMER_FIELDS} | {"id": customer_id, "created_at": now, "updated_at": now}
        self._customers[customer_id] = record
        return record

    def _nonce_card(self, nonce: str, on: str) -> tuple[str, str, bool | int]:
        # Transactions use the Transaction codes (91564/91565); vaulting uses the PaymentMethod ones (93107/93108).
        consumed, unknown = ("91564", "91565") if on == "transaction" else ("93107", "93108")
        if nonce == CONSUMED_NONCE:
            raise _err(consumed, "payment_method_nonce", "Cannot use a payment_method_nonce more than once.", on=on)
        if nonce not in CARD_NONCES:
            raise _err(unknown, "payment_method_nonce", "Unknown or expired payment_method_nonce.", on=on)
        return CARD_NONCES[nonce]

    def _card_from(self, spec: tuple[str, str, bool | int], token: str | None, customer_id: str | None) -> Card:
        card_type, number, declines = spec
        now = _now()
        return {
            "token": token, "customer_id": customer_id, "default": False, "card_type": card_type,
            "bin": number[:6], "last_4": number[-4:], "expiration_month": "12", "expiration_year": EXPIRY_YEAR,
            "unique_number_identifier": _fingerprint(number), "declines": declines, "cardholder_name": None,
            "created_at": now, "updated_at": now,
        }

    def _vault_card(
        self, customer_id: str, spec: tuple[str, str, bool | int], make_default: bool, token: str | None = None
    ) -> Card:
        card = self._card_from(spec, token or self._fresh_id(self._cards, ALNUM, 7), customer_id)
        first = not self._customer_cards(customer_id)
        self._cards[card["token"]] = card
        if first or make_default:  # a customer's first method is always the default
            self._make_default(card)
        return card

    def _make_default(self, card: Card) -> None:
        for other in self._customer_cards(card["customer_id"]):
            other["default"] = other is card

    def _customer_cards(self, customer_id: str) -> list[Card]:
        return [c for c in self._cards.values() if c["customer_id"] == customer_id]

    def _customer_fields(self, customer_id: str) -> dict[str, Any]:
        return customer_fields(self._customers[customer_id], self._customer_cards(customer_id), self.merchant_id)

    def _customer_view(self, customer_id: str) -> dict[str, Any]:
        view = copy.deepcopy(self._customers[customer_id])
        view["credit_cards"] = copy.deepcopy(self._customer_cards(customer_id))
        view["default_token"] = next((c["token"] for c in view["credit_cards"] if c["default"]), None)
        return view

    def _fresh_id(self, taken: Mapping[str, Any], alphabet: str, length: int) -> str:
        while (candidate := "".join(self._rng.choices(alphabet, k=length))) in taken:
            pass
        return candidate

    def _txn_matches(self, txn: Mapping[str, Any], criteria: Mapping[str, Any]) -> bool:
        customer, card = self._customers.get(txn["customer_id"] or "") or {}, txn["card"]
        values: dict[str, Any] = {
            "id": txn["id"], "ids": txn["id"], "order_id": txn["order_id"], "customer_id": txn["customer_id"],
            "payment_method_token": txn["payment_method_token"], "status": txn["status"], "type": txn["type"],
            "merchant_account_id": txn["merchant_account_id"], "payment_instrument_type": "credit_card",
            "source": "api", "credit_card_card_type": card["card_type"],
            "credit_card_unique_identifier": card["unique_number_identifier"],
            "credit_card_expiration_date": f"{card['expiration_month']}/{card['expiration_year']}",
            "processor_authorization_code": txn["processor_authorization_code"],
            "settlement_batch_id": txn.get("settlement_batch_id"), "refund": txn["refunded_transaction_id"] is not None,
            "amount": Decimal(txn["amount"]), "created_at": txn["created_at"],
            **{f"customer_{k}": customer.get(k) for k in ("email", "first_name", "last_name", "company")},
            # authorized_at, settled_at, voided_at, ...: when the transaction first reached that status
            **{f"{e['status']}_at": e["timestamp"] for e in reversed(txn["status_history"])},
        }
        return matches(values, criteria)

    def _customer_matches(self, customer_id: str, criteria: Mapping[str, Any]) -> bool:
        customer = self._customers[customer_id]
        values = {k: customer.get(k) for k in (*CUSTOMER_FIELDS, "id", "created_at")} | {"ids": customer_id}
        rest = dict(criteria)
        token_cond = rest.pop("payment_method_token", None)
        tokens = [c["token"] for c in self._customer_cards(customer_id)]
        if token_cond is not None and not any(text_matches(t, token_cond) for t in tokens):
            return False
        return matches(values, rest)

    # -- audit test helper (added for the payments audit's tests, integration/audit) ----------------------------
    def backdate_transaction(self, txn_id: str, created_at: datetime) -> dict[str, Any]:
        """Pretend a transaction was created at ``created_at`` (an aware datetime); returns a copy. Searches show it
        once the search lag has passed since then (an old transaction is in the index)."""
        with self._lock:
            txn = self._txn_or_raise(txn_id)
            txn["created_at"] = created_at.astimezone(UTC).replace(microsecond=0)
            age = (datetime.now(UTC) - created_at).total_seconds()
            self._indexed_at[txn_id] = min(self._indexed_at.get(txn_id, 0.0),
                                           time.monotonic() - age + self.search_lag_seconds)
            return copy.deepcopy(txn)
