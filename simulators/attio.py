"""A loopback simulator of the Attio REST API v2: objects, attributes, select options, records, webhooks.

It speaks the wire format of ``/work/shared/reference/attio.md``: ``{"data": ...}`` bodies, Attio error bodies,
Bearer auth, per-second read/write rate limits with an HTTP-date ``Retry-After``, the write value forms and the
read value shapes, assert (upsert) through a unique ``matching_attribute``, and signed webhook deliveries.
"""

from __future__ import annotations

import copy
import email.utils
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from simulators.base import Simulator

__all__ = ["API_ACTOR_ID", "MEMBER_ACTOR_ID", "WORKSPACE_ID", "AttioError", "AttioSimulator"]

WORKSPACE_ID = "5b8f3e1a-0c7d-4e2b-9a61-2f4d8c9e7a10"
API_ACTOR_ID = "a9e1c2d3-4b5f-4a6e-8c7d-9e0f1a2b3c4d"
MEMBER_ACTOR_ID = "50cf242c-7fa3-4cad-87d0-75b1af71c57b"
WEBHOOK_ID = "23e42eaf-323a-41da-b5bb-fd67eebda553"
TYPES = {"text", "number", "currency", "select", "date", "timestamp", "checkbox", "record-reference",
         "email-address", "domain", "personal-name"}
_TS = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
                 r"\s*(Z|[+-]\d{2}:?\d{2})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_READ = re.compile(r"/(records|entries)/query$")


