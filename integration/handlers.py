"""JSON error answers: what the sender did wrong is a 4xx, an unreachable Redis a 503, never a 500 by input."""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from flask import Flask
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .errors import PayloadInvalid, QueueUnavailable, WebhookRejected

__all__ = ["register_error_handlers"]

log = logging.getLogger("integration.web")


def register_error_handlers(app: Flask) -> None:
    """Map the error tree (and marshmallow / werkzeug errors) to the answers of spec/interface.md."""

    @app.errorhandler(WebhookRejected)
    def _rejected(exc: WebhookRejected) -> tuple[dict[str, Any], int]:
        log.info("rejected status=%s reason=%s", exc.status, exc)
        return exc.to_body(), exc.status

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError) -> tuple[dict[str, Any], int]:
        return _rejected(PayloadInvalid("schema validation failed", details=exc.messages))

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> tuple[dict[str, Any], int]:
        return {"error": "payload_too_large"}, 413

    @app.errorhandler(QueueUnavailable)
    def _unavailable(exc: QueueUnavailable) -> tuple[dict[str, Any], int]:
        log.warning("queue unavailable: %s", exc)
        return {"error": "unavailable"}, 503

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[dict[str, Any], int]:
        name = (exc.name or "error").lower().replace(" ", "_")
        return {"error": name}, exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[dict[str, Any], int]:
        log.exception("unhandled error")
        sentry_sdk.capture_exception(exc)  # handled here, so Flask's integration would not see it
        return {"error": "internal"}, 500
