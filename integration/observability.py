"""Logs (JSON lines on stdout) and Sentry, both carrying the same ids and neither carrying customer data.

Ids travel in ``contextvars``: ``bind()`` around a request or a job adds source, event id, job id and handler to
every log record and, as tags, to every Sentry event emitted inside. Two nets stop what must never leave the
process: payload-carrying fields are dropped (RQ's ``arguments``, request bodies, frame locals, query strings),
and every string has known secret values, email addresses and card numbers replaced.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import json
import logging
import re
import sys
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .config import Settings
from .jsontext import encoder

if TYPE_CHECKING:
    from flask import Flask, Response

__all__ = [
    "bind",
    "bind_job",
    "context",
    "cron_checkin",
    "init_request_logging",
    "init_sentry",
    "job_fields",
    "note",
    "redact",
    "secret_values",
    "setup_logging",
]

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})
_NOTES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("request_notes", default=None)
_HIDDEN: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("request_secrets", default=())

# Sentry tag per context field ("event_id" is the name of Sentry's own id, so the provider's event id is renamed).
_TAGS = {"source": "source", "event_type": "event_type", "event_id": "source_event_id", "job_id": "job_id",
         "handler": "handler", "workflow": "workflow"}
SENSITIVE_HEADERS = ("attio-signature", "x-attio-signature", "x-zoho-webhook-signature", "authorization")
SENSITIVE_FIELDS = ("bt_signature", "bt_payload", "signature", "access_token", "refresh_token", "client_secret")
_UNSAFE_FIELDS = frozenset({"arguments", "kwargs", "args", "payload", "body", "data", "headers", "event", "form"})
_SECRET_VIEW_ARGS = frozenset({"token"})  # URL parts that are credentials (the payment page's signed token)
_SECRET_SEGMENT_AFTER = "/pay/"  # where that token sits in a path, for requests no route matched
_NOT_SECRET = frozenset({"dashboard_username", "sentry_dsn", "zoho_organization_id", "braintree_merchant_id"})
_QUIET_PATHS = frozenset({"/healthz"})  # polled every few seconds: logged at DEBUG

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A card number stands alone: no word character or dash before it, unless that is the letter of an escape
# ("\\n", "\\t" as a JSON line or a repr writes a newline or tab), and none after it.
_DIGIT_RUN = re.compile(r"(?:(?<![\w-])|(?<=\\[nrtfbv]))\d(?:[ -]?\d){12,18}(?![\w-])")
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None
_secret_forms: tuple[str, ...] = ()
# Every _DIGIT_RUN match lies inside a match of this (13+ characters of digits, spaces and dashes, digits at both
# ends), which a regex engine finds many times faster. Log times are ISO 8601 ("2026-11-30T09:19:22.123+00:00"),
# which never match it.
_CARD_SHAPED = re.compile(r"\d[\d -]{11,}\d")
# The same for a serialized (ASCII-only) line: an ASCII class is ~15 times cheaper than \d, which has to know
# every Unicode digit; non-ASCII text in a line is escaped ("\u0664"), which _may_need_redaction checks for.
_CARD_SHAPED_ASCII = re.compile(r"[0-9][0-9 -]{11,}[0-9]")
# Whether a line has 13 characters in a row of digits, spaces and dashes (as every _CARD_SHAPED_ASCII match does):
# its bytes with each of those made "#" and anything else ".", searched for 13 "#". Several times faster than that
# regex's scan, which then runs only on the few lines that have such a run.
_CARD_CHARS = bytes(ord("#") if chr(i) in "0123456789 -" else ord(".") for i in range(256))
_CARD_RUN = b"#" * 13

log = logging.getLogger("integration.request")


# -- context ----------------------------------------------------------------------------------------------------
def context() -> dict[str, Any]:
    """The ids bound to the current request or job."""
    return dict(_CONTEXT.get())


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ids to every log record and Sentry event emitted inside the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def job_fields(job: Any) -> dict[str, Any]:
    """An RQ job's ids: job id, handler (its function), and source / event type / event id from meta or payload."""
    fields: dict[str, Any] = {"job_id": job.id}
    with contextlib.suppress(Exception):  # an undeserializable job still gets its id
        fields["handler"] = job.func_name
    payload: Mapping[str, Any] = {}
    with contextlib.suppress(Exception):
        if job.args and isinstance(job.args[0], Mapping):
            payload = job.args[0]
    meta = job.meta or {}
    for key in ("source", "event_type", "event_id"):
        value = meta.get(key) or payload.get(key)
        if isinstance(value, str | int):
            fields[key] = value
    return fields


def bind_job(job: Any) -> contextlib.AbstractContextManager[None]:
    """``bind()`` an RQ job's ids (see ``job_fields``)."""
    return bind(**job_fields(job))


