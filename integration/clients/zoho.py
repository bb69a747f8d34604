"""Zoho Billing API v1: catalogue, customers, subscriptions, invoices and payments, through ``HttpCaller``.

Each call sends the shared token (``ZohoTokens``) and the organisation header, and checks the HTTP status *and*
the body's ``code`` (non-zero is an error even with HTTP 200, ``reference/zoho-billing.md`` §4.1); a 401 or code
57 gets one fresh token and one retry. Money is ``Decimal`` both ways. There are no idempotency keys: after a
ServiceUnavailable on a POST, look the object up before trying again (reference §3.3, §3.5).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from urllib.parse import quote

import pybreaker
import redis
import requests

from ..config import Settings
from ..errors import CircuitOpen, RateLimited, ServiceError, ServiceRejected, ServiceUnavailable
from ..worklane import BULK, lane, operation
from ._http import HttpCaller, Limiter
from .breaker import make_breaker
from .budget import MONEY_RESERVE, ConcurrencySlots, RateBudget
from .quota import ZohoLedger, zoho_ledger
from .zoho_auth import ZohoTokens, trusted_api_domain

__all__ = ["ORG_HEADER", "PER_PAGE", "PROVIDER", "ZohoClient", "ZohoLimiter", "build_zoho_client"]

log = logging.getLogger(__name__)

PROVIDER = "zoho"
ORG_HEADER = "X-com-zoho-subscriptions-organizationid"
PER_PAGE = 200  # Zoho's default and (inferred) maximum page size (reference §3.0)
RATE_LIMIT_CODES = frozenset({"44", "45", "1070"})  # daily / per-minute / concurrency (reference §4.2)
TOKEN_REFUSED_CODE = "57"  # dead or expired token (also missing scope, wrong org or DC: reference §4.2)
NOT_FOUND_CODE = "1002"  # Zoho's generic "<resource> does not exist" (the answer for a subscription)
# "No such object" per resource, as the live API answers a GET of an unknown or deleted one: bodies recorded from the
# Subscriptions API in payrollhero/zoho-subscriptions, spec/fixtures/responses/{customers/0-get-400,
# plans/100-ammunition-per-month-get-400, addons/target-get-400, products/187955000000050121-get-400,
# subscriptions/0-get-404}.json. Invoices and payments: no public recording, so Zoho's generic 1002 (or a bare 404).
MISSING_CODES = {
    "customers": "3004",  # HTTP 400 "Please enter a valid reference for the customer"
    "plans": "101002",  # HTTP 400 "Invalid PlanCode."
    "addons": "102001",  # HTTP 400 "Invalid AddonCode."
    "products": "2006",  # HTTP 400 "Invalid Product ID."
    "subscriptions": NOT_FOUND_CODE,  # HTTP 404 "Subscription ID does not exist."
}
# Customer searches by email, in order (reference §3.2: neither is in the published OpenAPI file, see
# ZohoClient.find_customer_by_email); a search reads at most SEARCH_PAGES pages.
CUSTOMER_SEARCHES = ("email", "search_text")
SEARCH_PAGES = 5
_CUSTOMER_TEXT_FIELDS = ("email", "display_name", "company_name", "first_name", "last_name")
BUDGET_WAIT = 10.0  # seconds a bulk call may wait for the minute budget before it is deferred instead
CALL_LEASE = 30.0  # seconds a concurrency slot covers beyond the budget wait: the call's timeouts and a margin
_CENT = Decimal("0.01")
# Money fields whose whole-number values arrive as JSON integers (``"total": 370``): made Decimal as well.
_MONEY_KEYS = frozenset({
    "amount", "amount_applied", "amount_refunded", "balance", "balance_amount", "bank_charges", "credits_applied",
    "discount", "discount_amount", "item_total", "outstanding", "payment_made", "price", "recurring_price",
    "setup_fee", "shipping_charge", "sub_total", "tax_amount", "total", "unused_credits", "write_off_amount",
})  # fmt: skip
# filter_by values are case-sensitive and module-prefixed (reference §3.0); callers may use any case.
_PLAN_FILTERS = ("All", "ACTIVE", "INACTIVE")
_ADDON_FILTERS = ("All", "ACTIVE", "INACTIVE", "ONETIME", "RECURRING")
_INVOICE_FILTERS = ("All", "Sent", "Draft", "OverDue", "Paid", "PartiallyPaid", "Void", "Unpaid")


def _filter(prefix: str, status: str, allowed: tuple[str, ...]) -> str:
    """Zoho's spelling of a ``filter_by`` value, e.g. ``PlanStatus.ACTIVE`` for ``"active"``."""
    wanted = status.replace("_", "").lower()
    for name in allowed:
        if name.lower() == wanted:
            return f"{prefix}.{name}"
    raise ValueError(f"{prefix} must be one of {', '.join(allowed)}, got {status!r}")


