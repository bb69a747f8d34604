"""Sentry for the web and the workers: errors only (log records are breadcrumbs), tagged with the bound ids, and
stripped of bodies, query strings, job arguments and frame locals, then redacted, before anything is sent.

A sender's mistake (``WebhookRejected``, answered 4xx) is not an error of ours and is never sent.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from ..config import Settings
from .context import context
from .redaction import UNSAFE_FIELDS, register_secrets, scrub, secret_values

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint, MonitorConfig

__all__ = ["SENSITIVE_FIELDS", "SENSITIVE_HEADERS", "cron_checkin", "init_sentry"]

# Sentry tag per context field ("event_id" is the name of Sentry's own id, so the provider's event id is renamed).
_TAGS = {"source": "source", "event_type": "event_type", "event_id": "source_event_id", "job_id": "job_id",
         "handler": "handler", "workflow": "workflow"}
SENSITIVE_HEADERS = ("attio-signature", "x-attio-signature", "x-zoho-webhook-signature", "authorization")
SENSITIVE_FIELDS = ("bt_signature", "bt_payload", "signature", "access_token", "refresh_token", "client_secret")


def _before_send(sent: Event, hint: Hint) -> Event | None:
    """Drop expected rejections; strip bodies, query strings, job arguments and locals; tag the ids; redact."""
    from ..errors import WebhookRejected

    event = cast(dict[str, Any], sent)  # walked as the plain JSON-like dict it is

    if event.get("type") == "check_in":
        return sent
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
            crumb["data"] = {k: v for k, v in crumb["data"].items() if k not in UNSAFE_FIELDS}
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
        from ..runbook import anchor_for, link

        tags["runbook"] = link(anchor_for(exc_info[1] if exc_info else None))
    return cast("Event", scrub(event))


def _environment(settings: Settings) -> str:
    if settings.sentry_environment:
        return settings.sentry_environment
    return settings.braintree_environment if settings.braintree_environment in ("production", "sandbox") else "local"


def init_sentry(settings: Settings, component: str) -> bool:
    """Start Sentry when ``SENTRY_DSN`` is set (web and worker call this once); returns whether it started."""
    register_secrets(secret_values(settings))
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

    config: MonitorConfig | None = None
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
