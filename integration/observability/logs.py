"""JSON lines on stdout, one per record, each carrying the bound ids and nothing private; one line per request.

Every line goes through ``logging`` (a ``LogRecord``, the logger tree, the handler's filters): the request line is
a record of ``integration.request`` like any other. A line is serialized once and searched for anything
``redact`` would replace; only a line with a hit is built again from its fields, each redacted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .context import BOUND, HIDDEN, NOTES, bound
from .redaction import UNSAFE_FIELDS, may_need_redaction, register_secrets, scrub

if TYPE_CHECKING:
    from flask import Flask, Response

__all__ = ["init_request_logging", "setup_logging"]

_SECRET_VIEW_ARGS = frozenset({"token"})  # URL parts that are credentials (the payment page's signed token)
_SECRET_SEGMENT_AFTER = "/pay/"  # where that token sits in a path, for requests no route matched
_QUIET_PATHS = frozenset({"/healthz"})  # polled every few seconds: logged at DEBUG
_STATE = "integration.observability"  # the WSGI environ key of a request's start time and context tokens

log = logging.getLogger("integration.request")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in bound().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# Every attribute a plain LogRecord has: what is not one of these was passed in ``extra`` (or set by a filter).
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _json_default(value: Any) -> Any:
    """How a log field that JSON cannot hold is written: dates as ISO 8601, anything else as its ``str``."""
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


_dumps = json.JSONEncoder(default=_json_default).encode  # ASCII only: non-ASCII text is escaped ("\u00e9")


class _JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, component, then the record's extra fields
    (minus payload-carrying ones) and any traceback, with every string redacted."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": self.component,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in UNSAFE_FIELDS:
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        line = _dumps(data)
        return _dumps(scrub(data)) if may_need_redaction(line) else line


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time (as ``logging.lastResort`` does for stderr)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's, which would keep today's sys.stdout

    @property
    def stream(self) -> Any:
        return sys.stdout


_handler: _StdoutHandler | None = None


def setup_logging(level: str = "INFO", component: str = "web", *, secrets: Iterable[str] = ()) -> None:
    """JSON lines on stdout for the whole process (idempotent); ``secrets`` never appear in a line."""
    global _handler
    register_secrets(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    if _handler is not None and _handler in root.handlers:
        return
    handler = _handler = _StdoutHandler()
    handler.setFormatter(_JsonLines(component))
    handler.addFilter(_ContextFilter())
    root.handlers[:] = [handler]
    # Third-party loggers that would otherwise print request details at INFO.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("braintree").setLevel(logging.WARNING)


def init_request_logging(app: Flask) -> None:
    """One JSON line per request (method, path, status, duration, source, event and job ids), ids bound inside.

    Call it before any other request hook is registered: Flask runs an app's ``before_request`` hooks in the order
    they were registered and its ``after_request`` hooks in the reverse, so these come first and last, and the line
    sees the final status, even of a refusal by another hook."""
    from flask import request

    @app.before_request
    def started() -> None:
        blueprint = request.blueprint or ""
        source = blueprint.removesuffix("_webhooks") if blueprint.endswith("_webhooks") else None
        view_args = request.view_args
        hidden = tuple(str(v) for k, v in view_args.items() if k in _SECRET_VIEW_ARGS and v) if view_args else ()
        if not hidden and request.path.startswith(_SECRET_SEGMENT_AFTER):
            # No route matched (a 404 or 405 under /pay/): the segment where a token goes is hidden all the same.
            segment = request.path[len(_SECRET_SEGMENT_AFTER):].split("/", 1)[0]
            hidden = (segment,) if segment else ()
        context = bound()
        request.environ[_STATE] = (
            time.perf_counter(),
            BOUND.set({**context, "source": source} if source else context),
            NOTES.set({}),
            HIDDEN.set(hidden),
        )

    @app.after_request
    def finished(response: Response) -> Response:
        state = request.environ.get(_STATE)
        level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
        # No query string: it may hold a token.
        log.log(level, "%s %s %s", request.method, request.path, response.status_code, extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - state[0]) * 1000, 1) if state else None,
            **(NOTES.get() or {}),
        })
        return response

    @app.teardown_request
    def ended(exc: BaseException | None) -> None:
        state = request.environ.pop(_STATE, None)
        if state is None:
            return
        _, context_token, notes_token, hidden_token = state
        try:
            BOUND.reset(context_token)
            NOTES.reset(notes_token)
            HIDDEN.reset(hidden_token)
        except ValueError:  # set in another context (never in Flask's own flow): leave them
            pass
