"""Logging (JSON lines on stdout, with source / event id / job id / handler on every record) and Sentry.

Context travels in ``contextvars`` so a request's or a job's log lines all carry the same ids without passing
them around. Nothing here logs a body, a header value, a token or a signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from .config import Settings

__all__ = ["bind", "context", "init_sentry", "setup_logging"]

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})
_CONTEXT_FIELDS = ("source", "event_id", "event_type", "job_id", "handler", "component")
SENSITIVE_HEADERS = ("attio-signature", "x-attio-signature", "x-zoho-webhook-signature", "authorization")
SENSITIVE_FIELDS = ("bt_signature", "bt_payload", "signature", "access_token", "refresh_token", "client_secret")


def context() -> dict[str, Any]:
    """The ids bound to the current request or job."""
    return dict(_CONTEXT.get())


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ids to every log record emitted inside the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


_configured = False


def setup_logging(level: str = "INFO", component: str = "web") -> None:
    """JSON lines on stdout for the whole process (idempotent)."""
    global _configured
    root = logging.getLogger()
    root.setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"component": component},
        )
    )
    handler.addFilter(_ContextFilter())
    root.handlers[:] = [handler]
    # Third-party loggers that would otherwise print request details at INFO.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("braintree").setLevel(logging.WARNING)
    _configured = True


def _before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    from .errors import WebhookRejected

    exc_info = hint.get("exc_info")
    if exc_info and isinstance(exc_info[1], WebhookRejected):
        return None  # a sender's mistake, answered 4xx: not an error of ours
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in list(headers):
                if name.lower() in SENSITIVE_HEADERS:
                    headers[name] = "[Filtered]"
    return event


def init_sentry(settings: Settings, component: str) -> bool:
    """Start Sentry when ``SENTRY_DSN`` is set (web and worker call this once); returns whether it started."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.rq import RqIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        release=settings.sentry_release,
        integrations=[FlaskIntegration(), RqIntegration()],
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        event_scrubber=EventScrubber(denylist=[*DEFAULT_DENYLIST, *SENSITIVE_HEADERS, *SENSITIVE_FIELDS]),
        before_send=_before_send,
        server_name=component,
    )
    sentry_sdk.set_tag("component", component)
    return True
