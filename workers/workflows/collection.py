"""Workflow 3: an open Zoho invoice → at most one Braintree sale → one Zoho payment → Attio.

At most one charge per invoice, against Braintree as it really behaves (a search index that lags behind a new
sale; ``api_request_key`` only for some merchants, the others keeping a 30 s duplicate check):

1. one collection at a time per invoice: a fenced lock (``integration.locks``), kept alive by a heartbeat while
   the job runs and checked in Redis right before every irreversible step, so a lock that lapsed anyway is noticed
   before the step, never after;
2. a charge's identity is the invoice and its *generation* (advanced only after a recorded decline or a
   processor failure), never the delivery: every delivery and retry of one attempt sends the same
   ``api_request_key``;
3. before a sale, a *charge intent* is written under that lock (``workers.intents``); while an earlier attempt's
   outcome is unknown (its answer was lost) and Braintree cannot show its sale, no new sale is made: the job waits
   (``SaleOutcomeUnknown``) until the sale shows or ``SALE_SEARCH_LAG_SECONDS`` and the duplicate window have
   passed; a merchant known to take request keys replays the very same request instead, which Braintree answers
   with the original transaction;
4. the sale of an invoice is looked for by the intent's transaction id (``find`` is immediate), by the
   reference numbers of the invoice's card payments, then by an ``order_id`` search;
5. a ``duplicate`` rejection means "probably charged": it is never booked as a decline; processor failures
   (3000, network unavailable) are retried as a new attempt; real declines are outcomes.

Every sale is booked or loudly escalated: the Zoho payment's ``amount`` is the sale, ``amount_applied`` at most the
invoice's balance (the rest stays with the customer as credit); a sale that Zoho can no longer book (the invoice
was voided, written off or paid elsewhere after it) gets its Attio payment and fails the job with
``SaleNotApplied`` ("refund or apply manually"). The Zoho payment is recorded before Attio is written, so an Attio
outage never leaves a charge unrecorded in the books.

Only invoices of subscriptions the service manages are charged (the subscription is in Attio, or its Zoho
``reference_id`` names an Attio subscription, or it is a mapped customer's with ``auto_collect: false``), in a
currency a merchant account serves (``BRAINTREE_MERCHANT_ACCOUNTS``).

A decline (or no payment method) puts the invoice in dunning (``workers.dunning``): the attempt's intent is closed
with Braintree's ``response_type``, so the next attempt is a new generation; a soft decline is tried again on
``DUNNING_SCHEDULE_DAYS``, a hard one waits for a new card. A retry made stale by another attempt does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis

from integration.clients.attio_values import record_id, value
from integration.clients.braintree import customer_id_for_company
from integration.config import Settings
from integration.errors import (
    CircuitOpen,
    SaleNotApplied,
    SaleOutcomeUnknown,
    ServiceRejected,
    ServiceUnavailable,
)
from integration.locks import Held, hold, invoice_lock, subscription_lock, transaction_lock

from ..dunning import Dunning, DunningEntry
from ..intents import DUPLICATE_WINDOW_SECONDS, ChargeIntent, ChargeIntents, DeclineMarks
from ..payments import CHARGED, is_charged, refund_undecided
from ..providers import AttioLike, BraintreeCharger, ZohoBooks
from ..records import (
    find_company_by_zoho_customer,
    find_one,
    is_stale,
    iso,
    ref,
    sale_key,
    set_subscription,
    subscription_by_reference,
    upsert_payment,
)

__all__ = ["CHARGED", "OPEN_STATUSES", "Collection", "Policy", "collect_invoice", "scope", "unbook_sale"]

log = logging.getLogger(__name__)

OPEN_STATUSES = ("sent", "overdue", "partially_paid", "unpaid")
_DESCRIPTION = "Braintree transaction "
LOCK_TTL = 60.0  # seconds; a heartbeat extends it while the job runs, so only a dead holder lets it lapse
REFUND_RECHECK_SECONDS = 600.0  # a refund settles with the next batch (hours): how often an open invoice looks again
LOCK_WAIT = 15.0  # seconds to wait for another collection of the same invoice before retrying later


@dataclass(frozen=True)
class Policy:
    """The knobs of a collection, from the settings (tests shorten them)."""

    search_lag_seconds: float = 600.0
    duplicate_window_seconds: float = DUPLICATE_WINDOW_SECONDS
    merchant_accounts: tuple[tuple[str, str], ...] = ()
    lock_ttl: float = LOCK_TTL
    lock_wait: float = LOCK_WAIT
    dunning_days: tuple[float, ...] = (3, 5, 7)  # DUNNING_SCHEDULE_DAYS

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy the configuration asks for."""
        return cls(search_lag_seconds=float(settings.sale_search_lag_seconds),
                   duplicate_window_seconds=float(settings.braintree_duplicate_window_seconds),
                   merchant_accounts=settings.braintree_merchant_accounts,
                   dunning_days=settings.dunning_schedule_days)

    @property
    def unknown_bound(self) -> float:
        """How long an attempt whose outcome is unknown blocks a new sale."""
        return max(self.search_lag_seconds, self.duplicate_window_seconds)

    def account_for(self, currency: str | None) -> tuple[bool, str | None]:
        """(served, merchant account id): without ``BRAINTREE_MERCHANT_ACCOUNTS`` every currency goes to the
        merchant's default account (None); with it, only the listed currencies are served."""
        if not self.merchant_accounts:
            return True, None
        account = dict(self.merchant_accounts).get((currency or "").upper())
        return account is not None, account


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Collection:
    """What one collection run did."""

    outcome: str  # charged | already_charged | declined | no_payment_method | currency_not_served | not_managed
    #               | nothing_to_charge | not_found | stale_retry
    invoice_id: str
    transaction_id: str | None = None
    zoho_payment_recorded: bool = False
    detail: str = ""
    dunning: DunningEntry | None = None  # after a decline: the invoice's dunning entry (its next attempt)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the job result."""
        return {
            "outcome": self.outcome,
            "invoice_id": self.invoice_id,
            "transaction_id": self.transaction_id,
            "zoho_payment_recorded": self.zoho_payment_recorded,
            "detail": self.detail,
            "declines": self.dunning.declines if self.dunning else 0,
            "next_attempt_at": self.dunning.next_at if self.dunning else None,
        }


