"""uvicorn's httptools protocol with the edges of a connection bounded.

uvicorn bounds none of these: httptools buffers a header for as long as it grows, nothing times the arrival of a
head or of a body, and `limit_concurrency` counts tasks with connections. So, per connection:

- a head (request line and headers) over `max_header_bytes` gets 431: the parser is never fed more than that many
  bytes of one head, so the memory held for heads is at most max_connections × max_header_bytes;
- a head must arrive whole within `header_timeout_s` of the connection (of its first byte on a kept-alive one):
  a silent connection is closed, a half-sent or trickling head gets 408;
- a body that sends nothing for `body_timeout_s` while the app waits for it gets 408;
- a connection beyond `max_connections` open ones gets 503 at once;
- a request answered before its body arrived (401, 413...) does not have the rest of its body read: the
  connection is closed once the client has had time to read the answer.

An error is answered in OpenAI's shape (uvicorn's own 400 for bytes that are not HTTP too), then the connection is
closed "lingering": the write side first, and
what the client still sends is read and dropped for up to LINGER_S, so that a client still sending its request
reads the answer instead of a connection reset.

Every answer carries x-response-time (timing.py): the cycle uvicorn makes for a request becomes a TimedCycle.

Time is kept without a timer per request: each connection notes when its current phase began (`loop.time()`,
uv_now: no system call), and one periodic sweep per server closes those past their deadline.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from asyncio import Event
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any
from urllib.parse import unquote

from httptools import parse_url
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.config import ServerConfig
from gateway.errors import GatewayError, InvalidRequest, RequestHeadersTooLarge, RequestTimeout, ServiceUnavailable
from gateway.server.http10 import Http10Cycle
from gateway.server.log_throttle import throttle_uvicorn_warnings
from gateway.server.timing import TimedCycle, response_time

_new_object = object.__new__
_warnings_throttled = False
LINGER_S = 2.0
# The scope key under which a request finds its connection (`lost`, `on_lost`).
CONNECTION_KEY = "gateway.connection"
# Phases of a connection. NEW: nothing has arrived yet; HEAD: a head is arriving; REQUEST: its head is whole (the
# cycle's more_body says whether its body is still arriving; once it is answered, the connection is idle, kept alive
# for keep_alive_s); IDLE: the first bytes of the next head came; CLOSING: refused, what still arrives is dropped.
_NEW, _HEAD, _REQUEST, _IDLE, _CLOSING = range(5)


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_connections: int = 1024
    max_header_bytes: int = 65_536
    header_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    write_timeout_s: float = 60.0

    @classmethod
    def of(cls, server: ServerConfig) -> EdgeLimits:
        return cls(
            server.max_connections, server.max_header_bytes, server.header_timeout_s, server.body_timeout_s,
            server.keep_alive_s, server.write_timeout_s,
        )  # fmt: skip

    @property
    def tick_s(self) -> float:
        """How often the sweep runs: a tenth of the shortest timeout, between 20 ms and 1 s."""
        shortest = min(self.header_timeout_s, self.body_timeout_s, self.keep_alive_s, self.write_timeout_s)
        return min(1.0, max(0.02, shortest / 10))


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """One connection. uvicorn makes one per connection through `functools.partial(cls, limits=...)`, which
    pickles to the worker processes of --workers.

    Only data_received is overridden on the path of a request (one Python call more per read): it tells the
    phases apart by the cycle uvicorn makes when a head is whole, and reads the clock only when a head or a body
    is left incomplete by a read.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        global _warnings_throttled
        if not _warnings_throttled:  # a client's garbage must not write a log line per request (log_throttle.py)
            throttle_uvicorn_warnings()
            _warnings_throttled = True
        # The request's hook for a client that leaves (gateway/api/watch.py): found in the scope under
        # CONNECTION_KEY, called from connection_lost. Noticing a disconnect this way costs nothing per request;
        # through the ASGI receive() it costs a task per request.
        self.on_lost: Callable[[], None] | None = None
        self.lost = False
        self.phase = _NEW
        self.phase_since = 0.0  # loop.time() when the phase began; for a body, when its last bytes came
        self.head_bytes = 0  # bytes of the head arriving
        self.write_paused_since = 0.0  # loop.time() when the transport last asked the writes to pause
        # on_headers_complete's lean path covers the settings the gateway runs with; any other goes through uvicorn's.
        self.lean = not self.root_path and self.limit_concurrency is None and not config.reset_contextvars

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.cycle_transport = _CycleTransport(transport, self)
        self.phase_since = self.loop.time()
        _Sweep.start(self.loop, self.server_state, self.limits.tick_s)
        if len(self.connections) > self.limits.max_connections:
            message = "The gateway has too many open connections (server.max_connections); retry shortly."
            self.refuse(ServiceUnavailable(message, code="too_many_connections", headers={"retry-after": "1"}))

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        cycle = self.cycle
        if phase == _REQUEST:
            if not cycle.response_complete:
                if cycle.more_body:  # more of its body
                    self.phase_since = self.loop.time()
                    HttpToolsProtocol.data_received(self, data)
                    return
                # else pipelined: the next head, capped, but not timed while this request is answered
            elif cycle.more_body:  # the body of a request answered without it (401, 413...)
                if not cycle.keep_alive:  # the answer said `connection: close`: read no more of it
                    self._close_lingering()
                    return
                # A small body the app chose not to read (api/flow.py unread_body): uvicorn drops it as it comes,
                # and the connection serves the next request, as the answer promised.
                self.phase_since = self.loop.time()
                HttpToolsProtocol.data_received(self, data)
                if self.cycle is not cycle:  # the next head came whole behind it
                    self._head_done()
                elif not self.cycle.more_body:  # (the same cycle: its body has ended)
                    self.phase = _IDLE
                    self.head_bytes = 0
                return
            else:  # the next request on a kept-alive connection
                phase = self.phase = _IDLE
                self.head_bytes = 0
        elif phase == _CLOSING:
            return
        room = self.limits.max_header_bytes - self.head_bytes
        if len(data) > room:
            self._feed_past_the_cap(data, room)
            return
        self.head_bytes += len(data)
        HttpToolsProtocol.data_received(self, data)
        if self.cycle is not cycle:  # the head is whole
            self._head_done()
        elif phase != _HEAD and phase != _REQUEST:  # the first bytes of a head, not the last
            if phase == _IDLE:  # kept alive: a head is timed from its first byte (a new connection's, from its start)
                self.phase_since = self.loop.time()
            self.phase = _HEAD

    def on_headers_complete(self) -> None:
        """uvicorn's, lean: the same scope (the same keys and values, in the same order) and the cycle made a
        TimedCycle at once, its attributes set as uvicorn's constructor sets them, the task started (or the request
        queued behind a running one) as uvicorn does. An upgrade, a root_path, limit_concurrency or
        reset_contextvars go through uvicorn's own (then re-classed). tests/unit/test_server_heads.py compares the
        two on many heads and pins the uvicorn code this follows."""
        head_ns = perf_counter_ns()  # X-Response-Time counts from here
        parser = self.parser
        if not self.lean or parser.should_upgrade():
            self._uvicorn_headers_complete(head_ns)
            return
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        made = TimedCycle
        if http_version != "1.1":
            scope["http_version"] = http_version
            if http_version == "1.0":
                made = Http10Cycle  # its answer is never chunked (http10.py)
        url = parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = url.query or b""
        scope[CONNECTION_KEY] = self  # type: ignore[literal-required]
        cycle = _new_object(made)
        cycle.scope = scope
        cycle.transport = self.cycle_transport  # type: ignore[assignment]
        cycle.flow = self.flow
        cycle.logger = self.logger
        cycle.access_logger = self.access_logger
        cycle.access_log = self.access_log
        cycle.__dict__["default_headers"] = self.server_state.default_headers
        cycle.message_event = Event()
        cycle.on_response = self.on_response_complete
        cycle.disconnected = False
        cycle.keep_alive = http_version != "1.0" and parser.should_keep_alive()
        cycle.waiting_for_100_continue = self.expect_100_continue
        cycle.body = bytearray()
        cycle.more_body = True
        cycle.response_started = False
        cycle.response_complete = False
        cycle.chunked_encoding = None
        cycle.expected_content_length = 0
        cycle.head_ns = head_ns
        existing = self.cycle
        self.cycle = cycle
        if existing is None or existing.response_complete:
            task = self.loop.create_task(cycle.run_asgi(self.app))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
        else:  # pipelined: queued behind the running request
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def _uvicorn_headers_complete(self, head_ns: int) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not previous:  # a request's cycle (an upgrade to a websocket makes none)
            # Its answer's head carries x-response-time (timing.py); an HTTP/1.0 one's is never chunked (http10.py).
            cycle.__class__ = Http10Cycle if cycle.scope["http_version"] == "1.0" else TimedCycle
            cycle.head_ns = head_ns  # type: ignore[attr-defined]
            cycle.transport = self.cycle_transport  # type: ignore[assignment]
            cycle.scope[CONNECTION_KEY] = self  # type: ignore[literal-required]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost = True
        hook, self.on_lost = self.on_lost, None
        if hook is not None:
            hook()

    def on_response_complete(self) -> None:
        """uvicorn's, but for its keep-alive timer (a timer made and cancelled per request): the connection notes
        when it went idle, and the sweep closes it once idle for keep_alive_s (check_deadline)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request waits: its turn now
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self.phase_since = self.loop.time()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and not self.parser.should_upgrade():
            # uvicorn's, written out (a call less a request), and for the end of a body dropped after an early
            # answer too: its more_body ends, and the next head may come.
            cycle.more_body = False
            if not cycle.response_complete:
                cycle.message_event.set()
            return
        super().on_message_complete()

    def _head_done(self) -> None:
        self.phase = _REQUEST
        self.head_bytes = 0
        if self.cycle.more_body:
            self.phase_since = self.loop.time()

    def _feed_past_the_cap(self, data: bytes, room: int) -> None:
        # Feed the parser up to the cap: either the head ends within it, and the rest is fed, or it does not, and
        # the head is too large. The parser never holds more than max_header_bytes of a head.
        cycle = self.cycle
        self.head_bytes = self.limits.max_header_bytes
        HttpToolsProtocol.data_received(self, data[:room])
        if self.transport.is_closing():  # the parser refused the bytes (400)
            return
        if self.cycle is cycle:
            limit = self.limits.max_header_bytes
            self.refuse(RequestHeadersTooLarge(f"The request's headers are larger than the limit of {limit} bytes."))
            return
        self._head_done()
        # The rest: its body, or pipelined requests (each at least one head of at most the cap: a bounded depth).
        self.data_received(data[room:])

    # Deadlines.

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_paused_since = self.loop.time()

    def check_deadline(self, now: float) -> None:
        """Called by the sweep: act on a phase that has lasted too long."""
        if self.flow.write_paused and now - self.write_paused_since >= self.limits.write_timeout_s:
            # The client reads nothing of what it is sent: the answer's writer would wait for it for ever, holding
            # its request (a stream's upstream too). Aborted, not closed: close() would wait to send the buffer first.
            self.phase = _CLOSING
            self.transport.abort()  # connection_lost follows: the request sees a client gone (499 client_closed)
            return
        phase = self.phase
        if phase == _REQUEST:
            cycle = self.cycle
            if not cycle.more_body:
                # Answered, and nothing of the next request has come since: kept alive for keep_alive_s.
                if cycle.response_complete and not self.pipeline and now - self.phase_since >= self.limits.keep_alive_s:
                    self.phase = _CLOSING
                    self.transport.close()
                return
            if cycle.response_complete:  # a body dropped after an early answer must still keep coming
                if now - self.phase_since >= self.limits.body_timeout_s:
                    self.phase = _CLOSING
                    self.transport.close()
                return
            if self.flow.read_paused:  # the app has not asked for more: the wait is not the client's
                self.phase_since = now
            elif now - self.phase_since >= self.limits.body_timeout_s:
                self.refuse(RequestTimeout("The request body stopped arriving (server.body_timeout_s)."))
        elif phase == _HEAD:
            if now - self.phase_since >= self.limits.header_timeout_s:
                self.refuse(RequestTimeout("The request headers did not arrive in time (server.header_timeout_s)."))
        elif phase == _NEW and now - self.phase_since >= self.limits.header_timeout_s:
            self.phase = _CLOSING
            self.transport.close()  # nothing was asked: nothing to answer

    def refuse(self, error: GatewayError) -> None:
        """Answer `error` on this connection and close it, instead of (or in the place of) the app."""
        if self.transport.is_closing():
            self.phase = _CLOSING
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # an answer is under way: it cannot be replaced, only cut
                self.phase = _CLOSING
                self.transport.close()
                return
            cycle.disconnected = True  # the app's own answer, if it comes, goes nowhere
            cycle.message_event.set()  # and a read of the body ends with http.disconnect
        self.transport.write(_response(error, self._timed_headers()))
        self._close_lingering()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP (it logged them), as it sends it, in OpenAI's shape and timed
        like the server's other refusals."""
        self.transport.write(_response(InvalidRequest(msg), self._timed_headers()))
        self.transport.close()

    def _timed_headers(self) -> list[tuple[bytes, bytes]]:
        """The server's default headers and x-response-time, for an answer the server sends itself: timed from the
        head of the request being answered, or, when none was read whole, from when its first bytes came (or the
        connection opened)."""
        cycle = self.cycle
        if isinstance(cycle, TimedCycle) and not cycle.response_complete:
            since = cycle.head_ns
        else:
            since = time.perf_counter_ns() - int((self.loop.time() - self.phase_since) * 1e9)
        return [*self.server_state.default_headers, response_time(since)]

    def _close_lingering(self) -> None:
        self.phase = _CLOSING
        transport = self.transport
        if transport.is_closing():
            return
        self.flow.resume_reading()  # keep reading, to drop what comes rather than reset the connection
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # asyncio's own transport shuts the socket at once: a peer already gone raises
                transport.close()
                return
        self.loop.call_later(LINGER_S, transport.close)


