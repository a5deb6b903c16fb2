"""An OpenAI-compatible upstream at the socket level, for the tests of cancellation.

It records each request with the time it arrived and each connection with the time the gateway closed it, which
an ASGI app cannot see (its handler runs on after the client left). The model name steers it: `hang*` never
answers; `drip*` answers a stream with one chunk every `drip_interval_s`, for ever; `fail*` answers 500 with
Retry-After: 1; `gated*` answers 503 when the test calls `open_gates()`; anything else a whole chat completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson


@dataclass
class Seen:
    model: str
    connection: int
    at: float  # time.monotonic() when the request was whole


@dataclass
class ProbeUpstream:
    drip_interval_s: float = 0.05
    drip_pad: int = 0  # characters of content added to each drip chunk (big chunks fill buffers fast)
    # connection -> bytes the probe holds in its own write buffer, not yet taken by the gateway (at the last drip):
    # growing, it shows the gateway stopped reading (backpressure from a client that reads nothing)
    backlog: dict[int, int] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    closed: dict[int, float] = field(default_factory=dict)  # connection -> time.monotonic() it was closed
    _count: int = 0
    _gated: list[asyncio.Transport] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def open_gates(self) -> None:
        """Answer every `gated` request waiting so far with a 503 (a retryable failure)."""

        def answer() -> None:
            payload = orjson.dumps({"error": {"message": "upstream overloaded", "type": "server_error"}})
            while self._gated:
                self._gated.pop().write(_response(503, b"application/json", payload))

        assert self._loop is not None
        self._loop.call_soon_threadsafe(answer)

    def connection_closed(self, connection: int) -> float | None:
        return self.closed.get(connection)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        loop = self._loop = asyncio.new_event_loop()
        server = loop.run_until_complete(loop.create_server(lambda: _Protocol(self), "127.0.0.1", 0))
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            loop.call_soon_threadsafe(server.close)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)


class _Protocol(asyncio.Protocol):
    def __init__(self, upstream: ProbeUpstream) -> None:
        upstream._count += 1
        self.upstream = upstream
        self.id = upstream._count
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.drip: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.upstream.closed[self.id] = time.monotonic()
        if self.drip is not None:
            self.drip.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self.handle(orjson.loads(body) if body else {})

    def handle(self, body: dict[str, object]) -> None:
        model = str(body.get("model", ""))
        self.upstream.requests.append(Seen(model, self.id, time.monotonic()))
        assert self.transport is not None
        if model.startswith("hang"):
            return
        if model.startswith("gated"):
            self.upstream._gated.append(self.transport)
            return
        if model.startswith("fail"):
            payload = orjson.dumps({"error": {"message": "upstream failed", "type": "server_error"}})
            self.transport.write(_response(500, b"application/json", payload, b"retry-after: 1\r\n"))
            return
        if model.startswith("drip"):
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            self.transport.write(head)
            self._drip(model, 0)
            return
        answer = {
            "id": "chatcmpl-probe",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        self.transport.write(_response(200, b"application/json", orjson.dumps(answer)))

    def _drip(self, model: str, n: int) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        chunk = {"id": "chatcmpl-probe", "object": "chat.completion.chunk", "created": 1, "model": model,
                 "choices": [{"index": 0, "delta": {"content": f"w{n} " + "x" * self.upstream.drip_pad},
                              "finish_reason": None}]}  # fmt: skip
        event = b"data: " + orjson.dumps(chunk) + b"\n\n"
        self.transport.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.upstream.backlog[self.id] = self.transport.get_write_buffer_size()
        self.drip = asyncio.get_running_loop().call_later(self.upstream.drip_interval_s, self._drip, model, n + 1)


def _response(status: int, content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (status, content_type, len(body))
    return head + extra + b"\r\n" + body
