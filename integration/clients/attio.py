"""The Attio REST API v2 client: records and schema calls in Attio's words, guarded by ``HttpCaller``.

Every call declares itself a read (GET, ``POST .../records/query``) or a write, so ``AttioLimiter`` takes the
slot from the matching shared budget (Attio allows about 100 reads/s and 25 writes/s per workspace). Errors
come out as the service's tree (``integration.errors``) with Attio's ``code``, message and
``X-Attio-Execution-Id``.

Writes clear an attribute with ``[]``, whatever its type: the records operations of Attio's OpenAPI document
type every value as an array (``data.values.additionalProperties: {type: array}``), the currency page of the
attribute-type docs says currency "does not support null values", and an empty string is a text value, not an
absence. Callers may say "clear" with ``None``, ``""`` or ``[]``; all three are sent as ``[]`` (``write_values``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import pybreaker
import redis
import requests

from ..config import Settings
from ..errors import ServiceRejected, ServiceUnavailable
from ._http import HttpCaller, Limiter
from .breaker import make_breaker
from .budget import RateBudget
from .quota import CallMeter

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "PROVIDER",
    "RECORD_EVENTS",
    "AttioClient",
    "AttioLimiter",
    "build_attio_client",
    "subscriptions_filter",
    "write_values",
]

PROVIDER = "attio"
DEFAULT_PAGE_SIZE = 500  # rows per records query page; Attio's default (reference/attio.md §3.1)
RECORD_EVENTS = ("record.created", "record.updated")  # what the service's Attio webhook subscribes to
WEBHOOK_PAGE = 100  # GET /v2/webhooks: limit 10–100 (reference/attio.md §2.1)


def write_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A write's ``values`` with every clear (``None``, ``""``, ``[]``) in Attio's documented form, ``[]``."""
    return {slug: [] if v is None or v == "" or v == [] else v for slug, v in values.items()}


def subscriptions_filter(object_id: str) -> dict[str, Any]:
    """The webhook filter of the service: events of one object (``subscriptions``), not caused by an API token.

    Attio's webhook filters: ``$and`` of ``{field, operator, value}``, ``field`` a dot-path into the event
    (``id.object_id``, ``actor.type``), operators ``equals`` / ``not_equals`` (``POST /v2/webhooks`` in Attio's
    OpenAPI document; docs "how-to/webhooks").
    """
    return {"$and": [
        {"field": "id.object_id", "operator": "equals", "value": object_id},
        {"field": "actor.type", "operator": "not_equals", "value": "api-token"},
    ]}  # fmt: skip

# Share of each Attio budget kept for money work. Smaller than Zoho's: the window is one second, so a money call
# that finds the budget full waits at most about a second (bulk stands aside meanwhile), and bulk keeps 90 %.
ATTIO_MONEY_RESERVE = 0.1


def _parse_error(resp: requests.Response) -> tuple[str | None, str]:
    """(code, message) from Attio's error body ``{"status_code","type","code","message"}``."""
    body = resp.json()
    message = str(body.get("message") or resp.reason or "")
    # validation_type errors may list the offending paths; keep them, they say which value was refused
    details = [
        f"{'.'.join(str(p) for p in item.get('path') or [])}: {item.get('message')}"
        for item in body.get("validation_errors") or []
        if isinstance(item, dict)
    ]
    if details:
        message = f"{message} ({'; '.join(details)})"
    return (str(body["code"]) if body.get("code") else None), message


def _seg(value: str) -> str:
    """One path segment, quoted so an id or slug can never change the path."""
    return quote(str(value), safe="")


