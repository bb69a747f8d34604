"""Loopback simulator of Zoho Billing API v1 (``/billing/v1``) and the Zoho Accounts token endpoint.

It speaks the wire format of ``/work/shared/reference/zoho-billing.md`` so a client written against Zoho's docs
works unchanged: ``POST /oauth/v2/token`` (form or query parameters, errors as HTTP 200 ``{"error": ...}``, the
10-per-10-minutes mint throttle and the 15-live-tokens rule), then ``/billing/v1`` with the
``Zoho-oauthtoken`` header and the organisation header, ``{"code": 0, "message": ..., <key>: ...}`` envelopes,
``page_context`` paging, case-sensitive ``filter_by`` values, no idempotency keys, and signed webhooks.

In-process helpers (``add_plan``, ``raise_invoice``, ``set_subscription_status``, ...) shape the state; a
simulator run as its own process (``python -m simulators.zoho --seed``) exposes a few of them under
``/_sim/zoho/*``. State lives in plain dicts guarded by one lock: read them in tests, change them through helpers.
"""

from __future__ import annotations

import argparse
import calendar
import copy
import hashlib
import hmac
import itertools
import json
import queue
import random
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, has_request_context, request

from simulators.base import Simulator

__all__ = ["ZohoError", "ZohoSimulator"]

BASE = "/billing/v1"
ORG_HEADER = "X-com-zoho-subscriptions-organizationid"
SIGNATURE_HEADER = "X-Zoho-Webhook-Signature"

MINT_WINDOW_SECONDS = 600  # Zoho Accounts: at most 10 new access tokens per refresh token per 10 minutes
MINTS_PER_WINDOW = 10
LIVE_TOKENS_PER_REFRESH_TOKEN = 15
RATE_WINDOW_SECONDS = 60
MAX_PER_PAGE = 200
WEBHOOK_TIMEOUT_SECONDS = 2.0

CODE_NOT_AUTHORIZED = 57
CODE_INVALID_VALUE = 4
CODE_INVALID_URL = 5
CODE_METHOD_NOT_ALLOWED = 37
CODE_NOT_FOUND = 1002
CODE_INTERNAL = 1000
CODE_RATE_PER_MINUTE = 45
CODE_RATE_PER_DAY = 44  # the first of the rate-limit family, quoted as "daily" (reference §4.2)
CODE_CONCURRENCY = 1070
CODE_OVER_APPLIED = 24016  # Zoho Invoice's code for "amount applied exceeds the balance"
# A GET of an unknown or deleted object, per resource, as the live API answers it: the bodies recorded from the
# Subscriptions API in payrollhero/zoho-subscriptions, spec/fixtures/responses/customers/0-get-400.json,
# plans/100-ammunition-per-month-get-400.json, addons/target-get-400.json, products/187955000000050121-get-400.json
# and subscriptions/0-get-404.json. Invoices, payments and events have no public recording: Zoho's generic
# 404/1002 "<resource> does not exist" (Books/Invoice docs), as before.
NOT_FOUND = {
    "Customer": (400, 3004, "Please enter a valid reference for the customer"),
    "Plan": (400, 101002, "Invalid PlanCode."),
    "Addon": (400, 102001, "Invalid AddonCode."),
    "Product": (400, 2006, "Invalid Product ID."),
    "Subscription": (404, CODE_NOT_FOUND, "Subscription ID does not exist."),
}

THROTTLE_BODY = {
    "error": "Access Denied",
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "status": "failure",
}
NOT_AUTHORIZED = "You are not authorized to perform this operation"

PLAN_FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "PlanStatus.All": lambda p: True,
    "PlanStatus.ACTIVE": lambda p: p["status"] == "active",
    "PlanStatus.INACTIVE": lambda p: p["status"] == "inactive",
}
ADDON_FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "AddonStatus.All": lambda a: True,
    "AddonStatus.ACTIVE": lambda a: a["status"] == "active",
    "AddonStatus.INACTIVE": lambda a: a["status"] == "inactive",
    "AddonStatus.ONETIME": lambda a: a["type"] == "one_time",
    "AddonStatus.RECURRING": lambda a: a["type"] == "recurring",
}
CUSTOMER_FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "Status.All": lambda c: True,
    "Status.Active": lambda c: c["status"] == "active",
    "Status.Inactive": lambda c: c["status"] == "inactive",
    **{f"Status.{n}": (lambda c: True) for n in ("Gapps", "Crm", "NonSubscribers", "PortalEnabled", "PortalDisabled")},
}
INVOICE_FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "Status.All": lambda i: True,
    "Status.Sent": lambda i: i["status"] == "sent",
    "Status.Draft": lambda i: i["status"] == "draft",
    "Status.OverDue": lambda i: i["status"] == "overdue",
    "Status.Paid": lambda i: i["status"] == "paid",
    "Status.PartiallyPaid": lambda i: i["status"] == "partially_paid",
    "Status.Void": lambda i: i["status"] == "void",
    "Status.Unpaid": lambda i: i["status"] in ("sent", "overdue", "partially_paid", "unpaid"),
}
_SUB_STATUS_FILTERS = {
    "LIVE": {"live"},
    "ACTIVE": {"live", "non_renewing"},
    "FUTURE": {"future"},
    "TRIAL": {"trial"},
    "PAST_DUE": {"dunning"},
    "UNPAID": {"unpaid"},
    "NON_RENEWING": {"non_renewing"},
    "CANCELLED_FROM_DUNNING": {"cancelled_from_dunning"},
    "CANCELLED": {"cancelled", "cancelled_from_dunning"},
    "EXPIRED": {"expired"},
    "TRIAL_EXPIRED": {"trial_expired"},
}
SUBSCRIPTION_FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "SubscriptionStatus.All": lambda s: True,
    **{f"SubscriptionStatus.{k}": (lambda s, v=v: s["status"] in v) for k, v in _SUB_STATUS_FILTERS.items()},
    "SubscriptionStatus.CANCELLED_THIS_MONTH": lambda s: s["status"] == "cancelled",
    "SubscriptionStatus.CANCELLED_LAST_MONTH": lambda s: False,
    "SubscriptionMode.ONLINE": lambda s: bool(s["auto_collect"]),
    "SubscriptionMode.OFFLINE": lambda s: not s["auto_collect"],
}
SUBSCRIPTION_STATUSES = {
    "live", "trial", "dunning", "unpaid", "non_renewing", "cancelled", "creation_failed",
    "cancelled_from_dunning", "expired", "trial_expired", "future",
}  # fmt: skip
STATUS_EVENTS = {
    "unpaid": "subscription_unpaid",
    "dunning": "subscription_unpaid",
    "cancelled": "subscription_cancelled",
    "cancelled_from_dunning": "subscription_cancelled",
    "non_renewing": "subscription_cancellation_scheduled",
    "expired": "subscription_expired",
    "trial_expired": "subscription_expired",
}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback targets: ignore *_proxy env
CUSTOMER_SEARCH_FIELDS = ("display_name", "email", "company_name", "first_name", "last_name")
OPEN_INVOICE = {"sent", "overdue", "partially_paid", "unpaid"}
SUBSCRIPTION_LIST_DROP = ("plan", "addons", "customer", "custom_fields")
INVOICE_LIST_DROP = ("payments", "invoice_items", "subscriptions")