def note(**fields: Any) -> None:
    """Add fields (event ids, job ids) to the current request's summary line; no-op outside a request."""
    notes = _NOTES.get()
    if notes is not None:
        notes.update(fields)


# -- redaction --------------------------------------------------------------------------------------------------
def secret_values(settings: Settings) -> set[str]:
    """The credential values in the settings (each of a rotation list), as they could appear in text."""
    found: set[str] = set()
    for f in dataclasses.fields(settings):
        if f.repr or f.name in _NOT_SECRET:
            continue
        value = getattr(settings, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, str):
                found.update(part.strip() for part in item.split(",") if len(part.strip()) >= 8)
                password = _url_password(item)  # REDIS_URL's password, also where it is written alone
                if password and len(password) >= 8:
                    found.add(password)
    return found


def _url_password(text: str) -> str | None:
    if "://" not in text or "@" not in text:
        return None
    try:
        return urllib.parse.urlsplit(text).password
    except ValueError:
        return None


def _register_secrets(values: Iterable[str]) -> None:
    global _secret_re, _secret_forms
    new = {v for v in values if len(v) >= 8} - _secrets
    if new:
        _secrets.update(new)
        _secret_re = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))
        # Each secret as it appears inside a JSON line (quotes, backslashes and non-ASCII escaped) as well as raw.
        _secret_forms = tuple(_secrets | {json.dumps(s)[1:-1] for s in _secrets})


