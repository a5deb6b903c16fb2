"""One HTTP/1.1 connection to an upstream: an asyncio Protocol that feeds httptools' response parser (llhttp, in C),
and the state of the exchange in flight on it. It knows nothing of pools or URLs: pool.py opens it, lends it out
and takes it back; response.py reads from it.

The exchange's reads wait on one future at a time, and one timer bounds them all: armed at the first wait, it
fires at the earliest of the current wait's deadline (Timeouts.first_byte_s after the wait began) and the
exchange's (Timeouts.total_s after the request was sent), and re-arms itself when a later wait moved the first. A
whole answer on loopback costs one timer, not one per read.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

import httptools

from gateway.providers.http.errors import (
    ClientError,
    ClientOSError,
    ClientPayloadError,
    ClientResponseError,
    ReadTimeout,
    ServerDisconnectedError,
)

if TYPE_CHECKING:
    from gateway.providers.http.pool import Pool

# The answer's head (status line and headers) is refused past this: the parser never holds more of one.
MAX_HEAD_BYTES = 65_536
# A stream's reader that falls this far behind pauses the socket until it catches up (a whole read never pauses).
HIGH_WATER = 262_144
# Timers may fire a little before their time (libuv counts milliseconds): that close to a deadline is at it.
_EARLY_S = 0.005


class Connection(asyncio.Protocol):
    __slots__ = (
        "pool",
        "loop",
        "transport",
        "parser",
        "closed",
        "busy",
        "idle",
        "idle_since",
        "served",
        # the exchange in flight
        "status",
        "headers",
        "head_done",
        "complete",
        "keep_alive",
        "chunks",
        "buffered",
        "got_bytes",
        "head_bytes",
        "error",
        "waiter",
        "wait_started",
        "read_s",
        "total_s",
        "total_at",
        "timer",
        "decoder",
        "whole",
        "paused",
    )

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False  # an exchange is in flight: the connection is lent out
        self.idle = False  # in its pool's idle list
        self.idle_since = 0.0
        self.served = 0  # exchanges it carried whole: a connection that served one is a reused one
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False  # the whole answer arrived (not: was read)
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.got_bytes = False  # a byte of this exchange's answer arrived: it is never retried after that
        self.head_bytes = 0
        self.error: ClientError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.wait_started = 0.0
        self.read_s = 0.0
        self.total_s = 0.0
        self.total_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.decoder: Any = None  # a zlib decompressobj when the server compressed the body anyway
        self.whole = False  # the reader wants the whole body: never pause
        self.paused = False

    # -- the exchange, driven by the pool and the response -----------------------------------------------------------

    def send(self, head: bytes, body: bytes, read_s: float, total_s: float) -> None:
        """Write a request, and make ready for its answer. A connection the server closed since it was handed over
        fails as a stale one (ServerDisconnectedError, no byte received), which the client retries once."""
        self.busy = True
        self.status = 0
        self.headers = []
        self.head_done = self.complete = self.keep_alive = self.got_bytes = self.whole = False
        self.chunks = []
        self.buffered = self.head_bytes = 0
        self.error = None
        self.decoder = None
        self.read_s = read_s
        self.total_s = total_s
        self.total_at = self.loop.time() + total_s
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            self.error = ServerDisconnectedError("Server disconnected")
            return
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)

    async def head(self) -> None:
        """Until the answer's status line and headers are in (a 1xx answer's do not count)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self.wait()

    async def read(self) -> bytes:
        """The whole body, once it is in."""
        self.whole = True
        if self.paused:
            self.resume()
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self.wait()
        if self.error is not None:
            raise self.error
        return self.take()

    def wait(self) -> asyncio.Future[None]:
        """A future that the next event of the exchange resolves (bytes, the end, an error), under its timer."""
        waiter = self.waiter = self.loop.create_future()
        self.wait_started = now = self.loop.time()
        if self.timer is None:
            deadline = now + self.read_s
            self.timer = self.loop.call_at(deadline if deadline < self.total_at else self.total_at, self._on_timer)
        return waiter

    def take(self) -> bytes:
        """What the body has buffered, in one piece."""
        chunks = self.chunks
        if not chunks:
            return b""
        self.chunks = []
        self.buffered = 0
        if self.paused:
            self.resume()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def finish(self, reuse: bool) -> bool:
        """The exchange is over (released or closed): whether the connection can carry another. It can only when
        its answer arrived whole, the server keeps it alive, and nothing failed; otherwise it is closed."""
        self.busy = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.waiter = None
        if reuse and self.complete and self.keep_alive and self.error is None and not self.closed:
            self.served += 1
            self.chunks = []
            return True
        self.close()
        return False

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- asyncio's side ----------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # a stream transport: create_connection's

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            # Bytes nobody asked for (a 408 before the server closes, bytes past the answer): never reuse it.
            self.keep_alive = False
            if not self.busy:
                self.close()
            return
        self.got_bytes = True
        if self.head_done:
            self._feed(data)
        else:
            self._feed_head(data)

    def _feed_head(self, data: bytes) -> None:
        """The head is fed at most MAX_HEAD_BYTES in all: past that, without its end, it is refused."""
        room = MAX_HEAD_BYTES - self.head_bytes
        self.head_bytes += len(data)
        if len(data) <= room:
            if not self._feed(data) or self.head_done or self.head_bytes < MAX_HEAD_BYTES:
                return
        elif not self._feed(data[:room]):
            return
        elif self.head_done:
            self._feed(data[room:])
            return
        self._fail(ClientResponseError(f"The answer's head is larger than {MAX_HEAD_BYTES} bytes."))

    def _feed(self, data: bytes) -> bool:
        """Parse; False when the answer turned out not to be HTTP (the exchange has failed)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                self._fail(self.error or ClientResponseError(f"The answer is not HTTP: {exc}"))
            self.keep_alive = False
            return False
        except httptools.HttpParserUpgrade:
            self._fail(ClientResponseError("The server switched protocols."))
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.pool.lost(self)
            return
        if not self.busy or self.complete or self.error is not None:
            return
        if self.head_done and self._until_close():
            self._ended()  # a body without length or chunks ends with the connection
            return
        error: ClientError
        if self.head_done:
            error = ClientPayloadError(f"Response payload is not completed: the connection closed ({exc or 'EOF'}).")
        elif isinstance(exc, OSError):
            error = ClientOSError(*exc.args)
        else:
            error = ServerDisconnectedError("Server disconnected")
        self._fail(error)

    def pause_writing(self) -> None:  # a large request body: the transport buffers it, nothing to do
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools' callbacks ----------------------------------------------------------------------------------------

    # Bytes past the answer's end (a server speaking out of turn, in the same packet) parse as another answer: each
    # callback ignores them, and the connection is not reused.

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        self.headers.append((name, value))
        if len(name) == 16 and name.lower() == b"content-encoding":
            self._decode_as(value.strip().lower())

    def on_headers_complete(self) -> None:
        if self.complete:
            self.keep_alive = False
            return
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the answer comes after
            self.headers = []
            self.decoder = None
            return
        self.status = status
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        if self.decoder is not None:
            try:
                body = self.decoder.decompress(body)
            except zlib.error as exc:
                self.error = ClientPayloadError(f"Can not decode content-encoding: {exc}")
                raise  # stops the parser: data_received fails the exchange with the error above
        if body:
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self.whole and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.complete:
            self.keep_alive = False
            return
        if not self.head_done:
            return  # the end of a 1xx answer
        self.keep_alive = self.parser.should_keep_alive()
        self._ended()

    # -- inside ------------------------------------------------------------------------------------------------------

    def _ended(self) -> None:
        decoder = self.decoder
        if decoder is not None:
            rest = decoder.flush()
            if rest:
                self.chunks.append(rest)
                self.buffered += len(rest)
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ClientError) -> None:
        """The exchange failed: its reader gets the error, and the connection is closed."""
        if self.error is None:
            self.error = error
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.error)
        self.keep_alive = False
        self.close()

    def _on_timer(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done() or not self.busy:
            return  # nobody waits: the next wait arms it again
        now = self.loop.time() + _EARLY_S
        if now >= self.total_at:
            self._fail(ReadTimeout(f"The exchange took longer than {self.total_s:g} s."))
        elif now >= self.wait_started + self.read_s:
            self._fail(ReadTimeout(f"No answer within {self.read_s:g} s."))
        else:
            deadline = self.wait_started + self.read_s
            self.timer = self.loop.call_at(deadline if deadline < self.total_at else self.total_at, self._on_timer)

    def _decode_as(self, encoding: bytes) -> None:
        # Accept-Encoding asks for gzip or deflate (as aiohttp did): decoded here with zlib. HTTP's deflate is
        # zlib-wrapped, but some servers send it raw: zlib's header is recognised by its first byte.
        if encoding in (b"gzip", b"x-gzip"):
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == b"deflate":
            self.decoder = _Deflate()
        elif encoding not in (b"", b"identity"):
            self.error = ClientPayloadError(f"Can not decode content-encoding: {encoding.decode('latin-1')}")
            raise ValueError(encoding)  # stops the parser: data_received fails the exchange with the error above

    def _until_close(self) -> bool:
        """Whether the answer's body is delimited by the end of the connection: no length, no chunks."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True


class _Deflate:
    """HTTP's deflate: zlib-wrapped, or raw where a server sends it so; told apart by the first byte."""

    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return bytes(self._inner.decompress(data))

    def flush(self) -> bytes:
        return bytes(self._inner.flush()) if self._inner is not None else b""
