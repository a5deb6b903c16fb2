"""The lean on_headers_complete of gateway/server/protocol.py against uvicorn's own, on many heads: the same scope
(keys, values, order), the same cycle (every attribute), the same bytes answered (pipelined requests, an app that
fails), and the uvicorn code it follows pinned, so that an upgrade that changes it fails here first."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import random
import re
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.server.http10 import Http10Cycle
from gateway.server.protocol import CONNECTION_KEY, BoundedHttpToolsProtocol, EdgeLimits
from gateway.server.timing import TimedCycle
from tests.unit.test_server_protocol import Transport

# The uvicorn code the lean path reproduces. A change to any of these fails this test: read the new code, bring
# protocol.on_headers_complete in line with it, then update the digests.
PINNED = {
    "HttpToolsProtocol.on_message_begin": (HttpToolsProtocol.on_message_begin, "96d377fd"),
    "HttpToolsProtocol.on_headers_complete": (HttpToolsProtocol.on_headers_complete, "1ea8589a"),
    "HttpToolsProtocol._start_asgi_task": (HttpToolsProtocol._start_asgi_task, "8d0189e6"),
    "RequestResponseCycle.__init__": (RequestResponseCycle.__init__, "4d2f2209"),
}


def digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:8]


def test_the_uvicorn_code_followed_is_the_one_pinned():
    assert uvicorn.__version__ == "0.55.0"
    assert {name: digest(function) for name, (function, _) in PINNED.items()} == {
        name: pinned for name, (_, pinned) in PINNED.items()
    }


METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
PATHS = [
    "/", "/v1/chat/completions", "/v1/models/gpt-4o%2Fmini", "/a%20b/c%C3%A9", "/x?y=1&z=%20", "/q?", "/p?a=b?c",
    "/%7Euser/..%2F", "/v1/embeddings?api-version=2024-02-01", "//double//slash", "/plus+sign?x=a+b", "/%25",
    "http://example.com/absolute?x=1", "*",
]  # fmt: skip


def head(rng: random.Random) -> bytes:
    method = rng.choice(METHODS)
    path = rng.choice(PATHS)
    if method != "OPTIONS" and path == "*":
        path = "/"
    version = rng.choice(["1.1", "1.1", "1.0"])
    lines = [f"{method} {path} HTTP/{version}", "Host: gateway:8080"]
    extra = [
        "Connection: keep-alive", "Connection: close", "Expect: 100-continue", "expect: 100-Continue",
        "Content-Type: application/json  ", "X-Request-Id:\tabc\t", "Authorization: Bearer sk-gw-1",
        "Connection: Upgrade\r\nUpgrade: h2c", "Connection: Upgrade\r\nUpgrade: websocket",
        "Transfer-Encoding: chunked",
    ]  # fmt: skip
    lines += rng.sample(extra, k=rng.randint(0, 4))
    chunked = any(line.startswith("Transfer-Encoding") for line in lines)
    body = b"" if method in ("GET", "HEAD") else rng.choice([b"", b"{}", b"x" * 100])
    if chunked:
        framed = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        framed = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + framed


class UpgradableTransport(Transport):
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


def state_of(cycle: Any, protocol: BoundedHttpToolsProtocol) -> dict[str, Any]:
    """A cycle's attributes, the objects made per request replaced by what they must be."""
    attributes = dict(vars(cycle))
    event = attributes.pop("message_event")
    assert type(event) is asyncio.Event
    assert vars(event).keys() == vars(asyncio.Event()).keys()
    attributes["message_event"] = (event.is_set(), list(event._waiters))
    on_response = attributes.pop("on_response")
    assert on_response.__func__ is type(protocol).on_response_complete
    assert on_response.__self__ is protocol
    assert attributes.pop("transport") is protocol.cycle_transport
    assert attributes.pop("flow") is protocol.flow
    assert isinstance(attributes.pop("head_ns"), int)
    attributes["scope"] = scope_of(attributes["scope"], protocol)
    return attributes


def scope_of(scope: dict[str, Any], protocol: BoundedHttpToolsProtocol) -> list[tuple[str, Any]]:
    assert scope[CONNECTION_KEY] is protocol
    return [(key, type(value), value) for key, value in scope.items() if key != CONNECTION_KEY]


async def serve(raw: bytes, lean: bool, app: Any = None) -> tuple[list[Any], bytes, bool]:
    """`raw` fed to a fresh connection in one read; the cycles the app saw (its attributes as it started, and
    after), the bytes written, whether the connection closed."""
    seen: list[Any] = []

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        cycle = receive.__self__
        assert type(cycle) is (Http10Cycle if scope["http_version"] == "1.0" else TimedCycle)
        seen.append(state_of(cycle, protocol))
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        answer = b"%s %s %s" % (scope["method"].encode(), scope["raw_path"], body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": answer})

    config = Config(app or echo, lifespan="off", log_config=None, log_level=None, access_log=False)
    config.load()
    state = ServerState()
    state.default_headers = [(b"server", b"uvicorn")]
    protocol = BoundedHttpToolsProtocol(config, state, {"k": "v"}, limits=EdgeLimits())
    assert protocol.lean
    protocol.lean = lean
    transport = UpgradableTransport()
    protocol.connection_made(transport)
    protocol.data_received(raw)
    for _ in range(100):
        await asyncio.sleep(0)
    closing = transport.closing
    protocol.connection_lost(None)
    # Each answer's time, and the date of the websocket protocol's refusal (an upgrade goes through uvicorn's).
    written = re.sub(rb"\r\n(x-response-time|Date): [^\r]*\r\n", rb"\r\n\1: T\r\n", bytes(transport.written))
    return seen, written, closing


@pytest.mark.parametrize("seed", range(60))
def test_a_head_makes_the_scope_and_cycle_uvicorns_own_makes(seed):
    rng = random.Random(seed)
    raw = b"".join(head(rng) for _ in range(rng.choice([1, 1, 2, 3])))  # 2 or 3: pipelined
    lean = asyncio.run(serve(raw, True))
    uvicorns = asyncio.run(serve(raw, False))
    assert lean == uvicorns, raw
    assert lean[0] or b"Upgrade" in raw  # an unsupported upgrade is still served; a websocket one is not here


def test_pipelined_requests_are_answered_in_order_behind_the_running_one():
    raw = b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(4))
    seen, written, closing = asyncio.run(serve(raw, True))
    assert [path for s in seen for key, _, path in s["scope"] if key == "path"] == ["/0", "/1", "/2", "/3"]
    assert [written.find(b"GET /%d " % i) for i in range(4)] == sorted(
        {written.find(b"GET /%d " % i) for i in range(4)}
    )
    assert written.find(b"GET /0 ") > 0
    assert not closing
    assert asyncio.run(serve(raw, False)) == (seen, written, closing)


async def failing(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("the app failed")


def test_an_app_that_fails_gets_uvicorns_500_and_its_log(caplog):
    raw = b"POST /v1/x HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    outcomes = []
    for lean in (True, False):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
            _, written, closing = asyncio.run(serve(raw, lean, failing))
        outcomes.append((written, closing, [(r.levelname, r.getMessage(), r.exc_info[0]) for r in caplog.records]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert outcomes[0][2] == [("ERROR", "Exception in ASGI application\n", RuntimeError)]
