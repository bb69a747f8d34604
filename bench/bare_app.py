"""The baseline of ``bench.intake``: a bare Flask endpoint that only answers 202 (no verification, no Redis)."""

from __future__ import annotations

from flask import Flask


def create_app() -> Flask:
    """A Flask app whose webhook route does nothing but answer."""
    app = Flask(__name__)

    @app.post("/webhooks/attio")
    def receive() -> tuple[dict[str, object], int]:
        return {"status": "accepted", "jobs": []}, 202

    return app
