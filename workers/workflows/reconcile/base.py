"""What every sweep shares: its context (clients, knobs, the run's identity), its report, and the walk over its
items that keeps the run's position in Redis, so an interrupted run retried under the same id resumes after the last
item it did (and a dry run writes nothing, not even that position)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import redis

from integration.config import Settings
from integration.sweeps import LAST_RUN_TTL, last_run_key

from ...providers import AttioLike, BraintreeReader, ZohoLike
from ...records import amount, iso, parse_time

__all__ = ["Cursor", "SweepContext", "SweepReport", "follow_up", "money", "sort_time", "value_since", "walk"]

log = logging.getLogger(__name__)

T = TypeVar("T")
CURSOR_TTL = 24 * 3600  # seconds a stopped run's position is kept


@dataclass
class SweepReport:
    """What one sweep did."""

    sweep: str
    dry_run: bool = False
    looked_at: int = 0
    repaired: int = 0
    enqueued: int = 0
    skipped: int = 0
    unrepaired: int = 0
    planned: list[str] = field(default_factory=list)  # what a dry run would do
    jobs: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary (CLI, logs)."""
        text = (f"{self.sweep}: looked at {self.looked_at}, repaired {self.repaired}, enqueued {self.enqueued}, "
                f"skipped {self.skipped}")
        if self.unrepaired:
            text += f", could not repair {self.unrepaired}"
        return text + (" (dry run: nothing written)" if self.dry_run else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the job result and the last-run record."""
        return {"sweep": self.sweep, "dry_run": self.dry_run, "looked_at": self.looked_at, "repaired": self.repaired,
                "enqueued": self.enqueued, "skipped": self.skipped, "unrepaired": self.unrepaired,
                "jobs": self.jobs[:100]}


@dataclass(frozen=True)
class SweepContext:
    """What a sweep needs: the clients, Redis, the knobs (from the settings), the run's identity."""

    zoho: ZohoLike
    attio: AttioLike
    braintree: BraintreeReader
    connection: redis.Redis
    now: datetime
    run_id: str  # the job id (an RQ retry keeps it: the run resumes) or the CLI's own
    tag: str  # names this run's follow-up jobs (one per invoice per period)
    grace: timedelta = timedelta(minutes=30)
    settlement_after: timedelta = timedelta(hours=24)
    dunning_days: tuple[float, ...] = (3, 5, 7)
    retry_schedule: Sequence[int] = ()
    dry_run: bool = False
    progress: Callable[[int, int], None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, zoho: ZohoLike, attio: AttioLike, braintree: BraintreeReader, **kw: Any
    ) -> SweepContext:
        """A context with the settings' knobs (the clients named, so mypy checks they are what a sweep needs)."""
        return cls(zoho=zoho, attio=attio, braintree=braintree,
                   grace=timedelta(minutes=settings.reconcile_grace_minutes),
                   settlement_after=timedelta(hours=settings.settlement_check_after_hours),
                   dunning_days=settings.dunning_schedule_days, retry_schedule=settings.retry_schedule_seconds, **kw)


class Cursor:
    """A run's position in Redis: the key of the last item done, kept under the run's id."""

    def __init__(self, ctx: SweepContext, sweep: str) -> None:
        self._ctx, self._sweep = ctx, sweep
        self._key = f"reconcile:{sweep}:cursor"

    def start(self) -> str | None:
        """The key of the last item this run did (None: a fresh run, or another run's position)."""
        raw = self._ctx.connection.get(self._key)
        if raw is None:
            return None
        data = json.loads(raw)
        return str(data["after"]) if data.get("run") == self._ctx.run_id else None

    def advance(self, position: str) -> None:
        """Remember that the item ``position`` is done."""
        if not self._ctx.dry_run:
            self._ctx.connection.set(self._key, json.dumps({"run": self._ctx.run_id, "after": position}),
                                     ex=CURSOR_TTL)

    def finish(self, report: SweepReport) -> None:
        """The run is complete: forget its position, record it as the sweep's last completed run."""
        if self._ctx.dry_run:
            return
        record = {**report.as_dict(), "finished_at": iso(datetime.now(UTC)),
                  "run": self._ctx.run_id}
        record.pop("jobs", None)
        pipe = self._ctx.connection.pipeline()
        pipe.delete(self._key)
        pipe.set(last_run_key(self._sweep), json.dumps(record), ex=LAST_RUN_TTL)
        pipe.execute()


def walk(ctx: SweepContext, sweep: str, items: Iterable[tuple[str, T]], act: Callable[[T], None]) -> Cursor:
    """Run ``act`` on each item after the run's saved position, in key order, saving the position after each."""
    cursor = Cursor(ctx, sweep)
    after = cursor.start()
    todo = sorted((kv for kv in items if after is None or kv[0] > after), key=lambda kv: kv[0])
    if after is not None:
        log.info("%s sweep resumes after %s (%s items left)", sweep, after, len(todo))
    for done, (key, item) in enumerate(todo, start=1):
        act(item)
        cursor.advance(key)
        if ctx.progress is not None:
            ctx.progress(done, len(todo))
    return cursor


def follow_up(ctx: SweepContext, report: SweepReport, what: str, enqueue: Callable[[], str | None]) -> None:
    """Queue the follow-up job ``what`` names (``enqueue`` returns its id, None when the same one is queued
    already: counted as skipped); a dry run only plans it."""
    if ctx.dry_run:
        report.planned.append(what)
        report.enqueued += 1
        return
    job_id = enqueue()
    log.info("%s sweep: %s: %s", report.sweep, what, job_id or "already queued")
    if job_id is None:
        report.skipped += 1
    else:
        report.enqueued += 1
        report.jobs.append(job_id)


def value_since(record: Mapping[str, Any], slug: str) -> datetime | None:
    """Since when an attribute has its current value (Attio's ``active_from``), else the record's creation."""
    for item in (record.get("values") or {}).get(slug) or []:
        if isinstance(item, Mapping) and item.get("active_until") is None and item.get("active_from"):
            return parse_time(str(item["active_from"]))
    return parse_time(str(record.get("created_at") or ""))


def sort_time(raw: Any) -> str:
    """A timestamp as sortable UTC text ('' when unreadable)."""
    moment = parse_time(str(raw or ""))
    return moment.astimezone(UTC).isoformat() if moment else ""


def money(raw: Any) -> Decimal:
    """An amount as Decimal (0 when absent or unreadable)."""
    return amount(raw) or Decimal(0)
