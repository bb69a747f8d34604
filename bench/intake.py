"""``python -m bench.intake``: signed-webhook throughput and latency of ``web`` vs a bare Flask endpoint.

Both run at once under the Procfile's gunicorn command (same workers, threads, preload, access log), web with the
service's default ``LOG_LEVEL`` (INFO: one JSON line per request, to a file), on loopback, loaded by ``wrk``
(Debian's package) with 16 connections in alternating rounds (bare, web, bare, web, ...), so that a shared
machine's drift hits both alike. Every request is a valid signed Attio delivery with a fresh ``Idempotency-Key``,
so each one is verified, validated and enqueued (no duplicate shortcut). Prints requests/s, p50 and p99 of the
median round of each, and the median of the rounds' ratios. Targets (2 cores): ratio ≥ 0.5, p99 ≤ 15 ms.

Throughput on a shared machine drifts by ±10 % between rounds; what each request costs drifts less. So each round
also reads, from /proc, the CPU time (user + system) of the gunicorn processes, of the Redis server (when it runs
here) and of wrk, and the context switches of the server and Redis, and prints them per request: with both cores
busy, req/s is about 2 cores / (total CPU per request), so the ratio of the totals predicts the req/s ratio.

``--before REF`` also serves the web of another commit (``git archive REF``, same venv and Procfile command) in
the same rounds, so a change's before and after are measured side by side, under the same drift.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import redis

from integration.verify import attio_signature

from ._common import (
    BENCH_REDIS_URL,
    ROOT,
    SERVICE_ENV,
    env_with,
    free_port,
    procfile_command,
    start,
    stop,
    table,
    wait_http,
)

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


def _server(app: str, log: Path, log_level: str, root: Path = ROOT) -> tuple[subprocess.Popen[bytes], str]:
    """Start the Procfile's web command serving ``app`` from the code in ``root``; returns the process and the
    webhook URL once it answers."""
    port = free_port()
    cmd = procfile_command("web").replace('"integration:create_app()"', app)
    env = env_with(PORT=str(port), REDIS_URL=BENCH_REDIS_URL, LOG_LEVEL=log_level, PYTHONPATH=str(root))
    proc = start(cmd, env, log=log, cwd=root)
    url = f"http://127.0.0.1:{port}/webhooks/attio"
    wait_http(url)
    return proc, url


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of these processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def _switches(pids: list[int]) -> int:
    """Context switches so far (voluntary and not) of these processes' threads, from /proc."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            total += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return total


