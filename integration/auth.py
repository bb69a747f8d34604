"""HTTP basic auth for the operator surfaces (``/rq`` and ``/admin``)."""

from __future__ import annotations

import hmac

from flask import Flask, Response, request

from .config import Settings

__all__ = ["basic_auth_ok", "challenge", "require_auth_under"]


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


def require_auth_under(app: Flask, prefixes: tuple[str, ...], settings: Settings) -> None:
    """Refuse every request under any of ``prefixes`` (any method, known path or not) without the credentials.

    One hook for all of them: it runs before every request, webhooks included."""
    starts = tuple(p + "/" for p in prefixes)

    @app.before_request
    def _guard() -> Response | None:
        path = request.path
        if (path in prefixes or path.startswith(starts)) and not basic_auth_ok(settings):
            return challenge()
        return None