@dataclass(frozen=True)
class _Context:
    invoice: dict[str, Any]
    company: dict[str, Any] | None
    subscription: dict[str, Any] | None
    zoho_subscription_id: str | None
    event_time: datetime | None
    connection: redis.Redis

    @property
    def invoice_id(self) -> str:
        return str(self.invoice.get("invoice_id"))

    @property
    def number(self) -> str:
        return str(self.invoice.get("number") or self.invoice.get("invoice_id"))

    @property
    def balance(self) -> Decimal:
        return Decimal(str(self.invoice.get("balance") or 0))

    @property
    def is_open(self) -> bool:
        return self.invoice.get("status") in OPEN_STATUSES and self.balance > 0

    def base_fields(self) -> dict[str, Any]:
        return {
            "company": ref("companies", record_id(self.company) if self.company else None),
            "subscription": ref("subscriptions", record_id(self.subscription) if self.subscription else None),
            "zoho_invoice_id": self.invoice_id,
            "zoho_invoice_number": str(self.invoice.get("number") or ""),
        }


def collect_invoice(
    invoice_id: str,
    *,
    zoho: ZohoBooks,
    braintree: BraintreeCharger,
    attio: AttioLike,
    connection: redis.Redis,
    event_time: datetime | None = None,
    policy: Policy = DEFAULT_POLICY,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    dunning_attempt: int | None = None,
) -> Collection:
    """Charge an open invoice's balance at most once, record it in Zoho and Attio; idempotent on retry.

    ``event_time`` is when Zoho raised the event that asked for the charge: the subscription's status is left
    alone when a newer event or outcome has already been applied to it (see ``_apply_outcome``).
    ``dunning_attempt``: this run is the retry answering that many declines; it does nothing if the invoice has
    had another attempt since (or left dunning)."""
    intents = ChargeIntents(connection)
    dunning = Dunning(connection, policy.dunning_days)
    with hold(connection, invoice_lock(invoice_id), ttl=policy.lock_ttl, wait=policy.lock_wait) as lock:
        if dunning_attempt is not None:
            entry = dunning.load(invoice_id)
            if entry is None or entry.declines != dunning_attempt:
                log.info("invoice %s: retry after decline %s is stale (now %s)", invoice_id, dunning_attempt,
                         entry.declines if entry else "out of dunning")
                return Collection("stale_retry", invoice_id)
        invoice = zoho.get_invoice(invoice_id)
        intent = intents.load(invoice_id)
        if invoice is None:
            return _invoice_gone(braintree, attio, invoice_id, intent, intents, policy, connection, now=now())
        company = find_company_by_zoho_customer(attio, str(invoice.get("customer_id")))
        managed, subscription, zoho_sub_id = scope(zoho, attio, invoice, company)
        ctx = _Context(invoice, company, subscription, zoho_sub_id, event_time, connection)

        sale, attempt = _our_sale(braintree, ctx, intent)
        if sale is not None:
            if intent is None or intent.transaction_id != str(sale.id) or intent.state != "charged":
                intent = _note_sale(intents, lock, intent, ctx, sale)
            return _book(zoho, attio, ctx, lock, sale, "already_charged", now=now())
        if intent is not None and intent.state == "pending" and attempt is not None:
            # The attempt's own transaction answered and took no money (a decline whose recording was cut short):
            # finish recording it, never sell again on its account.
            return _outcome(zoho, braintree, attio, ctx, lock, intents, intent, _result_of(attempt), policy=policy,
                            now=now)
        _wait_while_unknown(intent, intents, policy, ctx, open_invoice=ctx.is_open)
        if intent is not None and intent.state == "pending" and ctx.is_open and _keyed(intent, intents):
            # An attempt whose outcome is unknown, to a merchant that takes request keys: send the same attempt
            # again (its stored card, whatever is on file now), which Braintree answers with the original
            # transaction if there is one, and runs once if there is none. Before any scope or card rule: money
            # that may have been taken is settled first.
            log.info("invoice %s: replaying attempt %s with its request key", invoice_id, intent.generation)
            return _sell(zoho, braintree, attio, ctx, lock, intents, intent, policy=policy, now=now, fresh=False)
        if not ctx.is_open:
            log.info("invoice %s is %s with balance %s: nothing to charge", invoice_id, invoice.get("status"),
                     ctx.balance)
            dunning.clear(invoice_id)
            return Collection("nothing_to_charge", invoice_id, detail=str(invoice.get("status")))
        if not managed:
            log.info("invoice %s is not of a subscription the service manages: not charged", invoice_id)
            return Collection("not_managed", invoice_id)

        served, account = policy.account_for(invoice.get("currency_code"))
        if not served:
            reason = (f"no Braintree merchant account serves {invoice.get('currency_code')} "
                      "(BRAINTREE_MERCHANT_ACCOUNTS)")
            _record_failure(attio, ctx, intent, "Failed", reason,
                            f"Invoice {ctx.number} could not be charged: {reason}.", now=now())
            return Collection("currency_not_served", invoice_id, detail=reason)
        customer_id = value(company, "braintree_customer_id") if company else None
        token = braintree.default_payment_method(customer_id) if customer_id else None
        if not customer_id or not token:
            reason = "no payment method on file"
            # The company's Braintree customer id is its own (derived from the record): a card saved for it later
            # finds this invoice even when none was on file yet.
            payer = str(customer_id) if customer_id else (customer_id_for_company(record_id(company)) if company
                                                          else None)
            entry = dunning.declined(invoice_id, response_type=None, customer_id=payer, invoice_number=ctx.number,
                                     reason=reason)
            _record_failure(attio, ctx, intent, "Failed", reason,
                            f"Invoice {ctx.number} could not be charged: no payment method on file. "
                            "Saving one through the payment link charges it.", now=now())
            return Collection("no_payment_method", invoice_id, detail=reason, dunning=entry)

        if intent is not None and intent.state == "pending":  # unknown past the bound: taken as never made
            intent = replace(intent, state="closed")
        intent = intents.begin(lock, intent, invoice_id=invoice_id, amount=str(ctx.balance),
                               customer_id=str(customer_id), payment_method_token=str(token),
                               merchant_account_id=account)
        return _sell(zoho, braintree, attio, ctx, lock, intents, intent, policy=policy, now=now, fresh=True)


