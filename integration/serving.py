"""The web process's gunicorn worker: gthread, but a request reaches a thread only once it has arrived whole.

gunicorn's gthread worker hands a connection to a thread as soon as its first bytes arrive; the thread then blocks
reading the rest. About a dozen clients that send headers and then trickle (or stall) their bodies held all the
threads, and ``/healthz`` and the webhooks waited with them. ``BufferingWorker`` reads each request (headers and
body, chunked or not, up to ``MAX_BODY_BYTES``) on the worker's event loop, without a thread, and submits it to
the thread pool only when it is complete; the thread's parser then reads it from memory. A request not complete
within ``READ_TIMEOUT`` seconds is answered 408 and closed, headers over ``MAX_HEADER_BYTES`` get 431, and when
``BUFFER_BUDGET`` bytes are held for incomplete requests a new one is answered 503, so memory stays bounded. At
most ``MAX_READING`` incomplete requests are kept (the oldest is answered 408 for a new one), so stalled
connections cannot fill gunicorn's ``worker_connections`` and stop the worker from accepting.

A body larger than ``MAX_BODY_BYTES`` (announced, or found while reading a chunked one) is answered 413 here and
the connection closed, without a thread. Only the request's own bytes go to the thread; bytes of a next
(pipelined) request wait on the loop like any other. The Procfile selects the worker with
``--worker-class integration.serving.BufferingWorker``.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial
from typing import Any, cast

from gunicorn.workers.gthread import TConn, ThreadWorker

from .request_buffer import MAX_HEADER_BYTES, RequestBuffer

__all__ = ["BUFFER_BUDGET", "MAX_HEADER_BYTES", "MAX_READING", "READ_TIMEOUT", "BufferingWorker"]

READ_TIMEOUT = 15.0  # seconds for a whole request (headers and body) to arrive
BUFFER_BUDGET = 64 * 1024 * 1024  # bytes held for incomplete requests per worker process
MAX_READING = 500  # incomplete requests per worker process (at most half of worker_connections); the oldest is
# answered 408 to make room

_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_503 = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_413_BODY = b'{"error":"payload_too_large"}\n'
_413 = (b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
        b"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(_413_BODY)) + _413_BODY
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _BufferedSocket:
    """A client socket whose ``recv`` first returns bytes already read by the event loop."""

    def __init__(self, sock: Any) -> None:
        self.raw = sock
        self.pending = b""  # read, for the thread's parser
        self.leftover = b""  # read, of the next request

    def recv(self, size: int, *flags: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:size], self.pending[size:]
            return data
        return bytes(self.raw.recv(size, *flags))

    def recv_into(self, buffer: Any, size: int = 0, *flags: int) -> int:
        if self.pending:
            size = min(size or len(buffer), len(self.pending))
            buffer[:size] = self.pending[:size]
            self.pending = self.pending[size:]
            return size
        return int(self.raw.recv_into(buffer, size, *flags))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _buffered(conn: TConn) -> _BufferedSocket:
    """The connection's socket, a ``_BufferedSocket`` (``accept`` made it; gunicorn's stubs declare a socket)."""
    return cast(_BufferedSocket, conn.sock)


class BufferingWorker(ThreadWorker):
    """gthread with each request read whole on the event loop before a thread takes it (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[TConn, tuple[RequestBuffer, float]] = {}
        self.buffered_bytes = 0

    def accept(self, listener: Any) -> None:
        """Accept a connection and start reading its first request."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, cast(socket.socket, _BufferedSocket(client_sock)), client_addr, listener.getsockname())
        self._start_reading(conn)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        """A kept-alive connection sends its next request: read it whole first."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """As gthread, and a kept-alive connection whose next request was already read goes on at once."""
        super().finish_request(conn, fs)
        if conn in self.keepalived_conns and (_buffered(conn).leftover or _buffered(conn).pending):
            self.poller.unregister(conn.sock)
            self.keepalived_conns.remove(conn)
            self._start_reading(conn)

    def _start_reading(self, conn: TConn) -> None:
        sock = _buffered(conn)
        sock.setblocking(False)
        request = RequestBuffer(sock.pending + sock.leftover)
        sock.pending = sock.leftover = b""
        if request.complete:
            self._submit(conn, request)
            return
        if request.too_large:
            self._refuse(conn, _413)
            return
        if self.buffered_bytes + len(request.data) > BUFFER_BUDGET:
            self._refuse(conn, _503)
            return
        self.buffered_bytes += len(request.data)
        self.reading[conn] = (request, time.monotonic() + READ_TIMEOUT)
        self.poller.register(sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        while len(self.reading) > min(MAX_READING, self.cfg.worker_connections // 2):
            oldest = next(iter(self.reading))  # insertion order is deadline order: one timeout for all
            self._stop_reading(oldest)
            self._refuse(oldest, _408)

    def _on_readable(self, conn: TConn, client: Any) -> None:
        entry = self.reading.get(conn)
        if entry is None:  # made room for another earlier in this same batch of events, and closed
            return
        request, _ = entry
        before = len(request.data)
        closed = False
        raw = _buffered(conn).raw
        while True:
            try:
                data = raw.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            request.feed(data)
            if request.complete or request.too_large or len(request.data) - before > 1024 * 1024:
                break
        self.buffered_bytes += len(request.data) - before
        if request.complete:
            self._stop_reading(conn)
            self._submit(conn, request)
        elif request.too_large:
            self._stop_reading(conn)
            self._refuse(conn, _413)
        elif closed:
            self._stop_reading(conn)
            self._close(conn)
        elif request.too_large_headers:
            self._stop_reading(conn)
            self._refuse(conn, _431)
        elif self.buffered_bytes > BUFFER_BUDGET:
            self._stop_reading(conn)
            self._refuse(conn, _503)
        elif request.expects_continue and request.waiting_for_body:
            self._send_quietly(conn, _CONTINUE)

    def _stop_reading(self, conn: TConn) -> None:
        request, _ = self.reading.pop(conn)
        self.buffered_bytes -= len(request.data)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _submit(self, conn: TConn, request: RequestBuffer) -> None:
        assert request.end is not None
        # The thread's parser gets this request only; what follows (a pipelined request) waits for the next round.
        sock = _buffered(conn)
        sock.pending = bytes(request.data[:request.end])
        sock.leftover = bytes(request.data[request.end:])
        conn.data_ready = True  # gthread's handle() must not wait for the socket: the bytes are here
        self.enqueue_req(conn)

    def _send_quietly(self, conn: TConn, data: bytes) -> None:
        try:
            _buffered(conn).raw.send(data)
        except OSError:
            pass

    def _refuse(self, conn: TConn, answer: bytes) -> None:
        self._send_quietly(conn, answer)
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        self.nr_conns -= 1
        try:
            _buffered(conn).raw.close()
        except OSError:
            pass

    def murder_pending(self) -> None:
        """As gthread, and requests that did not arrive whole in time get 408 and are closed."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, (_, deadline) in self.reading.items() if deadline <= now]:
            self._stop_reading(conn)
            self._refuse(conn, _408)