# The bytes uvicorn's send refuses in a header name (HEADER_RE) or lower-cases (A-Z), and in a value
# (HEADER_VALUE_RE): a translate() that deletes them leaves a shorter string when one is there. A table walk of the
# joined names and values, a few instructions a byte, where each regular expression's character class costs tens.
_NAME_REFUSED = bytes(range(0x20)) + b'\x7f()<>@,;:[]={} \t\\"' + bytes(range(ord("A"), ord("Z") + 1))
_VALUE_REFUSED = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"


# The joined header names send_whole has found acceptable: their checks (a table walk and three searches, ~2,500
# instructions an answer) read those bytes alone, so they are made once for each join met (an endpoint's answers
# share a few), and a join found in the set passes them as it would again.
_NAMES_SENT_WHOLE: set[bytes] = set()
_NAMES_MAX = 256


def send_whole(send: Callable[..., Any], status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Send a whole answer in one write, when `send` is uvicorn's own (the cycle's bound method) and the answer is
    an ordinary one; False (nothing sent) otherwise, and the caller sends it through the ASGI messages.

    The bytes are those uvicorn's send would write for http.response.start then http.response.body (the status
    line, the server's default headers and x-response-time, the answer's, a chunked body), and the cycle ends as
    it would: one transport write instead of two (a system call), two messages and their awaits, and the check of
    each header made once over all of them. Anything uvicorn's send treats otherwise (a header it would refuse,
    lower-case or frame by, a connection to close, a HEAD, writes paused, a client gone) goes through its send
    unchanged."""
    cycle = getattr(send, "__self__", None)
    if (
        type(cycle) is not TimedCycle
        or cycle.response_started
        or cycle.disconnected
        or not cycle.keep_alive
        or cycle.access_log
        or cycle.flow.write_paused
        or cycle.scope["method"] == "HEAD"
    ):
        return False
    names = b"".join([name for name, _ in headers])
    values = b"".join([value for _, value in headers])
    if len(values.translate(None, _VALUE_REFUSED)) != len(values):
        return False
    if names not in _NAMES_SENT_WHOLE:  # the names' checks, once per set of names (an endpoint's answers share one)
        if (
            len(names.translate(None, _NAME_REFUSED)) != len(names)
            # names that make uvicorn's cycle frame the body otherwise (or close the connection): an answer with one
            # of them goes through its send. find(), not `in`: bytes' `in` first tries its operand as an int, and
            # raises and clears a TypeError, ~1,800 instructions each.
            or names.find(b"content-length") >= 0
            or names.find(b"transfer-encoding") >= 0
            or names.find(b"connection") >= 0
        ):
            return False
        if len(_NAMES_SENT_WHOLE) >= _NAMES_MAX:  # names an app passes on from elsewhere: the set stays small
            _NAMES_SENT_WHOLE.clear()
        _NAMES_SENT_WHOLE.add(names)
    parts = [STATUS_LINE[status]]
    for name, value in cycle.__dict__["default_headers"]:  # the server's (TimedCycle adds x-response-time)
        parts += (name, b": ", value, b"\r\n")
    timed, elapsed = response_time(cycle.head_ns)  # x-response-time, as the cycle's default_headers end
    parts += (timed, b": ", elapsed, b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if body:
        parts += (b"transfer-encoding: chunked\r\n\r\n%x\r\n" % len(body), body, b"\r\n0\r\n\r\n")
    else:
        parts.append(b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = True
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    cycle.on_response()
    return True


def _chunked_cycle(send: Callable[..., Any]) -> TimedCycle | None:
    """The cycle of uvicorn's own `send` (its bound method) when its answer is a chunked body under way."""
    cycle = getattr(send, "__self__", None)
    if (
        type(cycle) is not TimedCycle
        or not cycle.response_started
        or cycle.response_complete
        or not cycle.chunked_encoding
        or cycle.scope["method"] == "HEAD"
    ):
        return None
    return cycle


