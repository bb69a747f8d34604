"""``python -m bench.instructions``: CPU instructions per signed webhook, counted by valgrind (noise-free).

``bench.intake`` measures requests per second under load, which a shared machine makes noisy (±10 % between
rounds). This counts what one request costs instead: each app serves the same signed Attio deliveries in
process (Werkzeug's WSGI environ, no HTTP server) under ``valgrind --tool=callgrind``, once with a few requests
and once with ``--requests`` more; the difference divided by that number is the instructions one request
executes in user space (Python, C extensions, the client side of the Redis call; not the kernel, not Redis).
The same inputs give the same count on a busy or an idle machine, so a change can be compared before/after.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from ._common import BENCH_REDIS_URL, ROOT, SERVICE_ENV, table

APPS = {
    "bare": "bench.bare_app:create_app",
    "floor": "bench.bare_app:create_floor_app",
    "web": "integration:create_app",
}


# Parts of web's request, each run alone on the same delivery: where its instructions go.
PARTS = {
    "part:verify": "verify_attio on the raw body",
    "part:parse": "load_json of the body",
    "part:schema": "AttioDeliverySchema().load of the parsed body (parsed once)",
    "part:enqueue": "enqueue_events of one event (job record + dedupe script, with its Redis round trip)",
    "part:logline": "the request's log line at INFO as the web writes it (logging's Logger -> Handler, extra fields)",
}


def _run_part(part: str, count: int) -> None:
    import json
    import logging

    from integration.config import Settings
    from integration.observability import secret_values, setup_logging
    from integration.queueing import EventEnvelope, enqueue_events, make_queues, make_redis
    from integration.routing import route_for
    from integration.schemas import AttioDeliverySchema
    from integration.verify import attio_signature, verify_attio

    from .intake import _delivery

    body = _delivery()
    secret = SERVICE_ENV["ATTIO_WEBHOOK_SECRET"]
    headers = {"Attio-Signature": attio_signature(body, secret)}
    schema = AttioDeliverySchema()
    parsed = json.loads(body)
    event = schema.load(parsed)["events"][0]
    connection = make_redis(BENCH_REDIS_URL)
    queues = make_queues(connection)
    route = route_for("attio", "record.updated")
    assert route is not None
    setup_logging("INFO", "web", secrets=secret_values(Settings.from_env()))
    stamp = time.time_ns()
    fields = {"method": "POST", "path": "/webhooks/attio", "status": 202, "duration_ms": 1.0,
              "event_ids": [f"bench-{stamp}-1:0"], "job_ids": [f"attio-bench-{stamp}-1_0-90afbf26e824"],
              "outcome": "accepted", "event_types": ["record.updated"]}
    for i in range(count + 20):
        if part == "part:verify":
            verify_attio(body, headers, secrets=(secret,))
        elif part == "part:parse":
            json.loads(body.decode("utf-8"))
        elif part == "part:schema":
            schema.load(parsed)
        elif part == "part:enqueue":
            envelope = EventEnvelope("attio", "record.updated", f"bench-{stamp}-{i}:0", route, event)
            enqueue_events(connection, queues, [envelope], retry_schedule=(15, 60, 300, 900, 1800))
        elif part == "part:logline":
            logging.getLogger("integration.request").info("%s %s %s", "POST", "/webhooks/attio", 202, extra=fields)


def serve(app_path: str, count: int) -> None:
    """Serve ``count`` fresh signed deliveries (plus a warm-up of 20) to the app, in this process."""
    if app_path.startswith("part:"):
        _run_part(app_path, count)
        return
    from werkzeug.test import EnvironBuilder

    from integration.verify import attio_signature

    from .intake import _delivery

    module, _, factory = app_path.partition(":")
    app = getattr(__import__(module, fromlist=[factory]), factory)()
    body = _delivery()
    signature = attio_signature(body, SERVICE_ENV["ATTIO_WEBHOOK_SECRET"])
    stamp = time.time_ns()
    for i in range(count + 20):
        environ = EnvironBuilder(
            path="/webhooks/attio", method="POST", data=body,
            headers={"Content-Type": "application/json", "Attio-Signature": signature,
                     "Idempotency-Key": f"bench-{stamp}-{i}"},
        ).get_environ()
        for _ in app(environ, lambda *_: None):
            pass


def _count(app_path: str, requests: int, log_level: str) -> int:
    env = {**os.environ, **SERVICE_ENV, "REDIS_URL": BENCH_REDIS_URL, "LOG_LEVEL": log_level,
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", "bench.instructions",
         "--serve", app_path, "--requests", str(requests)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-500:]}")
    return int(found.group(1))


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests counted per app")
    parser.add_argument("--log-level", default="INFO", help="web's LOG_LEVEL")
    parser.add_argument("--apps", default="bare,floor,web", help=f"comma-separated, of {', '.join(APPS)}")
    parser.add_argument("--parts", action="store_true", help="also count each part of web's request alone: "
                        + "; ".join(f"{k[5:]}: {v}" for k, v in PARTS.items()))
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: the process valgrind runs
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Instructions per request for each app."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    import redis

    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
    result: dict[str, Any] = {"requests": args.requests, "log_level": args.log_level, "apps": {}}
    for name in [a for a in args.apps.split(",") if a]:
        base = _count(APPS[name], 0, args.log_level)
        total = _count(APPS[name], args.requests, args.log_level)
        result["apps"][name] = (total - base) // args.requests
    if args.parts:
        for part in PARTS:
            base = _count(part, 0, args.log_level)
            total = _count(part, args.requests, args.log_level)
            result["apps"][part] = (total - base) // args.requests
    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
    return result


def report(result: dict[str, Any]) -> str:
    """The printed figures."""
    apps = result["apps"]
    rows: list[tuple[str, Any]] = [("", "instructions/request   vs bare")]
    for name, count in apps.items():
        ratio = f"{count / apps['bare']:8.2f}" if "bare" in apps else ""
        label = f"  {name[5:]} alone" if name.startswith("part:") else name
        rows.append((label, f"{count:20,d}   {ratio}"))
    head = (f"bench.instructions: {result['requests']} signed Attio deliveries per app, in process, under "
            f"callgrind; web at LOG_LEVEL={result['log_level']}")
    return head + "\n" + table(rows)


def main() -> None:
    """Count and print, or (``--serve``) be the process valgrind counts."""
    args = build_parser().parse_args()
    if args.serve:
        serve(args.serve, args.requests)
        return
    print(report(run(args)))


if __name__ == "__main__":
    main()