def _seg(value: str) -> str:
    """One path segment, quoted so an id or code can never change the path."""
    return quote(str(value), safe="")


def _money(value: Any) -> Any:
    """Integers under money keys become Decimal, recursively (floats already are, via ``parse_float``)."""
    if isinstance(value, dict):
        return {
            k: Decimal(v) if k in _MONEY_KEYS and isinstance(v, int) and not isinstance(v, bool) else _money(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_money(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    """JSON with every Decimal as a number with two decimals; floats are refused (money is never a float)."""
    if isinstance(value, Decimal):
        cents = value.quantize(_CENT)
        if not value.is_finite() or cents != value:
            raise ValueError(f"money must be finite with at most 2 decimals, got {value}")
        return format(cents, "f")
    if isinstance(value, float):
        raise TypeError("money must be Decimal, not float")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, dt.date):
        return json.dumps(value.isoformat())
    return json.dumps(value)


def _parse_error(resp: requests.Response) -> tuple[str | None, str]:
    """(code, message) from Zoho's error envelope ``{"code", "message"}``."""
    body = resp.json()
    code = body.get("code")
    return (None if code is None else str(code)), str(body.get("message") or resp.reason or "")


def _is_missing(exc: ServiceRejected, resource: str) -> bool:
    """Whether a refusal of a GET of one ``resource`` means "no such object" (not a wrong URL: code 5)."""
    if exc.code is None:
        return exc.status == 404
    return exc.code in (MISSING_CODES.get(resource, NOT_FOUND_CODE), NOT_FOUND_CODE)


def _created(row: dict[str, Any]) -> tuple[datetime, int]:
    """Sort key, oldest first: ``created_time`` (``2016-06-05T17:40:49-0700``), then the numeric id."""
    try:
        when = datetime.strptime(str(row.get("created_time")), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        when = datetime.max.replace(tzinfo=UTC)
    ident = str(row.get("customer_id") or row.get("subscription_id") or "")
    return when, int(ident) if ident.isdigit() else 0


class ZohoLimiter(Limiter):
    """The org's shared budget: ``requests_per_minute`` per sliding minute and ``max_concurrent`` in flight.

    A quarter of the minute (``MONEY_RESERVE``) is kept for money work, and bulk work stands aside while a charge
    waits (``budget``): the window is a minute long, so without the reserve one burst of catalog or audit reads
    could hold a charge back for most of a minute.
    """

    def __init__(
        self,
        connection: redis.Redis,
        organization_id: str,
        *,
        requests_per_minute: int,
        max_concurrent: int = 5,
        lease: float = 60.0,
        period: float = 60.0,
        max_wait: float = BUDGET_WAIT,
        reserve: float = MONEY_RESERVE,
        ledger: ZohoLedger | None = None,
    ) -> None:
        name = f"{PROVIDER}:{organization_id}"
        self.ledger = ledger
        limit = requests_per_minute
        self.budget = RateBudget(connection, f"{name}:minute", limit=limit, period=period, max_wait=max_wait,
                                 reserve=reserve)
        # a slot is held through the budget wait (a money call waits up to a whole window), the call and a margin
        lease = max(lease, self.budget.money_wait() + CALL_LEASE)
        self.slots = ConcurrencySlots(connection, f"{name}:concurrent", limit=max_concurrent, lease=lease)

    @contextlib.contextmanager
    def enter(self, kind: str) -> Iterator[None]:
        """Hold a concurrency slot, then take a budget slot just before sending (kinds share one budget)."""
        # Slot first: admission then happens right before the request, so our window and Zoho's line up. The day's
        # quota before the minute's: a call the day cannot afford never waits for the minute.
        with self.slots.slot(PROVIDER):
            counted = self.ledger.take() if self.ledger is not None else None
            try:
                self.budget.acquire(PROVIDER)
            except RateLimited:
                if self.ledger is not None and counted is not None:
                    self.ledger.refund(counted)  # not sent: not a call of the day
                raise
            yield


class ZohoClient:
    """Zoho Billing v1 for one organisation, in Zoho's words (plans, customers, subscriptions, payments)."""

    def __init__(
        self,
        *,
        tokens: ZohoTokens,
        organization_id: str,
        http: requests.Session,
        timeout: tuple[float, float],
        api_url: str | None = None,
        breaker: pybreaker.CircuitBreaker | None = None,
        limiter: Limiter | None = None,
        inline_wait: float = 0.0,
        ledger: ZohoLedger | None = None,
    ) -> None:
        self.tokens = tokens
        self.ledger = ledger
        self._org = organization_id
        self._api_url = api_url.rstrip("/") if api_url else None
        self._breaker = breaker
        self._caller = HttpCaller(
            provider=PROVIDER,
            base_url=self._api_url or "",  # per call otherwise: the token's api_domain
            http=http,
            timeout=timeout,
            breaker=breaker,
            limiter=limiter,
            parse_error=_parse_error,
            inline_wait=inline_wait,
        )

    # -- catalogue ----------------------------------------------------------------------------------------------
    def list_plans(self, status: str = "All", product_id: str | None = None) -> list[dict[str, Any]]:
        """Every plan with that status (All, ACTIVE, INACTIVE), of one product if given, all pages."""
        params = {"filter_by": _filter("PlanStatus", status, _PLAN_FILTERS)}
        return self._all("/plans", "plans", params | ({"product_id": product_id} if product_id else {}))

    def list_addons(self, status: str = "All", product_id: str | None = None) -> list[dict[str, Any]]:
        """Every addon with that status (All, ACTIVE, INACTIVE, ONETIME, RECURRING), of one product if given."""
        params = {"filter_by": _filter("AddonStatus", status, _ADDON_FILTERS)}
        return self._all("/addons", "addons", params | ({"product_id": product_id} if product_id else {}))

    def list_products(self) -> list[dict[str, Any]]:
        """Every product, all pages."""
        return self._all("/products", "products", {})

    def get_plan(self, code: str) -> dict[str, Any] | None:
        """One plan by ``plan_code``, or None when Zoho has no such plan."""
        return self._get(f"/plans/{_seg(code)}", "plan")

    def get_addon(self, code: str) -> dict[str, Any] | None:
        """One addon by ``addon_code``, or None when Zoho has no such addon."""
        return self._get(f"/addons/{_seg(code)}", "addon")

    # -- customers ----------------------------------------------------------------------------------------------
    def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        """One customer, or None."""
        return self._get(f"/customers/{_seg(customer_id)}", "customer")

    def find_customer_by_email(self, email: str) -> dict[str, Any] | None:
        """The oldest customer whose email equals ``email`` (case-insensitive), or None.

        Zoho's published OpenAPI file documents only ``filter_by`` (a status) on ``GET /customers``; ``email=`` is
        what apps use, and ``search_text=`` is Zoho's own search (the web app's, and Zoho's Billing MCP skills).
        Either is a substring search and email is not unique, so only an exact match counts. A search answered
        with rows that do not contain the text was ignored by Zoho: then the next one is tried, and never the
        whole customer list page by page (ServiceRejected when no search narrows).
        """
        wanted = email.strip().casefold()
        if not wanted:
            return None
        for param in CUSTOMER_SEARCHES:
            rows = self._search_customers(param, email.strip())
            if rows is None:
                log.warning("zoho GET /customers ignored %s=: trying the next search", param)
                continue
            exact = [r for r in rows if str(r.get("email") or "").strip().casefold() == wanted]
            return min(exact, key=_created) if exact else None
        raise ServiceRejected(
            PROVIDER,
            f"GET /customers ignored {'= and '.join(CUSTOMER_SEARCHES)}=: the customer cannot be looked up by "
            "email without reading every customer; set zoho_customer_id on the company",
        )

    def _search_customers(self, param: str, text: str) -> list[dict[str, Any]] | None:
        """The rows of a customer search, at most ``SEARCH_PAGES`` pages; None when Zoho ignored ``param``."""
        needle = text.casefold()
        fields = ("email",) if param == "email" else _CUSTOMER_TEXT_FIELDS
        rows: list[dict[str, Any]] = []
        for page in range(1, SEARCH_PAGES + 1):
            envelope = self._request("GET", "/customers", params={param: text, "page": page, "per_page": PER_PAGE})
            items = envelope.get("customers") or []
            if any(not any(needle in str(r.get(f) or "").casefold() for f in fields) for r in items):
                return None  # a row the search could not have matched: the parameter was not applied
            rows.extend(items)
            context = envelope.get("page_context")
            if not isinstance(context, dict) or not context.get("has_more_page") or not items:
                return rows
        log.warning("zoho customer search %s=: more than %s pages, the rest not read", param, SEARCH_PAGES)
        return rows

    def create_customer(self, display_name: str, email: str, **extra: Any) -> dict[str, Any]:
        """Create a customer (no idempotency key: on ServiceUnavailable, look it up by email first)."""
        body = {"display_name": display_name, "email": email, **extra}
        return self._one("POST", "/customers", "customer", body=body)

    # -- subscriptions ------------------------------------------------------------------------------------------
    def create_subscription(
        self, customer_id: str, plan_code: str, reference_id: str, *, auto_collect: bool = False, quantity: int = 1
    ) -> dict[str, Any]:
        """Create a subscription (offline by default: Zoho invoices, we collect through Braintree)."""
        plan = {"plan_code": plan_code, "quantity": quantity}
        body = {"customer_id": customer_id, "plan": plan, "auto_collect": auto_collect, "reference_id": reference_id}
        return self._one("POST", "/subscriptions", "subscription", body=body)

    def find_subscription_by_reference(self, customer_id: str, reference_id: str) -> dict[str, Any] | None:
        """The customer's subscription whose ``reference_id`` equals ``reference_id`` (a list row), or None."""
        params = {"customer_id": customer_id, "reference_contains": reference_id, "filter_by": "SubscriptionStatus.All"}
        rows = self._all("/subscriptions", "subscriptions", params)
        # reference_contains is a substring search: keep the exact reference, of this customer only
        wanted = (reference_id, customer_id)
        exact = [r for r in rows if (str(r.get("reference_id")), str(r.get("customer_id"))) == wanted]
        return min(exact, key=_created) if exact else None

    def get_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """One subscription, or None."""
        return self._get(f"/subscriptions/{_seg(subscription_id)}", "subscription")

    # -- invoices and payments ----------------------------------------------------------------------------------
    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription (list rows: status, next_billing_at, ids; no nested plan or customer)."""
        return self._all("/subscriptions", "subscriptions", {"filter_by": "SubscriptionStatus.All"})

    def get_invoice(self, invoice_id: str) -> dict[str, Any] | None:
        """One invoice (with its ``payments``), or None."""
        return self._get(f"/invoices/{_seg(invoice_id)}", "invoice")

    def list_invoices(self, customer_id: str | None = None, status: str = "All") -> list[dict[str, Any]]:
        """Every invoice with that status (All, Sent, Draft, OverDue, Paid, PartiallyPaid, Void, Unpaid)."""
        params = {"filter_by": _filter("Status", status, _INVOICE_FILTERS)}
        if customer_id is not None:
            params["customer_id"] = customer_id
        return self._all("/invoices", "invoices", params)

    def list_invoices_page(self, page: int, status: str = "All") -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One page of invoices and its ``page_context`` ({} when absent), in Zoho's default order (paced paging)."""
        params = {"filter_by": _filter("Status", status, _INVOICE_FILTERS), "page": page, "per_page": PER_PAGE}
        envelope = self._request("GET", "/invoices", params=params)
        context = envelope.get("page_context")
        return list(envelope.get("invoices") or []), dict(context) if isinstance(context, dict) else {}

    def record_payment(
        self,
        *,
        customer_id: str,
        invoice_id: str,
        amount: Decimal,
        reference_number: str,
        date: dt.date,
        description: str,
        amount_applied: Decimal | None = None,
    ) -> dict[str, Any]:
        """Record an external card payment of ``amount``, ``amount_applied`` of it (default all) to one invoice; the
        rest stays with the customer as unused credit (look the invoice up before a retry)."""
        applied = amount if amount_applied is None else amount_applied
        for name, number in (("amount", amount), ("amount_applied", applied)):
            if not isinstance(number, Decimal):
                raise TypeError(f"{name} must be Decimal, got {type(number).__name__}")
            if not number.is_finite() or number <= 0:
                raise ValueError(f"{name} must be a positive number, got {number}")
        if applied > amount:
            raise ValueError(f"amount_applied {applied} exceeds the payment amount {amount}")
        body = {
            "customer_id": customer_id,
            "payment_mode": "creditcard",  # an outside gateway's card charge (reference §3.5)
            "amount": amount,
            "date": date,
            "reference_number": reference_number,
            "description": description,
            "invoices": [{"invoice_id": invoice_id, "amount_applied": applied}],
        }
        return self._one("POST", "/payments", "payment", body=body)

    def get_payment(self, payment_id: str) -> dict[str, Any] | None:
        """One payment, or None."""
        return self._get(f"/payments/{_seg(payment_id)}", "payment")

    def delete_payment(self, payment_id: str) -> bool:
        """Delete a payment (its invoices reopen); False when Zoho has no such payment (deleted already)."""
        path = f"/payments/{_seg(payment_id)}"
        try:
            self._request("DELETE", path)
        except ServiceRejected as exc:
            if _is_missing(exc, "payments"):
                return False
            raise
        return True

    # -- organization and events (read by ``doctor``) ------------------------------------------------------------
    def list_organizations(self) -> list[dict[str, Any]]:
        """The organizations the token can reach (``GET /organizations``, scope settings.READ)."""
        rows = [r for r in self._request("GET", "/organizations").get("organizations") or [] if isinstance(r, dict)]
        ours = next((r for r in rows if str(r.get("organization_id")) == self._org), None)
        if self.ledger is not None and ours is not None:
            self.ledger.remember_time_zone(ours.get("time_zone"))  # Zoho counts the day in the org's zone
        return rows

    def _learn_time_zone(self) -> None:
        """Ask for the organization's time zone when the ledger wants it (at most once a day across processes), so
        the daily quota counts Zoho's day, not UTC's. Bulk work: it never takes the money reserve, and its failure
        (a deferral included) never stops the call that asked (the next ask waits an hour)."""
        if self.ledger is None or not self.ledger.time_zone_due():
            return
        try:
            with lane(BULK), operation("other"):
                self.list_organizations()
        except ServiceError as exc:
            log.warning("zoho: the organization's time zone could not be read (%s); the day stays %s for now", exc,
                        self.ledger.time_zone())

    def recent_events(self) -> list[dict[str, Any]]:
        """The first page of the event log (``GET /events``, newest first; scope webhooks.READ)."""
        envelope = self._request("GET", "/events", params={"page": 1, "per_page": 25})
        return [r for r in envelope.get("events") or [] if isinstance(r, dict)]

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _get(self, path: str, key: str) -> dict[str, Any] | None:
        try:
            return self._one("GET", path, key)
        except ServiceRejected as exc:
            if _is_missing(exc, path.split("/")[1]):
                return None
            raise

    def _one(self, method: str, path: str, key: str, *, body: Any = None) -> dict[str, Any]:
        envelope = self._request(method, path, body=body)
        obj = envelope.get(key)
        if not isinstance(obj, dict):
            raise ServiceUnavailable(PROVIDER, f"{method} {path}: answer without {key!r}")
        return obj

    def _all(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every row of a list, page by page while ``page_context.has_more_page`` (reference §3.0)."""
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            envelope = self._request("GET", path, params={**params, "page": page, "per_page": PER_PAGE})
            items = envelope.get(key) or []
            rows.extend(items)
            context = envelope.get("page_context")
            if not isinstance(context, dict):  # some list answers have none (reference §3.0): one page
                log.info("zoho %s: no page_context, stopping after page %s", path, page)
                return rows
            if not context.get("has_more_page") or not items:
                return rows
            page += 1

    def _request(self, method: str, path: str, *, params: Any = None, body: Any = None) -> dict[str, Any]:
        """The parsed envelope of a successful call; on 401 / code 57 one fresh token and one retry."""
        self._refuse_if_open()  # before the token: no mint while the circuit is open
        if path != "/organizations":
            self._learn_time_zone()
        token, api_domain = self.tokens.token()
        try:
            return self._send(token, api_domain, method, path, params, body)
        except ServiceRejected as exc:
            if exc.status != 401 and exc.code != TOKEN_REFUSED_CODE:
                raise
            self.tokens.invalidate(token)
            fresh, api_domain = self.tokens.token()
            if fresh == token:  # kept: a just-refreshed token was refused, so a new one would be too
                raise
            log.info("zoho refused the access token (%s): retrying once with a fresh one", exc.code or exc.status)
            return self._send(fresh, api_domain, method, path, params, body)

    def _send(self, token: str, api_domain: str, method: str, path: str, params: Any, body: Any) -> dict[str, Any]:
        try:
            return self._send_once(token, api_domain, method, path, params, body)
        except RateLimited as exc:
            if self.ledger is None or (exc.status != 429 and exc.code not in RATE_LIMIT_CODES):
                raise  # our own budgets' deferrals: nothing Zoho said
            raise self.ledger.daily_cap(exc) from exc

    def _send_once(self, token: str, api_domain: str, method: str, path: str, params: Any, body: Any
                   ) -> dict[str, Any]:
        if self._api_url is None and not api_domain:
            raise ServiceRejected(PROVIDER, "the token answer had no api_domain: set ZOHO_API_URL")
        if self._api_url is None and not trusted_api_domain(api_domain, self.tokens.accounts_url):
            # Never send the bearer token to a host the token answer named unless it is Zoho's (zoho_auth).
            raise ServiceRejected(PROVIDER, f"the token answer's api_domain {api_domain[:100]!r} is not a Zoho "
                                            "data centre: set ZOHO_API_URL if it is right")
        headers = {"Authorization": f"Zoho-oauthtoken {token}", ORG_HEADER: self._org, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = _dumps(body).encode()
        base = self._api_url or f"{api_domain}/billing/v1"
        try:
            resp = self._caller.request(
                method,
                path,
                kind="read" if method == "GET" else "write",
                params=params,
                data=cast(Any, data),  # raw JSON bytes: json= cannot write a Decimal as a number
                headers=headers,
                base_url=base,
            )
        except ServiceRejected as exc:
            if exc.code not in RATE_LIMIT_CODES:
                raise
            raise RateLimited(
                PROVIDER, exc.message, status=exc.status, code=exc.code, request_id=exc.request_id
            ) from exc
        try:
            envelope = json.loads(resp.content, parse_float=Decimal)
        except ValueError as exc:  # a 2xx that is not JSON comes from something in between (proxy, outage page)
            raise ServiceUnavailable(PROVIDER, f"{method} {path}: answer is not JSON", status=resp.status_code) from exc
        if not isinstance(envelope, dict):
            raise ServiceUnavailable(PROVIDER, f"{method} {path}: unexpected answer", status=resp.status_code)
        code = envelope.get("code", 0)
        if str(code) != "0":  # Zoho can refuse with HTTP 200 (reference §4.1)
            error = RateLimited if str(code) in RATE_LIMIT_CODES else ServiceRejected
            request_id = resp.headers.get("X-Zoho-Request-Id")
            message = f"{method} {path}: {envelope.get('message') or 'error'}"
            raise error(PROVIDER, message, status=resp.status_code, code=str(code), request_id=request_id)
        return cast(dict[str, Any], _money(envelope))

    def _refuse_if_open(self) -> None:
        breaker = self._breaker
        if breaker is None or breaker.current_state != pybreaker.STATE_OPEN:
            return
        opened_at = breaker._state_storage.opened_at  # pybreaker has no public accessor (as in HttpCaller)
        if opened_at is None:
            return
        remaining = (opened_at + timedelta(seconds=breaker.reset_timeout) - datetime.now(UTC)).total_seconds()
        if remaining > 0:  # past the timeout the breaker itself lets one probe through
            raise CircuitOpen(PROVIDER, "circuit open", retry_after=max(1.0, remaining))


def build_zoho_client(
    settings: Settings, connection: redis.Redis, *, http: requests.Session | None = None
) -> ZohoClient:
    """A ZohoClient wired from settings: shared token, per-minute and concurrency budgets, breaker, in Redis."""
    http = http if http is not None else requests.Session()
    ledger = zoho_ledger(settings, connection)
    limiter = ZohoLimiter(
        connection,
        settings.zoho_organization_id,
        requests_per_minute=settings.zoho_requests_per_minute,
        max_concurrent=settings.zoho_max_concurrent,
        ledger=ledger,
    )
    return ZohoClient(
        tokens=ZohoTokens.from_settings(settings, connection, http=http),
        organization_id=settings.zoho_organization_id,
        http=http,
        timeout=settings.http_timeout,
        api_url=settings.zoho_api_url,
        breaker=make_breaker(connection, PROVIDER),
        limiter=limiter,
        inline_wait=settings.inline_wait_seconds,
        ledger=ledger,
    )