def chunk_writer(send: Callable[..., Any]) -> Callable[[bytes], bool] | None:
    """For a streamed answer whose head is out, when `send` is uvicorn's own (the cycle's bound method) and the body
    is chunked: a function that writes one chunk of it straight to the transport, as uvicorn's send writes an
    http.response.body message with more_body, without the message, the send's coroutine and its checks. It
    returns False (nothing written) when writes are paused or the client is gone: the caller then sends the chunk
    through the ASGI message, which waits for the drain or drops it as uvicorn does. None when `send` is not the
    cycle's, or the answer is not one this applies to."""
    cycle = _chunked_cycle(send)
    if cycle is None:
        return None
    flow = cycle.flow
    write = cycle.transport.write

    def write_chunk(data: bytes) -> bool:
        if flow.write_paused or cycle.disconnected:
            return False
        write(b"%x\r\n%s\r\n" % (len(data), data))
        return True

    return write_chunk


def end_chunked(send: Callable[..., Any], data: bytes) -> bool:
    """The last bytes of a chunked answer and its end in one write, the cycle completed as uvicorn's send completes
    it for an http.response.body message without more_body; False (nothing written) when `send` is not the cycle's,
    the answer is not one this applies to, writes are paused, the client is gone or the connection is to close: the
    caller then sends the messages."""
    cycle = _chunked_cycle(send)
    if cycle is None or not cycle.keep_alive or cycle.disconnected or cycle.flow.write_paused:
        return False
    cycle.transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n")
    cycle.response_complete = True
    cycle.message_event.set()
    cycle.on_response()
    return True