def _invoice_gone(
    braintree: BraintreeCharger, attio: AttioLike, invoice_id: str, intent: ChargeIntent | None, intents: ChargeIntents,
    policy: Policy, connection: redis.Redis, *, now: datetime,
) -> Collection:
    """Zoho has no such invoice (deleted). If the service charged for it, the money must not vanish with it."""
    if intent is None:
        log.warning("invoice %s not found in Zoho", invoice_id)
        return Collection("not_found", invoice_id)
    ctx = _Context({"invoice_id": invoice_id, "status": "deleted", "balance": 0}, None, None, None, None, connection)
    sale, _ = _our_sale(braintree, ctx, intent)
    if sale is None:
        _wait_while_unknown(intent, intents, policy, ctx, open_invoice=False)
        log.warning("invoice %s not found in Zoho; no sale of it shows", invoice_id)
        return Collection("not_found", invoice_id)
    _record_success(attio, ctx, str(sale.id), Decimal(str(sale.amount)), now=now)
    raise SaleNotApplied(
        f"Invoice {invoice_id} was deleted in Zoho Billing, but Braintree sale {sale.id} took {sale.amount} for it: "
        "refund the sale in Braintree, or record it in Zoho Billing as the customer's payment (credit) by hand."
    )


# -- finding what was charged -------------------------------------------------------------------------------------
def _our_sale(braintree: BraintreeCharger, ctx: _Context, intent: ChargeIntent | None) -> tuple[Any | None, Any | None]:
    """(the successful sale of this invoice, the intent's own transaction whatever its status).

    The sale is looked for by the intent's transaction id, by the invoice's card payments' reference numbers (both
    found at once), else by an ``order_id`` search (which lags behind a new sale; its hits are read again by id). A
    sale refunded in full does not count: its money went back (``payments.is_charged``: a voided or declined refund
    moved nothing, and a partial refund leaves the sale the invoice's charge)."""
    charged = _charged_sale_of(braintree, ctx.invoice_id, open_invoice=ctx.is_open)
    candidates = []
    if intent is not None and intent.transaction_id:
        candidates.append(intent.transaction_id)
    for payment in ctx.invoice.get("payments") or []:
        reference = str(payment.get("reference_number") or "")
        if reference and payment.get("payment_mode") in (None, "creditcard") and reference not in candidates:
            candidates.append(reference)
    attempt = None
    for txn_id in candidates:
        txn = braintree.find_transaction(txn_id)
        if intent is not None and txn_id == intent.transaction_id:
            attempt = txn
        if txn is not None and charged(txn):
            return txn, attempt
    found = braintree.find_successful_sale(ctx.invoice_id, keeps=charged)
    return found, attempt


