"""Answers to HTTP/1.0 requests are never chunked (gateway/server/http10.py): over random answers (a length or not,
whole or in pieces, empty pieces, 204 and 304, HEAD) and both ways of making the cycle, an HTTP/1.0 client reads
the app's body as HTTP/1.0 frames it (by its length, or up to the close), and an HTTP/1.1 client's answer is
unchanged (chunked when it has no length)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.server.protocol import BoundedHttpToolsProtocol, EdgeLimits
from tests.unit.test_server_protocol import Transport


def answer(rng: random.Random) -> tuple[int, list[tuple[bytes, bytes]], list[tuple[bytes, bool]]]:
    """A random answer: status, headers, and the body messages (bytes, more_body)."""
    status = rng.choice([200, 200, 200, 201, 400, 404, 429, 500, 204, 304])
    pieces = [rng.randbytes(rng.choice([0, 1, 17, 300])) for _ in range(rng.randint(1, 5))]
    if status in (204, 304):
        pieces = [b""]
    headers = [(b"content-type", b"text/event-stream")]
    if rng.random() < 0.3:
        headers.append((rng.choice([b"content-length", b"Content-Length"]), b"%d" % sum(map(len, pieces))))
    messages = [(piece, i < len(pieces) - 1) for i, piece in enumerate(pieces)]
    return status, headers, messages


def read_answer(raw: bytes, version: str, method: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """An answer as a client of `version` reads it: status, headers, the body (as framed for that version)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    status = int(status_line.split()[1])
    headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}
    if method == "HEAD" or status in (204, 304):
        return status, headers, b""
    if b"content-length" in headers:
        return status, headers, rest[: int(headers[b"content-length"])]
    if version == "1.0":  # up to the close
        return status, headers, rest
    assert headers.get(b"transfer-encoding") == b"chunked"
    body = b""
    while True:
        size, _, rest = rest.partition(b"\r\n")
        if int(size, 16) == 0:
            return status, headers, body
        body += rest[: int(size, 16)]
        rest = rest[int(size, 16) + 2 :]


async def serve(raw: bytes, lean: bool, status: int, headers: Any, messages: Any) -> tuple[bytes, bool]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for body, more in messages:
            await send({"type": "http.response.body", "body": body, "more_body": more})

    config = Config(app, lifespan="off", log_config=None, log_level=None, access_log=False)
    config.load()
    protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, limits=EdgeLimits())
    protocol.lean = lean
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(raw)
    for _ in range(50):
        await asyncio.sleep(0)
    closing = transport.closing
    protocol.connection_lost(None)
    return bytes(transport.written), closing


@pytest.mark.parametrize("seed", range(80))
def test_an_answer_is_framed_as_the_requests_version_allows(seed):
    rng = random.Random(seed)
    status, headers, messages = answer(rng)
    version = rng.choice(["1.0", "1.1"])
    method = rng.choice(["GET", "POST", "HEAD"])
    extra = rng.choice([b"", b"connection: keep-alive\r\n", b"connection: close\r\n"])
    raw = b"%s /v1/x HTTP/%s\r\nhost: x\r\n%s\r\n" % (method.encode(), version.encode(), extra)
    sent = b"".join(body for body, _ in messages)
    outcomes = []
    for lean in (True, False):
        written, closing = asyncio.run(serve(raw, lean, status, headers, messages))
        got_status, got_headers, body = read_answer(written, version, method)
        assert got_status == status
        assert body == (b"" if method == "HEAD" or status in (204, 304) else sent), written
        if version == "1.0":
            assert b"transfer-encoding" not in got_headers, written
            assert got_headers[b"connection"] == b"close"
            assert closing  # the end of the body, or of a connection not kept alive
        outcomes.append((written.split(b"\r\n", 1)[1].split(b"x-response-time", 1)[0], body, closing))
    assert outcomes[0] == outcomes[1]  # the lean head and uvicorn's make the same cycle