def body_received(receive: Callable[..., Any]) -> bytes | None:
    """The request's body when it has arrived whole and `receive` is uvicorn's own (the cycle's bound method): what
    its receive() would return as the one http.request message, taken as it takes it, without the coroutines of
    the receive and its wait on an event already set, nor the message. None otherwise (nothing taken): the caller
    receives as usual."""
    cycle = getattr(receive, "__self__", None)
    if (
        type(cycle) is not TimedCycle
        or cycle.more_body
        or cycle.disconnected
        or cycle.response_complete
        or cycle.waiting_for_100_continue
    ):
        return None
    cycle.flow.resume_reading()
    cycle.message_event.clear()
    body = bytes(cycle.body)
    cycle.body = bytearray()
    return body


class _CycleTransport:
    """The transport as uvicorn's request cycle sees it, one per connection: its `close` after an answer that said
    `connection: close` (a 401 or 413 sent before the body was read) lingers instead while the body still
    arrives. Closed at once, the socket would have unread bytes, and the kernel would reset the connection: the
    client, still sending its body, would see the reset instead of the answer."""

    __slots__ = ("transport", "protocol", "write", "is_closing", "get_extra_info")

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        self.transport = transport
        self.protocol = protocol
        # The calls of every answer go straight to the transport's own methods.
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info

    def close(self) -> None:
        cycle = self.protocol.cycle
        if cycle is not None and cycle.more_body and not cycle.disconnected:
            self.protocol._close_lingering()
        else:
            self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _response(error: GatewayError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = error.to_json()
    parts = [STATUS_LINE[error.status_code]]
    for name, value in default_headers:
        parts += [name, b": ", value, b"\r\n"]
    for name_str, value_str in error.headers.items():
        parts += [name_str.encode("latin-1"), b": ", value_str.encode("latin-1"), b"\r\n"]
    parts.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    parts.append(body)
    return b"".join(parts)


class _Sweep:
    """One per server: every tick_s, each connection checks its deadline. It stops when no connection is open and
    starts again with the next one."""

    _running: weakref.WeakKeyDictionary[ServerState, _Sweep] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any], tick_s: float) -> None:
        self.loop = loop
        self.connections = connections
        self.tick_s = tick_s

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop, state: ServerState, tick_s: float) -> None:
        if state not in cls._running:
            sweep = cls._running[state] = cls(loop, state.connections, tick_s)
            loop.call_later(tick_s, sweep.run, state)

    def run(self, state: ServerState) -> None:
        self._check([*self.connections], 0, state)  # a websocket's protocol is there too

    def _check(self, connections: list[Any], start: int, state: ServerState) -> None:
        # A slice at a time: with thousands of connections open one pass would hold the loop for milliseconds.
        now = self.loop.time()
        end = start + SWEEP_SLICE
        for connection in connections[start:end]:
            if isinstance(connection, BoundedHttpToolsProtocol):
                connection.check_deadline(now)
        if end < len(connections):
            self.loop.call_soon(self._check, connections, end, state)
        elif self.connections:
            self.loop.call_later(self.tick_s, self.run, state)
        else:
            del self._running[state]


SWEEP_SLICE = 128  # connections checked by one step of the sweep (each a few µs)
