"""The baselines of ``bench.intake``, each a Flask app on the same route and gunicorn settings as ``web``.

- ``create_app``: the bare endpoint the target is set against; it only answers 202 (no verification, no Redis).
- ``create_floor_app``: the least a durable intake can do: HMAC check and one Redis write (``SET NX EX`` through a
  plain redis-py client), no validation, no job, no log line. What any implementation of the spec pays at least.
- ``create_naive_rq_app``: HMAC check plus RQ's own ``Queue.enqueue`` (the issue's "naive RQ enqueue").
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Flask, request

__all__ = ["create_app", "create_floor_app", "create_naive_rq_app"]


def create_app() -> Flask:
    """A Flask app whose webhook route does nothing but answer."""
    app = Flask(__name__)

    @app.post("/webhooks/attio")
    def receive() -> tuple[dict[str, object], int]:
        return {"status": "accepted", "jobs": []}, 202

    return app


def _verified() -> bytes | None:
    body = request.get_data()
    secret = os.environ["ATTIO_WEBHOOK_SECRET"].encode()
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return body if hmac.compare_digest(expected, request.headers.get("Attio-Signature", "")) else None


def create_floor_app() -> Flask:
    """HMAC and one ``SET NX EX`` per request."""
    import redis

    app = Flask(__name__)
    connection = redis.Redis.from_url(os.environ["REDIS_URL"], protocol=2)

    @app.post("/webhooks/attio")
    def receive() -> tuple[dict[str, object], int]:
        body = _verified()
        if body is None:
            return {"error": "invalid_signature"}, 401
        key = request.headers.get("Idempotency-Key", "")
        if not connection.set(f"floor:{key}", body, nx=True, ex=3600):
            return {"status": "duplicate"}, 200
        return {"status": "accepted", "jobs": [key]}, 202

    return app


def create_naive_rq_app() -> Flask:
    """HMAC and ``Queue.enqueue`` of the body (no dedupe, no validation, no log line)."""
    import redis
    from rq import Queue

    app = Flask(__name__)
    queue = Queue("bench-naive", connection=redis.Redis.from_url(os.environ["REDIS_URL"], protocol=2))

    @app.post("/webhooks/attio")
    def receive() -> tuple[dict[str, object], int]:
        body = _verified()
        if body is None:
            return {"error": "invalid_signature"}, 401
        job = queue.enqueue("bench.bare_app.create_app", body.decode())
        return {"status": "accepted", "jobs": [job.id]}, 202

    return app
