"""Settings: one frozen dataclass, read from the environment and checked at start, per process role.

Tests build ``Settings(...)`` directly (or ``Settings.for_tests(...)``); processes call
``Settings.from_env(role=...)``, which raises ``ConfigError`` naming every missing or malformed variable in one
line. The roles differ only in the provider credentials the web process never uses (``WORKER_ONLY``: Attio's API
key, Zoho's OAuth client and refresh token): the ``worker`` role requires them, the ``web`` role
neither requires nor keeps them (its settings hold ``""`` for each even when the environment sets it), so no
request, error report or debugger in the web process can reach them. A command that needs them fills them in
with ``with_credentials`` or stops naming the missing ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlparse

from .errors import ConfigError

__all__ = ["PROVIDER_CREDENTIALS", "REQUIRED", "ROLES", "WEB", "WORKER", "WORKER_ONLY", "Role", "Settings",
           "load_dotenv_if_present"]

Role = Literal["web", "worker"]
WEB: Role = "web"  # gunicorn serving create_app(): intake, /pay (Braintree), /rq, /admin, health
WORKER: Role = "worker"  # python -m workers: every provider; also where operators run the CLI
ROLES: tuple[Role, ...] = (WEB, WORKER)

# What the Attio and Zoho clients authenticate with: only jobs and CLI commands build those clients (a route never
# calls Attio or Zoho), so the web process is started without them.
PROVIDER_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "attio": ("ATTIO_API_KEY",),
    "zoho": ("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"),
}
WORKER_ONLY: tuple[str, ...] = tuple(name for names in PROVIDER_CREDENTIALS.values() for name in names)

# The webhook secrets, Braintree keys (the payment page mints client tokens and vaults cards; they also verify
# Braintree's webhooks and derive the payment-link key) and the dashboard's credentials: both roles.
# The Zoho organization id is no credential: both roles key the daily Zoho ledger by it (``/readyz``, ``quota``).
_REQUIRED_BY_ALL = (
    "ZOHO_ORGANIZATION_ID",
    "ATTIO_WEBHOOK_SECRET",
    "ZOHO_WEBHOOK_SECRET",
    "BRAINTREE_MERCHANT_ID",
    "BRAINTREE_PUBLIC_KEY",
    "BRAINTREE_PRIVATE_KEY",
    "DASHBOARD_USERNAME",
    "DASHBOARD_PASSWORD",
)
# The worker keeps the whole set: its shell is where operators run every CLI command (docs/runbook.md).
REQUIRED: dict[Role, tuple[str, ...]] = {WEB: _REQUIRED_BY_ALL, WORKER: (*WORKER_ONLY, *_REQUIRED_BY_ALL)}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_DASHBOARD_PASSWORD = 12  # characters; the dashboard is on the public internet behind basic auth


@dataclass(frozen=True)
class Settings:
    """Everything the web and worker processes are configured with."""

    attio_api_key: str = field(repr=False)
    attio_webhook_secrets: tuple[str, ...] = field(repr=False)
    zoho_client_id: str = field(repr=False)
    zoho_client_secret: str = field(repr=False)
    zoho_refresh_token: str = field(repr=False)
    zoho_organization_id: str
    zoho_webhook_secrets: tuple[str, ...] = field(repr=False)
    braintree_merchant_id: str
    braintree_public_key: str = field(repr=False)
    braintree_private_key: str = field(repr=False)
    dashboard_username: str = field(repr=False)
    dashboard_password: str = field(repr=False)
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)  # may carry the store's password
    attio_api_url: str = "https://api.attio.com"
    zoho_accounts_url: str = "https://accounts.zoho.com"
    zoho_api_url: str | None = None
    braintree_environment: str = "sandbox"
    public_base_url: str = "http://localhost:8000"
    payment_link_secret: str = field(default="", repr=False)
    payment_link_ttl_days: int = 7
    sentry_dsn: str | None = field(default=None, repr=False)
    sentry_environment: str | None = None
    sentry_release: str | None = None
    attio_writes_per_second: int = 25
    attio_reads_per_second: int = 100
    zoho_requests_per_minute: int = 30
    zoho_max_concurrent: int = 5
    catalog_sync_interval_minutes: int = 15
    retry_schedule_seconds: tuple[int, ...] = (15, 60, 300, 900, 1800)
    job_deadline_hours: int = 24  # a job deferred by "not now" (429, open circuit, busy lock) fails after this
    inline_wait_seconds: int = 5  # a Retry-After up to this long is waited inside the call, once
    log_level: str = "INFO"
    trusted_proxy_hops: int = 0
    http_timeout: tuple[float, float] = (3.05, 20.0)
    sale_search_lag_seconds: int = 600
    braintree_duplicate_window_seconds: int = 30
    braintree_merchant_accounts: tuple[tuple[str, str], ...] = ()  # (currency, merchant account id)
    reconcile_interval_minutes: int = 60  # 0 = no periodic sweeps
    reconcile_grace_minutes: int = 30  # a sweep acts only on work older than this (the webhook normally wins)
    dunning_schedule_days: tuple[float, ...] = (3, 5, 7)  # retries of a soft decline, days after the first decline
    settlement_check_after_hours: int = 24  # a card payment Submitted this long is looked up in Braintree
    # Zoho's daily quota (integration.clients.quota): what the service may use per organization-day, and the share
    # of it that only money work (collection, activation, webhooks) may take.
    zoho_requests_per_day: int = 1000
    zoho_daily_reserve_percent: int = 50
    # The catalog's full reconcile (workers.jobs.catalog): due when the last complete one began this many hours ago;
    # each CATALOG_SYNC_INTERVAL_MINUTES tick checks. 0 = every tick reconciles in full.
    catalog_full_sync_hours: int = 24

    @property
    def is_production(self) -> bool:
        """Whether money is real (Braintree production)."""
        return self.braintree_environment == "production"

    @property
    def braintree_key_pairs(self) -> tuple[tuple[str, str], ...]:
        """(public, private) key pairs; the first makes API calls, any one verifies a webhook (rotation)."""
        pubs = [k.strip() for k in self.braintree_public_key.split(",") if k.strip()]
        privs = [k.strip() for k in self.braintree_private_key.split(",") if k.strip()]
        return tuple(zip(pubs, privs, strict=False))  # from_env checks the counts match

    @property
    def link_secret(self) -> bytes:
        """Key that signs payment-page tokens; derived from the Braintree private key unless set."""
        if self.payment_link_secret:
            return self.payment_link_secret.encode()
        return hmac.new(self.braintree_key_pairs[0][1].encode(), b"payment-link-token", hashlib.sha256).digest()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, role: Role = WORKER) -> Settings:
        """Read and check every variable ``role`` uses; raise ConfigError naming each bad one.

        ``web`` leaves out ``WORKER_ONLY`` (neither required nor kept, even when set)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() != "" else default

        missing = [name for name in REQUIRED[role] if get(name) is None]
        if missing:
            problems.append("missing required variable(s): " + ", ".join(missing))

        def integer(name: str, default: int, minimum: int = 0) -> int:
            raw = get(name)
            if raw is None:
                return default
            if not re.fullmatch(r"\d+", raw) or int(raw) < minimum:
                problems.append(f"{name} must be a whole number >= {minimum}, got {raw!r}")
                return default
            return int(raw)

        def secrets(name: str) -> tuple[str, ...]:
            raw = get(name) or ""
            values = tuple(s.strip() for s in raw.split(",") if s.strip())
            if raw and not values:
                problems.append(f"{name} holds no secret")
            return values

        def url(name: str, default: str | None) -> str | None:
            raw = get(name, default)
            if raw is None:
                return None
            parsed = urlparse(raw)
            if parsed.scheme not in ("http", "https", "redis", "rediss", "unix") or not (parsed.netloc or parsed.path):
                problems.append(f"{name} must be a URL, got {_without_password(raw)!r}")
            return raw.rstrip("/")

        schedule_raw = get("RETRY_SCHEDULE_SECONDS", "15,60,300,900,1800") or ""
        schedule: tuple[int, ...] = ()
        parts = [p.strip() for p in schedule_raw.split(",")]
        if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
            problems.append(f"RETRY_SCHEDULE_SECONDS must be comma-separated seconds, got {schedule_raw!r}")
        else:
            schedule = tuple(int(p) for p in parts)

        dunning_raw = get("DUNNING_SCHEDULE_DAYS", "3,5,7") or ""
        dunning: tuple[float, ...] = ()
        days = [] if dunning_raw.lower() == "none" else [p.strip() for p in dunning_raw.split(",") if p.strip()]
        if not all(re.fullmatch(r"\d+(\.\d+)?", p) for p in days) or [float(p) for p in days] != sorted(
            float(p) for p in days
        ):
            problems.append(f"DUNNING_SCHEDULE_DAYS must be increasing comma-separated days, got {dunning_raw!r}")
        else:
            dunning = tuple(float(p) for p in days)

        bt_env = get("BRAINTREE_ENVIRONMENT", "sandbox") or "sandbox"
        if bt_env not in ("sandbox", "production") and not re.fullmatch(r"https?://[^/\s:]+:\d+/?", bt_env):
            problems.append(
                f"BRAINTREE_ENVIRONMENT must be sandbox, production or http://host:port, got {bt_env!r}"
            )
        public_base = url("PUBLIC_BASE_URL", None)
        if public_base is None and bt_env == "production":
            problems.append("missing required variable(s): PUBLIC_BASE_URL (required in production)")

        accounts: list[tuple[str, str]] = []
        accounts_raw = get("BRAINTREE_MERCHANT_ACCOUNTS", "") or ""
        for pair in (p.strip() for p in accounts_raw.split(",") if p.strip()):
            currency, _, account = pair.partition(":")
            if not re.fullmatch(r"[A-Za-z]{3}", currency.strip()) or not account.strip():
                problems.append("BRAINTREE_MERCHANT_ACCOUNTS must be CURRENCY:merchant_account_id pairs, "
                                f"comma-separated (USD:acme_usd,EUR:acme_eur), got {pair!r}")
                continue
            accounts.append((currency.strip().upper(), account.strip()))
        password = get("DASHBOARD_PASSWORD")
        if password is not None and len(password) < MIN_DASHBOARD_PASSWORD:
            problems.append(f"DASHBOARD_PASSWORD must be at least {MIN_DASHBOARD_PASSWORD} characters")

        log_level = (get("LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in _LOG_LEVELS:
            problems.append(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}")

        values: dict[str, Any] = dict(
            redis_url=url("REDIS_URL", "redis://localhost:6379/0"),
            attio_api_url=url("ATTIO_API_URL", "https://api.attio.com"),
            attio_api_key=get("ATTIO_API_KEY", ""),
            attio_webhook_secrets=secrets("ATTIO_WEBHOOK_SECRET"),
            zoho_accounts_url=url("ZOHO_ACCOUNTS_URL", "https://accounts.zoho.com"),
            zoho_api_url=url("ZOHO_API_URL", None),
            zoho_client_id=get("ZOHO_CLIENT_ID", ""),
            zoho_client_secret=get("ZOHO_CLIENT_SECRET", ""),
            zoho_refresh_token=get("ZOHO_REFRESH_TOKEN", ""),
            zoho_organization_id=get("ZOHO_ORGANIZATION_ID", ""),
            zoho_webhook_secrets=secrets("ZOHO_WEBHOOK_SECRET"),
            braintree_environment=bt_env.rstrip("/"),
            braintree_merchant_id=get("BRAINTREE_MERCHANT_ID", ""),
            braintree_public_key=get("BRAINTREE_PUBLIC_KEY", ""),
            braintree_private_key=get("BRAINTREE_PRIVATE_KEY", ""),
            public_base_url=public_base or "http://localhost:8000",
            payment_link_secret=get("PAYMENT_LINK_SECRET", ""),
            payment_link_ttl_days=integer("PAYMENT_LINK_TTL_DAYS", 7, minimum=1),
            dashboard_username=get("DASHBOARD_USERNAME", ""),
            dashboard_password=get("DASHBOARD_PASSWORD", ""),
            sentry_dsn=get("SENTRY_DSN"),
            sentry_environment=get("SENTRY_ENVIRONMENT"),
            sentry_release=get("SENTRY_RELEASE"),
            attio_writes_per_second=integer("ATTIO_WRITES_PER_SECOND", 25, minimum=1),
            attio_reads_per_second=integer("ATTIO_READS_PER_SECOND", 100, minimum=1),
            zoho_requests_per_minute=integer("ZOHO_REQUESTS_PER_MINUTE", 30, minimum=1),
            catalog_sync_interval_minutes=integer("CATALOG_SYNC_INTERVAL_MINUTES", 15),
            retry_schedule_seconds=schedule,
            job_deadline_hours=integer("JOB_DEADLINE_HOURS", 24, minimum=1),
            inline_wait_seconds=integer("INLINE_WAIT_SECONDS", 5),
            log_level=log_level,
            sale_search_lag_seconds=integer("SALE_SEARCH_LAG_SECONDS", 600),
            braintree_duplicate_window_seconds=integer("BRAINTREE_DUPLICATE_WINDOW_SECONDS", 30),
            braintree_merchant_accounts=tuple(accounts),
            trusted_proxy_hops=integer("TRUSTED_PROXY_HOPS", 0),
            reconcile_interval_minutes=integer("RECONCILE_INTERVAL_MINUTES", 60),
            reconcile_grace_minutes=integer("RECONCILE_GRACE_MINUTES", 30),
            dunning_schedule_days=dunning,
            settlement_check_after_hours=integer("SETTLEMENT_CHECK_AFTER_HOURS", 24),
            zoho_requests_per_day=integer("ZOHO_REQUESTS_PER_DAY", 1000, minimum=1),
            zoho_daily_reserve_percent=integer("ZOHO_DAILY_RESERVE_PERCENT", 50),
            catalog_full_sync_hours=integer("CATALOG_FULL_SYNC_HOURS", 24),
        )
        if not 0 <= values["zoho_daily_reserve_percent"] <= 100:
            problems.append("ZOHO_DAILY_RESERVE_PERCENT must be between 0 and 100, "
                            f"got {values['zoho_daily_reserve_percent']}")
        pubs = (values["braintree_public_key"] or "").split(",")
        privs = (values["braintree_private_key"] or "").split(",")
        if len(pubs) != len(privs):
            problems.append("BRAINTREE_PUBLIC_KEY and BRAINTREE_PRIVATE_KEY must list as many keys each")
        if problems:
            raise ConfigError("; ".join(problems))
        if role == WEB:
            values.update({name.lower(): "" for name in WORKER_ONLY})
        return cls(**values)

    def missing_credentials(self, *providers: str) -> tuple[str, ...]:
        """The variables of these providers' credentials (``PROVIDER_CREDENTIALS``) these settings lack."""
        return tuple(name for p in providers for name in PROVIDER_CREDENTIALS[p] if not getattr(self, name.lower()))

    def with_credentials(
        self, *providers: str, environ: Mapping[str, str] | None = None, strict: bool = True
    ) -> Settings:
        """These settings with the providers' credentials they lack read from the environment (a web-role app's
        CLI command); ConfigError naming every variable still missing (``strict=False``: left empty)."""
        missing = self.missing_credentials(*providers)
        if not missing:
            return self
        env = os.environ if environ is None else environ
        found: dict[str, Any] = {name.lower(): env[name].strip() for name in missing if env.get(name, "").strip()}
        still = [name for name in missing if name.lower() not in found]
        if still and strict:
            raise ConfigError("missing required variable(s): " + ", ".join(still))
        return replace(self, **found)



def _without_password(raw: str) -> str:
    """A URL as an error may show it: any password (``REDIS_URL`` carries one) replaced by ``***``."""
    head, at, tail = raw.rpartition("@")
    if not at:
        return raw
    scheme, sep, userinfo = head.partition("://")
    user = (userinfo if sep else scheme).split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{tail}" if sep else f"{user}:***@{tail}"


def load_dotenv_if_present(path: str = ".env") -> None:
    """Read a development ``.env`` into the environment without overriding what is already set."""
    if not os.path.exists(path):
        return
    from dotenv import load_dotenv

    load_dotenv(path, override=False)
