"""What every webhook route does once an event is verified and validated: route, enqueue, answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import Response

from ..extensions import intake_resources
from ..observability import note
from ..queueing import EventEnvelope, enqueue_events
from ..routing import route_for
from ._json import json_response

__all__ = ["Candidate", "accept"]

log = logging.getLogger("integration.intake")

Candidate = tuple[str, str, dict[str, Any]]  # (event_type, dedupe id, validated event)


def accept(source: str, candidates: Sequence[Candidate], *, coalesce: bool = False) -> Response:
    """Enqueue the routed events of one delivery atomically; answer 202, or 200 duplicate / ignored.

    Every dedupe id must come from signed content (queueing's docstring); ``coalesce`` as ``EventEnvelope``'s."""
    envelopes: list[EventEnvelope] = []
    ignored: list[str] = []
    for event_type, dedupe_id, event in candidates:
        route = route_for(source, event_type)
        if route is None:
            ignored.append(event_type)
            log.debug("ignored source=%s event_type=%s event_id=%s", source, event_type, dedupe_id)
            continue
        envelopes.append(EventEnvelope(source, event_type, dedupe_id, route, event, coalesce))
    note(event_ids=[dedupe_id for _, dedupe_id, _ in candidates])
    if not envelopes:
        note(outcome="ignored", ignored=ignored)
        return json_response({"status": "ignored", "event_types": ignored}, 200)
    settings, connection, queues = intake_resources()
    outcomes = enqueue_events(connection, queues, envelopes, retry_schedule=settings.retry_schedule_seconds)
    new = [o.job_id for o in outcomes if not o.duplicate]
    dupes = [o.job_id for o in outcomes if o.duplicate]
    # The request's one log line (observability.init_request_logging) carries these ids and the outcome.
    note(job_ids=[o.job_id for o in outcomes], outcome="accepted" if new else "duplicate",
         event_types=[env.event_type for env in envelopes])
    if not new:
        return json_response({"status": "duplicate", "jobs": dupes}, 200)
    body: dict[str, Any] = {"status": "accepted", "jobs": new}
    if dupes:
        body["duplicates"] = dupes
    if ignored:
        body["ignored"] = ignored
    return json_response(body, 202)
