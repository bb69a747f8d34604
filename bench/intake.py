"""``python -m bench.intake``: signed-webhook throughput and latency of ``web`` vs a bare Flask endpoint.

Both run under the Procfile's gunicorn command (same workers, threads, preload, access log), on loopback, loaded
by ``wrk`` (Debian's package) with 16 connections for a fixed duration. Every request is a valid signed Attio
delivery with a fresh ``Idempotency-Key``, so each one is verified, validated and enqueued (no duplicate
shortcut). Prints requests/s, p50 and p99 for both and their ratio. Targets (2 cores): ratio ≥ 0.5, p99 ≤ 15 ms.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import redis

from integration.verify import attio_signature

from ._common import BENCH_REDIS_URL, ROOT, SERVICE_ENV, env_with, free_port, procfile_command, start, stop
from ._common import table, wait_http

# Each wrk thread has its own Lua state and, unseeded, the same math.random sequence: without a seed per thread
# and per run, two threads (and the warm-up and the measured run) would send the same keys, and the web would
# answer them through the cheaper duplicate shortcut.
_LUA = """
local counter = 0
local body = [[%(body)s]]
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0))
end
function request()
  counter = counter + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Attio-Signature"] = "%(signature)s"
  headers["Idempotency-Key"] = "bench-" .. tostring(math.random(1, 2^31)) .. "-" .. tostring(counter)
  return wrk.format("POST", "/webhooks/attio", headers, body)
end
"""


def _delivery() -> bytes:
    event = {"event_type": "record.updated",
             "id": {"workspace_id": "w", "object_id": "o", "record_id": "r", "attribute_id": "a"},
             "actor": {"type": "workspace-member", "id": "m"}}
    return json.dumps({"webhook_id": "bench", "events": [event]}).encode()


def _parse_wrk(output: str) -> dict[str, float]:
    def ms(text: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", text)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": 1.0 if errors else 0.0}


def _run(app: str, script: Path, *, seconds: int, connections: int, log: Path) -> dict[str, float]:
    port = free_port()
    cmd = procfile_command("web").replace('"integration:create_app()"', app)
    env = env_with(PORT=str(port), REDIS_URL=BENCH_REDIS_URL, LOG_LEVEL="WARNING")
    proc = start(cmd, env, log=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/webhooks/attio")
        url = f"http://127.0.0.1:{port}/webhooks/attio"
        subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-s", str(script), url], capture_output=True, check=True)
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        stop(proc)
    return _parse_wrk(out)


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run both servers under the same load; returns their figures (``bare``, ``web``, ``ratio``, ``queued``)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    body = _delivery()
    signature = attio_signature(body, SERVICE_ENV["ATTIO_WEBHOOK_SECRET"])
    conn = redis.Redis.from_url(BENCH_REDIS_URL)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA % {"body": body.decode(), "signature": signature})
        conn.flushdb()
        bare = _run('"bench.bare_app:create_app()"', script, seconds=args.seconds,
                    connections=args.connections, log=Path(tmp) / "bare.log")
        web = _run('"integration:create_app()"', script, seconds=args.seconds,
                   connections=args.connections, log=Path(tmp) / "web.log")
        queued = int(conn.llen("rq:queue:webhooks"))
    conn.flushdb()
    return {"seconds": args.seconds, "connections": args.connections, "bare": bare, "web": web,
            "ratio": web["rps"] / bare["rps"], "queued": queued}


def report(result: dict[str, Any]) -> str:
    """The printed comparison."""
    bare, web = result["bare"], result["web"]
    head = (f"bench.intake: {result['connections']} connections, {result['seconds']}s each, gunicorn as in the "
            f"Procfile ({ROOT / 'Procfile'})")
    return head + "\n" + table([
        ("", "requests/s    p50 ms   p99 ms   non-2xx"),
        ("bare Flask (202 only)", f"{bare['rps']:10.0f} {bare['p50']:8.2f} {bare['p99']:8.2f} {bare['non2xx']:8.0f}"),
        ("web (verify+validate+enqueue)", f"{web['rps']:10.0f} {web['p50']:8.2f} {web['p99']:8.2f} "
                                          f"{web['non2xx']:8.0f}"),
        ("ratio web/bare", f"{result['ratio']:10.2f}"),
        ("jobs enqueued by web", f"{result['queued']:10d}"),
    ])


def main() -> None:
    """Run both servers under the same load and print the comparison."""
    print(report(run(build_parser().parse_args())))


if __name__ == "__main__":
    main()
