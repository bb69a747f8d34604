"""HTTP basic auth for the operator surfaces (``/rq`` and ``/admin``), held against password guessing.

Every wrong password is logged with the user name tried (the operator's name as is, any other as a fingerprint: people
type passwords into the user field) and the client's address, and counted per address in
Redis; the ``FAILURES_PER_MINUTE + 1``-th attempt within a minute (right or wrong) is answered 429 until the minute
is over. The client's address is the socket's peer, or, behind ``TRUSTED_PROXY_HOPS`` proxies (Render: 1), the
address those proxies appended to ``X-Forwarded-For`` (``create_app`` installs werkzeug's ``ProxyFix``), never one
the client wrote itself. If Redis does not answer, attempts are not counted (logged): an operator locked out by an
outage of the store is worse than an unthrottled minute. The password's minimum length is checked at start
(``config``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from urllib.parse import urlparse

from flask import Flask, Response, current_app, request
from redis.exceptions import RedisError

from .config import Settings

__all__ = ["FAILURES_PER_MINUTE", "basic_auth_ok", "challenge", "cross_site", "refusal", "require_auth_under"]

log = logging.getLogger("integration.auth")

FAILURES_PER_MINUTE = 10


def basic_auth_ok(settings: Settings) -> bool:
    """Whether the request carries the dashboard credentials (compared in constant time)."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    user_ok = hmac.compare_digest((auth.username or "").encode(), settings.dashboard_username.encode())
    pass_ok = hmac.compare_digest((auth.password or "").encode(), settings.dashboard_password.encode())
    return user_ok and pass_ok


def challenge() -> Response:
    """A 401 asking the browser for credentials."""
    return Response(
        '{"error": "unauthorized"}',
        status=401,
        mimetype="application/json",
        headers={"WWW-Authenticate": 'Basic realm="integration operators", charset="UTF-8"'},
    )


def _too_many(retry_after: int) -> Response:
    return Response('{"error": "too_many_attempts"}', status=429, mimetype="application/json",
                    headers={"Retry-After": str(retry_after)})


def _failures_key(address: str, minute: int) -> str:
    return f"auth:failures:{address}:{minute}"


def _failures(address: str, minute: int) -> int:
    try:
        return int(current_app.extensions["redis"].get(_failures_key(address, minute)) or 0)
    except RedisError as exc:
        log.warning("auth failures not readable: %s", type(exc).__name__)
        return 0


def _count_failure(address: str, minute: int) -> None:
    key = _failures_key(address, minute)
    try:
        pipe = current_app.extensions["redis"].pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 120)
        pipe.execute()
    except RedisError as exc:
        log.warning("auth failure not counted: %s", type(exc).__name__)


def require_auth_under(app: Flask, prefixes: tuple[str, ...], settings: Settings) -> None:
    """Refuse every request under any of ``prefixes`` (any method, known path or not) without the credentials.

    One hook for all of them: it runs before every request, webhooks included."""
    starts = tuple(p + "/" for p in prefixes)

    @app.before_request
    def _guard() -> Response | None:
        path = request.path
        if not (path in prefixes or path.startswith(starts)):
            return None
        return refusal(settings)


def refusal(settings: Settings) -> Response | None:
    """None when the request carries the operator's credentials; else the answer: 429 while its address is over
    the failure budget, 401 otherwise (a wrong password counted and logged)."""
    address = request.remote_addr or "unknown"
    now = time.time()
    minute = int(now // 60)
    if _failures(address, minute) >= FAILURES_PER_MINUTE:
        return _too_many(60 - int(now % 60))
    if basic_auth_ok(settings):
        return None
    auth = request.authorization
    if auth is not None:  # no credentials at all is a browser's first request, not a guess
        _count_failure(address, minute)
        log.warning("basic auth failed user=%s address=%s path=%s", _user_label(auth.username or "", settings),
                    address, request.path)
    return challenge()


def _user_label(name: str, settings: Settings) -> str:
    """The user name tried, as a log may show it: the operator's name as is; any other only as a fingerprint
    (people type passwords into the user field, and a user name can hold anything)."""
    if hmac.compare_digest(name.encode(), settings.dashboard_username.encode()):
        return settings.dashboard_username
    return "other#" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def cross_site() -> Response | None:
    """A 403 for a state-changing request sent by another site's page, else None.

    Browsers replay basic auth on any request to the origin, so a form on another site could post into the operator
    surfaces with the operator's credentials: its ``Origin`` (or, failing that, ``Referer``) names another host, or
    ``Sec-Fetch-Site`` says ``cross-site``. Tools (curl, the CLI) send none of these and are not affected."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    foreign = (origin is not None and (origin == "null" or urlparse(origin).netloc != request.host)) or \
        request.headers.get("Sec-Fetch-Site") == "cross-site"
    if foreign:
        log.warning("cross-site request refused origin=%r address=%s path=%s", (origin or "")[:100],
                    request.remote_addr, request.path)
        return Response('{"error": "cross_origin"}', status=403, mimetype="application/json")
    return None