def _charged_sale_of(braintree: Any, invoice_id: str, *, open_invoice: bool = False) -> Callable[[Any], bool]:
    """Whether a transaction is a sale of this invoice that took its money and keeps it (its refunds read by id).

    For an open invoice, raises ``SaleOutcomeUnknown`` while only refunds not settled yet make the sale refunded in
    full: one of them voided after a new sale would leave the customer charged twice (``refund_undecided``)."""

    def charged(txn: Any) -> bool:
        if str(getattr(txn, "type", "sale")) != "sale" or str(getattr(txn, "order_id", "")) != invoice_id:
            return False
        if (open_invoice and str(getattr(txn, "status", "")) in CHARGED
                and refund_undecided(txn, braintree.find_transaction)):
            raise SaleOutcomeUnknown(
                "braintree", f"invoice {invoice_id}: sale {txn.id} is refunded by refunds not settled yet (they may "
                "still be voided): no new sale until they settle", retry_after=REFUND_RECHECK_SECONDS)
        return is_charged(txn, braintree.find_transaction)

    return charged


def _note_sale(
    intents: ChargeIntents, lock: Held, intent: ChargeIntent | None, ctx: _Context, sale: Any
) -> ChargeIntent:
    """Remember a sale found by search or reference, so the next run finds it by id (immediately)."""
    if intent is None:
        intent = ChargeIntent(invoice_id=ctx.invoice_id, generation=0, state="charged", key="", amount=str(sale.amount),
                              at=intents.now())
    return intents.update(lock, intent, state="charged", transaction_id=str(sale.id))