class AttioError(Exception):
    """An Attio API error, answered as ``{"status_code","type","code","message"}``.

    Source: the error responses of every operation in Attio's OpenAPI document (e.g. 409 ``slug_conflict`` of
    ``POST /v2/objects``, 403 ``billing_error`` of ``POST /v2/lists``).
    """

    def __init__(self, status: int, code: str, message: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.type = status, code, message, type_

    def body(self) -> dict[str, Any]:
        """The wire body."""
        return {"status_code": self.status, "type": self.type, "code": self.code, "message": self.message}


def _bad(message: str, code: str = "validation_type") -> AttioError:
    return AttioError(400, code, message)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _uid() -> str:
    return str(uuid.uuid4())


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO-8601 date or datetime (UTC when no offset is given); AttioError when invalid."""
    m = _TS.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise _bad(f"Invalid timestamp value {value!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    offset = timedelta(0)
    if tz and tz != "Z":
        tz = tz.replace(":", "")
        offset = (1 if tz[0] == "+" else -1) * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5]))
    try:
        return datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                        int((frac or "0").ljust(6, "0")[:6]), tzinfo=timezone(offset)).astimezone(UTC)
    except ValueError:
        raise _bad(f"Invalid timestamp value {value!r}") from None


def format_timestamp(value: Any) -> str:
    """Attio's UTC nanosecond form of a timestamp, e.g. ``2024-05-01T12:00:00.000000000Z``."""
    return parse_timestamp(value).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class AttioSimulator(Simulator):
    """Attio REST API v2 on loopback, with in-process helpers for tests."""

    name = "attio"

    def __init__(self, api_key: str = "test-attio-key", reads_per_second: int | None = 100,
                 writes_per_second: int | None = 25, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.reads_per_second = reads_per_second
        self.writes_per_second = writes_per_second
        self.webhook_target: tuple[str, str] | None = None
        self.rate_limited = self.writes_ok = self.reads_ok = 0
        self._lock = threading.RLock()
        self._window = (0, 0, 0)  # (second, reads, writes)
        self.reset_state()
        super().__init__(host=host, port=port)

    # -- Simulator hooks --------------------------------------------------------------------------------------
    def fault_body(self, status: int) -> str:
        """Attio's error JSON for an injected status."""
        kinds = {401: ("auth_error", "unauthorized"), 404: ("invalid_request_error", "not_found"),
                 409: ("invalid_request_error", "slug_conflict"),
                 429: ("rate_limit_error", "rate_limit_exceeded")}
        type_, code = kinds.get(status, ("api_error" if status >= 500 else "invalid_request_error",
                                         "internal_server_error" if status >= 500 else "validation_type"))
        message = "Rate limit exceeded, please try again later" if status == 429 else "Injected fault"
        return json.dumps({"status_code": status, "type": type_, "code": code, "message": message})

    def reset_state(self) -> None:
        """Back to a fresh workspace: only the standard ``companies`` and ``people`` objects."""
        with self._lock:
            self._keys: dict[int, tuple[dict[str, Any], Any]] = {}  # id(value) → (value, key), see _key
            self.objects: dict[str, dict[str, Any]] = {}
            self.webhooks: list[dict[str, Any]] = []  # registered through POST /v2/webhooks
            # Plan limits a real workspace may have (unknown per plan: doctor and ``attio setup`` must report them).
            # Refusals take the 403 ``billing_error`` shape Attio's OpenAPI documents for plan-gated features.
            self.max_custom_objects: int | None = None
            self.unique_on_standard_objects = True
            self.rate_limited = self.writes_ok = self.reads_ok = 0
            self._window = (0, 0, 0)
            companies = self._create_object("companies", "Company", "Companies", standard=True)
            self._create_attribute(companies, {"title": "Name", "api_slug": "name", "type": "text"})
            self._create_attribute(companies, {"title": "Domains", "api_slug": "domains", "type": "domain",
                                               "is_unique": True, "is_multiselect": True})
            people = self._create_object("people", "Person", "People", standard=True)
            self._create_attribute(people, {"title": "Name", "api_slug": "name", "type": "personal-name"})
            self._create_attribute(people, {"title": "Email addresses", "api_slug": "email_addresses",
                                            "type": "email-address", "is_unique": True, "is_multiselect": True})

    # -- schema state -----------------------------------------------------------------------------------------
    def _object(self, ref: str) -> dict[str, Any]:
        for obj in self.objects.values():
            if ref in (obj["id"], obj["api_slug"]):
                return obj
        raise AttioError(404, "not_found", f'Object with slug/ID "{ref}" not found.')

    def _attribute(self, obj: dict[str, Any], ref: str, code: str = "not_found") -> dict[str, Any]:
        for attr in obj["attrs"].values():
            if ref in (attr["id"], attr["api_slug"]):
                return attr
        status = 404 if code == "not_found" else 400
        raise AttioError(status, code, f'Cannot find attribute with slug/ID "{ref}".')

    def _create_object(self, slug: str, singular: str, plural: str, standard: bool = False) -> dict[str, Any]:
        if any(o["api_slug"] == slug for o in self.objects.values()):
            raise AttioError(409, "slug_conflict", f'An object with slug "{slug}" already exists.')
        custom = sum(not o["standard"] for o in self.objects.values())
        if not standard and self.max_custom_objects is not None and custom >= self.max_custom_objects:
            raise AttioError(403, "billing_error", f"Your plan allows {self.max_custom_objects} custom object(s). "
                             "Please upgrade to create more.", "auth_error")
        obj = {"id": _uid(), "api_slug": slug, "singular_noun": singular, "plural_noun": plural,
               "created_at": _now(), "attrs": {}, "records": {}, "standard": standard}
        self.objects[obj["id"]] = obj
        return obj

    def _create_attribute(self, obj: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        slug, type_ = spec.get("api_slug"), spec.get("type")
        if not isinstance(slug, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", slug):
            raise _bad(f"Invalid api_slug {slug!r}")
        if type_ not in TYPES:
            raise _bad(f"Unsupported attribute type {type_!r}")
        if any(a["api_slug"] == slug for a in obj["attrs"].values()):
            raise AttioError(409, "slug_conflict", f'An attribute with slug "{slug}" already exists on this object.')
        if spec.get("is_unique") and obj.get("standard") and not self.unique_on_standard_objects:
            raise AttioError(403, "billing_error", "Unique attributes on standard objects are not available on "
                             "your plan.", "auth_error")
        attr = {"id": _uid(), "object_id": obj["id"], "api_slug": slug, "type": type_, "title": spec.get("title"),
                "description": spec.get("description"), "is_required": bool(spec.get("is_required")),
                "is_unique": False, "is_multiselect": bool(spec.get("is_multiselect")), "is_archived": False,
                "relationship": spec.get("relationship"), "created_at": _now(), "options": [],
                "currency": None, "allowed": []}
        self._configure(attr, spec)
        obj["attrs"][attr["id"]] = attr
        return attr

    def _configure(self, attr: dict[str, Any], spec: dict[str, Any]) -> None:
        """Apply the mutable settings of a create/patch body to an attribute."""
        for key in ("title", "description", "is_required", "is_archived"):
            if key in spec:
                attr[key] = spec[key]
        if spec.get("is_unique") and attr["type"] == "select":
            raise _bad("Select attributes cannot be configured to be unique.")
        if "is_unique" in spec:
            attr["is_unique"] = bool(spec["is_unique"])
        config = spec.get("config") or {}
        if not isinstance(config, dict):
            raise _bad("config must be an object")
        if attr["type"] == "currency" and ("currency" in config or attr["currency"] is None):
            cur = config.get("currency") or {}
            attr["currency"] = {"default_currency_code": cur.get("default_currency_code") or "USD",
                                "display_type": cur.get("display_type") or "symbol"}
        if attr["type"] == "record-reference" and ("record_reference" in config or not attr["allowed"]):
            refs = (config.get("record_reference") or {}).get("allowed_objects") or []
            if not refs:
                raise _bad("record-reference attributes need config.record_reference.allowed_objects")
            try:
                attr["allowed"] = [self._object(r)["id"] for r in refs]
            except AttioError:
                raise _bad(f"Unknown object in allowed_objects {refs!r}") from None

    def _create_option(self, obj: dict[str, Any], attr: dict[str, Any], title: Any) -> dict[str, Any]:
        if attr["type"] != "select":
            raise _bad(f'Attribute "{attr["api_slug"]}" is not a select attribute.')
        if not isinstance(title, str) or not title:
            raise _bad("Option title must be a non-empty string")
        if any(o["title"] == title for o in attr["options"]):
            raise AttioError(409, "slug_conflict", f'An option with title "{title}" already exists.')
        option = {"id": {"workspace_id": WORKSPACE_ID, "object_id": obj["id"], "attribute_id": attr["id"],
                         "option_id": _uid()}, "title": title, "is_archived": False}
        attr["options"].append(option)
        return option

    def _object_read(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {"id": {"workspace_id": WORKSPACE_ID, "object_id": obj["id"]}, "api_slug": obj["api_slug"],
                "singular_noun": obj["singular_noun"], "plural_noun": obj["plural_noun"],
                "created_at": obj["created_at"]}

    def _attr_read(self, attr: dict[str, Any]) -> dict[str, Any]:
        ref = {"allowed_object_ids": list(attr["allowed"])} if attr["type"] == "record-reference" else None
        return {"id": {"workspace_id": WORKSPACE_ID, "object_id": attr["object_id"], "attribute_id": attr["id"]},
                "title": attr["title"], "description": attr["description"], "api_slug": attr["api_slug"],
                "type": attr["type"], "is_system_attribute": False, "is_writable": True,
                "is_required": attr["is_required"], "is_unique": attr["is_unique"],
                "is_multiselect": attr["is_multiselect"], "is_default_value_enabled": False,
                "is_archived": attr["is_archived"], "default_value": None, "relationship": attr["relationship"],
                "created_at": attr["created_at"],
                "config": {"currency": copy.deepcopy(attr["currency"]), "record_reference": ref}}

    # -- values ------------------------------------------------------------------------------------------------
    def _convert(self, attr: dict[str, Any], item: Any) -> dict[str, Any]:
        """One write-form value → the type fields of its read shape (AttioError when invalid)."""
        t, slug = attr["type"], attr["api_slug"]
        if isinstance(item, dict) and "value" in item and t in ("text", "number", "checkbox", "date", "timestamp"):
            item = item["value"]
        if t == "text":
            if not isinstance(item, str):
                raise _bad(f'Invalid value for text attribute "{slug}": {item!r}')
            return {"value": item}
        if t in ("number", "currency"):
            if t == "currency" and isinstance(item, dict):
                item = item.get("currency_value")
            try:
                if isinstance(item, bool) or (t == "number" and isinstance(item, str)):
                    raise InvalidOperation
                dec = Decimal(str(item))
                if not dec.is_finite() or (t == "currency" and dec.as_tuple().exponent < -4):
                    raise InvalidOperation
            except (InvalidOperation, ValueError):
                raise _bad(f'Invalid value for {t} attribute "{slug}": {item!r}') from None
            if t == "number":
                return {"value": int(dec) if dec == dec.to_integral_value() and isinstance(item, int) else float(dec)}
            return {"currency_value": float(dec), "currency_code": attr["currency"]["default_currency_code"]}
        if t == "checkbox":
            if isinstance(item, str) and item in ("true", "false"):
                item = item == "true"
            if not isinstance(item, bool):
                raise _bad(f'Invalid value for checkbox attribute "{slug}": {item!r}')
            return {"value": item}
        if t == "date":
            if isinstance(item, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", item):
                try:
                    datetime.strptime(item, "%Y-%m-%d")
                    return {"value": item}
                except ValueError:
                    pass
            if isinstance(item, str) and "T" in item:
                return {"value": parse_timestamp(item).strftime("%Y-%m-%d")}
            raise _bad(f'Invalid value for date attribute "{slug}": {item!r} (expected YYYY-MM-DD)')
        if t == "timestamp":
            return {"value": format_timestamp(item)}
        if t == "select":
            ref = item.get("option") if isinstance(item, dict) else item
            for option in attr["options"]:
                if not option["is_archived"] and ref in (option["title"], option["id"]["option_id"]):
                    return {"option": option}
            raise _bad(f'Cannot find select option with title or ID "{ref}" on attribute "{slug}".',
                       "value_not_found")
        if t == "record-reference":
            return self._convert_reference(attr, item)
        if t == "email-address":
            addr = item.get("email_address") if isinstance(item, dict) else item
            if not isinstance(addr, str) or not _EMAIL.match(addr.strip()):
                raise _bad(f'Invalid email address for attribute "{slug}": {addr!r}')
            local, domain = addr.strip().rsplit("@", 1)
            return {"original_email_address": addr, "email_address": f"{local}@{domain}".lower(),
                    "email_domain": domain.lower(), "email_root_domain": ".".join(domain.lower().split(".")[-2:]),
                    "email_local_specifier": local.split("+")[0]}
        if t == "domain":
            dom = item.get("domain") if isinstance(item, dict) else item
            if not isinstance(dom, str) or not dom.strip():
                raise _bad(f'Invalid domain for attribute "{slug}": {dom!r}')
            dom = re.sub(r"^[a-z]+://", "", dom.strip().lower()).split("/")[0].split("?")[0]
            return {"domain": dom, "root_domain": ".".join(dom.split(".")[-2:])}
        # personal-name
        if isinstance(item, str):
            last, _, first = item.partition(", ") if ", " in item else ("", "", item)
            item = {"first_name": first, "last_name": last, "full_name": f"{first} {last}".strip()}
        if not isinstance(item, dict):
            raise _bad(f'Invalid name for attribute "{slug}": {item!r}')
        first, last = item.get("first_name") or "", item.get("last_name") or ""
        return {"first_name": first, "last_name": last, "full_name": item.get("full_name") or f"{first} {last}".strip()}

    def _convert_reference(self, attr: dict[str, Any], item: Any) -> dict[str, Any]:
        allowed = [self.objects[i] for i in attr["allowed"] if i in self.objects]
        if isinstance(item, str) and len(allowed) == 1 and allowed[0]["api_slug"] in ("companies", "people"):
            key = "domains" if allowed[0]["api_slug"] == "companies" else "email_addresses"
            item = {"target_object": allowed[0]["api_slug"], key: [item]}
        if not isinstance(item, dict) or not isinstance(item.get("target_object"), str):
            raise _bad(f'Record reference for "{attr["api_slug"]}" needs target_object and target_record_id.')
        target = next((o for o in allowed if item["target_object"] in (o["id"], o["api_slug"])), None)
        if target is None:
            raise _bad(f'Object "{item["target_object"]}" is not allowed for attribute "{attr["api_slug"]}".')
        if "target_record_id" in item:
            rid = item["target_record_id"]
            if rid not in target["records"]:
                raise _bad(f'Record "{rid}" of object "{target["api_slug"]}" not found.', "value_not_found")
        else:
            extra = [(k, v) for k, v in item.items() if k != "target_object"]
            slug, val = extra[0] if len(extra) == 1 else ("", None)
            matcher = self._attribute(target, slug, "value_not_found") if slug else None
            if matcher is None or not matcher["is_unique"]:
                raise _bad(f'Record reference for "{attr["api_slug"]}" must match a unique attribute.')
            keys = {self._key(matcher, self._convert(matcher, v)) for v in self._as_list(matcher, val)}
            hits = [r for r in target["records"].values()
                    if keys & {self._key(matcher, v) for v in r["values"].get(matcher["id"], [])}]
            if not hits:
                raise _bad(f'No "{target["api_slug"]}" record matches {slug}={val!r}.', "value_not_found")
            rid = hits[0]["id"]
        return {"target_object": target["api_slug"], "target_record_id": rid}

    @staticmethod
    def _as_list(attr: dict[str, Any], raw: Any) -> list[Any]:
        if raw is None and attr["type"] == "currency":
            # docs.attio.com attribute-types-currency: "This attribute does not support null values"; [] clears
            raise _bad(f'Invalid value for currency attribute "{attr["api_slug"]}": null is not supported.')
        items = [] if raw is None else list(raw) if isinstance(raw, list) else [raw]
        if len(items) > 1 and not attr["is_multiselect"]:
            raise _bad(f'Attribute "{attr["api_slug"]}" accepts a single value, got {len(items)}.')
        return items

    _KEY_FIELDS = ("value", "currency_value", "target_record_id", "email_address", "domain", "full_name")

    def _key(self, attr: dict[str, Any], fields: dict[str, Any]) -> Any:
        """A comparable identity of one value (for uniqueness, dedupe and change detection).

        Computed once per stored value: every upsert compares against every record, so recomputing made a write
        cost ~15–20 ms at 1,200 records (more than a 100/s budget's slot), measuring the simulator, not the client.
        """
        hit = self._keys.get(id(fields))
        if hit is not None and hit[0] is fields:
            return hit[1]
        if "option" in fields:
            key: Any = fields["option"]["id"]["option_id"]
        else:
            key = tuple((k, fields[k]) for k in self._KEY_FIELDS if k in fields)
        self._keys[id(fields)] = (fields, key)  # holding the value pins its id against reuse
        return key

    def _plain(self, attr: dict[str, Any], fields: dict[str, Any]) -> Any:
        """The plain python value of one stored value."""
        for key in self._KEY_FIELDS:
            if key in fields:
                return fields[key]
        return fields["option"]["title"]

    def _write(self, obj: dict[str, Any], values: Any, record: dict[str, Any] | None, append: bool,
               append_slug: str | None = None, actor_type: str = "api-token") -> list[dict[str, Any]]:
        """Validate and apply a ``values`` body to a (new when None) record; returns the changed attributes."""
        if not isinstance(values, dict):
            raise _bad("data.values must be an object")
        parsed: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for ref, raw in values.items():
            attr = self._attribute(obj, ref, "value_not_found")
            if attr["is_archived"]:
                raise _bad(f'Attribute "{ref}" is archived.', "value_not_found")
            parsed[attr["id"]] = (attr, [self._convert(attr, v) for v in self._as_list(attr, raw)])
        if record is None:
            for attr in obj["attrs"].values():
                if attr["is_required"] and not attr["is_archived"] and not parsed.get(attr["id"], (0, []))[1]:
                    raise _bad(f'Required value for attribute "{attr["api_slug"]}" was not provided.',
                               "missing_value")
        current = record["values"] if record else {}
        final: dict[str, list[dict[str, Any]]] = {}
        for attr_id, (attr, new) in parsed.items():
            old = current.get(attr_id, [])
            by_key = {self._key(attr, v): v for v in old}
            keys = [self._key(attr, f) for f in new]
            if attr["is_multiselect"] and (append or attr["api_slug"] == append_slug):
                keys = [k for k in by_key if k not in keys] + keys
            merged, seen = [], set()
            for key in keys:
                if key in seen:
                    continue
                seen.add(key)
                stored = by_key.get(key)
                if stored is None:
                    fields = next(f for f in new if self._key(attr, f) == key)
                    stored = {"active_from": _now(), "active_until": None,
                              "created_by_actor": self._actor(actor_type), "attribute_type": attr["type"], **fields}
                merged.append(stored)
            final[attr_id] = merged
            if attr["is_unique"]:
                for other in obj["records"].values():
                    if record is not None and other["id"] == record["id"]:
                        continue
                    clash = set(keys) & {self._key(attr, v) for v in other["values"].get(attr_id, [])}
                    if clash:
                        raise _bad(f'A record with the same value for unique attribute "{attr["api_slug"]}" '
                                   f'already exists (record "{other["id"]}").', "uniqueness_conflict")
        if record is None:
            record = {"id": _uid(), "created_at": _now(), "values": {}}
            obj["records"][record["id"]] = record
            record["values"].update(final)
            return [record]
        changed = [parsed[a][0] for a, vals in final.items()
                   if [self._key(parsed[a][0], v) for v in vals]
                   != [self._key(parsed[a][0], v) for v in current.get(a, [])]]
        record["values"].update(final)
        return changed

    @staticmethod
    def _actor(actor_type: str) -> dict[str, Any]:
        ids = {"api-token": API_ACTOR_ID, "workspace-member": MEMBER_ACTOR_ID, "system": None}
        return {"type": actor_type, "id": ids.get(actor_type, API_ACTOR_ID)}

    def _record_read(self, obj: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        # Source: the record schema of "Get a record" in Attio's OpenAPI document (values as arrays of value
        # objects with active_from / active_until / created_by_actor / attribute_type) and docs.attio.com's
        # attribute-type pages for each type's fields.
        values = {a["api_slug"]: copy.deepcopy(record["values"].get(a["id"], []))
                  for a in obj["attrs"].values() if not a["is_archived"]}
        return {"id": {"workspace_id": WORKSPACE_ID, "object_id": obj["id"], "record_id": record["id"]},
                "created_at": record["created_at"],
                "web_url": f"https://app.attio.com/sim-workspace/{obj['api_slug']}/{record['id']}", "values": values}

    def _record(self, obj: dict[str, Any], record_id: str) -> dict[str, Any]:
        if record_id not in obj["records"]:
            raise AttioError(404, "not_found", f'Record with ID "{record_id}" not found.')
        return obj["records"][record_id]

    # -- query filters -----------------------------------------------------------------------------------------
    def _matches(self, obj: dict[str, Any], rec: dict[str, Any], flt: Any) -> bool:
        if not isinstance(flt, dict):
            raise _bad("filter must be an object", "filter_error")
        for key, cond in flt.items():
            if key in ("$and", "$or"):
                if not isinstance(cond, list):
                    raise _bad(f"{key} takes a list", "filter_error")
                hits = (self._matches(obj, rec, c) for c in cond)
                ok = all(hits) if key == "$and" else any(hits)
            elif key == "$not":
                ok = not self._matches(obj, rec, cond)
            elif key == "record_id":
                ok = self._test([rec["id"]], cond)
            elif key.startswith("$") or key == "path":
                raise _bad(f"Unsupported filter key {key!r}", "filter_error")
            else:
                attr = self._attribute(obj, key, "filter_error")
                vals = rec["values"].get(attr["id"], [])
                if isinstance(cond, dict) and cond and not any(k.startswith("$") for k in cond):
                    ok = all(self._test([self._prop(attr, v, p) for v in vals], c, attr) for p, c in cond.items())
                else:
                    ok = self._test([self._prop(attr, v, None) for v in vals], cond, attr)
            if not ok:
                return False
        return True

    def _prop(self, attr: dict[str, Any], fields: dict[str, Any], prop: str | None) -> Any:
        if prop is None or prop == "option":
            return self._plain(attr, fields)
        return fields.get(prop)

    def _test(self, present: list[Any], cond: Any, attr: dict[str, Any] | None = None) -> bool:
        """Whether any present value satisfies a condition (a bare value = ``$eq``)."""
        ops = cond if isinstance(cond, dict) and any(k.startswith("$") for k in cond) else {"$eq": cond}
        for op, want in ops.items():
            if op == "$not_empty":
                ok = bool(present) == bool(want)
            elif op == "$in":
                ok = any(self._eq(attr, p, w) for p in present for w in (want or []))
            elif op == "$eq":
                ok = any(self._eq(attr, p, want) for p in present) if want is not None else not present
            elif op in ("$contains", "$starts_with", "$ends_with"):
                fn: Callable[[str], bool] = {"$contains": lambda s: str(want).lower() in s.lower(),
                                             "$starts_with": lambda s: s.lower().startswith(str(want).lower()),
                                             "$ends_with": lambda s: s.lower().endswith(str(want).lower())}[op]
                ok = any(isinstance(p, str) and fn(p) for p in present)
            elif op in ("$lt", "$lte", "$gt", "$gte"):
                ok = any(p is not None and self._cmp(op, p, want) for p in present)
            else:
                raise _bad(f"Unsupported filter operator {op!r}", "filter_error")
            if not ok:
                return False
        return True

    def _eq(self, attr: dict[str, Any] | None, have: Any, want: Any) -> bool:
        if isinstance(want, dict) and "target_record_id" in want:
            want = want["target_record_id"]
        if attr and attr["type"] == "timestamp" and isinstance(want, str):
            want = format_timestamp(want)
        if attr and attr["type"] == "select" and isinstance(want, dict):
            want = want.get("option", want.get("title"))
        if attr and attr["type"] == "select" and any(o["id"]["option_id"] == want for o in attr["options"]):
            want = next(o["title"] for o in attr["options"] if o["id"]["option_id"] == want)
        if attr and attr["type"] in ("email-address", "domain") and isinstance(want, str):
            return str(have).lower() == want.lower()
        return have == want

    @staticmethod
    def _cmp(op: str, have: Any, want: Any) -> bool:
        try:
            return {"$lt": have < want, "$lte": have <= want, "$gt": have > want, "$gte": have >= want}[op]
        except TypeError:
            raise _bad(f"Cannot compare {have!r} with {want!r}", "filter_error") from None

    # -- webhooks ----------------------------------------------------------------------------------------------
    def _event(self, event_type: str, obj: dict[str, Any], record_id: str, attr: dict[str, Any] | None,
               actor_type: str) -> dict[str, Any]:
        ids = {"workspace_id": WORKSPACE_ID, "object_id": obj["id"], "record_id": record_id}
        if attr is not None:
            ids["attribute_id"] = attr["id"]
        return {"event_type": event_type, "id": ids, "actor": self._actor(actor_type)}

    def _deliver(self, event: dict[str, Any], timeout: float = 2.0) -> int:
        """POST one signed delivery to ``webhook_target``; returns the HTTP status."""
        assert self.webhook_target is not None, "set sim.webhook_target = (url, secret) first"
        url, secret = self.webhook_target
        body = json.dumps({"webhook_id": WEBHOOK_ID, "events": [event]}).encode("utf-8")
        sig = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "Attio-Signature": sig, "X-Attio-Signature": sig,
                   "Idempotency-Key": _uid()}
        return requests.post(url, data=body, headers=headers, timeout=timeout).status_code

    def _emit_async(self, events: list[dict[str, Any]]) -> None:
        if self.webhook_target is None or not events:
            return
        hooks = [w for w in self.webhooks if w["target_url"] == self.webhook_target[0]]
        if hooks:  # a webhook registered through the API: only what its subscriptions' filters let through
            events = [e for e in events if any(self.subscribed(w, e) for w in hooks)]
            if not events:
                return

        def run() -> None:
            for event in events:
                try:
                    self._deliver(event)
                except Exception:  # noqa: BLE001 - deliveries are best effort
                    pass

        threading.Thread(target=run, name="sim-attio-webhook", daemon=True).start()

    @staticmethod
    def subscribed(hook: dict[str, Any], event: dict[str, Any]) -> bool:
        """Whether a webhook's subscriptions take an event: Attio's filter, ``$and``/``$or`` of ``{field,
        operator, value}`` with ``field`` a dot-path into the event (``POST /v2/webhooks`` in Attio's OpenAPI)."""
        def holds(cond: dict[str, Any]) -> bool:
            found: Any = event
            for part in str(cond["field"]).split("."):
                found = found.get(part) if isinstance(found, dict) else None
            return (found == cond["value"]) == (cond["operator"] == "equals")

        for sub in hook["subscriptions"]:
            if sub["event_type"] != event["event_type"]:
                continue
            rule = sub.get("filter")
            if rule is None or ("$and" in rule and all(map(holds, rule["$and"]))) or (
                "$or" in rule and any(map(holds, rule["$or"]))
            ):
                return True
        return False

    def emit(self, event_type: str, object_slug: str, record_id: str, attribute_slug: str | None = None,
             actor_type: str = "workspace-member") -> int:
        """Send one webhook delivery now (e.g. to simulate a CRM user's edit); returns the response status."""
        with self._lock:
            obj = self._object(object_slug)
            attr = self._attribute(obj, attribute_slug) if attribute_slug else None
            event = self._event(event_type, obj, record_id, attr, actor_type)
        return self._deliver(event, timeout=10.0)

    # -- in-process helpers ------------------------------------------------------------------------------------
    def setup_schema(self) -> None:
        """Create the data model of ``spec/data-model.md`` directly in state (idempotent)."""
        text, uniq = {"type": "text"}, {"type": "text", "is_unique": True}
        ts, cur = {"type": "timestamp"}, {"type": "currency", "config": {"currency": {"default_currency_code": "USD"}}}

        def ref(*targets: str) -> dict[str, Any]:
            return {"type": "record-reference", "config": {"record_reference": {"allowed_objects": list(targets)}}}

        def sel(*titles: str) -> dict[str, Any]:
            return {"type": "select", "options": titles}

        schema: dict[str, dict[str, dict[str, Any]]] = {
            "companies": {"billing_email": text, "braintree_customer_id": uniq, "zoho_customer_id": uniq},
            "services": {"external_id": uniq, "name": text, "description": text, "kind": sel("Plan", "Addon"),
                         "code": text, "price": cur, "billing_interval": text,
                         "status": sel("Active", "Inactive", "Removed"), "zoho_product_id": text,
                         "last_synced_at": ts},
            "subscriptions": {"name": text, "company": ref("companies"), "service": ref("services"),
                              "status": sel("Requested", "Awaiting payment method", "Active", "Trial", "Past due",
                                            "Non-renewing", "Cancelled", "Expired", "Failed"),
                              "zoho_subscription_id": uniq, "payment_link": text, "status_detail": text,
                              "next_billing_date": {"type": "date"}, "last_payment_at": ts, "last_event_at": ts},
            "payments": {"external_id": uniq, "company": ref("companies"), "subscription": ref("subscriptions"),
                         "zoho_invoice_id": text, "zoho_invoice_number": text, "amount": cur,
                         "status": sel("Submitted", "Settled", "Declined", "Failed", "Disputed", "Dispute won",
                                       "Dispute lost", "Refunded"),
                         "failure_reason": text, "occurred_at": ts},
        }
        with self._lock:
            for slug, attrs in schema.items():
                if not any(o["api_slug"] == slug for o in self.objects.values()):
                    noun = slug[:-1].capitalize()
                    self._create_object(slug, noun, noun + "s")
                obj = self._object(slug)
                for attr_slug, spec in attrs.items():
                    if not any(a["api_slug"] == attr_slug for a in obj["attrs"].values()):
                        title = attr_slug.replace("_", " ").capitalize()
                        self._create_attribute(obj, {"title": title, "api_slug": attr_slug, **spec})
                    attr = self._attribute(obj, attr_slug)
                    for title in spec.get("options", ()):
                        if not any(o["title"] == title for o in attr["options"]):
                            self._create_option(obj, attr, title)

    def add_record(self, object_slug: str, values: dict[str, Any]) -> str:
        """Create a record from write-form values, silently (no webhook); returns its id."""
        with self._lock:
            return self._write(self._object(object_slug), values, None, False)[0]["id"]

    def set_values(self, object_slug: str, record_id: str, values: dict[str, Any],
                   actor_type: str = "workspace-member") -> list[str]:
        """Update a record as a CRM user would (PATCH semantics, no webhook); returns the changed slugs."""
        with self._lock:
            obj = self._object(object_slug)
            changed = self._write(obj, values, self._record(obj, record_id), True, actor_type=actor_type)
            return [a["api_slug"] for a in changed]

    def get_record(self, object_slug: str, record_id: str) -> dict[str, Any]:
        """One record in the API read shape."""
        with self._lock:
            obj = self._object(object_slug)
            return self._record_read(obj, self._record(obj, record_id))

    def records(self, object_slug: str) -> list[dict[str, Any]]:
        """Every record of an object, in creation order, in the API read shape."""
        with self._lock:
            obj = self._object(object_slug)
            return [self._record_read(obj, r) for r in obj["records"].values()]

    def value(self, object_slug: str, record_id: str, slug: str) -> Any:
        """The plain value of a single-value attribute (a list for multiselects; None when unset)."""
        with self._lock:
            obj = self._object(object_slug)
            attr = self._attribute(obj, slug)
            plain = [self._plain(attr, v) for v in self._record(obj, record_id)["values"].get(attr["id"], [])]
            return plain if attr["is_multiselect"] else (plain[0] if plain else None)

    def find(self, object_slug: str, slug: str, value: Any) -> list[str]:
        """Ids of the records whose attribute equals ``value`` (same rules as a shorthand query filter)."""
        with self._lock:
            obj = self._object(object_slug)
            return [r["id"] for r in obj["records"].values() if self._matches(obj, r, {slug: value})]

    def seed_sample_data(self) -> dict[str, str]:
        """Schema plus a company, a plan service and a (not yet requested) subscription; returns their ids."""
        self.setup_schema()
        company = self.add_record("companies", {"name": "Acme Ltd", "domains": ["acme.example"],
                                                "billing_email": "billing@acme.example"})
        service = self.add_record("services", {
            "external_id": "zoho-plan:pro-monthly", "name": "Pro monthly", "kind": "Plan", "code": "pro-monthly",
            "price": 49.0, "billing_interval": "every 1 month", "status": "Active"})
        subscription = self.add_record("subscriptions", {
            "name": "Acme Pro", "company": {"target_object": "companies", "target_record_id": company},
            "service": {"target_object": "services", "target_record_id": service}})
        return {"company": company, "service": service, "subscription": subscription}

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _admit(self) -> Response | None:
        """Auth and rate limiting of a /v2 request; a response when it must be refused."""
        auth = request.headers.get("Authorization", "")
        basic = request.authorization
        if auth != f"Bearer {self.api_key}" and not (basic and basic.username == self.api_key):
            err = AttioError(401, "unauthorized", "Invalid or missing API key.", "auth_error")
            return Response(json.dumps(err.body()), 401, content_type="application/json")
        is_read = request.method in ("GET", "HEAD") or bool(_READ.search(request.path))
        limit = self.reads_per_second if is_read else self.writes_per_second
        now = int(time.time())
        with self._lock:
            second, reads, writes = self._window if self._window[0] == now else (now, 0, 0)
            used = reads if is_read else writes
            if limit is not None and used >= limit:
                self.rate_limited += 1
                self._window = (second, reads, writes)
                retry = email.utils.format_datetime(datetime.fromtimestamp(now + 1, UTC), usegmt=True)
                err = AttioError(429, "rate_limit_exceeded", "Rate limit exceeded, please try again later",
                                 "rate_limit_error")
                return Response(json.dumps(err.body()), 429, headers={"Retry-After": retry},
                                content_type="application/json")
            self._window = (second, reads + is_read, writes + (not is_read))
        request.environ["sim.attio.read"] = is_read
        return None

    def build_app(self, app: Flask) -> None:
        """Register the /v2 routes."""

        @app.before_request
        def _gate() -> Response | None:
            return self._admit() if request.path.startswith("/v2") else None

        @app.errorhandler(AttioError)
        def _attio_error(err: AttioError) -> tuple[dict[str, Any], int]:
            return err.body(), err.status

        @app.errorhandler(HTTPException)
        def _http_error(err: HTTPException) -> Any:
            if (err.code or 500) < 400:
                return err
            code = {404: "not_found", 405: "method_not_allowed"}.get(err.code or 500, "validation_type")
            return AttioError(err.code or 500, code, err.description or "").body(), err.code or 500

        def _late_headers(resp: Response) -> Response:
            if resp.status_code == 429 and "Retry-After" not in resp.headers:
                when = datetime.fromtimestamp(int(time.time()) + 1, UTC)
                resp.headers["Retry-After"] = email.utils.format_datetime(when, usegmt=True)
            resp.headers.setdefault("X-Attio-Execution-Id", _uid())
            return resp

        # Runs after base.py's fault hook, so injected 429s get a Retry-After too.
        app.after_request_funcs.setdefault(None, []).insert(0, _late_headers)

        def route(rule: str, *methods: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
            def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
                def view(**kw: Any) -> Any:
                    with self._lock:
                        result = fn(**kw)
                        if request.environ.get("sim.attio.read"):
                            self.reads_ok += 1
                        else:
                            self.writes_ok += 1
                    return result
                app.add_url_rule("/v2" + rule, fn.__name__, view, methods=list(methods))
                return fn
            return deco

        def body() -> dict[str, Any]:
            payload = request.get_json(silent=True)
            if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
                raise _bad('Body payload validation error: expected {"data": {...}}.')
            return payload["data"]

        def done(data: Any) -> dict[str, Any]:
            return {"data": data}

        @route("/self", "GET")
        def self_info() -> dict[str, Any]:
            return {"active": True, "scope": "record_permission:read-write object_configuration:read-write",
                    "token_type": "Bearer", "workspace_id": WORKSPACE_ID, "workspace_name": "Simulated",
                    "workspace_slug": "sim-workspace", "client_id": None, "authorized_by_workspace_member_id": None}

        # Webhooks: request and answer shapes of POST/GET /v2/webhooks in Attio's OpenAPI document (the
        # interfere-inc/attio repository's .speakeasy/out.openapi.yaml) and docs.attio.com's create-a-webhook page.
        @route("/webhooks", "GET")
        def list_webhooks() -> dict[str, Any]:
            limit = int(request.args.get("limit", 10))
            offset = int(request.args.get("offset", 0))
            if not 10 <= limit <= 100 or offset < 0:
                raise _bad("limit must be between 10 and 100, offset non-negative.")
            return done([{k: v for k, v in w.items() if k != "secret"} for w in self.webhooks][offset:offset + limit])

        @route("/webhooks", "POST")
        def create_webhook() -> dict[str, Any]:
            data = body()
            url, subs = data.get("target_url"), data.get("subscriptions")
            if not isinstance(url, str) or not url.startswith("https://"):
                raise _bad("Body payload validation error: target_url must match ^https://.*")
            if not isinstance(subs, list) or not all(
                isinstance(x, dict) and isinstance(x.get("event_type"), str) and "filter" in x for x in subs
            ):
                raise _bad("Body payload validation error: each subscription needs event_type and filter.")
            hook = {"target_url": url, "subscriptions": subs,
                    "id": {"workspace_id": WORKSPACE_ID, "webhook_id": _uid()}, "status": "active",
                    "created_at": _now(), "secret": secrets.token_hex(32)}
            self.webhooks.append(hook)
            return done(hook)

        @route("/objects", "GET")
        def list_objects() -> dict[str, Any]:
            return done([self._object_read(o) for o in self.objects.values()])

        @route("/objects", "POST")
        def create_object() -> dict[str, Any]:
            data = body()
            if not all(isinstance(data.get(k), str) for k in ("api_slug", "singular_noun", "plural_noun")):
                raise _bad("api_slug, singular_noun and plural_noun are required.")
            return done(self._object_read(self._create_object(data["api_slug"], data["singular_noun"],
                                                              data["plural_noun"])))

        @route("/objects/<obj>", "GET")
        def get_object(obj: str) -> dict[str, Any]:
            return done(self._object_read(self._object(obj)))

        @route("/objects/<obj>/attributes", "GET")
        def list_attributes(obj: str) -> dict[str, Any]:
            archived = request.args.get("show_archived") == "true"
            attrs = [a for a in self._object(obj)["attrs"].values() if archived or not a["is_archived"]]
            return done([self._attr_read(a) for a in attrs])

        @route("/objects/<obj>/attributes", "POST")
        def create_attribute(obj: str) -> dict[str, Any]:
            data, target = body(), self._object(obj)
            required = ("title", "description", "api_slug", "type", "is_required", "is_unique", "is_multiselect",
                        "config")
            missing = [k for k in required if k not in data]
            if missing:
                raise _bad(f"Body payload validation error: missing {', '.join(missing)}.")
            return done(self._attr_read(self._create_attribute(target, data)))

        @route("/objects/<obj>/attributes/<attr>", "GET")
        def get_attribute(obj: str, attr: str) -> dict[str, Any]:
            return done(self._attr_read(self._attribute(self._object(obj), attr)))

        @route("/objects/<obj>/attributes/<attr>", "PATCH")
        def patch_attribute(obj: str, attr: str) -> dict[str, Any]:
            data, target = body(), self._object(obj)
            found = self._attribute(target, attr)
            if {"type", "is_multiselect"} & set(data):
                raise _bad("type and is_multiselect cannot be changed.")
            slug = data.get("api_slug")
            if slug and slug != found["api_slug"]:
                if any(a["api_slug"] == slug for a in target["attrs"].values()):
                    raise AttioError(409, "slug_conflict", f'An attribute with slug "{slug}" already exists.')
                found["api_slug"] = slug
            self._configure(found, data)
            return done(self._attr_read(found))

        @route("/objects/<obj>/attributes/<attr>/options", "GET")
        def list_options(obj: str, attr: str) -> dict[str, Any]:
            found = self._attribute(self._object(obj), attr)
            archived = request.args.get("show_archived") == "true"
            return done([copy.deepcopy(o) for o in found["options"] if archived or not o["is_archived"]])

        @route("/objects/<obj>/attributes/<attr>/options", "POST")
        def create_option(obj: str, attr: str) -> dict[str, Any]:
            data, target = body(), self._object(obj)
            return done(copy.deepcopy(self._create_option(target, self._attribute(target, attr), data.get("title"))))

        @route("/objects/<obj>/attributes/<attr>/options/<opt>", "PATCH")
        def patch_option(obj: str, attr: str, opt: str) -> dict[str, Any]:
            data, found = body(), self._attribute(self._object(obj), attr)
            option = next((o for o in found["options"] if opt in (o["title"], o["id"]["option_id"])), None)
            if option is None:
                raise AttioError(404, "not_found", f'Select option "{opt}" not found.')
            if "title" in data and data["title"] != option["title"]:
                if any(o["title"] == data["title"] for o in found["options"]):
                    raise AttioError(409, "slug_conflict", f'An option with title "{data["title"]}" already exists.')
                option["title"] = data["title"]
            option["is_archived"] = bool(data.get("is_archived", option["is_archived"]))
            return done(copy.deepcopy(option))

        @route("/objects/<obj>/records/query", "POST")
        def query_records(obj: str) -> dict[str, Any]:
            target, payload = self._object(obj), request.get_json(silent=True) or {}
            if not isinstance(payload, dict):
                raise _bad("Body must be an object.")
            limit, offset = payload.get("limit", 500), payload.get("offset", 0)
            if not isinstance(limit, int) or not isinstance(offset, int) or limit < 1 or offset < 0:
                raise _bad("limit must be a positive integer and offset a non-negative one.")
            rows = [r for r in target["records"].values() if self._matches(target, r, payload.get("filter") or {})]
            for sort in reversed(payload.get("sorts") or []):
                attr = self._attribute(target, sort.get("attribute", ""), "filter_error")
                rows.sort(key=lambda r, a=attr: [self._plain(a, v) for v in r["values"].get(a["id"], [])],
                          reverse=sort.get("direction") == "desc")
            return done([self._record_read(target, r) for r in rows[offset:offset + limit]])

        @route("/objects/<obj>/records/<record_id>", "GET")
        def get_record(obj: str, record_id: str) -> dict[str, Any]:
            target = self._object(obj)
            return done(self._record_read(target, self._record(target, record_id)))

        @route("/objects/<obj>/records", "POST")
        def create_record(obj: str) -> dict[str, Any]:
            target = self._object(obj)
            record = self._write(target, body().get("values"), None, False)[0]
            self._emit_async([self._event("record.created", target, record["id"], None, "api-token")])
            return done(self._record_read(target, record))

        @route("/objects/<obj>/records", "PUT")
        def assert_record(obj: str) -> dict[str, Any]:
            target, values = self._object(obj), body().get("values")
            if not isinstance(values, dict):
                raise _bad("data.values must be an object")
            slug = request.args.get("matching_attribute")
            if not slug:
                raise _bad("The matching_attribute query parameter is required.")
            matcher = self._attribute(target, slug, "value_not_found")
            if not matcher["is_unique"]:
                raise _bad("The matching attribute specified is not a unique attribute.",
                           "matching_attribute_definition_not_unique")
            raw = next((v for k, v in values.items() if k in (matcher["id"], matcher["api_slug"])), None)
            keys = {self._key(matcher, self._convert(matcher, v)) for v in self._as_list(matcher, raw)}
            if not keys:
                raise _bad(f'The body must include a value for the matching attribute "{slug}".', "missing_value")
            hits = [r for r in target["records"].values()
                    if keys & {self._key(matcher, v) for v in r["values"].get(matcher["id"], [])}]
            if len(hits) > 1:
                raise _bad(f'Multiple records match "{slug}".', "multiple_match_results")
            if hits:
                return update(target, hits[0], values, append=False, append_slug=matcher["api_slug"])
            record = self._write(target, values, None, False)[0]
            self._emit_async([self._event("record.created", target, record["id"], None, "api-token")])
            return done(self._record_read(target, record))

        def update(target: dict[str, Any], record: dict[str, Any], values: Any, append: bool,
                   append_slug: str | None = None) -> dict[str, Any]:
            changed = self._write(target, values, record, append, append_slug)
            self._emit_async([self._event("record.updated", target, record["id"], a, "api-token") for a in changed])
            return done(self._record_read(target, record))

        @route("/objects/<obj>/records/<record_id>", "PATCH")
        def patch_record(obj: str, record_id: str) -> dict[str, Any]:
            target = self._object(obj)
            return update(target, self._record(target, record_id), body().get("values"), append=True)

        @route("/objects/<obj>/records/<record_id>", "PUT")
        def put_record(obj: str, record_id: str) -> dict[str, Any]:
            target = self._object(obj)
            return update(target, self._record(target, record_id), body().get("values"), append=False)

        @route("/objects/<obj>/records/<record_id>", "DELETE")
        def delete_record(obj: str, record_id: str) -> dict[str, Any]:
            target = self._object(obj)
            self._record(target, record_id)
            del target["records"][record_id]
            self._emit_async([self._event("record.deleted", target, record_id, None, "api-token")])
            return {}
