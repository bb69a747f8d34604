"""The operations of Zoho Billing's and Attio's published API descriptions that our clients use, written as data.

Each ``Operation`` says what the provider documents for one call: the method and path, the query parameters it
takes (and requires), the headers it requires, and the body's required fields with their JSON types (dotted
paths; ``[]`` walks into each item of an array). ``check`` tells what is wrong with one recorded request.

Sources (each operation names its own):

- Zoho Billing: Zoho's published OpenAPI files (``zoho.com/billing/api/v1/openapi-all.zip``, mirrored in the
  Letstream/zoho-billing-python-sdk repository under ``specs/``: customers.yml, subscription.yml, invoices.yml,
  payments.yml, plans.yml, addons.yml, products.yml, events.yml), the pagination page
  (zohohelp.com/billing/api/v1/pagination: ``page``, ``per_page``), the Zoho Accounts OAuth pages (the refresh
  grant takes form or query parameters, never JSON). Where the OpenAPI file is known wrong or silent, the entry
  says so (``note``).
- Attio: the OpenAPI document served at api.attio.com/openapi/api (vendored as ``.speakeasy/out.openapi.yaml`` in
  the interfere-inc/attio repository) and docs.attio.com (attribute types, webhooks).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["ATTIO", "ZOHO", "ZOHO_ACCOUNTS", "Operation", "check", "find_operation"]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True)
class Operation:
    """One documented call."""

    method: str
    path: str  # a template: {name} matches one path segment
    source: str
    query: frozenset[str] = frozenset()  # the parameters the operation documents
    required_query: frozenset[str] = frozenset()
    headers: tuple[str, ...] = ()  # required headers (names, case-insensitive)
    body: dict[str, str] = field(default_factory=dict)  # dotted path → JSON type, required
    body_fields: frozenset[str] | None = None  # the documented top-level body fields (None: not checked)
    form: frozenset[str] = frozenset()  # a form-encoded body's required fields
    one_of: tuple[str, ...] = ()  # exactly one of these top-level body fields
    note: str = ""

    def matches(self, method: str, path: str) -> bool:
        """Whether a request's method and path are this operation's."""
        pattern = "^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(self.path)) + "$"
        return method == self.method and re.match(pattern, path) is not None


def _q(*names: str) -> frozenset[str]:
    return frozenset(names)


_PAGING = ("page", "per_page")  # the pagination page of the Billing API docs
_ZOHO_AUTH = ("Authorization", "X-com-zoho-subscriptions-organizationid")

ZOHO_ACCOUNTS = [
    Operation("POST", "/oauth/v2/token", "Zoho Accounts: refresh an access token (form or query, not JSON)",
              query=_q("refresh_token", "client_id", "client_secret", "grant_type", "redirect_uri"),
              form=_q("refresh_token", "client_id", "client_secret", "grant_type")),
]

ZOHO = [
    Operation("GET", "/organizations", "settings: GET /organizations (no organization header needed: it finds one)",
              headers=("Authorization",), note="not in the mirrored specs; recorded in payrollhero/zoho-subscriptions"
              " spec/fixtures/responses/organizations-get-200.json"),
    Operation("GET", "/products", "products.yml: List all products", query=_q("filter_by", *_PAGING),
              headers=_ZOHO_AUTH),
    Operation("GET", "/plans", "plans.yml: List all plans", query=_q("filter_by", "product_id", *_PAGING),
              headers=_ZOHO_AUTH),
    Operation("GET", "/plans/{plan_code}", "plans.yml: Retrieve a plan", headers=_ZOHO_AUTH),
    Operation("GET", "/addons", "addons.yml: List all addons", query=_q("filter_by", "product_id", *_PAGING),
              headers=_ZOHO_AUTH),
    Operation("GET", "/customers", "customers.yml: List all customers (filter_by Status.*)",
              query=_q("filter_by", *_PAGING, "email", "search_text"), headers=_ZOHO_AUTH,
              note="email= and search_text= are not in the OpenAPI file: apps use email=, Zoho's own search is "
              "search_text=; the client checks that a search narrowed (clients/zoho.py find_customer_by_email)"),
    Operation("GET", "/customers/{customer_id}", "customers.yml: Retrieve a customer", headers=_ZOHO_AUTH),
    Operation("POST", "/customers", "customers.yml: Create a customer", headers=(*_ZOHO_AUTH, "Content-Type"),
              body={"display_name": "string", "email": "string"},
              body_fields=_q("ach_supported", "billing_address", "company_name", "currency_code", "custom_fields",
                             "default_templates", "department", "designation", "display_name", "email", "facebook",
                             "first_name", "gst_no", "gst_treatment", "is_portal_enabled", "is_taxable",
                             "is_tds_registered", "last_name", "mobile", "notes", "payment_terms",
                             "payment_terms_label", "phone", "place_of_contact", "salutation", "shipping_address",
                             "skype", "tags", "tax_authority_id", "tax_authority_name", "tax_exemption_code",
                             "tax_exemption_id", "tax_id", "tax_reg_no", "tax_regime", "tax_treatment", "tds_tax_id",
                             "twitter", "vat_reg_no", "vat_treatment", "website"),
              note="the file also lists tax_authority_id/name as required: edition-specific (reference §3.2)"),
    Operation("GET", "/subscriptions", "subscription.yml: List all subscriptions (customer_id and "
              "reference_contains are in its description)",
              query=_q("filter_by", "customer_id", "reference_contains", *_PAGING), headers=_ZOHO_AUTH),
    Operation("GET", "/subscriptions/{subscription_id}", "subscription.yml: Retrieve a subscription",
              headers=_ZOHO_AUTH),
    Operation("POST", "/subscriptions", "subscription.yml: Create a subscription",
              headers=(*_ZOHO_AUTH, "Content-Type"),
              body={"plan": "object", "plan.plan_code": "string", "auto_collect": "boolean", "reference_id": "string"},
              one_of=("customer_id", "customer"),
              body_fields=_q("account_id", "add_to_unbilled_charges", "addons", "allow_partial_payments",
                             "auto_collect", "can_charge_setup_fee_immediately", "card_id", "cfdi_usage",
                             "contactpersons", "coupon_code", "create_backdated_invoice", "custom_fields", "customer",
                             "customer_id", "exchange_rate", "payment_gateways", "payment_terms",
                             "payment_terms_label", "place_of_supply", "plan", "reference_id", "salesperson_name",
                             "starts_at", "template_id"),
              note="the file's required list names customer, customer_id, card_id and account_id together: either "
              "customer_id or an inline customer, card_id only for auto_collect (reference §3.3); auto_collect and "
              "reference_id are required here because the service relies on them (offline, looked up by reference)"),
    Operation("GET", "/invoices", "invoices.yml: List all invoices (customer_id / subscription_id in its "
              "description)", query=_q("filter_by", "customer_id", "subscription_id", *_PAGING), headers=_ZOHO_AUTH),
    Operation("GET", "/invoices/{invoice_id}", "invoices.yml: Retrieve an invoice", headers=_ZOHO_AUTH),
    Operation("POST", "/payments", "payments.yml: Create a payment", headers=(*_ZOHO_AUTH, "Content-Type"),
              body={"customer_id": "string", "payment_mode": "string", "amount": "number", "date": "string",
                    "reference_number": "string", "invoices": "array", "invoices[].invoice_id": "string",
                    "invoices[].amount_applied": "number"},
              body_fields=_q("account_id", "amount", "bank_charges", "custom_fields", "customer_id", "date",
                             "description", "exchange_rate", "invoices", "payment_mode", "reference_number",
                             "tax_account_id"),
              note="required by the file: customer_id, payment_mode, amount, and invoice_id + amount_applied per "
              "invoice; date and reference_number because the service's idempotence check reads them back"),
    Operation("GET", "/payments/{payment_id}", "payments.yml: Retrieve a payment", headers=_ZOHO_AUTH),
    Operation("DELETE", "/payments/{payment_id}", "payments.yml: Delete a payment", headers=_ZOHO_AUTH),
    Operation("GET", "/events", "events.yml: List of events", query=_q("filter_by", "event_type", *_PAGING),
              headers=_ZOHO_AUTH),
]

_ATTIO_AUTH = ("Authorization",)
_VALUES = "data.values"
_OAS = "Attio OpenAPI"

ATTIO = [
    Operation("GET", "/v2/self", f"{_OAS}: GET /v2/self (identify the token)", headers=_ATTIO_AUTH),
    Operation("GET", "/v2/objects", f"{_OAS}: List objects", headers=_ATTIO_AUTH),
    Operation("POST", "/v2/objects", f"{_OAS}: Create an object", headers=_ATTIO_AUTH,
              body={"data.api_slug": "string", "data.singular_noun": "string", "data.plural_noun": "string"}),
    Operation("GET", "/v2/objects/{object}", f"{_OAS}: Get an object", headers=_ATTIO_AUTH),
    Operation("GET", "/v2/objects/{object}/attributes", f"{_OAS}: List attributes",
              query=_q("limit", "offset", "show_archived"), headers=_ATTIO_AUTH),
    Operation("POST", "/v2/objects/{object}/attributes", f"{_OAS}: Create an attribute", headers=_ATTIO_AUTH,
              body={"data.title": "string", "data.api_slug": "string", "data.type": "string",
                    "data.is_required": "boolean", "data.is_unique": "boolean", "data.is_multiselect": "boolean",
                    "data.config": "object", "data.description": "string|null"}),
    Operation("GET", "/v2/objects/{object}/attributes/{attribute}/options", f"{_OAS}: List select options",
              query=_q("show_archived"), headers=_ATTIO_AUTH),
    Operation("POST", "/v2/objects/{object}/attributes/{attribute}/options", f"{_OAS}: Create a select option",
              headers=_ATTIO_AUTH, body={"data.title": "string"}),
    Operation("POST", "/v2/objects/{object}/records/query", f"{_OAS}: List records (filter, sorts, limit, offset)",
              headers=_ATTIO_AUTH, body_fields=_q("filter", "sorts", "limit", "offset")),
    Operation("GET", "/v2/objects/{object}/records/{record_id}", f"{_OAS}: Get a record", headers=_ATTIO_AUTH),
    Operation("POST", "/v2/objects/{object}/records", f"{_OAS}: Create a record", headers=_ATTIO_AUTH,
              body={_VALUES: "object"}),
    Operation("PUT", "/v2/objects/{object}/records", f"{_OAS}: Assert a record", query=_q("matching_attribute"),
              required_query=_q("matching_attribute"), headers=_ATTIO_AUTH, body={_VALUES: "object"}),
    Operation("PATCH", "/v2/objects/{object}/records/{record_id}", f"{_OAS}: Update a record (append multiselect)",
              headers=_ATTIO_AUTH, body={_VALUES: "object"}),
    Operation("GET", "/v2/webhooks", f"{_OAS}: List webhooks", query=_q("limit", "offset"), headers=_ATTIO_AUTH),
    Operation("POST", "/v2/webhooks", f"{_OAS}: Create a webhook", headers=_ATTIO_AUTH,
              body={"data.target_url": "string", "data.subscriptions": "array",
                    "data.subscriptions[].event_type": "string", "data.subscriptions[].filter": "object|null"}),
]


def find_operation(table: list[Operation], method: str, path: str) -> Operation | None:
    """The documented operation of a request, or None."""
    return next((op for op in table if op.matches(method, path)), None)


def _walk(doc: Any, dotted: str) -> list[Any]:
    """The values at a dotted path (``a.b``, ``a[].b`` for each item); a missing key yields a ``_MISSING``."""
    found = [doc]
    for part in dotted.split("."):
        each = part.endswith("[]")
        key = part[:-2] if each else part
        nxt: list[Any] = []
        for item in found:
            value = item.get(key, _MISSING) if isinstance(item, dict) else _MISSING
            if each and isinstance(value, list):
                nxt.extend(value)
            else:
                nxt.append(value)
        found = nxt
    return found


_MISSING = object()


def _type_ok(value: Any, wanted: str) -> bool:
    for name in wanted.split("|"):
        if name == "null" and value is None:
            return True
        kinds = _TYPES.get(name, ())
        if isinstance(value, kinds) and not (isinstance(value, bool) and name in ("number", "integer")):
            return True
    return False


def _attio_values(values: Any) -> list[str]:
    """Attio's write values: one value or an array of them per attribute; never null (currency refuses it, and
    the OpenAPI types each as an array: clear with []), never "" (a text value, not a clear)."""
    problems = []
    for slug, value in (values or {}).items() if isinstance(values, dict) else ():
        if value is None:
            problems.append(f"values.{slug} is null: clear with []")
        elif value == "":
            problems.append(f'values.{slug} is "": clear with []')
    return problems


def check(table: list[Operation], method: str, path: str, query: dict[str, str], headers: dict[str, str],
          body: bytes) -> list[str]:
    """What is wrong with one request against ``table`` ([] when it is a documented call)."""
    op = find_operation(table, method, path)
    if op is None:
        return [f"{method} {path}: no such documented operation"]
    problems = [f"query {k!r} is not a parameter of {op.source}" for k in sorted(set(query) - op.query)]
    problems += [f"query {k!r} is required by {op.source}" for k in sorted(op.required_query - set(query))]
    names = {k.lower() for k in headers}
    problems += [f"header {h} is required" for h in op.headers if h.lower() not in names]
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if op.form:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True)) if body else {}
        if "json" in content_type:
            problems.append("the body must be form-encoded, not JSON")
        problems += [f"form field {f} is required" for f in sorted(op.form - set(fields) - set(query))]
        return problems
    if not op.body and op.body_fields is None:
        if body:
            problems.append(f"{op.source} takes no body")
        return problems
    if body and "application/json" not in content_type:
        problems.append(f"Content-Type is {content_type!r}, not application/json")
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        return [*problems, "the body is not JSON"]
    for dotted, wanted in op.body.items():
        for value in _walk(doc, dotted):
            if value is _MISSING:
                problems.append(f"body {dotted} is required by {op.source}")
            elif not _type_ok(value, wanted):
                problems.append(f"body {dotted} is {type(value).__name__}, {op.source} wants {wanted}")
    if op.body_fields is not None and isinstance(doc, dict):
        problems += [f"body field {k!r} is not documented for {op.source}" for k in sorted(set(doc) - op.body_fields)]
    if op.one_of and isinstance(doc, dict) and sum(k in doc for k in op.one_of) != 1:
        problems.append(f"body needs exactly one of {', '.join(op.one_of)}")
    if table is ATTIO and isinstance(doc, dict):
        problems += _attio_values((doc.get("data") or {}).get("values"))
    return problems