def _keyed(intent: ChargeIntent, intents: ChargeIntents) -> bool:
    """Whether the attempt's request key is known to be honoured (by its own answer, else by the merchant's)."""
    return bool(intent.keyed if intent.keyed is not None else intents.request_keys_known())


def _wait_while_unknown(
    intent: ChargeIntent | None, intents: ChargeIntents, policy: Policy, ctx: _Context, *, open_invoice: bool
) -> None:
    """Raise ``SaleOutcomeUnknown`` while an earlier attempt may have charged and Braintree cannot show it yet."""
    if intent is None or intent.state != "pending":
        return
    age = intent.age(intents.now())  # Redis's clock: every worker measures against the same one
    if intent.duplicate_at is None and _keyed(intent, intents) and open_invoice:
        return  # the caller replays the same keyed request: Braintree itself answers whether it ran
    if age < policy.unknown_bound:
        raise SaleOutcomeUnknown(
            "braintree",
            f"invoice {ctx.invoice_id}: attempt {intent.generation} sent {age:.0f} s ago has no visible sale yet; "
            f"no new sale before {policy.unknown_bound:.0f} s",
            retry_after=max(1.0, min(policy.unknown_bound - age, 60.0)),
        )
    if intent.duplicate_at is not None:
        # Braintree said an earlier sale took the money, and its search never showed it: a person must look.
        raise SaleNotApplied(
            f"Invoice {ctx.number} ({ctx.invoice_id}): Braintree said {age:.0f} s ago that a sale of this invoice "
            f"already exists, but no sale with order_id {ctx.invoice_id} can be found. Search Braintree for the "
            "order id; book the sale in Zoho if it exists, else retry the job."
        )
    log.warning("invoice %s: attempt %s's outcome stayed unknown for %.0f s and no sale shows: treated as not made",
                ctx.invoice_id, intent.generation, age)


# -- selling ------------------------------------------------------------------------------------------------------
def _sell(
    zoho: ZohoBooks, braintree: BraintreeCharger, attio: AttioLike, ctx: _Context, lock: Held, intents: ChargeIntents,
    intent: ChargeIntent, *, policy: Policy, now: Callable[[], datetime], fresh: bool,
) -> Collection:
    """Send the attempt's sale (``fresh``: this run began it; else a replay of an attempt whose outcome is unknown,
    for the current balance: Braintree answers a seen key with its original transaction)."""
    lock.check()
    amount = Decimal(intent.amount) if fresh else ctx.balance
    try:
        result = braintree.sale(
            order_id=ctx.invoice_id, amount=amount, customer_id=str(intent.customer_id),
            payment_method_token=intent.payment_method_token,
            # A merchant known to refuse request keys gets none (saves the refused round trip).
            api_request_key=None if fresh and intents.request_keys_known() is False else intent.key,
            merchant_account_id=intent.merchant_account_id,
            resend_without_key=fresh,  # a replay refused its key must not become a new, keyless sale
        )
    except (CircuitOpen, ServiceRejected) as exc:
        if not fresh:
            _replay_refused(intents, lock, intent, exc)  # the original may still exist: never close it
        # Nothing was sent (open circuit) or nothing was created (a validation error): this attempt is over.
        intents.update(lock, intent, state="closed")
        raise
    # ServiceUnavailable: the outcome is unknown; the intent stays pending and the retry looks before it sells.
    intents.learn_request_keys(result.keyed)
    intent = intents.update(lock, intent, transaction_id=result.transaction_id, keyed=result.keyed)
    return _outcome(zoho, braintree, attio, ctx, lock, intents, intent, result, policy=policy, now=now)


