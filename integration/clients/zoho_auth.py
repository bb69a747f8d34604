"""One Zoho access token per organisation, shared by every process through Redis.

Zoho Accounts mints at most 10 access tokens per refresh token per 10 minutes and keeps at most 15 alive; past
that it answers "Access Denied" for 10–30 minutes, or silently kills the oldest live token
(``reference/zoho-billing.md`` §1.2). So the token lives in one Redis hash (``zoho:token:<org>``: access_token,
api_domain, expires_at, refresh_at) and is refreshed under a Redis lock about 5 minutes before it expires; a
process re-reads the hash after taking the lock, so any number of processes mint one token per refresh.

A throttled refresh sets a cool-down key: until it expires no process asks Accounts again (each ask would extend
the throttle). A refreshed token refused again moments later is not a token problem (scope, organisation, data
centre): ``invalidate`` then keeps it, so a misconfiguration cannot turn into a mint per call.

The token answer's ``api_domain`` says where the Billing API is; the bearer token is sent there only if it is a
Zoho data centre's host over HTTPS (``zohoapis.com``, ``.eu``, ``.in``, ``.com.au``, ``.jp``, ``.com.cn``, ``.sa``,
``.ca``, ``.uk``) or the origin of the configured ``ZOHO_ACCOUNTS_URL`` itself (a simulator); ``ZOHO_API_URL``
overrides it altogether (``trusted_api_domain``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.lock
import requests

from ..config import Settings
from ..errors import ServiceError, ServiceRejected, ServiceUnavailable
from ._http import HttpCaller

__all__ = ["DEFAULT_LIFETIME", "FORCED_REFRESH_INTERVAL", "REFRESH_MARGIN", "THROTTLE_COOLDOWN", "ZohoTokens",
           "trusted_api_domain"]

_ZOHO_API_DOMAIN = re.compile(r"https://([a-z0-9-]+\.)*zoho(apis)?\.(com|eu|in|com\.au|jp|com\.cn|sa|ca|uk)")


def trusted_api_domain(api_domain: str, accounts_url: str) -> bool:
    """Whether the bearer token may be sent to ``api_domain``: a Zoho data centre over HTTPS (host only), or the
    origin of the configured accounts server."""
    if _ZOHO_API_DOMAIN.fullmatch(api_domain):
        return True
    scheme, sep, rest = accounts_url.partition("://")
    return bool(sep) and api_domain == f"{scheme}://{rest.split('/', 1)[0]}"

log = logging.getLogger(__name__)

PROVIDER = "zoho"
REFRESH_MARGIN = 300.0  # seconds before expiry a token is replaced (reference §1.2: "~5 minutes before expiry")
THROTTLE_COOLDOWN = 600.0  # seconds without any mint after "Access Denied" (reference §1.2: clears after 10–30 min)
DEFAULT_LIFETIME = 3600.0  # seconds; Zoho's documented access-token lifetime, used when the answer has none
# Seconds after a 401/57-forced refresh during which another 401/57 keeps the token: a token refused right after
# its mint points at scope, organisation or data centre, and forced mints stay at <= 5 per 10 minutes (half the cap).
FORCED_REFRESH_INTERVAL = 120
_EXPIRY_SAFETY = 30.0  # seconds: a token this close to expiry could die mid-request, so it is not handed out

# The refresh errors that are configuration problems, with what to fix (reference §1.2 and §6, pitfalls 2-3).
_CONFIG_ERRORS = {
    "invalid_client": "ZOHO_CLIENT_ID is unknown to ZOHO_ACCOUNTS_URL (wrong client id, or another data centre)",
    "invalid_client_secret": "ZOHO_CLIENT_SECRET does not match ZOHO_CLIENT_ID",
    "invalid_code": "ZOHO_REFRESH_TOKEN is unknown, revoked or deleted (generate a new one)",
    "unsupported_grant_type": "the token endpoint refused grant_type=refresh_token",
}
_TRANSIENT_ERRORS = {"server_error", "temporarily_unavailable"}

# KEYS[1] = token hash, KEYS[2] = forced-refresh marker; ARGV = token, marker ttl (s). 1 = deleted.
_INVALIDATE = """
if redis.call('HGET', KEYS[1], 'access_token') ~= ARGV[1] then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return -1
"""


@dataclass(frozen=True)
class _Token:
    access_token: str
    api_domain: str
    expires_at: float
    refresh_at: float

    def usable(self, now: float) -> bool:
        return now < self.expires_at - _EXPIRY_SAFETY


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lifetime(body: dict[str, Any]) -> float:
    """Seconds the new token lives: ``expires_in_sec`` if given, else ``expires_in`` (ms in older services)."""
    for key in ("expires_in_sec", "expires_in"):
        try:
            value = float(body[key])
        except (KeyError, TypeError, ValueError):
            continue
        if value != value or value <= 0:  # NaN or nonsense
            continue
        if key == "expires_in" and value > 86400:  # some Zoho services sent milliseconds (reference §1.1)
            value /= 1000.0
        return value
    return DEFAULT_LIFETIME


def _accounts_error(resp: requests.Response) -> tuple[str | None, str]:
    """(error, description) from a Zoho Accounts error body ``{"error", "error_description"}``."""
    body = resp.json()
    error = body.get("error")
    return (str(error) if error else None), str(body.get("error_description") or error or resp.reason or "")


class ZohoTokens:
    """The organisation's access token and API domain, minted once per refresh across every process."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        accounts_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        organization_id: str,
        http: requests.Session,
        timeout: tuple[float, float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = connection
        self.accounts_url = accounts_url.rstrip("/")
        self._form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        }
        self._caller = HttpCaller(
            provider=PROVIDER,
            base_url=accounts_url.rstrip("/"),
            http=http,
            timeout=timeout,
            parse_error=_accounts_error,
        )  # no breaker or Billing budget: Accounts is another server with its own limits
        self.key = f"zoho:token:{organization_id}"
        self.cooldown_key = f"{self.key}:cooldown"
        self._lock_key = f"{self.key}:lock"
        self._forced_key = f"{self.key}:forced"
        call_time = float(sum(timeout))
        self._lock_timeout = call_time + 5.0  # a holder killed mid-mint frees the lock after this
        self._lock_wait = call_time + 2.0  # how long a process with no usable token waits for another's mint
        self._clock = clock
        self._invalidate = connection.register_script(_INVALIDATE)

    @classmethod
    def from_settings(
        cls, settings: Settings, connection: redis.Redis, *, http: requests.Session | None = None
    ) -> ZohoTokens:
        """Tokens for the configured organisation, refresh token and data centre."""
        return cls(
            connection,
            accounts_url=settings.zoho_accounts_url,
            client_id=settings.zoho_client_id,
            client_secret=settings.zoho_client_secret,
            refresh_token=settings.zoho_refresh_token,
            organization_id=settings.zoho_organization_id,
            http=http if http is not None else requests.Session(),
            timeout=settings.http_timeout,
        )

    def token(self) -> tuple[str, str]:
        """(access token, api_domain), minting a new token only when the shared one is due for refresh."""
        current = self._read()
        now = self._clock()
        if current is not None and now < current.refresh_at:
            return current.access_token, current.api_domain
        if current is not None and current.usable(now):
            # due, not dead: one process refreshes, the others keep using it rather than wait
            return self._refresh(wait=False)
        self._check_cooldown()
        return self._refresh(wait=True)

    def invalidate(self, token: str) -> bool:
        """Drop ``token`` after a 401 / code 57 if it is still the shared one and none was dropped just before."""
        outcome = int(self._invalidate(keys=[self.key, self._forced_key], args=[token, FORCED_REFRESH_INTERVAL]))
        if outcome < 0:
            log.warning("zoho token refused again within %ss of a refresh: keeping it", FORCED_REFRESH_INTERVAL)
        return outcome == 1

    def cooldown_remaining(self) -> float:
        """Seconds until a throttled mint may be tried again (0.0 when not cooling down)."""
        pttl = int(self._redis.pttl(self.cooldown_key))
        return pttl / 1000.0 if pttl > 0 else (THROTTLE_COOLDOWN if pttl == -1 else 0.0)

    # -- internals ------------------------------------------------------------------------------------------------
    def _read(self) -> _Token | None:
        raw = {_text(k): _text(v) for k, v in self._redis.hgetall(self.key).items()}
        try:
            expires_at, refresh_at = float(raw["expires_at"]), float(raw["refresh_at"])
            return _Token(raw["access_token"], raw.get("api_domain", ""), expires_at, refresh_at)
        except (KeyError, ValueError):
            return None

    def _check_cooldown(self) -> None:
        remaining = self.cooldown_remaining()
        if remaining > 0:
            raise ServiceUnavailable(
                PROVIDER, "token refresh throttled by Zoho Accounts: cooling down", retry_after=remaining
            )

    def _refresh(self, *, wait: bool) -> tuple[str, str]:
        lock = redis.lock.Lock(self._redis, self._lock_key, timeout=self._lock_timeout, thread_local=False)
        if not lock.acquire(blocking=wait, blocking_timeout=self._lock_wait):
            current = self._read()
            if current is not None and current.usable(self._clock()):
                return current.access_token, current.api_domain
            raise ServiceUnavailable(PROVIDER, "another process is still minting the access token", retry_after=5.0)
        try:
            current = self._read()  # re-check under the lock: another process may have just refreshed
            now = self._clock()
            if current is not None and now < current.refresh_at:
                return current.access_token, current.api_domain
            try:
                self._check_cooldown()
                fresh = self._mint()
            except ServiceError as exc:
                if current is None or not current.usable(self._clock()):
                    raise
                log.warning("zoho token refresh failed, still using the current token: %s", exc)
                return current.access_token, current.api_domain
            return fresh.access_token, fresh.api_domain
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:  # it outlived its timeout: another process may already hold it
                log.warning("zoho token lock expired before release")

    def _mint(self) -> _Token:
        sent_at = self._clock()  # expiry counts from before the request: never later than Zoho's
        try:
            resp = self._caller.request("POST", "/oauth/v2/token", kind="mint", data=self._form)
        except ServiceRejected as exc:  # a 4xx: the body says what (the throttle is HTTP 400 for some clients)
            raise self._refusal(exc.code, exc.message, exc.status) from exc
        try:
            body = resp.json()
        except ValueError as exc:
            raise ServiceUnavailable(PROVIDER, "token endpoint answered non-JSON", status=resp.status_code) from exc
        if not isinstance(body, dict):
            raise ServiceUnavailable(PROVIDER, "token endpoint answered an unexpected body", status=resp.status_code)
        if body.get("error"):  # Accounts errors often come with HTTP 200 (reference §1.2, §6.2)
            raise self._refusal(str(body["error"]), str(body.get("error_description") or ""), resp.status_code)
        access = body.get("access_token")
        if not access:
            raise ServiceUnavailable(PROVIDER, "token answer without access_token", status=resp.status_code)
        lifetime = _lifetime(body)
        margin = min(REFRESH_MARGIN, lifetime / 2)  # a short-lived token must not be re-minted on every call
        token = _Token(
            access_token=str(access),
            api_domain=str(body.get("api_domain") or "").rstrip("/"),
            expires_at=sent_at + lifetime,
            refresh_at=sent_at + lifetime - margin,
        )
        fields: dict[Any, Any] = {  # Any: redis-py types hset()'s mapping invariantly
            "access_token": token.access_token,
            "api_domain": token.api_domain,
            "expires_at": repr(token.expires_at),
            "refresh_at": repr(token.refresh_at),
        }
        pipe = self._redis.pipeline()
        pipe.delete(self.key)
        pipe.hset(self.key, mapping=fields)
        pipe.expire(self.key, max(1, int(lifetime)))
        pipe.execute()
        log.info("zoho access token minted, lives %ss", int(lifetime))
        return token

    def _refusal(self, error: str | None, description: str, status: int | None) -> ServiceError:
        """The service error for an Accounts error body; a throttle also starts the shared cool-down."""
        name = (error or "").strip()
        if name.lower() == "access denied" or "too many requests" in description.lower():
            self._redis.set(self.cooldown_key, "1", ex=max(1, int(THROTTLE_COOLDOWN)))
            log.error("zoho token refresh throttled: no mint for %ss", int(THROTTLE_COOLDOWN))
            return ServiceUnavailable(
                PROVIDER,
                "Zoho Accounts throttled the token refresh (at most 10 per 10 minutes): Access Denied",
                status=status,
                code=name or None,
                retry_after=THROTTLE_COOLDOWN,
            )
        if name in _CONFIG_ERRORS:
            return ServiceRejected(
                PROVIDER, f"token refresh refused ({name}): {_CONFIG_ERRORS[name]}", status=status, code=name
            )
        if name in _TRANSIENT_ERRORS or (status or 0) >= 500:
            return ServiceUnavailable(PROVIDER, f"token refresh failed ({name})", status=status, code=name or None)
        message = f"token refresh refused ({name or 'unknown error'}): {description}"[:300]
        return ServiceRejected(PROVIDER, message, status=status, code=name or None)
