"""The Attio / Zoho Billing / Braintree integration service: ``create_app()`` builds the web process.

Built from the environment, the app has the ``web`` role's settings (``integration.config``): the Attio and Zoho
credentials are neither required nor kept, and nothing at start or in a request builds an Attio or Zoho client.
The CLI (``flask --app integration …``) runs through the same app; a command that calls Attio or Zoho reads their
credentials when it runs (``commands._credentials``) or stops with one line naming the missing ones.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .config import PROVIDER_CREDENTIALS, WEB, Role, Settings
from .errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

__all__ = ["Settings", "create_app"]

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: larger webhook bodies are answered 413


def create_app(settings: Settings | None = None, *, role: Role = WEB) -> Flask:
    """Build the Flask app; with no settings, read and check the environment for ``role`` (exit with one line if
    bad). Settings given are used as they are (tests)."""
    from flask import Flask

    from .auth import require_auth_under
    from .commands import register_all
    from .dashboard import PREFIX as DASHBOARD_PREFIX
    from .dashboard import init_dashboard
    from .handlers import register_error_handlers
    from .headers import init_security_headers
    from .observability import init_request_logging, init_sentry, secret_values, setup_logging
    from .queueing import make_queues, make_redis
    from .routes import admin, attio, braintree, health, pay, zoho

    if settings is None:
        settings = _settings_or_exit(role)
    # Worker-only credentials an operator's shared env group hands the web process anyway stay out of its settings,
    # but the logs and Sentry still mask them, should anything print the environment.
    masked = settings.with_credentials(*PROVIDER_CREDENTIALS, strict=False)
    setup_logging(settings.log_level, component="web", secrets=secret_values(masked))
    init_sentry(settings, component="web")

    app = Flask(__name__)
    if settings.trusted_proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client's address as the trusted proxies saw it (auth's throttle counts per address).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)  # type: ignore[method-assign]
    init_request_logging(app)
    # One byte over the limit: werkzeug stops a body without Content-Length (chunked) at MAX_CONTENT_LENGTH without
    # saying so, so a longer one would be read cut short; _body_within_limit turns "more than MAX" into a 413.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["settings"] = settings
    connection = make_redis(settings.redis_url, socket_timeout=3.0)
    app.extensions["redis"] = connection
    app.extensions["queues"] = make_queues(connection)

    for blueprint in (attio.bp, zoho.bp, braintree.bp, health.bp, admin.bp, pay.bp):
        app.register_blueprint(blueprint)
    require_auth_under(app, ("/admin", DASHBOARD_PREFIX), settings)
    init_dashboard(app, settings)
    register_error_handlers(app)
    app.before_request_funcs.setdefault(None, []).insert(1, _body_within_limit())  # after request logging's start
    init_security_headers(app)
    register_all(app)
    return app


def _settings_or_exit(role: Role) -> Settings:
    from .config import load_dotenv_if_present

    load_dotenv_if_present()
    try:
        return Settings.from_env(role=role)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _body_within_limit() -> Callable[[], None]:
    """A hook answering 413 for a body longer than ``MAX_BODY_BYTES``, with or without ``Content-Length``."""
    from flask import request
    from werkzeug.exceptions import RequestEntityTooLarge

    def check() -> None:
        environ = request.environ  # the raw header: cheaper than request.content_length on every webhook
        if environ["REQUEST_METHOD"] not in _WITH_BODY or request.routing_exception is not None:
            return  # no route reads this body (404, 405, a GET): the answer it gets stands
        length = environ.get("CONTENT_LENGTH")
        if length:
            if length.isdigit() and int(length) > MAX_BODY_BYTES:  # (MAX_CONTENT_LENGTH lets one byte more in)
                raise RequestEntityTooLarge()
        elif len(request.get_data(cache=True)) > MAX_BODY_BYTES:
            raise RequestEntityTooLarge()  # chunked: werkzeug would have stopped at the limit without a word

    return check


_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