class ZohoError(Exception):
    """A Zoho error answer: HTTP status plus the ``{"code", "message"}`` envelope.

    Source: the Billing API's "Errors" and "Response" pages; recorded bodies in payrollhero/zoho-subscriptions
    (``spec/fixtures/responses/**/*-400.json``, ``*-404.json``).
    """

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(status, code, message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> Response:
        """The error as a Flask response."""
        return _json({"code": self.code, "message": self.message}, self.status)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json;charset=UTF-8")


def _ok(key: str, obj: Any, status: int = 200, message: str = "success") -> Response:
    return _json({"code": 0, "message": message, key: obj}, status)


def _money(value: Any, field: str) -> float:
    """A non-negative amount from a JSON number or numeric string, rounded to cents."""
    try:
        amount = round(float(value), 2)
    except (TypeError, ValueError):
        raise ZohoError(400, CODE_INVALID_VALUE, f"Invalid value passed for {field}") from None
    if amount < 0 or amount != amount:
        raise ZohoError(400, CODE_INVALID_VALUE, f"Invalid value passed for {field}")
    return amount


def _method_not_allowed() -> ZohoError:
    message = f"The HTTP method {request.method} is not allowed for the requested resource"
    return ZohoError(405, CODE_METHOD_NOT_ALLOWED, message)


def _line(code: str, name: str, price: float, quantity: float = 1) -> dict[str, Any]:
    """An invoice line item."""
    return {"code": code, "name": name, "price": price, "quantity": quantity, "item_total": round(price * quantity, 2)}


def _extra_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A customer request's fields other than the two positional ones of ``add_customer``."""
    return {k: v for k, v in body.items() if k not in ("display_name", "email")}


def _add_interval(start: date, interval: int, unit: str) -> date:
    """``start`` moved forward by ``interval`` ``unit``s (months clamp to the month's last day)."""
    if unit in ("days", "day"):
        return start + timedelta(days=interval)
    if unit in ("weeks", "week"):
        return start + timedelta(weeks=interval)
    months = interval * (12 if unit in ("years", "year", "yearly") else 1)
    year, month0 = divmod(start.month - 1 + months, 12)
    year += start.year
    day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
    return date(year, month0 + 1, day)


class ZohoSimulator(Simulator):
    """Zoho Accounts (refresh-token grant) plus Zoho Billing v1, served on loopback."""

    name = "zoho"
    tz = UTC  # the organisation's time zone for dates and timestamps

    def __init__(
        self,
        client_id: str = "test-client",
        client_secret: str = "test-secret",
        refresh_token: str = "1000.test-refresh",
        organization_id: str = "10234695",
        token_lifetime: int = 3600,
        throttle_status: int = 400,
        requests_per_minute: int | None = None,
        max_concurrent: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        requests_per_day: int | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.organization_id = organization_id
        self.token_lifetime = token_lifetime
        self.throttle_status = throttle_status
        self.requests_per_minute = requests_per_minute
        self.rate_window = RATE_WINDOW_SECONDS  # seconds of the per-"minute" budget (shorter in scaled benchmarks)
        self.max_concurrent = max_concurrent
        self.requests_per_day = requests_per_day  # the plan's daily cap, per organization day (its time zone)
        self.webhook_target: tuple[str, str] | None = None
        self.webhook_events: set[str] | None = None  # None = every event type, like "all events" in Zoho
        self._lock = threading.RLock()
        self._ids = itertools.count(1)  # never reset: ids from before a reset() stay unknown
        self._in_flight = 0
        self._wh_queue: queue.Queue[tuple[str, str, bytes, dict[str, Any]] | None] = queue.Queue()
        self._wh_cond = threading.Condition()
        self._wh_pending = 0
        self._wh_thread: threading.Thread | None = None
        self._init_state()
        super().__init__(host=host, port=port)

    # -- Simulator hooks ----------------------------------------------------------------------------------------
    def build_app(self, app: Flask) -> None:
        """Register the Accounts route, the Billing blueprint and the Zoho-shaped error handlers."""
        app.add_url_rule("/oauth/v2/token", view_func=self._token_endpoint, methods=["POST"])
        app.register_blueprint(self._billing_blueprint())
        app.register_blueprint(self._control_routes())
        app.register_error_handler(ZohoError, lambda e: e.response())
        app.register_error_handler(404, lambda e: ZohoError(404, CODE_INVALID_URL, "Invalid URL Passed").response())
        app.register_error_handler(405, lambda e: _method_not_allowed().response())
        app.wsgi_app = self._count_in_flight(app.wsgi_app)  # type: ignore[method-assign]

    def fault_body(self, status: int) -> str:
        """An injected error in Zoho's shape: Accounts ``{"error"}``, Billing ``{"code", "message"}``."""
        if has_request_context() and request.path.startswith("/oauth/"):
            return json.dumps({"error": "server_error" if status >= 500 else "invalid_request"})
        code, message = {
            400: (CODE_INVALID_VALUE, "Invalid value passed"),
            401: (CODE_NOT_AUTHORIZED, NOT_AUTHORIZED),
            403: (CODE_NOT_AUTHORIZED, NOT_AUTHORIZED),
            404: (CODE_NOT_FOUND, "Resource does not exist."),
            429: (CODE_RATE_PER_MINUTE, "You have exceeded the maximum number of requests per minute."),
        }.get(status, (CODE_INTERNAL, "Internal error. Please try again after some time."))
        return json.dumps({"code": code, "message": message})

    def reset_state(self) -> None:
        """Forget catalogue, customers, subscriptions, invoices, payments, events, tokens, counters and clock."""
        with self._lock:
            self._init_state()

    def stop(self) -> None:
        """Stop serving and let the webhook sender finish its queue and exit."""
        super().stop()
        with self._wh_cond:
            if self._wh_thread is not None:
                self._wh_queue.put(None)
                self._wh_thread = None

    def _init_state(self) -> None:
        self.webhook_encoding = "json"  # or "form": one payload=<json> pair, x-www-form-urlencoded
        # The customer searches applied; the others are ignored, as an API ignores a parameter it does not know
        # (the published OpenAPI file documents only filter_by on GET /customers: reference §3.2).
        self.customer_search_params = {"email", "search_text", "display_name_contains"}
        self.products: dict[str, dict[str, Any]] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.addons: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.payments: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.webhook_deliveries: list[dict[str, Any]] = []
        # Zoho has no plan/addon/product events of its own (the Events API's event types; reference §5.2); a Zoho
        # workflow rule's webhook can send them. On, every catalogue change below emits one, in the default
        # payload's envelope with the item as GET /plans/{code} (/addons/{code}) returns it.
        self.catalog_events = False
        # The share of webhooks lost on the way (never delivered, whatever Zoho's retries): a full reconcile or a
        # sweep must heal them. Drawn from a seeded generator, so a test's losses are the same on every run.
        self.webhook_loss = 0.0
        self._loss = random.Random(20)
        self.webhooks_lost = 0
        self._tokens: dict[str, dict[str, Any]] = {}  # access token -> refresh_token, expires_at, invalidated
        self._mints: dict[str, deque[float]] = {}
        self._accepted: deque[float] = deque()
        self._invoice_seq = 0
        self._clock_offset = 0.0
        self.tokens_minted = 0
        self.tokens_throttled = 0
        self.rate_limited = 0
        self.max_in_flight_seen = 0
        self.calls_by_day: dict[str, int] = {}  # accepted Billing calls per organization day
        self.daily_capped = 0  # calls refused because the day's cap was reached

    # -- clock and formatting -----------------------------------------------------------------------------------
    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's clock forward (token expiry, throttle and rate windows, dates)."""
        with self._lock:
            self._clock_offset += seconds

    def _now(self) -> float:
        return time.time() + self._clock_offset

    def _today(self) -> date:
        return datetime.fromtimestamp(self._now(), self.tz).date()

    def _ts(self) -> str:
        """A Zoho timestamp, e.g. ``2016-06-05T17:40:49-0700`` (no colon in the offset)."""
        return datetime.fromtimestamp(self._now(), self.tz).strftime("%Y-%m-%dT%H:%M:%S%z")

    def _new_id(self) -> str:
        return str(903000000000000 + next(self._ids))

    # -- Accounts: tokens ---------------------------------------------------------------------------------------
    def _token_endpoint(self) -> Response:
        """``POST /oauth/v2/token``: refresh-token grant from query or form parameters (never JSON)."""
        # Source: Zoho Accounts' refresh-token page (answer {access_token, api_domain, token_type, expires_in});
        # errors as HTTP 200 {"error"} and the throttle body as quoted by Zoho CRM's token-validity page.
        params = {**request.args.to_dict(), **request.form.to_dict()}
        if params.get("client_id") != self.client_id:
            return _json({"error": "invalid_client"})
        if params.get("client_secret") != self.client_secret:
            return _json({"error": "invalid_client_secret"})
        if params.get("grant_type") != "refresh_token":
            return _json({"error": "unsupported_grant_type"})
        if params.get("refresh_token") != self.refresh_token:
            return _json({"error": "invalid_code"})
        with self._lock:
            if self._throttled(self.refresh_token):
                self.tokens_throttled += 1
                return _json(THROTTLE_BODY, self.throttle_status)
            self._mints[self.refresh_token].append(self._now())
            self.tokens_minted += 1
            token = self._mint(self.refresh_token)
        return _json(
            {"access_token": token, "api_domain": self.url, "token_type": "Bearer", "expires_in": self.token_lifetime}
        )

    def _throttled(self, refresh_token: str) -> bool:
        mints = self._mints.setdefault(refresh_token, deque())
        while mints and mints[0] <= self._now() - MINT_WINDOW_SECONDS:
            mints.popleft()
        return len(mints) >= MINTS_PER_WINDOW

    def _mint(self, refresh_token: str) -> str:
        live = [t for t in self.live_tokens() if self._tokens[t]["refresh_token"] == refresh_token]
        if len(live) >= LIVE_TOKENS_PER_REFRESH_TOKEN:
            self._tokens[live[0]]["invalidated"] = True  # Zoho silently drops the oldest live token
        token = "1000." + secrets.token_hex(32)
        self._tokens[token] = {
            "refresh_token": refresh_token,
            "expires_at": self._now() + self.token_lifetime,
            "invalidated": False,
        }
        return token

    def issue_token(self) -> str:
        """A live access token minted in-process (no throttle, not counted in ``tokens_minted``)."""
        with self._lock:
            return self._mint(self.refresh_token)

    def live_tokens(self) -> list[str]:
        """The live access tokens, oldest first."""
        with self._lock:
            return [t for t, rec in self._tokens.items() if self._token_live(rec)]

    def expire_tokens(self) -> None:
        """Make every access token expired (drives a client's 401 → refresh → retry path)."""
        with self._lock:
            for rec in self._tokens.values():
                rec["expires_at"] = min(rec["expires_at"], self._now())

    def _token_live(self, rec: dict[str, Any]) -> bool:
        return not rec["invalidated"] and self._now() < rec["expires_at"]

    # -- Billing: guard, concurrency and rate limits --------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Billing requests being served right now."""
        return self._in_flight

    def _count_in_flight(self, wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap the WSGI app so in-flight Billing requests are counted, injected delays included."""

        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if not environ.get("PATH_INFO", "").startswith(BASE):
                return wsgi_app(environ, start_response)
            with self._lock:
                self._in_flight += 1
                self.max_in_flight_seen = max(self.max_in_flight_seen, self._in_flight)
                environ["zoho.in_flight"] = self._in_flight
            try:
                return wsgi_app(environ, start_response)
            finally:
                with self._lock:
                    self._in_flight -= 1

        return middleware

    def _guard(self) -> None:
        """Check token, organisation, concurrency and the per-minute budget of a Billing call."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            rec = self._tokens.get(token.strip())
            if scheme.lower() != "zoho-oauthtoken" or rec is None or not self._token_live(rec):
                raise ZohoError(401, CODE_NOT_AUTHORIZED, NOT_AUTHORIZED)
            # GET /organizations is how a caller finds its organization id: it needs no organization header.
            if request.path != f"{BASE}/organizations" and request.headers.get(ORG_HEADER) != self.organization_id:
                raise ZohoError(400, CODE_NOT_AUTHORIZED, "Invalid organization ID")
            if self.max_concurrent is not None and request.environ.get("zoho.in_flight", 1) > self.max_concurrent:
                self.rate_limited += 1
                raise ZohoError(
                    429,
                    CODE_CONCURRENCY,
                    "The number of concurrent API requests for this organization has exceeded the limit.",
                )
            if self.requests_per_minute is not None:
                self._spend_rate_budget()
            self._spend_daily_quota()

    def _spend_daily_quota(self) -> None:
        """Count an accepted call in the organization's day, or refuse it with the daily code once the plan's cap
        is reached (until the organization's midnight: ``advance_clock`` moves to the next day)."""
        day = self._today().isoformat()
        used = self.calls_by_day.get(day, 0)
        if self.requests_per_day is not None and used >= self.requests_per_day:
            self.rate_limited += 1
            self.daily_capped += 1
            raise ZohoError(429, CODE_RATE_PER_DAY,
                            "The API call for this organization has exceeded the maximum call rate limit.")
        self.calls_by_day[day] = used + 1

    def _spend_rate_budget(self) -> None:
        """Count an accepted request in the sliding minute, or refuse it (refusals are not counted)."""
        now = self._now()
        while self._accepted and self._accepted[0] <= now - self.rate_window:
            self._accepted.popleft()
        if len(self._accepted) >= (self.requests_per_minute or 0):
            self.rate_limited += 1
            raise ZohoError(
                429,
                CODE_RATE_PER_MINUTE,
                "You have exceeded the maximum number of requests per minute. Please try again after some time.",
            )
        self._accepted.append(now)

    # -- Billing: request parsing and paging ----------------------------------------------------------------------
    @staticmethod
    def _body() -> dict[str, Any]:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise ZohoError(400, CODE_INVALID_VALUE, "Invalid JSON in the request body")
        return body

    @staticmethod
    def _int_arg(name: str, default: int) -> int:
        raw = request.args.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ZohoError(400, CODE_INVALID_VALUE, f"Invalid value passed for {name}")
        return value

    @staticmethod
    def _filter(
        filters: dict[str, Callable[[dict[str, Any]], bool]], default: str
    ) -> tuple[str, Callable[[dict[str, Any]], bool]]:
        """The ``filter_by`` value (case-sensitive, as Zoho's) and its predicate."""
        name = request.args.get("filter_by", default)
        if name not in filters:
            raise ZohoError(400, CODE_INVALID_VALUE, "Invalid value passed for filter_by")
        return name, filters[name]

    def _page(self, key: str, items: Iterable[dict[str, Any]], applied_filter: str) -> Response:
        """One page of ``items`` (insertion order = creation order) with Zoho's ``page_context``."""
        # Source: the Billing API pagination page (zohohelp.com/billing/api/v1/pagination) for page_context; the
        # applied_filter / sort keys as in payrollhero/zoho-subscriptions spec/fixtures/responses/plans-get-200.json.
        page, per_page = self._int_arg("page", 1), min(self._int_arg("per_page", MAX_PER_PAGE), MAX_PER_PAGE)
        column = request.args.get("sort_column", "created_time")
        order = request.args.get("sort_order", "D")
        rows = list(items)
        if column != "created_time":
            rows.sort(key=lambda o: str(o.get(column, "")))
        if order == "D":
            rows.reverse()
        chunk = rows[(page - 1) * per_page : page * per_page]
        context = {
            "page": page,
            "per_page": per_page,
            "has_more_page": page * per_page < len(rows),
            "applied_filter": applied_filter,
            "sort_column": column,
            "sort_order": order,
        }
        return _json({"code": 0, "message": "success", key: copy.deepcopy(chunk), "page_context": context})

    def _get(self, table: dict[str, dict[str, Any]], key: str, resource: str) -> dict[str, Any]:
        obj = table.get(key)
        if obj is None:
            raise ZohoError(*NOT_FOUND.get(resource, (404, CODE_NOT_FOUND, f"{resource} does not exist.")))
        return obj

    # -- Billing: routes ----------------------------------------------------------------------------------------
    def _billing_blueprint(self) -> Blueprint:
        bp = Blueprint("zoho_billing", __name__, url_prefix=BASE)
        bp.before_request(self._guard)
        routes: list[tuple[str, Callable[..., Response], str]] = [
            ("/organizations", self._list_organizations, "GET"),
            ("/products", self._list_products, "GET"),
            ("/products/<product_id>", self._get_product, "GET"),
            ("/plans", self._list_plans, "GET"),
            ("/plans/<plan_code>", self._get_plan, "GET"),
            ("/addons", self._list_addons, "GET"),
            ("/addons/<addon_code>", self._get_addon, "GET"),
            ("/customers", self._list_customers, "GET"),
            ("/customers", self._create_customer, "POST"),
            ("/customers/<customer_id>", self._get_customer, "GET"),
            ("/customers/<customer_id>", self._update_customer, "PUT"),
            ("/subscriptions", self._list_subscriptions, "GET"),
            ("/subscriptions", self._create_subscription, "POST"),
            ("/subscriptions/<subscription_id>", self._get_subscription, "GET"),
            ("/invoices", self._list_invoices, "GET"),
            ("/invoices/<invoice_id>", self._get_invoice, "GET"),
            ("/payments", self._create_payment, "POST"),
            ("/payments/<payment_id>", self._get_payment, "GET"),
            ("/payments/<payment_id>", self._delete_payment, "DELETE"),
            ("/events", self._list_events, "GET"),
            ("/events/<event_id>", self._get_event, "GET"),
        ]
        for rule, view, method in routes:
            bp.add_url_rule(rule, view_func=view, methods=[method])
        return bp

    def _list_organizations(self) -> Response:
        # The shape recorded from the live API in payrollhero/zoho-subscriptions,
        # spec/fixtures/responses/organizations-get-200.json (a subset of its fields).
        org = {
            "organization_id": self.organization_id, "name": "Simulated Billing", "is_default_org": True,
            "country": "U.S.A", "plan_name": "STANDARD", "time_zone": str(self.tz), "is_org_active": True,
            "currency_code": "USD", "currency_symbol": "$", "price_precision": 2,
        }  # fmt: skip
        return _json({"code": 0, "message": "success", "organizations": [org]})

    def _list_products(self) -> Response:
        with self._lock:
            return self._page("products", self.products.values(), request.args.get("filter_by", "ProductStatus.All"))

    def _get_product(self, product_id: str) -> Response:
        with self._lock:
            return _ok("product", copy.deepcopy(self._get(self.products, product_id, "Product")))

    def _list_plans(self) -> Response:
        name, keep = self._filter(PLAN_FILTERS, "PlanStatus.All")
        product_id = request.args.get("product_id")
        with self._lock:
            rows = [p for p in self.plans.values() if keep(p) and product_id in (None, p["product_id"])]
            return self._page("plans", rows, name)

    def _get_plan(self, plan_code: str) -> Response:
        with self._lock:
            return _ok("plan", copy.deepcopy(self._get(self.plans, plan_code, "Plan")))

    def _list_addons(self) -> Response:
        name, keep = self._filter(ADDON_FILTERS, "AddonStatus.All")
        product_id, plan_code = request.args.get("product_id"), request.args.get("plan_code")
        with self._lock:
            rows = [
                a
                for a in self.addons.values()
                if keep(a)
                and product_id in (None, a["product_id"])
                and (plan_code is None or self._addon_fits(a, plan_code))
            ]
            return self._page("addons", rows, name)

    @staticmethod
    def _addon_fits(addon: dict[str, Any], plan_code: str) -> bool:
        return bool(addon["applicable_to_all_plans"]) or any(p.get("plan_code") == plan_code for p in addon["plans"])

    def _get_addon(self, addon_code: str) -> Response:
        with self._lock:
            return _ok("addon", copy.deepcopy(self._get(self.addons, addon_code, "Addon")))

    # customers
    def _list_customers(self) -> Response:
        name, keep = self._filter(CUSTOMER_FILTERS, "Status.All")
        honoured = self.customer_search_params
        email = request.args.get("email", "").lower() if "email" in honoured else ""
        text = request.args.get("search_text", "").lower() if "search_text" in honoured else ""
        name_part = request.args.get("display_name_contains", "").lower() if "display_name_contains" in honoured else ""
        with self._lock:
            rows = [
                self._customer_view(c)
                for c in self.customers.values()
                if keep(c)
                and email in c["email"].lower()  # a search, not an equality test: clients must filter exactly
                and name_part in c["display_name"].lower()
                and (not text or any(text in str(c.get(f, "")).lower() for f in CUSTOMER_SEARCH_FIELDS))
            ]
            return self._page("customers", rows, name)

    def _create_customer(self) -> Response:
        body = self._body()
        for field in ("display_name", "email"):
            if not str(body.get(field) or "").strip():
                raise ZohoError(400, CODE_INVALID_VALUE, f"{field} is required.")
        with self._lock:
            customer_id = self.add_customer(str(body["display_name"]), str(body["email"]), **_extra_fields(body))
            return _ok("customer", self.customer(customer_id), 201, "The customer has been created.")

    def _get_customer(self, customer_id: str) -> Response:
        with self._lock:
            return _ok("customer", self._customer_view(self._get(self.customers, customer_id, "Customer")))

    def _update_customer(self, customer_id: str) -> Response:
        body = self._body()
        with self._lock:
            customer = self._get(self.customers, customer_id, "Customer")
            for field in ("display_name", "email"):
                if field in body and not str(body[field] or "").strip():
                    raise ZohoError(400, CODE_INVALID_VALUE, f"{field} is required.")
            customer.update({k: v for k, v in body.items() if k not in self._CUSTOMER_READONLY})
            customer["updated_time"] = self._ts()
            return _ok("customer", self._customer_view(customer), 200, "Customer information has been saved.")

    _CUSTOMER_READONLY = frozenset({"customer_id", "outstanding", "unused_credits", "created_time", "updated_time"})

    def _customer_view(self, customer: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(customer)
        open_invoices = (
            i
            for i in self.invoices.values()
            if i["customer_id"] == customer["customer_id"] and i["status"] in OPEN_INVOICE
        )
        view["outstanding"] = round(sum(i["balance"] for i in open_invoices), 2)
        return view

    # subscriptions
    def _list_subscriptions(self) -> Response:
        name, keep = self._filter(SUBSCRIPTION_FILTERS, "SubscriptionStatus.All")
        customer_id = request.args.get("customer_id")
        ref = request.args.get("reference_contains", "").lower()
        text = request.args.get("search_text", "").lower()
        with self._lock:
            rows = [
                self._subscription_row(s)
                for s in self.subscriptions.values()
                if keep(s)
                and customer_id in (None, s["customer_id"])
                and ref in str(s.get("reference_id") or "").lower()
                and (not text or text in f"{s['name']} {s['customer']['display_name']} {s['reference_id']}".lower())
            ]
            return self._page("subscriptions", rows, name)

    @staticmethod
    def _subscription_row(sub: dict[str, Any]) -> dict[str, Any]:
        """A list row: Zoho flattens plan and customer fields there (no nested ``plan``)."""
        row = {k: v for k, v in sub.items() if k not in SUBSCRIPTION_LIST_DROP}
        row.update(
            plan_code=sub["plan"]["plan_code"],
            plan_name=sub["plan"]["name"],
            customer_name=sub["customer"]["display_name"],
            email=sub["customer"]["email"],
        )
        return row

    def _get_subscription(self, subscription_id: str) -> Response:
        with self._lock:
            return _ok("subscription", copy.deepcopy(self._get(self.subscriptions, subscription_id, "Subscription")))

    def _create_subscription(self) -> Response:
        body = self._body()
        with self._lock:
            sub = self._new_subscription(body)
            return _ok("subscription", copy.deepcopy(sub), 201, "Subscription has been created successfully.")

    def _new_subscription(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate a create request, store the subscription, raise its first invoice, emit events."""
        plan_line = self._subscription_plan(body.get("plan"))
        plan = self.plans[plan_line["plan_code"]]
        addons = [self._subscription_addon(a) for a in body.get("addons") or []]
        auto_collect = bool(body.get("auto_collect", True))  # Zoho's default is online collection
        if auto_collect and not body.get("card_id"):
            raise ZohoError(400, CODE_INVALID_VALUE, "Card details are required when auto_collect is true.")
        start, today = self._date(body.get("starts_at"), "starts_at"), self._today()
        trial_days = 0 if body.get("exclude_trial") else int(_money(plan_line.pop("trial_days"), "trial_days"))
        customer = self._subscription_customer(body)  # last check: it may create an inline customer
        sub = self._subscription_record(body, customer, plan, plan_line, addons, auto_collect)
        sub.update(self._first_term(plan, start, today, trial_days))
        self.subscriptions[sub["subscription_id"]] = sub
        invoice = None
        if sub["status"] == "live":
            invoice = self._first_invoice(sub, customer, plan, start, setup_fee=not body.get("exclude_setup_fee"))
            sub["child_invoice_id"] = invoice["invoice_id"]
        if start >= today:  # Zoho emits no events for back-dated actions
            self._emit("subscription_created", "subscription", sub)
            if invoice is not None:
                self._emit("invoice_created", "invoice", invoice)
        return sub

    def _subscription_record(
        self,
        body: dict[str, Any],
        customer: dict[str, Any],
        plan: dict[str, Any],
        plan_line: dict[str, Any],
        addons: list[dict[str, Any]],
        auto_collect: bool,
    ) -> dict[str, Any]:
        """The subscription object without its term dates."""
        product = self.products.get(plan["product_id"], {})
        amount = round(plan_line["total"] + sum(a["total"] for a in addons if a["type"] == "recurring"), 2)
        now = self._ts()
        # Source: the create answer of subscription.yml in Zoho's OpenAPI files and the captured subscription of
        # PipedreamHQ/pipedream components/zoho_subscriptions/sources/subscription-created/test-event.mjs.
        return {
            "subscription_id": self._new_id(),
            "name": f"{product['name']}-{plan['name']}" if product else plan["name"],
            "amount": amount,
            "sub_total": amount,
            "currency_code": "USD",
            "auto_collect": auto_collect,
            "reference_id": str(body.get("reference_id") or ""),
            "created_at": self._today().isoformat(),
            "expires_at": "",
            "cancelled_at": "",
            "interval": plan["interval"],
            "interval_unit": plan["interval_unit"],
            "product_id": plan["product_id"],
            "product_name": product.get("name", ""),
            "plan": plan_line,
            "addons": addons,
            "customer": {k: customer[k] for k in ("customer_id", "display_name", "email")},
            "customer_id": customer["customer_id"],
            "child_invoice_id": "",
            "custom_fields": body.get("custom_fields") or [],
            "created_time": now,
            "updated_time": now,
        }

    def _first_invoice(
        self, sub: dict[str, Any], customer: dict[str, Any], plan: dict[str, Any], start: date, setup_fee: bool
    ) -> dict[str, Any]:
        """The invoice raised when a subscription goes live: plan, addons and setup fee."""
        p = sub["plan"]
        items = [_line(p["plan_code"], p["name"], p["price"], p["quantity"])]
        items += [_line(a["addon_code"], a["name"], a["price"], a["quantity"]) for a in sub["addons"]]
        if plan["setup_fee"] and setup_fee:
            items.append(_line(f"{plan['plan_code']}-setup", "Setup fee", plan["setup_fee"]))
        return self._store_invoice(customer, items, sub["subscription_id"], "sent", "new", start)

    @staticmethod
    def _first_term(plan: dict[str, Any], start: date, today: date, trial_days: int) -> dict[str, Any]:
        """Status and dates of a new subscription: ``future``, ``trial`` (no invoice) or ``live``."""
        if start > today:
            status, nxt, ends = "future", start, start
        elif trial_days > 0:
            status, nxt = "trial", start + timedelta(days=trial_days)
            ends = nxt - timedelta(days=1)
        else:
            status, nxt = "live", _add_interval(start, plan["interval"], plan["interval_unit"])
            ends = nxt - timedelta(days=1)
        live_since = start.isoformat() if status == "live" else ""
        term = {
            "status": status,
            "activated_at": live_since,
            "last_billing_at": live_since,
            "current_term_starts_at": start.isoformat(),
            "current_term_ends_at": ends.isoformat(),
            "next_billing_at": nxt.isoformat(),
        }
        if status == "trial":
            term.update(trial_starts_at=start.isoformat(), trial_ends_at=nxt.isoformat())
        return term

    def _subscription_customer(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("customer_id"):
            customer = self.customers.get(str(body["customer_id"]))
            if customer is None:
                raise ZohoError(400, CODE_INVALID_VALUE, "Invalid value passed for customer_id")
            return customer
        inline = body.get("customer")
        if isinstance(inline, dict) and inline.get("display_name") and inline.get("email"):
            return self.customers[
                self.add_customer(str(inline["display_name"]), str(inline["email"]), **_extra_fields(inline))
            ]
        raise ZohoError(400, CODE_INVALID_VALUE, "customer_id is required.")

    def _subscription_plan(self, spec: Any) -> dict[str, Any]:
        """The subscription's ``plan`` object for a requested plan (code, quantity, optional price)."""
        if not isinstance(spec, dict) or not spec.get("plan_code"):
            raise ZohoError(400, CODE_INVALID_VALUE, "plan_code is required.")
        plan = self.plans.get(str(spec["plan_code"]))
        if plan is None:
            raise ZohoError(400, CODE_INVALID_VALUE, f"The plan {spec['plan_code']} does not exist.")
        if plan["status"] != "active":
            raise ZohoError(400, CODE_INVALID_VALUE, f"The plan {plan['plan_code']} is inactive.")
        quantity = self._quantity(spec)
        price = _money(spec.get("price", plan["recurring_price"]), "price")
        return {"plan_code": plan["plan_code"], "name": plan["name"], "quantity": quantity, "price": price,
                "discount": 0.0, "total": round(price * quantity, 2), "setup_fee": plan["setup_fee"],
                "trial_days": spec.get("trial_days", plan["trial_period"])}  # fmt: skip

    @staticmethod
    def _quantity(spec: dict[str, Any]) -> float:
        quantity = _money(spec.get("quantity", 1), "quantity")
        if quantity <= 0:
            raise ZohoError(400, CODE_INVALID_VALUE, "Invalid value passed for quantity")
        return int(quantity) if quantity.is_integer() else quantity

    def _subscription_addon(self, spec: Any) -> dict[str, Any]:
        code = spec.get("addon_code") if isinstance(spec, dict) else None
        addon = self.addons.get(str(code))
        if addon is None or addon["status"] != "active":
            raise ZohoError(400, CODE_INVALID_VALUE, f"The addon {code} does not exist or is inactive.")
        quantity = self._quantity(spec)
        price = _money(spec.get("price", addon["price_brackets"][0]["price"]), "price")
        return {"addon_code": addon["addon_code"], "name": addon["name"], "type": addon["type"], "quantity": quantity,
                "price": price, "total": round(price * quantity, 2)}  # fmt: skip

    def _date(self, raw: Any, field: str) -> date:
        """A ``YYYY-MM-DD`` request field, today when absent."""
        if not raw:
            return self._today()
        try:
            return date.fromisoformat(str(raw))
        except ValueError:
            raise ZohoError(400, CODE_INVALID_VALUE, f"Invalid value passed for {field}") from None

    # invoices
    def _list_invoices(self) -> Response:
        name, keep = self._filter(INVOICE_FILTERS, "Status.All")
        customer_id, sub_id = request.args.get("customer_id"), request.args.get("subscription_id")
        with self._lock:
            rows = [
                {k: v for k, v in i.items() if k not in INVOICE_LIST_DROP}
                for i in self.invoices.values()
                if keep(i)
                and customer_id in (None, i["customer_id"])
                and (sub_id is None or any(s["subscription_id"] == sub_id for s in i["subscriptions"]))
            ]
            return self._page("invoices", rows, name)

    def _get_invoice(self, invoice_id: str) -> Response:
        with self._lock:
            return _ok("invoice", copy.deepcopy(self._get(self.invoices, invoice_id, "Invoice")))

    def _store_invoice(
        self,
        customer: dict[str, Any],
        items: list[dict[str, Any]],
        subscription_id: str | None,
        status: str,
        transaction_type: str,
        when: date,
    ) -> dict[str, Any]:
        self._invoice_seq += 1
        total = round(sum(i["item_total"] for i in items), 2)
        settled = status in ("paid", "void")
        invoice_id, now = self._new_id(), self._ts()
        # Source: "Retrieve an invoice" in invoices.yml of Zoho's OpenAPI files (its example's key fields).
        invoice = {
            "invoice_id": invoice_id,
            "number": f"INV-{self._invoice_seq:06d}",
            "status": status,
            "invoice_date": when.isoformat(),
            "due_date": when.isoformat(),
            "transaction_type": transaction_type,
            "customer_id": customer["customer_id"],
            "customer_name": customer["display_name"],
            "email": customer["email"],
            "currency_code": "USD",
            "total": total,
            "payment_made": total if status == "paid" else 0.0,
            "balance": 0.0 if settled else total,
            "credits_applied": 0.0,
            "write_off_amount": 0.0,
            "subscriptions": [{"subscription_id": subscription_id}] if subscription_id else [],
            "invoice_items": [{"item_id": self._new_id(), **i} for i in items],
            "payments": [],
            "invoice_url": f"{self.url}/invoices/{invoice_id}",
            "created_time": now,
            "updated_time": now,
        }
        self.invoices[invoice_id] = invoice
        return invoice

    # payments
    def _create_payment(self) -> Response:
        body = self._body()
        for field in ("customer_id", "payment_mode", "amount"):
            if body.get(field) in (None, ""):
                raise ZohoError(400, CODE_INVALID_VALUE, f"{field} is required.")
        amount = _money(body["amount"], "amount")
        if amount <= 0:
            raise ZohoError(400, CODE_INVALID_VALUE, "Invalid value passed for amount")
        with self._lock:
            payment = self._record_payment(body, amount)
            return _ok("payment", copy.deepcopy(payment), 201, "The payment has been created.")

    def _record_payment(self, body: dict[str, Any], amount: float) -> dict[str, Any]:
        """Validate every application first, then apply them all (no partial effect on refusal)."""
        customer = self.customers.get(str(body["customer_id"]))
        if customer is None:
            raise ZohoError(400, CODE_INVALID_VALUE, "Invalid value passed for customer_id")
        applied = self._payment_applications(body.get("invoices") or [], customer["customer_id"])
        if sum(applied.values()) > amount + 0.005:
            raise ZohoError(400, CODE_INVALID_VALUE, "The amount applied to invoices is more than the payment amount.")
        payment_id, when = self._new_id(), self._date(body.get("date"), "date").isoformat()
        # Source: "Retrieve a payment" in payments.yml of Zoho's OpenAPI files (no autotransaction: an offline payment).
        payment: dict[str, Any] = {
            "payment_id": payment_id,
            "status": "success",
            "payment_mode": str(body["payment_mode"]),
            "amount": amount,
            "amount_refunded": 0.0,
            "date": when,
            "reference_number": str(body.get("reference_number") or ""),
            "description": str(body.get("description") or ""),
            "customer_id": customer["customer_id"],
            "customer_name": customer["display_name"],
            "email": customer["email"],
            "currency_code": "USD",
            "invoices": [],
            "created_time": self._ts(),
            "updated_time": self._ts(),
        }
        for invoice_id, value in applied.items():
            payment["invoices"].append(self._apply(self.invoices[invoice_id], payment, value))
        customer["unused_credits"] = round(customer["unused_credits"] + amount - sum(applied.values()), 2)
        self.payments.append(payment)
        self._emit("payment_thankyou", "payment", payment)
        for invoice_id in applied:
            self._reactivate_if_paid(self.invoices[invoice_id])
        return payment

    def _payment_applications(self, specs: Any, customer_id: str) -> dict[str, float]:
        if not isinstance(specs, list):
            raise ZohoError(400, CODE_INVALID_VALUE, "Invalid value passed for invoices")
        applied: dict[str, float] = {}
        for spec in specs:
            if not isinstance(spec, dict) or not spec.get("invoice_id") or spec.get("amount_applied") in (None, ""):
                raise ZohoError(400, CODE_INVALID_VALUE, "invoice_id and amount_applied are required for each invoice.")
            invoice = self.invoices.get(str(spec["invoice_id"]))
            if invoice is None:
                raise ZohoError(400, CODE_INVALID_VALUE, f"Invoice {spec['invoice_id']} does not exist.")
            if invoice["customer_id"] != customer_id:
                raise ZohoError(
                    400, CODE_INVALID_VALUE, f"Invoice {invoice['number']} does not belong to this customer."
                )
            if invoice["status"] in ("void", "draft"):
                raise ZohoError(
                    400,
                    CODE_INVALID_VALUE,
                    f"Payments cannot be recorded for a {invoice['status']} invoice ({invoice['number']}).",
                )
            applied[invoice["invoice_id"]] = round(
                applied.get(invoice["invoice_id"], 0.0) + _money(spec["amount_applied"], "amount_applied"), 2
            )
            if applied[invoice["invoice_id"]] > invoice["balance"] + 0.005:
                raise ZohoError(
                    400,
                    CODE_OVER_APPLIED,
                    f"The amount applied to {invoice['number']} exceeds its balance ({invoice['balance']:.2f}).",
                )
        return applied

    def _apply(self, invoice: dict[str, Any], payment: dict[str, Any], value: float) -> dict[str, Any]:
        invoice["balance"] = round(invoice["balance"] - value, 2)
        invoice["payment_made"] = round(invoice["payment_made"] + value, 2)
        invoice["status"] = "paid" if invoice["balance"] <= 0 else "partially_paid"
        invoice["updated_time"] = self._ts()
        invoice["payments"].append(
            {
                "payment_id": payment["payment_id"],
                "invoice_payment_id": self._new_id(),
                "payment_mode": payment["payment_mode"],
                "amount": value,
                "date": payment["date"],
                "reference_number": payment["reference_number"],
                "description": payment["description"],
            }
        )
        return {
            "invoice_id": invoice["invoice_id"],
            "invoice_number": invoice["number"],
            "amount_applied": value,
            "balance_amount": invoice["balance"],
        }

    def _reactivate_if_paid(self, invoice: dict[str, Any]) -> None:
        """A paid invoice brings an unpaid (dunning) subscription back to live."""
        for ref in invoice["subscriptions"] if invoice["status"] == "paid" else []:
            sub = self.subscriptions.get(ref["subscription_id"])
            if sub is not None and sub["status"] in ("unpaid", "dunning"):
                self._change_status(sub, "live", None, "subscription_activation")

    def _delete_payment(self, payment_id: str) -> Response:
        # DELETE /payments/{payment_id} (Zoho Billing API, "Delete a payment"): the applications are undone, so
        # each invoice it paid is open again with its balance back.
        with self._lock:
            payment = self._get({p["payment_id"]: p for p in self.payments}, payment_id, "Payment")
            for applied in payment["invoices"]:
                invoice = self.invoices[applied["invoice_id"]]
                invoice["payments"] = [p for p in invoice["payments"] if p["payment_id"] != payment_id]
                invoice["balance"] = round(invoice["balance"] + applied["amount_applied"], 2)
                invoice["payment_made"] = round(invoice["payment_made"] - applied["amount_applied"], 2)
                invoice["status"] = "sent" if invoice["payment_made"] <= 0 else "partially_paid"
                invoice["updated_time"] = self._ts()
            customer = self.customers.get(payment["customer_id"])
            if customer is not None:
                unused = payment["amount"] - sum(a["amount_applied"] for a in payment["invoices"])
                customer["unused_credits"] = round(max(0.0, customer["unused_credits"] - unused), 2)
            self.payments.remove(payment)
            return _json({"code": 0, "message": "The payment has been deleted."}, 200)

    def _get_payment(self, payment_id: str) -> Response:
        with self._lock:
            payment = self._get({p["payment_id"]: p for p in self.payments}, payment_id, "Payment")
            return _ok("payment", copy.deepcopy(payment))

    # events (the pull side of webhooks)
    def _list_events(self) -> Response:
        event_type = request.args.get("event_type")
        with self._lock:
            rows = [e for e in self.events if event_type in (None, e["event_type"])]
            return self._page("events", rows, request.args.get("filter_by", "EventTime.All"))

    def _get_event(self, event_id: str) -> Response:
        with self._lock:
            event = self._get({e["event_id"]: e for e in self.events}, event_id, "Event")
            return _ok("event", copy.deepcopy(event))

    # -- webhooks -----------------------------------------------------------------------------------------------
    def webhook_body(self, event_type: str, resource_key: str, obj: dict[str, Any]) -> bytes:
        """A Zoho default-payload webhook body with a fresh ``event_id``."""
        return json.dumps(self._event(event_type, resource_key, obj)).encode()

    def _event(self, event_type: str, resource_key: str, obj: dict[str, Any]) -> dict[str, Any]:
        # The default payload as Zoho delivers it, key for key in Zoho's order: the captured event in
        # PipedreamHQ/pipedream, components/zoho_subscriptions/sources/subscription-created/test-event.mjs
        # (its "payload"): the instant in created_time, event_time only a date. event_source is "user" there, the
        # one value on record.
        moment = datetime.fromtimestamp(self._now(), self.tz)
        return {
            "created_time": moment.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "event_id": self._new_id(),
            "event_type": event_type,
            "data": {resource_key: obj},
            "event_time_formatted": moment.strftime("%d %b %Y"),
            "event_source": "user",
            "event_time": moment.date().isoformat(),
        }

    @staticmethod
    def sign(body: bytes, secret: str, query: dict[str, str] | None = None) -> str:
        """``X-Zoho-Webhook-Signature``: hex HMAC-SHA256 over sorted ``key+value`` query pairs plus the raw body."""
        prefix = "".join(f"{k}{v}" for k, v in sorted((query or {}).items())).encode()
        return hmac.new(secret.encode(), prefix + body, hashlib.sha256).hexdigest()

    def emit_event(self, event_type: str, resource_key: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Log an event and post it to the webhook target (if set); returns the event log entry."""
        with self._lock:
            return self._emit(event_type, resource_key, copy.deepcopy(obj))

    def flush_webhooks(self, timeout: float = 5.0) -> bool:
        """Wait until every queued webhook has been delivered or has failed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._wh_cond:
            while self._wh_pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wh_cond.wait(remaining)
        return True

    def _emit(self, event_type: str, resource_key: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = self._event(event_type, resource_key, obj)
        body = json.dumps(event).encode()
        record = {k: event[k] for k in ("event_id", "event_type", "event_time")}
        record.update(payload=body.decode(), webhooks=[])
        self.events.append(record)
        target, wanted = self.webhook_target, self.webhook_events
        if target is not None and (wanted is None or event_type in wanted):
            hook = {"webhook_id": "1", "url": target[0], "status": "scheduled", "last_updated_time": self._ts()}
            record["webhooks"].append(hook)
            if self.webhook_loss and self._loss.random() < self.webhook_loss:
                hook["status"] = "failure"
                self.webhooks_lost += 1
                delivery = {"event_id": record["event_id"], "event_type": event_type, "url": target[0]}
                self.webhook_deliveries.append(delivery | {"status": None, "error": "lost"})
                return record
            self._enqueue_webhook(target[0], target[1], body, record)
        return record

    def _catalog_event(self, event_type: str, resource_key: str, obj: dict[str, Any]) -> None:
        """A catalogue change's event, when a workflow sends them (``catalog_events``); the lock is held."""
        if self.catalog_events:
            self._emit(event_type, resource_key, copy.deepcopy(obj))

    def _enqueue_webhook(self, url: str, secret: str, body: bytes, record: dict[str, Any]) -> None:
        with self._wh_cond:
            self._wh_pending += 1
            if self._wh_thread is None:
                self._wh_thread = threading.Thread(target=self._webhook_loop, name="sim-zoho-webhooks", daemon=True)
                self._wh_thread.start()
        self._wh_queue.put((url, secret, body, record))

    def _webhook_loop(self) -> None:
        """Deliver queued webhooks in order, one at a time; errors are recorded, never raised."""
        while (item := self._wh_queue.get()) is not None:
            try:
                self._deliver(*item)
            finally:
                with self._wh_cond:
                    self._wh_pending -= 1
                    self._wh_cond.notify_all()

    def _deliver(self, url: str, secret: str, body: bytes, record: dict[str, Any]) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))
        if self.webhook_encoding == "form":
            # The webhook's body set to x-www-form-urlencoded with one payload pair (reference §5.1); the form
            # pair is signed, decoded, with the query pairs (the KB page "securing webhooks").
            text = body.decode()
            signature = self.sign(b"", secret, {**query, "payload": text})
            body = urllib.parse.urlencode({"payload": text}).encode("ascii")
            headers = {"Content-Type": "application/x-www-form-urlencoded", SIGNATURE_HEADER: signature}
        else:
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: self.sign(body, secret, query)}
        status: int | None = None
        error = ""
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with _NO_PROXY.open(req, timeout=WEBHOOK_TIMEOUT_SECONDS) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, str(exc)
            exc.close()
        except Exception as exc:  # noqa: BLE001 - a failed delivery is recorded, like Zoho's "failure" status
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            outcome = "success" if status and 200 <= status < 300 else "failure"
            record["webhooks"][-1].update(status=outcome, last_updated_time=self._ts())
            delivery = {"event_id": record["event_id"], "event_type": record["event_type"], "url": url}
            self.webhook_deliveries.append(delivery | {"status": status, "error": error})

    # -- in-process helpers: catalogue ------------------------------------------------------------------------
    def add_product(self, name: str, product_id: str | None = None) -> str:
        """Add a product; returns its id."""
        with self._lock:
            product_id = product_id or self._new_id()
            now = self._ts()
            self.products[product_id] = {
                "product_id": product_id, "name": name, "description": "", "email_ids": "", "redirect_url": "",
                "status": "active", "created_time": now, "updated_time": now,
            }  # fmt: skip
            self._catalog_event("product_created", "product", self.products[product_id])
            return product_id

    def update_product(self, product_id: str, **fields: Any) -> dict[str, Any]:
        """Change a product's fields (``updated_time`` moves); returns a copy of it."""
        with self._lock:
            product = self.products[product_id]
            product.update(fields, updated_time=self._ts())
            self._catalog_event("product_updated", "product", product)
            return copy.deepcopy(product)

    def _default_product(self) -> str:
        return next(iter(self.products), None) or self.add_product("Default product")

    def add_plan(
        self,
        plan_code: str,
        name: str,
        recurring_price: float,
        interval: int = 1,
        interval_unit: str = "months",
        status: str = "active",
        product_id: str | None = None,
        description: str = "",
        trial_period: int = 0,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a plan (to the first product unless ``product_id``); returns a copy of it."""
        with self._lock:
            now = self._ts()
            self.plans[plan_code] = {
                "plan_code": plan_code, "name": name, "description": description, "status": status,
                "product_id": product_id or self._default_product(), "product_type": "service",
                "recurring_price": float(recurring_price), "unit": "", "interval": interval,
                "interval_unit": interval_unit, "billing_cycles": -1, "trial_period": trial_period,
                "setup_fee": 0.0, "tax_id": "", "custom_fields": [], "tags": [],
                "created_time": now, "updated_time": now, **extra,
            }  # fmt: skip
            self._catalog_event("plan_created", "plan", self.plans[plan_code])
            return copy.deepcopy(self.plans[plan_code])

    def update_plan(self, plan_code: str, **fields: Any) -> dict[str, Any]:
        """Change a plan's fields (``updated_time`` moves); returns a copy of it."""
        with self._lock:
            plan = self.plans[plan_code]
            plan.update(fields, updated_time=self._ts())
            self._catalog_event("plan_updated", "plan", plan)
            return copy.deepcopy(plan)

    def remove_plan(self, plan_code: str) -> None:
        """Delete a plan, as if it had been deleted in Zoho."""
        with self._lock:
            self._catalog_event("plan_deleted", "plan", self.plans.pop(plan_code))

    def add_addon(
        self,
        addon_code: str,
        name: str,
        price: float,
        type: str = "recurring",  # noqa: A002 - Zoho's field name
        interval_unit: str = "monthly",
        status: str = "active",
        product_id: str | None = None,
        description: str = "",
        **extra: Any,
    ) -> dict[str, Any]:
        """Add an addon applicable to all plans, with one unit price bracket; returns a copy of it."""
        with self._lock:
            now = self._ts()
            self.addons[addon_code] = {
                "addon_code": addon_code, "name": name, "description": description, "unit_name": "unit",
                "type": type, "interval_unit": interval_unit, "pricing_scheme": "unit",
                "price_brackets": [{"start_quantity": 1, "end_quantity": -1, "price": float(price)}],
                "applicable_to_all_plans": True, "plans": [], "status": status,
                "product_id": product_id or self._default_product(), "tax_id": "",
                "created_time": now, "updated_time": now, **extra,
            }  # fmt: skip
            self._catalog_event("addon_created", "addon", self.addons[addon_code])
            return copy.deepcopy(self.addons[addon_code])

    def update_addon(self, addon_code: str, **fields: Any) -> dict[str, Any]:
        """Change an addon's fields (``updated_time`` moves); returns a copy of it."""
        with self._lock:
            addon = self.addons[addon_code]
            addon.update(fields, updated_time=self._ts())
            self._catalog_event("addon_updated", "addon", addon)
            return copy.deepcopy(addon)

    def remove_addon(self, addon_code: str) -> None:
        """Delete an addon."""
        with self._lock:
            self._catalog_event("addon_deleted", "addon", self.addons.pop(addon_code))

    def seed_sample_data(self) -> dict[str, Any]:
        """One product, three plans (one inactive) and two addons; returns their ids and codes."""
        with self._lock:
            product_id = self.add_product("GatorHost")
            self.add_plan("basic-monthly", "Basic", 50, product_id=product_id, description="Basic monthly plan.")
            self.add_plan(
                "pro-annual",
                "Pro",
                500,
                interval_unit="years",
                product_id=product_id,
                description="Pro, billed yearly.",
            )
            self.add_plan(
                "legacy-monthly", "Legacy", 30, status="inactive", product_id=product_id, description="Retired plan."
            )
            self.add_addon("email-basic", "Email addon", 10, product_id=product_id, description="Mailboxes.")
            self.add_addon(
                "migration",
                "Site migration",
                99,
                type="one_time",
                product_id=product_id,
                description="One-off migration.",
            )
            return {
                "product_id": product_id,
                "plans": ["basic-monthly", "pro-annual", "legacy-monthly"],
                "addons": ["email-basic", "migration"],
            }

    # -- in-process helpers: customers, invoices, subscriptions -----------------------------------------------
    def add_customer(self, display_name: str, email: str, **fields: Any) -> str:
        """Add a customer; returns its id."""
        with self._lock:
            customer_id, now = self._new_id(), self._ts()
            # Source: payrollhero/zoho-subscriptions spec/fixtures/responses/customers/187955000000050001-get-200.json
            # (recorded) and the customer example of customers.yml in Zoho's OpenAPI files.
            customer = {
                "customer_id": customer_id, "display_name": display_name, "first_name": "", "last_name": "",
                "company_name": "", "email": email, "phone": "", "currency_code": "USD", "status": "active",
                "outstanding": 0.0, "unused_credits": 0.0, "billing_address": {}, "shipping_address": {},
                "custom_fields": [], "created_time": now, "updated_time": now,
            }  # fmt: skip
            customer.update({k: v for k, v in fields.items() if k not in self._CUSTOMER_READONLY})
            self.customers[customer_id] = customer
            return customer_id

    def delete_customer(self, customer_id: str) -> None:
        """Delete a customer, as a Zoho user can in the web app: its id then answers 400/3004."""
        with self._lock:
            del self.customers[customer_id]

    def customer(self, customer_id: str) -> dict[str, Any]:
        """A copy of a customer (with its current ``outstanding``)."""
        with self._lock:
            return self._customer_view(self.customers[customer_id])

    def raise_invoice(
        self, customer_id: str, amount: float, subscription_id: str | None = None, status: str = "sent"
    ) -> dict[str, Any]:
        """Raise a one-line invoice (emits ``invoice_created``); returns a copy of it."""
        with self._lock:
            customer = self.customers[customer_id]
            item = _line("charge", "Charge", round(float(amount), 2))
            kind = "renewal" if subscription_id else "manual"
            invoice = self._store_invoice(customer, [item], subscription_id, status, kind, self._today())
            self._emit("invoice_created", "invoice", invoice)
            return copy.deepcopy(invoice)

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        """A copy of an invoice."""
        with self._lock:
            return copy.deepcopy(self.invoices[invoice_id])

    # What finance does to an invoice by hand in Zoho Billing (Invoices → More → Void / Write Off / Apply Credits /
    # Record Payment): each changes the balance a collection sees on its next read.
    def void_invoice(self, invoice_id: str) -> dict[str, Any]:
        """Void an invoice (POST /invoices/{id}/status/void): balance 0, status ``void``; a copy."""
        with self._lock:
            invoice = self.invoices[invoice_id]
            invoice.update(status="void", balance=0.0, updated_time=self._ts())
            return copy.deepcopy(invoice)

    def write_off_invoice(self, invoice_id: str) -> dict[str, Any]:
        """Write off the balance (POST /invoices/{id}/writeoff): status ``paid``, ``write_off_amount`` set; a copy."""
        with self._lock:
            invoice = self.invoices[invoice_id]
            invoice.update(write_off_amount=invoice["balance"], balance=0.0, status="paid", updated_time=self._ts())
            return copy.deepcopy(invoice)

    def apply_credit_note(self, invoice_id: str, amount: float) -> dict[str, Any]:
        """Apply ``amount`` of a credit note to the invoice (lowers its balance, ``credits_applied``); a copy."""
        with self._lock:
            invoice = self.invoices[invoice_id]
            value = round(min(float(amount), invoice["balance"]), 2)
            invoice["credits_applied"] = round(invoice["credits_applied"] + value, 2)
            invoice["balance"] = round(invoice["balance"] - value, 2)
            invoice["status"] = "paid" if invoice["balance"] <= 0 else "partially_paid"
            invoice["updated_time"] = self._ts()
            return copy.deepcopy(invoice)

    def pay_offline(self, invoice_id: str, amount: float, mode: str = "check",
                    reference_number: str = "") -> dict[str, Any]:
        """Record a payment made outside the service (a cheque, a bank transfer), applied to the invoice."""
        with self._lock:
            invoice = self.invoices[invoice_id]
            body = {"customer_id": invoice["customer_id"], "payment_mode": mode, "amount": amount,
                    "reference_number": reference_number, "description": f"{mode} received",
                    "invoices": [{"invoice_id": invoice_id, "amount_applied": amount}]}
            return copy.deepcopy(self._record_payment(body, round(float(amount), 2)))

    def payments_for_invoice(self, invoice_id: str) -> list[dict[str, Any]]:
        """Copies of the recorded payments applied to an invoice."""
        with self._lock:
            return [
                copy.deepcopy(p) for p in self.payments if any(i["invoice_id"] == invoice_id for i in p["invoices"])
            ]

    def subscription(self, sub_id: str) -> dict[str, Any]:
        """A copy of a subscription."""
        with self._lock:
            return copy.deepcopy(self.subscriptions[sub_id])

    def set_subscription_status(
        self, sub_id: str, status: str, next_billing_at: str | None = None, event_type: str | None = None
    ) -> dict[str, Any]:
        """Change a subscription's status and emit the matching ``subscription_*`` event; returns a copy."""
        if status not in SUBSCRIPTION_STATUSES:
            raise ValueError(f"unknown Zoho subscription status {status!r}")
        with self._lock:
            sub = self.subscriptions[sub_id]
            if event_type is None and status == "live":
                event_type = (
                    "subscription_reactivated"
                    if sub["status"] in ("non_renewing", "cancelled", "cancelled_from_dunning", "expired")
                    else "subscription_activation"
                )
            self._change_status(sub, status, next_billing_at, event_type or STATUS_EVENTS.get(status))
            return copy.deepcopy(sub)

    def _change_status(
        self, sub: dict[str, Any], status: str, next_billing_at: str | None, event_type: str | None
    ) -> None:
        sub["status"] = status
        if next_billing_at is not None:
            sub["next_billing_at"] = next_billing_at
        if status in ("cancelled", "cancelled_from_dunning"):
            sub["cancelled_at"] = self._today().isoformat()
        if status == "live" and not sub["activated_at"]:
            sub["activated_at"] = self._today().isoformat()
        sub["updated_time"] = self._ts()
        if event_type:
            self._emit(event_type, "subscription", sub)

    def renew_subscription(self, sub_id: str) -> dict[str, Any]:
        """Start the next term: raise the renewal invoice, move the dates, emit the events; returns the invoice."""
        with self._lock:
            sub = self.subscriptions[sub_id]
            start = date.fromisoformat(sub["next_billing_at"])
            nxt = _add_interval(start, sub["interval"], sub["interval_unit"])
            if sub["status"] in ("trial", "future"):  # the first paid term begins
                sub.update(status="live", activated_at=start.isoformat())
            sub.update(
                current_term_starts_at=start.isoformat(),
                current_term_ends_at=(nxt - timedelta(days=1)).isoformat(),
                next_billing_at=nxt.isoformat(),
                last_billing_at=start.isoformat(),
                updated_time=self._ts(),
            )
            item = _line(sub["plan"]["plan_code"], sub["plan"]["name"], sub["amount"])
            invoice = self._store_invoice(self.customers[sub["customer_id"]], [item], sub_id, "sent", "renewal", start)
            self._emit("subscription_renewed", "subscription", sub)
            self._emit("invoice_created", "invoice", invoice)
            return copy.deepcopy(invoice)

    # -- control routes for a simulator run as its own process ---------------------------------------------------
    def _control_routes(self) -> Blueprint:
        bp = Blueprint("zoho_control", __name__, url_prefix="/_sim/zoho")

        @bp.post("/seed")
        def seed() -> tuple[dict[str, Any], int]:
            return self.seed_sample_data(), 201

        @bp.post("/expire_tokens")
        def expire() -> dict[str, Any]:
            self.expire_tokens()
            return {"ok": True}

        @bp.put("/webhook_target")
        def webhook_target() -> dict[str, Any]:
            spec = request.get_json(force=True) or {}
            self.webhook_target = (spec["url"], spec["secret"]) if spec.get("url") else None
            return {"ok": True}

        @bp.post("/invoices")
        def invoice() -> tuple[dict[str, Any], int]:
            spec = request.get_json(force=True) or {}
            inv = self.raise_invoice(
                spec["customer_id"], spec["amount"], spec.get("subscription_id"), spec.get("status", "sent")
            )
            return inv, 201

        @bp.post("/subscriptions/<sub_id>/status")
        def status(sub_id: str) -> dict[str, Any]:
            spec = request.get_json(force=True) or {}
            return self.set_subscription_status(
                sub_id, spec["status"], spec.get("next_billing_at"), spec.get("event_type")
            )

        @bp.get("/state")
        def state() -> dict[str, Any]:
            with self._lock:
                counters = ("tokens_minted", "tokens_throttled", "rate_limited", "max_in_flight_seen")
                return {k: getattr(self, k) for k in counters} | {"payments": copy.deepcopy(self.payments)}

        return bp

    # -- audit test helper (added for the payments audit's tests, integration/audit) ----------------------------
    def backdate_invoice(self, invoice_id: str, days: float) -> dict[str, Any]:
        """Move an invoice's ``invoice_date``, ``due_date`` and ``created_time`` ``days`` into the past; a copy."""
        with self._lock:
            invoice = self.invoices[invoice_id]
            then = datetime.fromtimestamp(self._now() - days * 86400, self.tz)
            invoice.update(invoice_date=then.date().isoformat(), due_date=then.date().isoformat(),
                           created_time=then.strftime("%Y-%m-%dT%H:%M:%S%z"))
            return copy.deepcopy(invoice)


def main(argv: list[str] | None = None) -> None:
    """Run the simulator in the foreground: ``python -m simulators.zoho --port 9100 --seed``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", action="store_true", help="load the sample catalogue")
    parser.add_argument("--requests-per-minute", type=int, default=None)
    parser.add_argument("--max-concurrent", type=int, default=None)
    args = parser.parse_args(argv)
    sim = ZohoSimulator(
        host=args.host, port=args.port, requests_per_minute=args.requests_per_minute, max_concurrent=args.max_concurrent
    )
    if args.seed:
        sim.seed_sample_data()
    sim.serve_forever()


if __name__ == "__main__":
    main()
