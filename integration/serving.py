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
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from . import MAX_BODY_BYTES

__all__ = ["BUFFER_BUDGET", "MAX_HEADER_BYTES", "MAX_READING", "READ_TIMEOUT", "BufferingWorker", "RequestBuffer"]

READ_TIMEOUT = 15.0  # seconds for a whole request (headers and body) to arrive
MAX_HEADER_BYTES = 64 * 1024
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


class RequestBuffer:
    """The bytes of one HTTP/1.1 request as they arrive: ``end`` is where it ends once all of it is in (``complete``);
    ``too_large`` when its body is over ``MAX_BODY_BYTES``."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.header_end = -1  # index just past the blank line
        self.length: int | None = None  # Content-Length, when given
        self.chunked = False
        self.expects_continue = False
        self._chunk_at = 0  # where the next chunk-size line starts (chunked bodies)
        self._chunked_bytes = 0  # of body, without the chunk framing
        self.end: int | None = None
        self.too_large = False
        self.too_large_headers = False
        self._check()

    def feed(self, data: bytes) -> None:
        """Add bytes read from the socket."""
        self.data += data
        self._check()

    @property
    def complete(self) -> bool:
        """All of the request is in (``end`` is known)."""
        return self.end is not None

    def _check(self) -> None:
        if self.complete or self.too_large:
            return
        if self.header_end < 0:
            end = self.data.find(b"\r\n\r\n")
            if end < 0:
                self.too_large_headers = len(self.data) > MAX_HEADER_BYTES
                return
            self.header_end = end + 4
            self._read_headers(bytes(self.data[:end]))
            self._chunk_at = self.header_end
        if self.chunked:
            self._scan_chunks()
        elif self.length is None:
            self.end = self.header_end
        elif self.length > MAX_BODY_BYTES:
            self.too_large = True
        elif len(self.data) >= self.header_end + self.length:
            self.end = self.header_end + self.length

    def _read_headers(self, head: bytes) -> None:
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length" and value.isdigit():
                self.length = int(value)
            elif name == b"transfer-encoding" and value.endswith(b"chunked"):
                self.chunked = True
            elif name == b"expect" and value == b"100-continue":
                self.expects_continue = True

    def _scan_chunks(self) -> None:
        data = self.data
        while True:
            line_end = data.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                return
            size_text = bytes(data[self._chunk_at:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self.end = len(data)  # malformed: gunicorn's parser answers it (400)
                return
            if size == 0:
                trailers = line_end + 2
                if data[trailers:trailers + 2] == b"\r\n":
                    self.end = trailers + 2
                elif (blank := data.find(b"\r\n\r\n", trailers)) >= 0:
                    self.end = blank + 4
                return
            if self._chunked_bytes + size > MAX_BODY_BYTES:
                self.too_large = True
                return
            next_at = line_end + 2 + size + 2
            if len(data) < next_at:
                return
            self._chunk_at = next_at
            self._chunked_bytes += size

    @property
    def waiting_for_body(self) -> bool:
        """Headers are in and a body is expected but has not started."""
        return self.header_end >= 0 and not self.complete and len(self.data) == self.header_end


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
        conn = TConn(self.cfg, _BufferedSocket(client_sock), client_addr, listener.getsockname())
        self._start_reading(conn)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        """A kept-alive connection sends its next request: read it whole first."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """As gthread, and a kept-alive connection whose next request was already read goes on at once."""
        super().finish_request(conn, fs)
        if conn in self.keepalived_conns and (conn.sock.leftover or conn.sock.pending):
            self.poller.unregister(conn.sock)
            self.keepalived_conns.remove(conn)
            self._start_reading(conn)

    def _start_reading(self, conn: TConn) -> None:
        sock: _BufferedSocket = conn.sock
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
        request, _ = self.reading[conn]
        before = len(request.data)
        closed = False
        while True:
            try:
                data = conn.sock.raw.recv(65536)
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
        conn.sock.pending = bytes(request.data[:request.end])
        conn.sock.leftover = bytes(request.data[request.end:])
        conn.data_ready = True  # gthread's handle() must not wait for the socket: the bytes are here
        self.enqueue_req(conn)

    def _send_quietly(self, conn: TConn, data: bytes) -> None:
        try:
            conn.sock.raw.send(data)
        except OSError:
            pass

    def _refuse(self, conn: TConn, answer: bytes) -> None:
        self._send_quietly(conn, answer)
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        self.nr_conns -= 1
        try:
            conn.sock.raw.close()
        except OSError:
            pass

    def murder_pending(self) -> None:
        """As gthread, and requests that did not arrive whole in time get 408 and are closed."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, (_, deadline) in self.reading.items() if deadline <= now]:
            self._stop_reading(conn)
            self._refuse(conn, _408)