def _tree(pid: int) -> list[int]:
    """A process and its children (gunicorn's master and its workers)."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [pid, *children]


def _redis_pids(conn: redis.Redis) -> list[int]:
    """The Redis server's pid when it runs on this machine (its CPU is part of each request's cost), else none."""
    pid = int(conn.info("server").get("process_id", 0))
    return [pid] if pid and Path(f"/proc/{pid}").exists() else []


def _wrk(url: str, script: Path, *, seconds: int, connections: int, server: list[int] | None = None,
         redis_pids: list[int] | None = None) -> dict[str, float]:
    """One wrk run; with ``server`` (pids), also the CPU time per request of the server, Redis and wrk itself."""
    before = (_cpu_seconds(server or []), _cpu_seconds(redis_pids or []),
              resource.getrusage(resource.RUSAGE_CHILDREN), _switches(server or []), _switches(redis_pids or []))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    result = _parse_wrk(out)
    if server:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        requests_done = result["rps"] * seconds
        result["cpu_server_us"] = (_cpu_seconds(server) - before[0]) / requests_done * 1e6
        result["cpu_redis_us"] = (_cpu_seconds(redis_pids or []) - before[1]) / requests_done * 1e6
        wrk_cpu = after.ru_utime + after.ru_stime - before[2].ru_utime - before[2].ru_stime
        result["cpu_wrk_us"] = wrk_cpu / requests_done * 1e6
        result["switches_server"] = (_switches(server) - before[3]) / requests_done
        result["switches_redis"] = (_switches(redis_pids or []) - before[4]) / requests_done
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of one measured run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--log-level", default="INFO", help="web's LOG_LEVEL (INFO, the default, logs each request)")
    parser.add_argument("--baselines", default="floor,naive",
                        help="also load these, for context: floor (HMAC + one Redis SET), naive (HMAC + RQ enqueue)")
    parser.add_argument("--before", metavar="REF", default="",
                        help="also load the web of this git commit (e.g. main), for a before/after in one run")
    return parser


def _median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median throughput, plus the worst p99 of all rounds and the median CPU per request."""
    ordered = sorted(rounds, key=lambda r: r["rps"])
    result = {**ordered[len(ordered) // 2], "worst_p99": max(r["p99"] for r in rounds)}
    for key in ("cpu_server_us", "cpu_redis_us", "cpu_wrk_us", "switches_server", "switches_redis"):
        if all(key in r for r in rounds):
            result[key] = sorted(r[key] for r in rounds)[len(rounds) // 2]
    return result


_APPS = {
    "bare": '"bench.bare_app:create_app()"',
    "web": '"integration:create_app()"',
    "before": '"integration:create_app()"',  # served from the --before commit's tree
    "floor": '"bench.bare_app:create_floor_app()"',
    "naive": '"bench.bare_app:create_naive_rq_app()"',
}


def _checkout(ref: str, into: Path) -> Path:
    """The tree of a commit, unpacked into ``into`` (no .git, no venv: it runs with this one)."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All servers up at once, loaded in alternating rounds (so drift on a shared machine hits each alike).

    Returns, per server (``bare``, ``web`` and the ``--baselines``), its median round; ``ratio`` (the median of
    the rounds' web/bare ratios) and ``ratios`` (each round's); ``<baseline>_ratio`` likewise; ``queued`` (jobs
    web enqueued).
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    names = ["bare", "web", *(["before"] if args.before else []), *[b for b in args.baselines.split(",") if b]]
    body = _delivery()
    signature = attio_signature(body, SERVICE_ENV["ATTIO_WEBHOOK_SECRET"])
    conn = redis.Redis.from_url(BENCH_REDIS_URL)
    conn.flushdb()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA % {"body": body.decode(), "signature": signature})
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        roots = {"before": _checkout(args.before, Path(tmp) / "before")} if args.before else {}
        try:
            for name in names:
                servers[name] = _server(_APPS[name], Path(tmp) / f"{name}.log", args.log_level,
                                        roots.get(name, ROOT))
            for _, url in servers.values():  # warm-up: imports, connections, the script loaded into Redis
                _wrk(url, script, seconds=2, connections=4)
            redis_pids = _redis_pids(conn)
            for _ in range(args.rounds):
                for name, (proc, url) in servers.items():
                    rounds[name].append(_wrk(url, script, seconds=args.seconds, connections=args.connections,
                                             server=_tree(proc.pid), redis_pids=redis_pids))
        finally:
            for proc, _ in servers.values():
                stop(proc)
        queued = int(conn.llen("rq:queue:webhooks"))
    conn.flushdb()
    result: dict[str, Any] = {"seconds": args.seconds, "rounds": args.rounds, "connections": args.connections,
                              "log_level": args.log_level, "baselines": names[2:], "queued": queued,
                              "before_ref": args.before}
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
              "before": f"web at {result['before_ref']} (before)",
              "floor": "floor: HMAC + one Redis SET", "naive": "naive: HMAC + RQ Queue.enqueue"}
    rows: list[tuple[str, Any]] = [("", "requests/s    p50 ms   p99 ms   non-2xx   ratio to bare (rounds)")]
    for name in ["bare", "web", *result["baselines"]]:
        r = result[name]
        ratio = "" if name == "bare" else (
            f"{result['ratio' if name == 'web' else name + '_ratio']:8.2f}  ("
            + " ".join(f"{x:.2f}" for x in result["ratios" if name == "web" else name + "_ratios"]) + ")"
        )
        rows.append((labels[name], f"{r['rps']:10.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['non2xx']:8.0f} {ratio}"))
    rows.append(("", "CPU µs per request (median round): server + Redis + wrk = total"))
    for name in ["bare", "web", *result["baselines"]]:
        r = result[name]
        if "cpu_server_us" in r:
            total = r["cpu_server_us"] + r["cpu_redis_us"] + r["cpu_wrk_us"]
            rows.append((f"  {name}", f"{r['cpu_server_us']:6.0f} + {r['cpu_redis_us']:4.0f} + {r['cpu_wrk_us']:4.0f} "
                                      f"= {total:6.0f}   context switches per request: server "
                                      f"{r['switches_server']:.1f}, Redis {r['switches_redis']:.1f}"))
    # With a fixed number of connections each waiting for its answer, the mean latency is connections / throughput
    # (Little's law), so a p99 target is a throughput target too.
    conns = result["connections"]
    mean = {name: 1000 * conns / result[name]["rps"] for name in ("bare", "web")}
    shape = result["web"]["p99"] / mean["web"]
    rows += [
        ("closed loop: mean ms = conns/rps", f"{'':10s} bare {mean['bare']:.2f}, web {mean['web']:.2f}; web's p99 is "
                                             f"{shape:.1f}x its mean, so p99 <= 15 ms needs "
                                             f"~{1000 * conns * shape / 15:.0f} req/s"),
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
