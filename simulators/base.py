"""Shared plumbing of the loopback provider simulators: a threaded server, call log and fault injection.

Each simulator is a small Flask app wrapped by ``Simulator``. It serves on ``127.0.0.1:<port>`` (port 0 picks a
free one) in a background thread, records every call, and can be told to misbehave per route:

- ``status``: answer with that HTTP status (and optional headers/body) *without* doing the work;
- ``after``: do the work, then answer with that status (the "succeeded but the answer was lost" case);
- ``delay``: sleep that many seconds before answering (a timeout for a client with a shorter read timeout);
- ``delay_after``: do the work, then sleep that many seconds before answering (a slow answer to a request whose
  effect others can already see: what a caller read is old by the time it arrives).

Faults are matched by HTTP method and a ``fnmatch`` pattern on the path, let the first ``skip`` matching
requests through (e.g. page 1 of a list, to fail page 2), then fire ``times`` times (``None`` = until cleared).
Tests drive a simulator in-process (``sim.faults.add(...)``, ``sim.calls``); a simulator run as
its own process is driven over HTTP through ``/_sim/...`` control routes (see ``control_blueprint``).
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, request
from werkzeug.serving import BaseWSGIServer, make_server

__all__ = ["Call", "Fault", "FaultPlan", "Simulator"]


@dataclass
class Call:
    """One request the simulator received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", "replace")


@dataclass
class Fault:
    """A scripted misbehaviour for the requests matching ``method`` and ``path``."""

    method: str = "*"
    path: str = "*"
    status: int | None = None
    after: int | None = None
    delay: float = 0.0
    delay_after: float = 0.0
    times: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    skip: int = 0
    fired: int = 0
    skipped: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a request."""
        if self.times is not None and self.fired >= self.times:
            return False
        return fnmatch.fnmatchcase(method.upper(), self.method.upper()) and fnmatch.fnmatchcase(path, self.path)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view, for the control routes."""
        return {k: getattr(self, k)
                for k in ("method", "path", "status", "after", "delay", "delay_after", "times", "skip", "fired")}


class FaultPlan:
    """The faults of one simulator, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, method: str = "*", path: str = "*", **kw: Any) -> Fault:
        """Script a fault; returns it so a test can read ``fired`` later."""
        fault = Fault(method=method, path=path, **kw)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first live fault matching a request, counted as fired."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.skipped < fault.skip:
                        fault.skipped += 1
                        continue
                    fault.fired += 1
                    return fault
        return None

    def list(self) -> list[dict[str, Any]]:
        """Every fault as a dict."""
        with self._lock:
            return [f.to_dict() for f in self._faults]


def _error_response(fault: Fault, status: int, default_body: str, content_type: str) -> Response:
    body = fault.body if fault.body is not None else default_body
    resp = Response(body, status=status, content_type=content_type)
    for k, v in fault.headers.items():
        resp.headers[k] = v
    return resp


class Simulator:
    """Serve a simulator app on loopback in a thread, with call recording and fault injection.

    Subclasses build their Flask app in ``build_app(app)`` and may override ``fault_body(status)`` to answer
    injected errors in the provider's own error format, and ``reset_state()``.
    """

    name = "simulator"
    error_content_type = "application/json"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.calls: list[Call] = []
        self.faults = FaultPlan()
        self._calls_lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = Flask(f"sim-{self.name}")
        self.app.register_blueprint(self.control_blueprint())
        self._install_hooks()
        self.build_app(self.app)

    # -- to override ------------------------------------------------------------------------------------------
    def build_app(self, app: Flask) -> None:
        """Register the provider's routes."""
        raise NotImplementedError

    def fault_body(self, status: int) -> str:
        """The provider-shaped body of an injected error answer."""
        return json.dumps({"status_code": status, "message": "injected fault"})

    def reset_state(self) -> None:
        """Forget all provider state (records, customers, ...)."""

    # -- lifecycle --------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:53124``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Simulator:
        """Start serving in a daemon thread; returns self."""
        self._server = make_server(self.host, self.port, self.app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sim-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the current thread (for a simulator run as its own process)."""
        self._server = make_server(self.host, self.port, self.app, threaded=True)
        self.port = self._server.server_port
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        """Clear calls, faults and provider state."""
        with self._calls_lock:
            self.calls.clear()
        self.faults.clear()
        self.reset_state()

    # -- call log ---------------------------------------------------------------------------------------------
    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        """Recorded calls matching a method and an fnmatch path pattern (control routes excluded)."""
        with self._calls_lock:
            return [
                c
                for c in self.calls
                if fnmatch.fnmatchcase(c.method, method.upper()) and fnmatch.fnmatchcase(c.path, path_pattern)
            ]

    # -- internals --------------------------------------------------------------------------------------------
    def _install_hooks(self) -> None:
        app = self.app

        @app.before_request
        def _record_and_maybe_fail() -> Response | None:
            if request.path.startswith("/_sim/"):
                return None
            call = Call(
                method=request.method,
                path=request.path,
                query={k: v for k, v in request.args.items()},
                headers={k: v for k, v in request.headers.items()},
                body=request.get_data(cache=True),
            )
            with self._calls_lock:
                self.calls.append(call)
            request.environ["sim.call"] = call
            fault = self.faults.take(request.method, request.path)
            request.environ["sim.fault"] = fault
            if fault is None:
                return None
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                call.status = fault.status
                return _error_response(fault, fault.status, self.fault_body(fault.status), self.error_content_type)
            return None

        @app.after_request
        def _after(resp: Response) -> Response:
            call: Call | None = request.environ.get("sim.call")
            fault: Fault | None = request.environ.get("sim.fault")
            if call is None:
                return resp
            if fault is not None and fault.delay_after:
                time.sleep(fault.delay_after)
            if fault is not None and fault.status is None and fault.after is not None:
                # The work is done (state changed); the caller only sees an error.
                resp = _error_response(fault, fault.after, self.fault_body(fault.after), self.error_content_type)
            call.status = resp.status_code
            return resp

    def control_blueprint(self) -> Blueprint:
        """``/_sim/*`` routes to drive a simulator running in another process."""
        bp = Blueprint("sim_control", __name__, url_prefix="/_sim")

        @bp.post("/faults")
        def add_fault() -> tuple[dict[str, Any], int]:
            spec = request.get_json(force=True) or {}
            allowed = {"method", "path", "status", "after", "delay", "delay_after", "times", "skip", "headers", "body"}
            fault = self.faults.add(**{k: v for k, v in spec.items() if k in allowed})
            return fault.to_dict(), 201

        @bp.delete("/faults")
        def clear_faults() -> tuple[dict[str, Any], int]:
            self.faults.clear()
            return {"ok": True}, 200

        @bp.get("/faults")
        def list_faults() -> dict[str, Any]:
            return {"faults": self.faults.list()}

        @bp.get("/calls")
        def list_calls() -> dict[str, Any]:
            with self._calls_lock:
                calls = list(self.calls)
            return {
                "calls": [
                    {"method": c.method, "path": c.path, "query": c.query, "status": c.status, "body": c.text}
                    for c in calls
                ]
            }

        @bp.post("/reset")
        def reset() -> tuple[dict[str, Any], int]:
            self.reset()
            return {"ok": True}, 200

        return bp
