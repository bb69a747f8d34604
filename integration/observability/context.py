"""The ids bound to the current request or job, and the request's own notes and hidden URL parts.

Each lives in a ``contextvars.ContextVar`` whose value is never changed in place, only replaced (``bind`` sets a new
dict and restores the old one on the way out), so a thread or task never sees another's ids.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["BOUND", "HIDDEN", "NOTES", "bind", "bind_job", "context", "job_fields", "note"]

# No mutable defaults (a dict default would be one object shared by every context): an unset variable reads as
# empty through ``bound()``.
BOUND: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("log_context")
NOTES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("request_notes", default=None)
HIDDEN: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("request_secrets", default=())

_NOTHING: Mapping[str, Any] = types.MappingProxyType({})


def bound() -> Mapping[str, Any]:
    """The bound ids, read-only (callers that keep or change them take ``context()``, a copy)."""
    return BOUND.get(_NOTHING)


def context() -> dict[str, Any]:
    """The ids bound to the current request or job."""
    return dict(bound())


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ids to every log record and Sentry event emitted inside the block."""
    token = BOUND.set({**bound(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        BOUND.reset(token)


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
    notes = NOTES.get()
    if notes is not None:
        notes.update(fields)
