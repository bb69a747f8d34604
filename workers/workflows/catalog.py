"""Workflow 1: the Zoho Billing catalogue (plans and addons) mirrored into Attio ``services``, changes only.

The full reconcile (``sync_services``): read every plan and addon from Zoho (all statuses, all pages), read the
``services`` records from Attio once, and plan the writes by comparing mapped values (everything but
``last_synced_at``, money as Decimal). Then upsert only what differs, on ``external_id``. A plan or addon Zoho no
longer returns becomes ``Removed`` (its other attributes are left as they were); nothing is deleted, records whose
``external_id`` is not ours are never touched, and nothing is written to Zoho. A failure mid-way propagates (the job
retries); the re-run reads again and writes only what is still missing, so it converges without duplicates.

One item (``sync_item``, for a ``plan_*``/``addon_*``/``product_*`` event): the same comparison over one plan or
addon re-read from Zoho (one call; the event is only a hint, so delivery order cannot matter), or over one product's
plans and addons (its list pages). What Zoho no longer has becomes ``Removed``, whatever the event said.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from integration.clients.attio_values import value

from ..records import iso

__all__ = [
    "ADDON_PREFIX",
    "COMPARED",
    "PLAN_PREFIX",
    "SERVICES",
    "AttioServices",
    "Change",
    "Progress",
    "SyncSummary",
    "WRITERS",
    "ZohoCatalog",
    "billing_interval",
    "CatalogItem",
    "map_addon",
    "map_plan",
    "plan_changes",
    "sync_item",
    "sync_services",
]

log = logging.getLogger(__name__)

SERVICES = "services"
PLAN_PREFIX = "zoho-plan:"
ADDON_PREFIX = "zoho-addon:"
REMOVED = "Removed"
MAX_CHANGES = 50  # changes a sync's result lists
# Attio clients the job writes through in parallel: Attio answers a write in ~50–150 ms, so one client alone
# could not use a 25/s budget; the shared budget, not this number, caps the rate.
WRITERS = 4
# The attributes a sync compares (and writes when they differ); ``last_synced_at`` only marks a write.
COMPARED = ("name", "description", "kind", "code", "price", "billing_interval", "status", "zoho_product_id")
# Zoho's two unit vocabularies: plans say months|years, addons monthly|yearly (reference/zoho-billing.md §3.1).
_UNITS = {
    "day": "day", "days": "day", "daily": "day",
    "week": "week", "weeks": "week", "weekly": "week",
    "month": "month", "months": "month", "monthly": "month",
    "year": "year", "years": "year", "yearly": "year",
}  # fmt: skip

_ATTIO_PLACES = Decimal("0.0001")

Progress = Callable[[int, int], None]  # (writes done, writes planned)


CatalogItem = tuple[Literal["plan", "addon", "product"], str]  # (kind, plan_code | addon_code | product_id)


class ZohoCatalog(Protocol):
    """The part of ZohoClient the sync reads."""

    def list_plans(self, status: str = "All", product_id: str | None = None) -> list[dict[str, Any]]: ...
    def list_addons(self, status: str = "All", product_id: str | None = None) -> list[dict[str, Any]]: ...
    def get_plan(self, code: str) -> dict[str, Any] | None: ...
    def get_addon(self, code: str) -> dict[str, Any] | None: ...


class AttioServices(Protocol):
    """The part of AttioClient the sync reads and writes."""

    def query_records(self, object: str, filter: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...
    def assert_record(self, object: str, matching_attribute: str, values: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Change:
    """One planned write: the record's ``external_id``, the attributes that differ and the values to upsert."""

    action: Literal["create", "update", "remove"]
    external_id: str
    fields: tuple[str, ...]
    values: Mapping[str, Any]

    def describe(self) -> str:
        """One line for people, e.g. ``update zoho-plan:basic (price, name)``."""
        if self.action == "update":
            return f"update {self.external_id} ({', '.join(self.fields)})"
        return f"{self.action} {self.external_id}"