class AttioLimiter(Limiter):
    """Shared per-second budgets for Attio reads and writes (Redis keys ``budget:attio:reads|writes``)."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        reads_per_second: int,
        writes_per_second: int,
        max_wait: float = 10.0,
        reserve: float = ATTIO_MONEY_RESERVE,
        meter: CallMeter | None = None,
    ) -> None:
        self.meter = meter  # counts calls per operation (integration.clients.quota)
        self.reads = RateBudget(
            connection, f"{PROVIDER}:reads", limit=reads_per_second, period=1.0, max_wait=max_wait, reserve=reserve
        )
        self.writes = RateBudget(
            connection, f"{PROVIDER}:writes", limit=writes_per_second, period=1.0, max_wait=max_wait, reserve=reserve
        )

    @contextlib.contextmanager
    def enter(self, kind: str) -> Iterator[None]:
        """Take one slot of the read or write budget (waiting, or raising ServiceUnavailable) for one call."""
        if kind not in ("read", "write"):
            raise ValueError(f"Attio call kind must be 'read' or 'write', got {kind!r}")
        (self.reads if kind == "read" else self.writes).acquire(PROVIDER)
        if self.meter is not None:
            self.meter.count()
        yield


class AttioClient:
    """Attio REST API v2: records (get, query, assert, create, update) and schema (objects, attributes, options)."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        http: requests.Session,
        timeout: tuple[float, float],
        breaker: pybreaker.CircuitBreaker | None = None,
        limiter: Limiter | None = None,
        inline_wait: float = 0.0,
    ) -> None:
        self._caller = HttpCaller(
            provider=PROVIDER,
            base_url=base_url.rstrip("/"),
            http=http,
            timeout=timeout,
            breaker=breaker,
            limiter=limiter,
            parse_error=_parse_error,
            inline_wait=inline_wait,
        )
        # per request, not on the session: a session may be shared with other clients
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    # -- records ----------------------------------------------------------------------------------------------
    def get_record(self, object: str, record_id: str) -> dict[str, Any] | None:
        """One record, or None when Attio answers 404 (deleted, merged away, or never existed)."""
        try:
            return self._one("GET", f"/v2/objects/{_seg(object)}/records/{_seg(record_id)}", kind="read")
        except ServiceRejected as exc:
            if exc.status == 404:
                return None
            raise

    def query_records(
        self,
        object: str,
        filter: Mapping[str, Any] | None = None,
        *,
        sorts: list[Mapping[str, Any]] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> list[dict[str, Any]]:
        """Every record matching ``filter`` (Attio's filter syntax), paging by offset until a short page."""
        if page_size < 1:
            raise ValueError("page_size must be positive")
        body: dict[str, Any] = {"limit": page_size}
        if filter is not None:
            body["filter"] = dict(filter)
        if sorts is not None:
            body["sorts"] = [dict(s) for s in sorts]
        rows: list[dict[str, Any]] = []
        while True:
            body["offset"] = len(rows)
            page = self._many("POST", f"/v2/objects/{_seg(object)}/records/query", kind="read", json=body)
            rows.extend(page)
            if len(page) < page_size:
                return rows

    def find_records(self, object: str, attribute: str, value: Any) -> list[dict[str, Any]]:
        """The records whose ``attribute`` equals ``value`` (shorthand equality filter)."""
        return self.query_records(object, {attribute: value})

    def assert_record(self, object: str, matching_attribute: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update the record whose unique ``matching_attribute`` equals the one in ``values``."""
        return self._one(
            "PUT",
            f"/v2/objects/{_seg(object)}/records",
            kind="write",
            params={"matching_attribute": matching_attribute},
            json={"data": {"values": write_values(values)}},
        )

    def create_record(self, object: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Create a record (Attio refuses a unique-value clash with ``uniqueness_conflict``)."""
        return self._one(
            "POST", f"/v2/objects/{_seg(object)}/records", kind="write", json={"data": {"values": write_values(values)}}
        )

    def update_record(self, object: str, record_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Change the listed attributes of a record (PATCH: multiselect values are appended)."""
        return self._one(
            "PATCH",
            f"/v2/objects/{_seg(object)}/records/{_seg(record_id)}",
            kind="write",
            json={"data": {"values": write_values(values)}},
        )

    # -- schema -----------------------------------------------------------------------------------------------
    def list_objects(self) -> list[dict[str, Any]]:
        """Every object of the workspace (standard and custom)."""
        return self._many("GET", "/v2/objects", kind="read")

    def get_object(self, slug: str) -> dict[str, Any] | None:
        """One object by slug or id, or None when it does not exist."""
        try:
            return self._one("GET", f"/v2/objects/{_seg(slug)}", kind="read")
        except ServiceRejected as exc:
            if exc.status == 404:
                return None
            raise

    def create_object(self, api_slug: str, singular: str, plural: str) -> dict[str, Any]:
        """Create a custom object (409 ``slug_conflict`` when the slug is taken)."""
        body = {"data": {"api_slug": api_slug, "singular_noun": singular, "plural_noun": plural}}
        return self._one("POST", "/v2/objects", kind="write", json=body)

    def list_attributes(self, object: str, *, show_archived: bool = False) -> list[dict[str, Any]]:
        """The attributes of an object (archived ones too when asked)."""
        params = {"show_archived": "true"} if show_archived else None
        return self._many("GET", f"/v2/objects/{_seg(object)}/attributes", kind="read", params=params)

    def create_attribute(self, object: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create an attribute from Attio's create body (title, api_slug, type, is_unique, config, ...)."""
        return self._one("POST", f"/v2/objects/{_seg(object)}/attributes", kind="write", json={"data": dict(body)})

    def list_options(self, object: str, attribute: str, *, show_archived: bool = False) -> list[dict[str, Any]]:
        """The options of a select attribute (archived ones too when asked)."""
        params = {"show_archived": "true"} if show_archived else None
        path = f"/v2/objects/{_seg(object)}/attributes/{_seg(attribute)}/options"
        return self._many("GET", path, kind="read", params=params)

    def create_option(self, object: str, attribute: str, title: str) -> dict[str, Any]:
        """Add an option to a select attribute (409 ``slug_conflict`` when the title exists)."""
        path = f"/v2/objects/{_seg(object)}/attributes/{_seg(attribute)}/options"
        return self._one("POST", path, kind="write", json={"data": {"title": title}})

    # -- the token ----------------------------------------------------------------------------------------------
    def token_info(self) -> dict[str, Any]:
        """What Attio says of the token (``GET /v2/self``: ``active``, ``scope``, ``workspace_name``; no ``data``)."""
        resp = self._caller.request("GET", "/v2/self", kind="read", headers=self._headers)
        try:
            body = resp.json()
        except ValueError as exc:
            raise ServiceUnavailable(PROVIDER, "GET /v2/self: unexpected response body") from exc
        return body if isinstance(body, dict) else {}

    # -- webhooks ---------------------------------------------------------------------------------------------
    def list_webhooks(self) -> list[dict[str, Any]]:
        """Every webhook of the workspace (``GET /v2/webhooks``, paged by ``limit``/``offset``)."""
        rows: list[dict[str, Any]] = []
        while True:
            params = {"limit": WEBHOOK_PAGE, "offset": len(rows)}
            page = self._many("GET", "/v2/webhooks", kind="read", params=params)
            rows.extend(page)
            if len(page) < WEBHOOK_PAGE:
                return rows

    def create_webhook(self, target_url: str, subscriptions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Create a webhook; the answer holds its ``secret``, the only time Attio shows it."""
        body = {"data": {"target_url": target_url, "subscriptions": [dict(s) for s in subscriptions]}}
        return self._one("POST", "/v2/webhooks", kind="write", json=body)

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _one(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        data: dict[str, Any] = self._data(method, path, expect=dict, **kw)
        return data

    def _many(self, method: str, path: str, **kw: Any) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._data(method, path, expect=list, **kw)
        return data

    def _data(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        expect: type,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        resp = self._caller.request(method, path, kind=kind, params=params, json=json, headers=self._headers)
        try:
            data = resp.json()["data"]
            if not isinstance(data, expect):
                raise TypeError(f"data is {type(data).__name__}")
            return data
        except (ValueError, KeyError, TypeError) as exc:
            # a 2xx that is not Attio's {"data": ...} comes from something in between (proxy, outage page)
            raise ServiceUnavailable(
                PROVIDER,
                f"{method} {path.split('?')[0]}: unexpected response body",
                status=resp.status_code,
                request_id=resp.headers.get("X-Attio-Execution-Id"),
            ) from exc


def build_attio_client(
    settings: Settings, connection: redis.Redis, *, http: requests.Session | None = None
) -> AttioClient:
    """An AttioClient wired from settings: shared breaker and read/write budgets in ``connection``'s Redis."""
    return AttioClient(
        base_url=settings.attio_api_url,
        token=settings.attio_api_key,
        http=http if http is not None else requests.Session(),
        timeout=settings.http_timeout,
        breaker=make_breaker(connection, PROVIDER),
        limiter=AttioLimiter(
            connection,
            reads_per_second=settings.attio_reads_per_second,
            writes_per_second=settings.attio_writes_per_second,
            meter=CallMeter(connection, PROVIDER),
        ),
        inline_wait=settings.inline_wait_seconds,
    )
