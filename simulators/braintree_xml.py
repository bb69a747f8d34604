"""XML for the Braintree simulator: parse the SDK's requests, render gateway-shaped answers.

Requests (``braintree/util/generator.py``) use underscored names, ``type="boolean"|"integer"|"array"|"datetime"``
attributes, ``<item>`` children in arrays and an empty element for ``None``. Answers use the gateway's dashed names
and the typed attributes the SDK's parser (``braintree/util/parser.py``) needs: booleans, integers, datetimes and
arrays are typed, ``nil="true"`` stands for None, and an api-error-response always holds ``<errors type="array"/>``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

__all__ = [
    "Items",
    "ParseError",
    "api_error_response",
    "card_fields",
    "collection",
    "customer_fields",
    "dispute_fields",
    "document",
    "echo_params",
    "element",
    "matches",
    "parse_datetime",
    "parse_request",
    "search_results",
    "text_matches",
    "transaction_fields",
]

log = logging.getLogger(__name__)

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class ParseError(ValueError):
    """The request body is not XML the SDK would send."""


# -- requests ---------------------------------------------------------------------------------------------------


def parse_request(body: bytes) -> tuple[str | None, Any]:
    """Parse a request body into ``(root tag, value)``; an empty body gives ``(None, {})``."""
    if not body.strip():
        return None, {}
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ParseError(str(exc)) from exc
    return _tag(root.tag), _node(root)


def _tag(name: str) -> str:
    return name.replace("-", "_")


def _node(el: ET.Element) -> Any:
    kind = el.get("type")
    if kind == "array":
        return [_node(child) for child in el]
    if len(el):
        return {_tag(child.tag): _node(child) for child in el}
    text = el.text or ""
    if el.get("nil") == "true" or (not text and kind is None):
        return None
    if kind == "boolean":
        return text.strip() in ("true", "1")
    if kind == "integer":
        return int(text)
    if kind == "datetime":
        return parse_datetime(text)
    return text


def parse_datetime(text: str) -> datetime:
    """``2024-01-02T03:04:05Z`` (the SDK's format; offsets accepted) as an aware UTC datetime."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# -- answers ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Items:
    """An XML array: ``<name type="array">`` holding one ``<tag>`` element per value."""

    tag: str
    values: Iterable[Any]


def element(name: str, value: Any) -> str:
    """Render one gateway element; underscores in ``name`` (and in nested keys) become dashes."""
    tag = name.replace("_", "-")
    if value is None:
        return f'<{tag} nil="true"/>'
    if isinstance(value, bool):
        return f'<{tag} type="boolean">{"true" if value else "false"}</{tag}>'
    if isinstance(value, int):
        return f'<{tag} type="integer">{value}</{tag}>'
    if isinstance(value, datetime):
        stamp = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f'<{tag} type="datetime">{stamp}</{tag}>'
    if isinstance(value, date):
        return f'<{tag} type="date">{value.isoformat()}</{tag}>'
    if isinstance(value, Items):
        inner = "".join(element(value.tag, item) for item in value.values)
        return f'<{tag} type="array">{inner}</{tag}>' if inner else f'<{tag} type="array"/>'
    if isinstance(value, Mapping):
        return f"<{tag}>{''.join(element(k, v) for k, v in value.items())}</{tag}>"
    if isinstance(value, (str, Decimal)):
        return f"<{tag}>{escape(str(value))}</{tag}>"
    raise TypeError(f"cannot render {type(value).__name__} as XML")


def document(name: str, value: Mapping[str, Any]) -> str:
    """A whole answer body, with the XML declaration the gateway sends."""
    return DECLARATION + element(name, value)


def api_error_response(
    message: str,
    errors: Iterable[tuple[tuple[str, ...], str, str, str]] = (),
    *,
    params: Mapping[str, Any] | None = None,
    transaction: Mapping[str, Any] | None = None,
) -> str:
    """An ``<api-error-response>``; each error is ``(path, code, attribute, message)``, path e.g. ``("customer",)``."""
    tree: dict[str, Any] = {}
    for path, code, attribute, text in errors:
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node.setdefault("__errors__", []).append((code, attribute, text))
    body = "<errors>" + _errors_tree(tree) + "</errors>"
    if params is not None:
        body += element("params", params)
    body += element("message", message)
    if transaction is not None:
        body += element("transaction", transaction)
    return DECLARATION + f"<api-error-response>{body}</api-error-response>"


def _errors_tree(node: Mapping[str, Any]) -> str:
    # The SDK's ErrorResult needs an <errors type="array"> at every level, even an empty one.
    items = "".join(
        f'<error><code>{escape(code)}</code><attribute type="symbol">{escape(attr)}</attribute>'
        f"<message>{escape(text)}</message></error>"
        for code, attr, text in node.get("__errors__", [])
    )
    out = f'<errors type="array">{items}</errors>' if items else '<errors type="array"/>'
    for key, child in node.items():
        if key != "__errors__":
            tag = key.replace("_", "-")
            out += f"<{tag}>{_errors_tree(child)}</{tag}>"
    return out


def search_results(ids: list[str], page_size: int = 50) -> str:
    """The ``advanced_search_ids`` answer; ``page-size`` is required (the SDK pages the ids itself)."""
    return document("search_results", {"page_size": page_size, "ids": Items("item", ids)})


def collection(root: str, items_xml: str, total: int, page_size: int = 50) -> str:
    """An ``advanced_search`` page: ``<root type="collection">`` with the already rendered items."""
    tag = root.replace("_", "-")
    head = element("current_page_number", 1) + element("page_size", page_size) + element("total_items", total)
    return f'{DECLARATION}<{tag} type="collection">{head}{items_xml}</{tag}>'


# -- search criteria --------------------------------------------------------------------------------------------


def matches(values: Mapping[str, Any], criteria: Mapping[str, Any]) -> bool:
    """Whether a record's ``values`` satisfy a ``<search>`` as the SDK sends it (``braintree/search.py``).

    Lists are ``in_list`` nodes, booleans key-value nodes (``refund``), dicts on Decimal or datetime values are
    ranges (``min``/``max``/``is``), other dicts text operators. A ``*_at`` criterion whose status the record never
    reached excludes it; other unknown criteria are ignored with a warning.
    """
    for name, cond in criteria.items():
        if name not in values:
            if name.endswith("_at"):
                return False
            log.warning("braintree simulator ignores unsupported search criterion %r", name)
            continue
        value = values[name]
        if isinstance(cond, list):
            ok = value in cond
        elif isinstance(cond, bool):
            ok = bool(value) == cond
        elif isinstance(value, (Decimal, datetime)):
            ok = _range_matches(value, cond or {})
        else:
            ok = text_matches(value, cond)
        if not ok:
            return False
    return True


def text_matches(value: Any, cond: Any) -> bool:
    """Text operators (``is``, ``is_not``, ``starts_with``, ``ends_with``, ``contains``), case-sensitive."""
    text = "" if value is None else str(value)
    if not isinstance(cond, dict):
        return text == ("" if cond is None else str(cond))
    checks: dict[str, Callable[[str], bool]] = {
        "is": lambda a: text == a,
        "is_not": lambda a: text != a,
        "starts_with": text.startswith,
        "ends_with": text.endswith,
        "contains": lambda a: a in text,
    }
    for op, arg in cond.items():
        if op not in checks:
            log.warning("braintree simulator ignores unsupported text operator %r", op)
        elif not checks[op]("" if arg is None else str(arg)):
            return False
    return True


def _range_matches(value: Decimal | datetime, cond: Mapping[str, Any]) -> bool:
    for op, raw in cond.items():
        bound: Any = raw
        if isinstance(value, datetime) and not isinstance(raw, datetime):
            bound = parse_datetime(str(raw))
        elif isinstance(value, Decimal):
            bound = Decimal(str(raw))
        if (op == "min" and value < bound) or (op == "max" and value > bound) or (op == "is" and value != bound):
            return False
    return True


def echo_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``<params>`` echoed in an error: scalars only, without nonces and card data, as the gateway does."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in ("payment_method_nonce", "credit_card"):
            continue
        if isinstance(value, Mapping):
            out[key] = echo_params(value)
        elif value is None or isinstance(value, (str, bool, int, datetime)):
            out[key] = value
    return out


# -- resources --------------------------------------------------------------------------------------------------


def card_fields(card: Mapping[str, Any], merchant_id: str) -> dict[str, Any]:
    """A vaulted (or one-time) card as ``<credit-card>`` fields.

    No ``masked-number`` or ``expiration-date``: they are read-only properties on the SDK's ``CreditCard`` and
    setting them would raise. ``expired`` is required (``CreditCard.__init__`` reads it).
    """
    return {
        "token": card.get("token"),
        "customer_id": card.get("customer_id"),
        "default": bool(card.get("default")),
        "bin": card["bin"],
        "last_4": card["last_4"],
        "card_type": card["card_type"],
        "expiration_month": card["expiration_month"],
        "expiration_year": card["expiration_year"],
        "expired": False,
        "cardholder_name": card.get("cardholder_name"),
        "customer_location": "US",
        "unique_number_identifier": card["unique_number_identifier"],
        "image_url": "https://assets.braintreegateway.com/payment_method_logo/"
        + card["card_type"].lower().replace(" ", "_") + ".png",
        "merchant_id": merchant_id,
        "venmo_sdk": False,
        "prepaid": "Unknown",
        "debit": "Unknown",
        "commercial": "Unknown",
        "country_of_issuance": "Unknown",
        "created_at": card["created_at"],
        "updated_at": card.get("updated_at", card["created_at"]),
        "subscriptions": Items("subscription", []),
    }


def customer_fields(
    customer: Mapping[str, Any], cards: Iterable[Mapping[str, Any]], merchant_id: str
) -> dict[str, Any]:
    """A customer with its vaulted cards; the SDK derives ``payment_methods`` from the typed lists."""
    return {
        "id": customer["id"],
        "merchant_id": merchant_id,
        "first_name": customer.get("first_name"),
        "last_name": customer.get("last_name"),
        "company": customer.get("company"),
        "email": customer.get("email"),
        "phone": customer.get("phone"),
        "fax": customer.get("fax"),
        "website": customer.get("website"),
        "created_at": customer["created_at"],
        "updated_at": customer["updated_at"],
        "credit_cards": Items("credit_card", [card_fields(c, merchant_id) for c in cards]),
        "addresses": Items("address", []),
        "paypal_accounts": Items("paypal_account", []),
        "apple_pay_cards": Items("apple_pay_card", []),
        "android_pay_cards": Items("android_pay_card", []),
        "venmo_accounts": Items("venmo_account", []),
        "us_bank_accounts": Items("us_bank_account", []),
    }


def transaction_fields(
    txn: Mapping[str, Any], customer: Mapping[str, Any] | None, disputes: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """A transaction as ``<transaction>`` fields (``amount`` is required: ``Transaction.__init__`` reads it), with
    its disputes (``dispute_fields``) as ``transaction.find`` returns them."""
    card, customer = txn["card"], customer or {}
    return {
        "id": txn["id"],
        "status": txn["status"],
        "type": txn["type"],
        "currency_iso_code": "USD",
        "amount": txn["amount"],
        "merchant_account_id": txn["merchant_account_id"],
        "order_id": txn["order_id"],
        "created_at": txn["created_at"],
        "updated_at": txn["updated_at"],
        "refund_ids": Items("item", txn["refund_ids"]),
        "refunded_transaction_id": txn["refunded_transaction_id"],
        "processor_response_code": txn["processor_response_code"],
        "processor_response_text": txn["processor_response_text"],
        "processor_response_type": txn["processor_response_type"],
        "processor_authorization_code": txn["processor_authorization_code"],
        "processor_settlement_response_code": txn.get("processor_settlement_response_code") or "",
        "processor_settlement_response_text": txn.get("processor_settlement_response_text") or "",
        "gateway_rejection_reason": txn["gateway_rejection_reason"],
        "payment_instrument_type": "credit_card",
        "recurring": False,
        "channel": None,
        "settlement_batch_id": txn.get("settlement_batch_id"),
        "customer": {"id": txn["customer_id"]}
        | {k: customer.get(k) for k in ("first_name", "last_name", "company", "email", "phone")},
        "billing": {"id": None, "first_name": None, "last_name": None, "postal_code": None, "country_name": None},
        "credit_card": {
            "token": card.get("token"),
            "bin": card["bin"],
            "last_4": card["last_4"],
            "card_type": card["card_type"],
            "expiration_month": card["expiration_month"],
            "expiration_year": card["expiration_year"],
            "expired": False,
            "customer_location": "US",
            "cardholder_name": None,
            "unique_number_identifier": card["unique_number_identifier"],
        },
        "disbursement_details": {"disbursement_date": None, "settlement_amount": None, "funds_held": None},
        "disputes": Items("dispute", list(disputes)),
        "status_history": Items(
            "status_event",
            [
                {
                    "timestamp": event["timestamp"],
                    "status": event["status"],
                    "amount": event["amount"],
                    "user": "simulator",
                    "transaction_source": "api",
                }
                for event in txn["status_history"]
            ],
        ),
    }


def dispute_fields(dispute: Mapping[str, Any], txn: Mapping[str, Any]) -> dict[str, Any]:
    """A chargeback around a transaction, as the webhook's ``<dispute>`` subject."""
    opened: datetime = dispute["created_at"]
    status = dispute["status"]
    return {
        "id": dispute["id"],
        "amount": txn["amount"],
        "amount_disputed": txn["amount"],
        "amount_won": txn["amount"] if status == "won" else "0.00",
        "case_number": dispute["case_number"],
        "created_at": opened,
        "updated_at": dispute["updated_at"],
        "currency_iso_code": "USD",
        "kind": "chargeback",
        "merchant_account_id": dispute["merchant_account_id"],
        "reason": "fraud",
        "reason_code": "83",
        "reason_description": None,
        "received_date": opened.date(),
        "reply_by_date": (opened + timedelta(days=7)).date(),
        "reference_number": None,
        "status": status,
        "status_history": Items("status_history", [{"status": s, "timestamp": t} for s, t in dispute["history"]]),
        "evidence": Items("evidence", []),
        "transaction": {
            "id": txn["id"],
            "amount": txn["amount"],
            "created_at": txn["created_at"],
            "order_id": txn["order_id"],
            "purchase_order_number": None,
            "payment_instrument_subtype": txn["card"]["card_type"],
        },
        "date_opened": opened.date(),
    }