@dataclass
class SyncSummary:
    """What a sync found and did (or, in a dry run, would do)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    def line(self) -> str:
        """The one-line summary printed by the CLI and logged by the job."""
        verb = "would be " if self.dry_run else ""
        return (
            f"services: {self.created} {verb}created, {self.updated} {verb}updated, {self.unchanged} unchanged, "
            f"{self.removed} {verb}removed in {self.seconds:.1f}s"
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able view (the job's result), listing at most ``MAX_CHANGES`` changes."""
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "changes": [c.describe() for c in self.changes[:MAX_CHANGES]],
        }


# -- mapping: Zoho → the plain values of a ``services`` record --------------------------------------------------
def billing_interval(interval: Any, unit: Any) -> str | None:
    """``every 1 month``, ``every 12 months``, ``every 1 year`` from Zoho's interval and unit (None if no unit)."""
    if unit is None or str(unit).strip() == "":
        return None
    try:
        count = int(interval) if interval not in (None, "") else 1
    except (TypeError, ValueError):
        count = 1
    raw = str(unit).strip().lower()
    word = _UNITS.get(raw)
    if word is None:  # a unit we don't know: keep Zoho's word rather than guess
        return f"every {count} {raw}"
    return f"every {count} {word}{'' if count == 1 else 's'}"