def _may_need_redaction(text: str) -> bool:
    """Whether ``redact`` could change anything in a serialized, ASCII-only JSON line: a secret, a hidden URL part,
    an ``@`` that may belong to an email address, a card number, or escaped non-ASCII text (which could hide
    Unicode digits). Cheap substring and character-class checks; the exact, slower patterns run only on the short
    stretches those flag (lookbehinds still see the characters before a stretch)."""
    return (
        any(secret in text for secret in _secret_forms)
        or (
            # (dropping a non-ASCII character can only join runs, never split one)
            _CARD_RUN in text.encode("ascii", "ignore").translate(_CARD_CHARS)
            and any(_DIGIT_RUN.search(text, m.start(), m.end()) for m in _CARD_SHAPED_ASCII.finditer(text))
        )
        or (("@" in text or "%40" in text) and bool(_EMAIL.search(text)))
        or "\\u" in text
        or any(hidden in text or json.dumps(hidden)[1:-1] in text for hidden in _HIDDEN.get())
    )


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    """A payment card number: a card brand's prefix and length, and a valid Luhn check digit."""
    n, p2, p4 = len(digits), int(digits[:2]), int(digits[:4])
    brand = (
        (digits[0] == "4" and n in (13, 16, 19))
        or ((51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16)
        or (p2 in (34, 37) and n == 15)
        or ((p4 == 6011 or p2 == 65 or 644 <= int(digits[:3]) <= 649 or p2 == 62) and 16 <= n <= 19)
        or ((3528 <= p4 <= 3589) and 16 <= n <= 19)
        or ((300 <= int(digits[:3]) <= 305 or p2 in (36, 38)) and 14 <= n <= 16)
    )
    return brand and _luhn(digits)


def _card_or_text(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if _is_card(digits) else match.group()


def redact(text: str) -> str:
    """Replace known secret values, the request's hidden URL parts, email addresses and card numbers."""
    # Each substitution runs only when a cheap check says it could match (most strings hold none of these).
    if _secret_re is not None and _secret_re.search(text):
        text = _secret_re.sub("[secret]", text)
    for hidden in _HIDDEN.get():
        text = text.replace(hidden, "[secret]")
    if "@" in text or "%40" in text:
        text = _EMAIL.sub("[email]", text)
    if _CARD_SHAPED.search(text):
        text = _DIGIT_RUN.sub(_card_or_text, text)
    return text


def _scrub(value: Any) -> Any:
    """A copy of a JSON-like value with every string redacted (other objects become redacted strings)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and 10**12 <= value < 10**19:
        return "[card]" if _is_card(str(value)) else value  # a card number passed as a number
    if value is None or isinstance(value, bool | int | float | dt.date | dt.time):
        return value
    return redact(str(value))


# -- logging ----------------------------------------------------------------------------------------------------
class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
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


_dumps = encoder(default=_json_default)  # ASCII only: non-ASCII text is escaped ("\u00e9")


class _JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, component, then the record's extra fields
    (minus payload-carrying ones) and any traceback, with every string redacted.

    The finished line is searched once for anything ``redact`` would replace; only a line with a hit is built
    again from its fields, each redacted. Written here rather than taken from python-json-logger, whose formatter
    (field renaming, reserved-attribute scans, a generic ``default``) cost 47 k more instructions per line.
    """

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        data = self.head(record.created, record.levelname, record.name, record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in _UNSAFE_FIELDS:
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return self.line(data)

    def head(self, created: float, level: str, logger: str, message: str) -> dict[str, Any]:
        """The fields every line starts with."""
        return {
            "time": dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": logger,
            "message": message,
            "component": self.component,
        }

    def line(self, data: dict[str, Any]) -> str:
        """``data`` as one JSON line, redacted."""
        line = _dumps(data)
        if _may_need_redaction(line):
            line = _dumps(_scrub(data))
        return line


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time (as ``logging.lastResort`` does for stderr)."""

    def __init__(self, formatter: _JsonLines) -> None:
        logging.Handler.__init__(self)
        self.setFormatter(formatter)
        self.json_lines = formatter

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stdout

    def write_line(self, line: str) -> None:
        """Write one finished line, as ``emit`` writes a formatted record."""
        with self.lock:  # type: ignore[union-attr]
            stream = sys.stdout
            stream.write(line + self.terminator)
            stream.flush()


_handler: _StdoutHandler | None = None


def setup_logging(level: str = "INFO", component: str = "web", *, secrets: Iterable[str] = ()) -> None:
    """JSON lines on stdout for the whole process (idempotent); ``secrets`` never appear in a line."""
    global _handler
    _register_secrets(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    if _handler is not None and _handler in root.handlers:
        return
    handler = _handler = _StdoutHandler(_JsonLines(component))
    handler.addFilter(_ContextFilter())
    root.handlers[:] = [handler]
    # Third-party loggers that would otherwise print request details at INFO.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("braintree").setLevel(logging.WARNING)


def init_request_logging(app: Flask) -> None:
    """One JSON line per request (method, path, status, duration, source, event and job ids), ids bound inside."""
    from flask import request

    # These run on every request: each reads the real request object once (every attribute read through Flask's
    # ``request`` proxy is a context lookup) and keeps its state in the WSGI environ rather than in ``g``.
    def started() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        blueprint = req.blueprint or ""
        source = blueprint.removesuffix("_webhooks") if blueprint.endswith("_webhooks") else None
        view_args = req.view_args
        hidden = tuple(str(v) for k, v in view_args.items() if k in _SECRET_VIEW_ARGS and v) if view_args else ()
        if not hidden and req.path.startswith(_SECRET_SEGMENT_AFTER):
            # No route matched (a 404 or 405 under /pay/): the segment where a token goes is hidden all the same.
            segment = req.path[len(_SECRET_SEGMENT_AFTER):].split("/", 1)[0]
            hidden = (segment,) if segment else ()
        context = _CONTEXT.get()
        req.environ[_STATE] = (
            time.perf_counter(),
            _CONTEXT.set({**context, "source": source} if source else context),
            _NOTES.set({}),
            _HIDDEN.set(hidden),
        )

    def finished(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        state = req.environ.get(_STATE)
        method, path, status = req.method, req.path, response.status_code  # no query string: it may hold a token
        level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
        if log.isEnabledFor(level):
            fields: dict[str, Any] = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - state[0]) * 1000, 1) if state else None,
                **(_NOTES.get() or {}),
            }
            _request_line(level, f"{method} {path} {status}", fields)
        return response

    def ended(exc: BaseException | None) -> None:
        state = request.environ.pop(_STATE, None)
        if state is None:
            return
        _, context_token, notes_token, hidden_token = state
        try:
            _CONTEXT.reset(context_token)
            _NOTES.reset(notes_token)
            _HIDDEN.reset(hidden_token)
        except ValueError:  # set in another context (never in Flask's own flow): leave them
            pass

    # First before-request hook, last after-request hook: the line sees the final status, even of auth refusals.
    app.before_request_funcs.setdefault(None, []).insert(0, started)
    app.after_request_funcs.setdefault(None, []).insert(0, finished)
    app.teardown_request_funcs.setdefault(None, []).append(ended)


_STATE = "integration.observability"  # the WSGI environ key of a request's start time and context tokens


def _only_way_out(handler: _StdoutHandler, level: int) -> bool:
    """Whether a record of ``level`` from ``log`` reaches that handler alone, and unfiltered but for the context."""
    if level < handler.level or len(handler.filters) != 1 or not isinstance(handler.filters[0], _ContextFilter):
        return False
    logger: logging.Logger | None = log
    while logger is not None and logger is not logging.root:
        if logger.handlers or not logger.propagate or logger.filters:
            return False
        logger = logger.parent
    return logging.root.handlers == [handler]


def _request_line(level: int, message: str, fields: dict[str, Any]) -> None:
    """Log a request's line: exactly the line ``log.log(level, message, extra=fields)`` gives, but written straight
    to the stream of ``setup_logging``'s handler when that handler is the only way out of ``log`` (as it is in the
    web process). logging's own path to it (a LogRecord, the caller's frame, the logger tree, handler filters)
    cost more than building and writing the line, on every webhook; ``bench.instructions --parts`` counts both."""
    handler = _handler
    if handler is None or not _only_way_out(handler, level):
        log.log(level, message, extra=fields)  # someone else listens too (a test's handler, another setup)
        return
    data = handler.json_lines.head(time.time(), logging.getLevelName(level), log.name, message)
    for key, value in fields.items():
        if key not in _UNSAFE_FIELDS:
            data[key] = value
    for key, value in _CONTEXT.get().items():  # what _ContextFilter adds to a record
        data.setdefault(key, value)
    handler.write_line(handler.json_lines.line(data))


# -- Sentry -----------------------------------------------------------------------------------------------------
def _before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Drop expected rejections; strip bodies, query strings, job arguments and locals; tag the ids; redact."""
    from .errors import WebhookRejected

    if event.get("type") == "check_in":
        return event
    exc_info = hint.get("exc_info")
    if exc_info and isinstance(exc_info[1], WebhookRejected):
        return None  # a sender's mistake, answered 4xx: not an error of ours
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("data", "cookies", "query_string"):
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in headers:
                if name.lower() in SENSITIVE_HEADERS:
                    headers[name] = "[Filtered]"
    extra = event.get("extra")
    rq_job = extra.get("rq-job") if isinstance(extra, dict) else None
    if isinstance(rq_job, dict):
        for key in ("args", "kwargs", "description"):  # RQ's default description is the call, arguments and all
            rq_job.pop(key, None)
    for crumb in (event.get("breadcrumbs") or {}).get("values") or []:
        if isinstance(crumb, dict) and isinstance(crumb.get("data"), dict):
            crumb["data"] = {k: v for k, v in crumb["data"].items() if k not in _UNSAFE_FIELDS}
    for kind in ("exception", "threads"):
        for item in (event.get(kind) or {}).get("values") or []:
            for frame in (item.get("stacktrace") or {}).get("frames") or []:
                frame.pop("vars", None)  # off by option already; never let a local variable through
    tags = event.setdefault("tags", {})
    bound = context()
    if "handler" not in bound and isinstance(rq_job, dict) and rq_job.get("func"):
        bound["handler"] = rq_job["func"]
    for field, tag in _TAGS.items():
        if bound.get(field) is not None and tag not in tags:
            tags[tag] = str(bound[field])[:200]
    if "runbook" not in tags:  # what to do about it: docs/runbook.md (a message sets its own, e.g. a dispute)
        from .runbook import anchor_for, link

        tags["runbook"] = link(anchor_for(exc_info[1] if exc_info else None))
    return _scrub(event)  # type: ignore[no-any-return]


def _environment(settings: Settings) -> str:
    if settings.sentry_environment:
        return settings.sentry_environment
    return settings.braintree_environment if settings.braintree_environment in ("production", "sandbox") else "local"


def init_sentry(settings: Settings, component: str) -> bool:
    """Start Sentry when ``SENTRY_DSN`` is set (web and worker call this once); returns whether it started."""
    _register_secrets(secret_values(settings))
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.rq import RqIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=_environment(settings),
        release=settings.sentry_release,
        integrations=[
            FlaskIntegration(),
            RqIntegration(),
            # Log records are breadcrumbs only: what becomes an event is decided by explicit captures and the
            # integrations (a job's last failure once, not also its "job failed" log line).
            LoggingIntegration(level=logging.INFO, event_level=None),
        ],
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        event_scrubber=EventScrubber(
            denylist=[*DEFAULT_DENYLIST, *SENSITIVE_HEADERS, *SENSITIVE_FIELDS], recursive=True
        ),
        before_send=_before_send,
    )
    sentry_sdk.get_global_scope().set_tag("component", component)
    return True


@contextlib.contextmanager
def cron_checkin(slug: str, *, interval_minutes: int | None = None, max_runtime_minutes: int = 15) -> Iterator[None]:
    """Sentry cron check-ins around one periodic run: in progress, then ok, or error if the block raises."""
    from sentry_sdk.crons import MonitorStatus, capture_checkin

    config: dict[str, Any] | None = None
    if interval_minutes:
        config = {
            "schedule": {"type": "interval", "value": interval_minutes, "unit": "minute"},
            "checkin_margin": max(1, interval_minutes // 3),  # minutes late before a run counts as missed
            "max_runtime": max_runtime_minutes,
        }
    check_in_id = capture_checkin(monitor_slug=slug, status=MonitorStatus.IN_PROGRESS, monitor_config=config)
    started, status = time.monotonic(), MonitorStatus.ERROR
    try:
        yield
        status = MonitorStatus.OK
    finally:
        capture_checkin(monitor_slug=slug, check_in_id=check_in_id, status=status,
                        duration=time.monotonic() - started, monitor_config=config)
