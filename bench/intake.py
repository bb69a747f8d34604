"""``python -m bench.intake``: signed-webhook throughput and latency of ``web`` vs a bare Flask endpoint.

Both run at once under the Procfile's gunicorn command (same workers, threads, preload, access log), web with the
service's default ``LOG_LEVEL`` (INFO: one JSON line per request, to a file), on loopback, loaded by ``wrk``
(Debian's package) with 16 connections in alternating rounds (bare, web, bare, web, ...), so that a shared
machine's drift hits both alike. Every request is a valid signed Attio delivery with a fresh ``Idempotency-Key``,
so each one is verified, validated and enqueued (no duplicate shortcut). Prints requests/s, p50 and p99 of the
median round of each, and the median of the rounds' ratios. Targets (2 cores): ratio ≥ 0.5, p99 ≤ 15 ms.
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


def _server(app: str, log: Path, log_level: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the Procfile's web command serving ``app``; returns the process and the webhook URL once it answers."""
    port = free_port()
    cmd = procfile_command("web").replace('"integration:create_app()"', app)
    proc = start(cmd, env_with(PORT=str(port), REDIS_URL=BENCH_REDIS_URL, LOG_LEVEL=log_level), log=log)
    url = f"http://127.0.0.1:{port}/webhooks/attio"
    wait_http(url)
    return proc, url


def _wrk(url: str, script: Path, *, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    return _parse_wrk(out)


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of one measured run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--log-level", default="INFO", help="web's LOG_LEVEL (INFO, the default, logs each request)")
    parser.add_argument("--baselines", default="floor,naive",
                        help="also load these, for context: floor (HMAC + one Redis SET), naive (HMAC + RQ enqueue)")
    return parser


def _median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median throughput, plus the worst p99 of all rounds."""
    ordered = sorted(rounds, key=lambda r: r["rps"])
    return {**ordered[len(ordered) // 2], "worst_p99": max(r["p99"] for r in rounds)}


_APPS = {
    "bare": '"bench.bare_app:create_app()"',
    "web": '"integration:create_app()"',
    "floor": '"bench.bare_app:create_floor_app()"',
    "naive": '"bench.bare_app:create_naive_rq_app()"',
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All servers up at once, loaded in alternating rounds (so drift on a shared machine hits each alike).

    Returns, per server (``bare``, ``web`` and the ``--baselines``), its median round; ``ratio`` (the median of
    the rounds' web/bare ratios) and ``ratios`` (each round's); ``<baseline>_ratio`` likewise; ``queued`` (jobs
    web enqueued).
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    names = ["bare", "web", *[b for b in args.baselines.split(",") if b]]
    body = _delivery()
    signature = attio_signature(body, SERVICE_ENV["ATTIO_WEBHOOK_SECRET"])
    conn = redis.Redis.from_url(BENCH_REDIS_URL)
    conn.flushdb()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA % {"body": body.decode(), "signature": signature})
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for name in names:
                servers[name] = _server(_APPS[name], Path(tmp) / f"{name}.log", args.log_level)
            for _, url in servers.values():  # warm-up: imports, connections, the script loaded into Redis
                _wrk(url, script, seconds=2, connections=4)
            for _ in range(args.rounds):
                for name, (_, url) in servers.items():
                    rounds[name].append(_wrk(url, script, seconds=args.seconds, connections=args.connections))
        finally:
            for proc, _ in servers.values():
                stop(proc)
        queued = int(conn.llen("rq:queue:webhooks"))
    conn.flushdb()
    result: dict[str, Any] = {"seconds": args.seconds, "rounds": args.rounds, "connections": args.connections,
                              "log_level": args.log_level, "baselines": names[2:], "queued": queued}
    for name in names:
        result[name] = _median_round(rounds[name])
        if name != "bare":
            ratios = [r["rps"] / b["rps"] for b, r in zip(rounds["bare"], rounds[name], strict=True)]
            key = "ratio" if name == "web" else f"{name}_ratio"
            result[key] = sorted(ratios)[len(ratios) // 2]
            result[key.replace("ratio", "ratios")] = ratios
    return result


def report(result: dict[str, Any]) -> str:
    """The printed comparison."""
    head = (f"bench.intake: {result['connections']} connections, {result['rounds']} alternating rounds of "
            f"{result['seconds']}s each (median shown), LOG_LEVEL={result['log_level']}, gunicorn as in the Procfile "
            f"({ROOT / 'Procfile'})")
    labels = {"bare": "bare Flask (202 only)", "web": "web (verify+validate+enqueue)",
              "floor": "floor: HMAC + one Redis SET", "naive": "naive: HMAC + RQ Queue.enqueue"}
    rows: list[tuple[str, Any]] = [("", "requests/s    p50 ms   p99 ms   non-2xx   ratio to bare (rounds)")]
    for name in ["bare", "web", *result["baselines"]]:
        r = result[name]
        ratio = "" if name == "bare" else (
            f"{result['ratio' if name == 'web' else name + '_ratio']:8.2f}  ("
            + " ".join(f"{x:.2f}" for x in result["ratios" if name == "web" else name + "_ratios"]) + ")"
        )
        rows.append((labels[name], f"{r['rps']:10.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['non2xx']:8.0f} {ratio}"))
    rows += [
        ("web worst p99 of all rounds", f"{'':10s} {'':8s} {result['web']['worst_p99']:8.2f}"),
        ("ratio web/bare (median)", f"{result['ratio']:10.2f}   target >= 0.5, p99 <= 15 ms"),
        ("jobs enqueued by web", f"{result['queued']:10d}"),
    ]
    return head + "\n" + table(rows)


def main() -> None:
    """Run both servers under the same load and print the comparison."""
    print(report(run(build_parser().parse_args())))


if __name__ == "__main__":
    main()