def map_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The ``services`` values of a Zoho plan (price = ``recurring_price``)."""
    code = str(plan["plan_code"])
    return {
        "external_id": PLAN_PREFIX + code,
        "name": _text(plan.get("name")),
        "description": _text(plan.get("description")),
        "kind": "Plan",
        "code": code,
        "price": _decimal(plan.get("recurring_price")),
        "billing_interval": billing_interval(plan.get("interval"), plan.get("interval_unit")),
        "status": _status(plan.get("status")),
        "zoho_product_id": _text(plan.get("product_id")),
    }


def map_addon(addon: Mapping[str, Any]) -> dict[str, Any]:
    """The ``services`` values of a Zoho addon (price = its first price bracket's; one-time → ``one time``)."""
    code = str(addon["addon_code"])
    brackets = addon.get("price_brackets") or []
    first = brackets[0] if brackets and isinstance(brackets[0], Mapping) else {}
    interval: str | None
    if str(addon.get("type") or "").lower() == "one_time":
        interval = "one time"
    else:
        interval = billing_interval(1, addon.get("interval_unit"))
    return {
        "external_id": ADDON_PREFIX + code,
        "name": _text(addon.get("name")),
        "description": _text(addon.get("description")),
        "kind": "Addon",
        "code": code,
        "price": _decimal(first.get("price", addon.get("price"))),
        "billing_interval": interval,
        "status": _status(addon.get("status")),
        "zoho_product_id": _text(addon.get("product_id")),
    }


def _text(raw: Any) -> str | None:
    text = "" if raw is None else str(raw).strip()
    return text or None


def _decimal(raw: Any) -> Decimal | None:
    if raw is None or isinstance(raw, bool) or raw == "":
        return None
    try:
        amount = raw if isinstance(raw, Decimal) else Decimal(str(raw))  # via str(): no float error in money
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite():
        return None
    # Attio stores at most 4 decimal places and refuses more; Zoho's money has 2, so this only trims float noise.
    exponent = amount.as_tuple().exponent
    return amount.quantize(_ATTIO_PLACES) if isinstance(exponent, int) and exponent < -4 else amount


def _status(raw: Any) -> str:
    return "Active" if str(raw or "").strip().lower() == "active" else "Inactive"


# -- comparing and writing --------------------------------------------------------------------------------------
def _same(current: Any, wanted: Any) -> bool:
    """Whether Attio's plain value already equals the mapped one (empty text ≡ missing; money by value)."""
    if wanted is None or wanted == "":
        return current is None or current == ""
    if isinstance(wanted, Decimal):
        try:
            return current is not None and Decimal(str(current)) == wanted
        except (InvalidOperation, ValueError):
            return False
    return bool(current == wanted)


def _write_form(plain: Any) -> Any:
    """The Attio write value of a mapped value: ``[]`` clears, money goes as a decimal string (never a float)."""
    if plain is None:
        return []
    if isinstance(plain, Decimal):
        return format(plain, "f")
    return plain


def _ours(external_id: Any) -> bool:
    return isinstance(external_id, str) and external_id.startswith((PLAN_PREFIX, ADDON_PREFIX))


def _index(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Our ``services`` records by ``external_id`` (records of other origins are left out, never touched)."""
    found: dict[str, Mapping[str, Any]] = {}
    for record in records:
        external_id = value(record, "external_id")
        if not _ours(external_id):
            continue
        if external_id in found:  # cannot happen with a unique attribute; never act on a guess
            log.warning("several services records share external_id=%s; comparing with the first", external_id)
            continue
        found[external_id] = record
    return found


def _desired(zoho: ZohoCatalog) -> dict[str, dict[str, Any]]:
    """Every plan and addon, mapped, by ``external_id`` (a code listed twice across pages counts once)."""
    wanted: dict[str, dict[str, Any]] = {}
    for plan in zoho.list_plans(status="All"):
        mapped = map_plan(plan)
        wanted[mapped["external_id"]] = mapped
    for addon in zoho.list_addons(status="All"):
        mapped = map_addon(addon)
        wanted[mapped["external_id"]] = mapped
    return wanted


def plan_changes(
    wanted: Mapping[str, Mapping[str, Any]], existing: Mapping[str, Mapping[str, Any]], *, synced_at: str
) -> tuple[list[Change], int]:
    """The writes that make Attio match ``wanted``, and how many records already do."""
    changes: list[Change] = []
    unchanged = 0
    for external_id, mapped in wanted.items():
        record = existing.get(external_id)
        if record is None:
            values = {k: _write_form(v) for k, v in mapped.items()} | {"last_synced_at": synced_at}
            changes.append(Change("create", external_id, COMPARED, values))
            continue
        differ = tuple(f for f in COMPARED if not _same(value(record, f), mapped[f]))
        if not differ:
            unchanged += 1
            continue
        values = {"external_id": external_id, **{f: _write_form(mapped[f]) for f in differ}}
        changes.append(Change("update", external_id, differ, values | {"last_synced_at": synced_at}))
    for external_id, record in existing.items():
        if external_id in wanted or value(record, "status") == REMOVED:
            continue
        values = {"external_id": external_id, "status": REMOVED, "last_synced_at": synced_at}
        changes.append(Change("remove", external_id, ("status",), values))
    return changes, unchanged


def sync_services(
    *,
    zoho: ZohoCatalog,
    attio: AttioServices,
    now: datetime,
    dry_run: bool = False,
    progress: Progress | None = None,
    writers: Sequence[AttioServices] = (),
) -> SyncSummary:
    """Reconcile Attio ``services`` with Zoho's plans and addons, writing only what differs (nothing if dry).

    ``writers`` are more Attio clients to write through in parallel, one thread each (every client holds its
    breaker's lock for the whole call, so one client never has two calls in flight); their shared rate budget
    keeps the total within Attio's limit. Without them, ``attio`` writes alone.
    """
    started = time.monotonic()
    wanted = _desired(zoho)
    existing = _index(attio.query_records(SERVICES))
    changes, unchanged = plan_changes(wanted, existing, synced_at=iso(now))
    counts = Counter(change.action for change in changes)
    summary = SyncSummary(
        created=counts["create"],
        updated=counts["update"],
        unchanged=unchanged,
        removed=counts["remove"],
        changes=changes,
        dry_run=dry_run,
    )
    if not dry_run:
        _write_all(changes, list(writers) or [attio], progress or (lambda done, total: None))
    summary.seconds = time.monotonic() - started
    log.info("catalog sync done: %s", summary.line())
    return summary


def sync_item(
    item: CatalogItem,
    *,
    zoho: ZohoCatalog,
    attio: AttioServices,
    now: datetime,
    dry_run: bool = False,
) -> SyncSummary:
    """Mirror one plan or addon (one Zoho read), or one product's plans and addons, into Attio ``services``.

    A plan or addon Zoho answers "no such" for becomes ``Removed``. For a product, a record Attio files under it
    that the product's lists no longer hold is re-read on its own: it may have moved to another product.
    """
    started = time.monotonic()
    kind, code = item
    wanted: dict[str, dict[str, Any]] = {}
    if kind == "product":
        mapped = [map_plan(p) for p in zoho.list_plans(status="All", product_id=code)]
        mapped += [map_addon(a) for a in zoho.list_addons(status="All", product_id=code)]
        wanted = {m["external_id"]: m for m in mapped}
        every = _index(attio.query_records(SERVICES))
        existing = {k: r for k, r in every.items() if k in wanted or value(r, "zoho_product_id") == code}
        for external_id in existing.keys() - wanted.keys():
            if value(existing[external_id], "status") != REMOVED:
                wanted.update(_read_one(zoho, external_id))
    else:
        external_id = (PLAN_PREFIX if kind == "plan" else ADDON_PREFIX) + code
        wanted = _read_one(zoho, external_id)
        existing = _index(attio.query_records(SERVICES, {"external_id": external_id}))
    changes, unchanged = plan_changes(wanted, existing, synced_at=iso(now))
    counts = Counter(change.action for change in changes)
    summary = SyncSummary(created=counts["create"], updated=counts["update"], unchanged=unchanged,
                          removed=counts["remove"], changes=changes, dry_run=dry_run)  # fmt: skip
    if not dry_run:
        _write_all(changes, [attio], lambda done, total: None)
    summary.seconds = time.monotonic() - started
    log.info("catalog item %s %s: %s", kind, code, summary.line())
    return summary


def _read_one(zoho: ZohoCatalog, external_id: str) -> dict[str, dict[str, Any]]:
    """The one plan or addon behind ``external_id``, mapped (empty when Zoho has no such item)."""
    if external_id.startswith(PLAN_PREFIX):
        plan = zoho.get_plan(external_id.removeprefix(PLAN_PREFIX))
        return {} if plan is None else {external_id: map_plan(plan)}
    addon = zoho.get_addon(external_id.removeprefix(ADDON_PREFIX))
    return {} if addon is None else {external_id: map_addon(addon)}


_EXIT = object()  # a writer thread's last message


def _write_all(changes: Sequence[Change], writers: Sequence[AttioServices], progress: Progress) -> None:
    """Upsert every change through the writers, one thread each; the first error stops them all and is raised.

    Progress is reported from the calling thread. However the call ends (an error, RQ's timeout), no writer
    thread is left running: each finishes the call it is in, then stops.
    """
    total = len(changes)
    progress(0, total)
    if len(writers) == 1 or total <= 1:
        for done, change in enumerate(changes, start=1):
            writers[0].assert_record(SERVICES, "external_id", change.values)
            progress(done, total)
        return
    pending: queue.SimpleQueue[Change] = queue.SimpleQueue()
    for change in changes:
        pending.put(change)
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stop = threading.Event()

    def write(client: AttioServices) -> None:
        try:
            while not stop.is_set():
                try:
                    change = pending.get_nowait()
                except queue.Empty:
                    return
                client.assert_record(SERVICES, "external_id", change.values)
                reports.put(change)
        except BaseException as exc:  # handed to the calling thread, which raises it
            stop.set()
            reports.put(exc)
        finally:
            reports.put(_EXIT)

    # each thread runs in a copy of this context: the lane (bulk) and the job's deadline go with it
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(write, w), name=f"catalog-writer-{i}",
                                daemon=True)
               for i, w in enumerate(writers)]  # fmt: skip
    errors: list[BaseException] = []
    done = 0
    try:
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            report = reports.get()
            if report is _EXIT:
                running -= 1
            elif isinstance(report, BaseException):
                errors.append(report)
            else:
                done += 1
                progress(done, total)
    finally:
        stop.set()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
    if errors:
        raise errors[0]
