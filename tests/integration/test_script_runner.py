"""ScriptRunner: the hot-path script call recovers from a flushed script cache and a dropped connection."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from integration.queueing import make_redis
from integration.script_runner import ScriptRunner

from ..conftest import TEST_REDIS_URL

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_runs_the_script(redis_conn):
    runner = ScriptRunner(redis_conn, INCR)
    assert runner(["n"], [2]) == 2
    assert runner(["n"], [3]) == 5


def test_reloads_the_script_after_redis_forgot_it(redis_conn):
    runner = ScriptRunner(redis_conn, INCR)
    runner(["n"], [1])
    redis_conn.script_flush()
    assert runner(["n"], [1]) == 2


def test_a_connection_dropped_while_idle_is_replaced(redis_conn):
    runner = ScriptRunner(redis_conn, INCR)
    runner(["n"], [1])
    killed = redis_conn.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the runner's idle connection
    assert runner(["n"], [1]) == 2


def test_a_timeout_is_raised_and_the_connection_not_reused(redis_conn):
    slow = make_redis(TEST_REDIS_URL, socket_timeout=0.2)
    busy = "local t = redis.call('TIME') while true do local n = redis.call('TIME') " \
           "if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 500000 then break end end return 1"
    runner = ScriptRunner(slow, busy)
    with pytest.raises(RedisTimeoutError):
        runner([], [])
    assert runner._free == []  # the timed-out connection (its reply still due) was dropped, not pooled
    assert ScriptRunner(redis_conn, INCR)(["n"], [1]) == 1  # waits (5 s timeout) until Redis is free again
    slow.close()


def test_threads_share_a_runner(redis_conn):
    runner = ScriptRunner(redis_conn, INCR)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: [runner(["n"], [1]) for _ in range(50)], range(16)))
    assert int(redis_conn.get("n")) == 800
    assert 1 <= len(runner._free) <= 16


def test_without_hiredis_the_connection_packs_the_command(redis_conn, monkeypatch):
    from integration import script_runner

    monkeypatch.setattr(script_runner, "_hiredis_pack", None)
    runner = ScriptRunner(redis_conn, "return {KEYS[1], ARGV[1], ARGV[2]}")
    assert runner(["k é"], ["v", 7]) == [b"k \xc3\xa9", b"v", b"7"]
    redis_conn.script_flush()  # and the EVAL fallback packs the same way
    assert runner(["k"], [b"\x00bin"]) == [b"k", b"\x00bin"]


def test_hiredis_packs_what_the_connection_would(redis_conn):
    from integration import script_runner

    conn = redis_conn.connection_pool.get_connection()
    try:
        command = ("EVALSHA", "ab" * 20, 1, "k é", "v", 7, 2.5, b"\x00bin")
        assert b"".join(script_runner._pack(conn, command)) == b"".join(conn.pack_command(*command))
    finally:
        redis_conn.connection_pool.release(conn)