def _replay_refused(intents: ChargeIntents, lock: Held, intent: ChargeIntent, exc: Exception) -> None:
    """A replay that could not be answered: the attempt stays unknown (raises ``SaleOutcomeUnknown`` or re-raises)."""
    code = getattr(exc, "code", None)
    if code == "915231":  # the merchant no longer takes request keys: wait for search instead
        intents.learn_request_keys(False)
        raise SaleOutcomeUnknown("braintree", f"invoice {intent.invoice_id}: request keys refused on a replay; "
                                 "waiting for search to show the earlier attempt") from exc
    if code == "915232":  # the key was seen with another request: the original ran
        intents.update(lock, intent, duplicate_at=intents.now())
        raise SaleOutcomeUnknown("braintree", f"invoice {intent.invoice_id}: Braintree knows attempt "
                                 f"{intent.generation}'s key: its sale exists; waiting for search") from exc
    raise exc


def _result_of(txn: Any) -> Any:
    """A ``SaleResult`` for a transaction read back by id (the attempt's own, after its recording was cut short)."""
    from integration.clients.braintree import BraintreeClient

    return BraintreeClient._sale_result(txn, None)


def _outcome(
    zoho: ZohoBooks, braintree: BraintreeCharger, attio: AttioLike, ctx: _Context, lock: Held, intents: ChargeIntents,
    intent: ChargeIntent, result: Any, *, policy: Policy, now: Callable[[], datetime],
) -> Collection:
    """Act on what the attempt's sale did."""
    if result.outcome == "charged":
        intent = intents.update(lock, intent, state="charged")
        return _book(zoho, attio, ctx, lock, _SaleView(result), "charged", now=now())
    if result.outcome == "rejected" and (result.rejection_reason or "") == "duplicate":
        # An earlier sale of this order took the money within the duplicate window: find it, never a decline.
        intent = intents.update(lock, intent, transaction_id=None, duplicate_at=intents.now())
        earlier = braintree.find_successful_sale(ctx.invoice_id, keeps=_charged_sale_of(braintree, ctx.invoice_id))
        if earlier is None:
            raise SaleOutcomeUnknown(
                "braintree", f"invoice {ctx.invoice_id}: sale refused as a duplicate; the earlier sale is not "
                "visible to search yet", retry_after=max(1.0, min(policy.search_lag_seconds / 3, 60.0)))
        intents.update(lock, intent, state="charged", transaction_id=str(earlier.id))
        return _book(zoho, attio, ctx, lock, earlier, "already_charged", now=now())
    if result.outcome == "failed":
        # Processor failures such as 3000 (network unavailable) took no money and say "try again": a new attempt.
        intents.update(lock, intent, state="closed")
        raise ServiceUnavailable("braintree", f"sale for invoice {ctx.invoice_id} failed at the processor "
                                 f"({result.processor_code}: {result.message}); retried as a new attempt")
    entry = Dunning(ctx.connection, policy.dunning_days).declined(
        ctx.invoice_id, response_type=result.response_type, customer_id=intent.customer_id, invoice_number=ctx.number,
        reason=result.message, attempt=result.transaction_id)
    detail = (f"The card was declined for invoice {ctx.number}: {result.message}. "
              f"{_dunning_note(entry, len(policy.dunning_days))}")
    _record_failure(attio, ctx, intent, "Declined", result.message, detail, now=now(),
                    transaction_id=result.transaction_id, amount=result.amount)
    # Closed only once recorded: a retry after a cut-short recording re-records it (counted once), never re-sells.
    intents.update(lock, intent, state="closed", response_type=result.response_type or "declined")
    return Collection("declined", ctx.invoice_id, transaction_id=result.transaction_id, detail=result.message,
                      dunning=entry)


