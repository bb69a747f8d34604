"""Logs (JSON lines on stdout) and Sentry, both carrying the same ids and neither carrying customer data.

Ids travel in ``contextvars`` (``context``): ``bind()`` around a request or a job adds source, event id, job id and
handler to every log record and, as tags, to every Sentry event emitted inside. Two nets stop what must never leave
the process (``redaction``): payload-carrying fields are dropped (RQ's ``arguments``, request bodies, frame locals,
query strings), and every string has known secret values, email addresses and card numbers replaced. ``logs``
writes the lines, one per request among them; ``sentry`` sends the events.
"""

from __future__ import annotations

from .context import bind, bind_job, note
from .logs import init_request_logging, setup_logging
from .redaction import secret_values
from .sentry import cron_checkin, init_sentry

__all__ = [
    "bind",
    "bind_job",
    "cron_checkin",
    "init_request_logging",
    "init_sentry",
    "note",
    "secret_values",
    "setup_logging",
]
