"""One HTTP/1.1 request as its bytes arrive: where its headers end, where it ends, whether it is too large.

``serving.BufferingWorker`` feeds it what a client sends, however split, and hands the request to a thread only once
``complete``. It reads the framing only (``Content-Length``, chunked ``Transfer-Encoding``, ``Expect``); anything it
cannot read is declared complete so that gunicorn's parser answers it (400).
"""

from __future__ import annotations

from . import MAX_BODY_BYTES

__all__ = ["MAX_HEADER_BYTES", "RequestBuffer"]

MAX_HEADER_BYTES = 64 * 1024


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
