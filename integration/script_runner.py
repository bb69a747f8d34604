"""``ScriptRunner``: one Lua script run with ``EVALSHA`` on connections of its own, for the webhook hot path.

Every webhook's enqueue is one script call. Through ``redis.Redis`` each call also pays redis-py 8's per-command
machinery: the pool's lock, its metrics hooks, a readiness ``poll()`` on the socket, the retry wrapper. Measured
under ``bench.intake``'s load that was ~45 µs of CPU per request (about 5 % of the web process's time). The runner
keeps a small free list of redis-py ``Connection`` objects built from the client's own settings (URL, timeouts,
health checks, protocol) and talks to them directly: ``send_command``, ``read_response``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

__all__ = ["ScriptRunner"]


class ScriptRunner:
    """Runs one script; safe for many threads (each call takes its own connection) and across ``fork``."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()  # noqa: S324 - the id Redis gives a script
        self._free: list[Any] = []  # list.pop / list.append are atomic: no lock needed
        self._pid = os.getpid()

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply; raises redis-py's errors (``RedisError`` and subclasses)."""
        if os.getpid() != self._pid:  # forked (gunicorn --preload): never share the parent's sockets
            self._free, self._pid = [], os.getpid()
        try:
            conn = self._free.pop()
        except IndexError:
            conn = self._connection_class(**self._connection_kwargs)
        try:
            reply = self._run(conn, keys, args)
        except BaseException:
            conn.disconnect()  # its state is unknown (a reply may still be on the way): never reuse it
            raise
        self._free.append(conn)
        return reply

    def _run(self, conn: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return self._evalsha(conn, keys, args)
        except RedisConnectionError:
            # A connection that went stale while idle (Redis restarted, a proxy closed it): one fresh try. Safe
            # even if the script did run, because the enqueue script skips what it already wrote.
            conn.disconnect()
            return self._evalsha(conn, keys, args)

    def _evalsha(self, conn: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            conn.send_packed_command(_pack(conn, ("EVALSHA", self.sha, len(keys), *keys, *args)))
            return conn.read_response()
        except NoScriptError:  # Redis restarted or flushed its script cache
            conn.send_packed_command(_pack(conn, ("EVAL", self.source, len(keys), *keys, *args)))
            return conn.read_response()


def _pack(conn: Any, command: tuple[Any, ...]) -> list[bytes]:
    """The command in RESP, as ``conn.send_command`` would send it: hiredis packs it in C when installed (redis-py's
    own wrapper around it cost as much again), else the connection's packer."""
    if _hiredis_pack is not None:
        return [_hiredis_pack(command)]
    packed: list[bytes] = conn.pack_command(*command)  # redis-py's Connection is unannotated
    return packed


_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is in requirements.txt
    _hiredis_pack = None