def _dunning_note(entry: DunningEntry, retries: int) -> str:
    """What happens next, for the subscription's ``status_detail``."""
    if entry.next_at is not None:
        when = datetime.fromtimestamp(entry.next_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"Automatic retry {entry.declines} of {retries} on {when}."
    if entry.kind == "soft":
        return (f"No automatic retries left ({entry.declines - 1} made): saving a new payment method through the "
                "payment link charges it.")
    return "The bank refused it for good: saving a new payment method through the payment link charges it."


@dataclass(frozen=True)
class _SaleView:
    """A sale's id and amount from the sale's own answer (when ``find`` does not answer at once)."""

    result: Any

    @property
    def id(self) -> str:
        return str(self.result.transaction_id)

    @property
    def amount(self) -> Decimal:
        return Decimal(str(self.result.amount))


# -- booking ------------------------------------------------------------------------------------------------------
_OVER_APPLIED = "24016"  # Zoho: the amount applied exceeds the invoice's balance (it changed since it was read)


def _book(zoho: ZohoBooks, attio: AttioLike, ctx: _Context, lock: Held, sale: Any, outcome: str, *, now: datetime
          ) -> Collection:
    """Record a sale that took the money: the Zoho payment unless the invoice lists it, then Attio."""
    txn_id, amount = str(sale.id), Decimal(str(sale.amount))
    posted = reread = False
    while True:  # a second pass only after Zoho refused an over-application: the balance changed meanwhile
        if any(str(p.get("reference_number")) == txn_id for p in ctx.invoice.get("payments") or []):
            break
        if not ctx.is_open:
            _record_success(attio, ctx, txn_id, amount, now=now)  # money was taken: Attio shows it whatever Zoho says
            raise SaleNotApplied(
                f"Invoice {ctx.number} ({ctx.invoice_id}) is {ctx.invoice.get('status')} with balance {ctx.balance}, "
                f"but Braintree sale {txn_id} took {amount} for it and Zoho has no payment for that sale: refund the "
                f"sale in Braintree, or record it in Zoho Billing as the customer's payment (credit) by hand."
            )
        lock.check()
        try:
            zoho.record_payment(
                customer_id=str(ctx.invoice.get("customer_id")), invoice_id=ctx.invoice_id, amount=amount,
                amount_applied=min(amount, ctx.balance), reference_number=txn_id, date=now.date(),
                description=f"{_DESCRIPTION}{txn_id}",
            )
        except ServiceRejected as exc:
            if str(exc.code) != _OVER_APPLIED or reread:
                raise
            reread = True
            log.info("invoice %s: Zoho's balance changed since it was read (%s); reading it again", ctx.invoice_id,
                     exc.message)
            ctx = replace(ctx, invoice=zoho.get_invoice(ctx.invoice_id) or {**ctx.invoice, "status": "deleted",
                                                                              "balance": 0})
            continue
        posted = True
        break
    _record_success(attio, ctx, txn_id, amount, now=now)
    return Collection(outcome, ctx.invoice_id, transaction_id=txn_id, zoho_payment_recorded=posted)


def _record_success(attio: AttioLike, ctx: _Context, txn_id: str, amount: Decimal, *, now: datetime) -> None:
    # The same lock as the lifecycle jobs of this transaction: a settlement or dispute applied meanwhile must not
    # be overwritten by this read-then-write (upsert_payment never moves a status back, given it reads the latest).
    with hold(ctx.connection, transaction_lock(txn_id), ttl=60.0, wait=15.0):
        upsert_payment(
            attio,
            sale_key(txn_id),
            {**ctx.base_fields(), "amount": str(amount), "status": "Submitted", "failure_reason": "",
             "occurred_at": iso(now)},
        )
    Dunning(ctx.connection).clear(ctx.invoice_id)  # paid: no retry is due any more
    _apply_outcome(attio, ctx, success=True, detail="", paid_at=now)


def _record_failure(
    attio: AttioLike, ctx: _Context, intent: ChargeIntent | None, status: str, reason: str, detail: str, *,
    now: datetime, transaction_id: str | None = None, amount: Any = None,
) -> None:
    generation = intent.generation if intent is not None else 0
    external_id = sale_key(transaction_id) if transaction_id else f"zoho-invoice:{ctx.invoice_id}:g{generation}"
    upsert_payment(
        attio,
        external_id,
        {**ctx.base_fields(), "amount": str(amount if amount is not None else ctx.balance), "status": status,
         "failure_reason": reason, "occurred_at": iso(now)},
    )
    _apply_outcome(attio, ctx, success=False, detail=detail, paid_at=None)


def _apply_outcome(attio: AttioLike, ctx: _Context, *, success: bool, detail: str, paid_at: datetime | None) -> None:
    """Write a collection's outcome to the invoice's subscription, under the lock lifecycle events take too.

    ``last_payment_at`` is written for every success; the status only if neither a newer Zoho event
    (``last_event_at``) nor a newer invoice's outcome has been applied, and a success makes it ``Active`` only when
    no other invoice's decline still stands. ``last_event_at`` is read, not moved: lifecycle jobs stay its writers.
    """
    if ctx.subscription is None or ctx.zoho_subscription_id is None:
        return
    with hold(ctx.connection, subscription_lock(ctx.zoho_subscription_id), ttl=60.0, wait=15.0):
        record = attio.get_record("subscriptions", record_id(ctx.subscription)) or ctx.subscription
        marks = DeclineMarks(ctx.connection, record_id(record))
        declined, outcome_at = marks.read()
        (declined.discard if success else declined.add)(ctx.invoice_id)
        moment = ctx.event_time
        newest = moment is None or outcome_at is None or moment >= outcome_at
        changes: dict[str, Any] = {"last_payment_at": iso(paid_at)} if paid_at is not None else {}
        if is_stale(record, moment) or not newest:
            log.info("subscription %s has an event or outcome newer than invoice %s's: status left as is",
                     record_id(record), ctx.invoice_id)
        elif not success:
            changes.update(status="Past due", status_detail=detail)
        elif not declined:
            changes.update(status="Active", status_detail="")
        marks.write(declined, moment if newest and moment is not None else outcome_at)
        set_subscription(attio, record, changes)


# -- scope ----------------------------------------------------------------------------------------------------
def scope(
    zoho: ZohoBooks, attio: AttioLike, invoice: dict[str, Any], company: dict[str, Any] | None
) -> tuple[bool, dict[str, Any] | None, str | None]:
    """(managed, the Attio subscription, the Zoho subscription id) of an invoice.

    Managed: its subscription is in Attio (by ``zoho_subscription_id``), or Zoho's ``reference_id`` names an Attio
    subscription (the first invoice, raised before the activation wrote the id back), or it is a mapped customer's
    subscription with ``auto_collect: false``. The Zoho subscription is read only when Attio does not know it."""
    sub_ids = [str(s["subscription_id"]) for s in invoice.get("subscriptions") or []
               if isinstance(s, dict) and s.get("subscription_id")]
    if not sub_ids:
        return False, None, None  # a one-off invoice: finance collects it, not the service
    zoho_sub_id = sub_ids[0]
    record = find_one(attio, "subscriptions", "zoho_subscription_id", zoho_sub_id)
    if record is not None:
        return True, record, zoho_sub_id
    zsub = zoho.get_subscription(zoho_sub_id)
    if zsub is None:
        return False, None, zoho_sub_id
    candidate = subscription_by_reference(attio, zoho_sub_id, str(zsub.get("reference_id") or ""))
    if candidate is not None:
        return True, candidate, zoho_sub_id
    managed = zsub.get("auto_collect") is False and company is not None
    return managed, None, zoho_sub_id


# -- a sale that never settled ----------------------------------------------------------------------------------
def unbook_sale(invoice_id: str, transaction_id: str, *, zoho: ZohoBooks, connection: redis.Redis) -> bool:
    """Take a sale whose settlement was declined off its Zoho invoice: the payment that recorded it is deleted (the
    invoice reopens, so it is collected again) and the charge intent is closed (the next attempt is a new
    generation, with a new request key). Under the invoice's lock; idempotent. Returns whether a payment went."""
    intents = ChargeIntents(connection)
    with hold(connection, invoice_lock(invoice_id), ttl=LOCK_TTL, wait=LOCK_WAIT) as lock:
        invoice = zoho.get_invoice(invoice_id) or {}
        payments = [p for p in invoice.get("payments") or [] if str(p.get("reference_number")) == transaction_id]
        removed = False
        for payment in payments:
            lock.check()
            removed = zoho.delete_payment(str(payment["payment_id"])) or removed
            log.warning("invoice %s: payment %s of sale %s deleted in Zoho (settlement declined); the invoice is open "
                        "again", invoice_id, payment["payment_id"], transaction_id)
        intent = intents.load(invoice_id)
        if intent is not None and intent.transaction_id == transaction_id and intent.state != "closed":
            intents.update(lock, intent, state="closed")
        return removed
