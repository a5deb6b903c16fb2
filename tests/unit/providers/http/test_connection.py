"""One exchange on a connection: the bodies HTTP/1.1 delimits three ways, streams, compression, answers that are not
HTTP, and the read timeouts, against raw upstreams on loopback."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from gateway.config import Timeouts
from gateway.providers.http import (
    Client,
    ClientOSError,
    ClientPayloadError,
    ClientResponseError,
    ReadTimeout,
    Response,
    ServerDisconnectedError,
)
from gateway.providers.http.connection import MAX_HEAD_BYTES
from tests.unit.providers.http.upstreams import Exchange, answer, chunked, upstream

pytestmark = pytest.mark.anyio

HEADERS = b"content-type: application/json\r\n"


async def collect(response: Response, into: list[bytes]) -> None:
    async for chunk in response.content.iter_any():
        into.append(chunk)


async def stream_until_it_fails(port: int, error: type[Exception], timeouts: Timeouts, match: str = "") -> list[bytes]:
    """A stream read until it fails with `error`: the chunks that came before."""
    client = Client(1)
    try:
        response = await client.post(f"http://127.0.0.1:{port}/", HEADERS, b"{}", timeouts)
        chunks: list[bytes] = []
        with pytest.raises(error, match=match or None):
            await collect(response, chunks)
        response.close()
        return chunks
    finally:
        await client.close()


async def call(port: int, timeouts: Timeouts | None = None, client: Client | None = None) -> tuple[int, bytes]:
    own = client is None
    client = client or Client(10)
    try:
        response = await client.post(f"http://127.0.0.1:{port}/v1/x", HEADERS, b"{}", timeouts or Timeouts())
        try:
            return response.status, await response.read()
        finally:
            response.release()
    finally:
        if own:
            await client.close()


async def test_a_body_by_content_length() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(answer(b'{"ok": true}', headers=b"x-request-id: abc\r\n"))

    async with upstream(handler) as up:
        assert await call(up.port) == (200, b'{"ok": true}')
    head = up.requests[0][2]
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"content-type: application/json\r\ncontent-length: 2\r\n\r\n" in head


async def test_a_chunked_body() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"hel", b"lo ", b"world"))

    async with upstream(handler) as up:
        assert await call(up.port) == (200, b"hello world")


async def test_a_body_delimited_by_the_end_of_the_connection() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        ex.close()

    async with upstream(handler) as up:
        assert await call(up.port) == (200, b"until the end")


async def test_an_informational_answer_is_skipped() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + answer(b"after", status=b"201 Created"))

    async with upstream(handler) as up:
        assert await call(up.port) == (201, b"after")


async def test_headers_are_read_without_regard_to_case() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(
            answer(
                b"{}",
                status=b"429 Too Many",
                headers=b"Retry-After: 7\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\n",
            )
        )

    async with upstream(handler) as up:
        client = Client(1)
        response = await client.post(f"http://127.0.0.1:{up.port}/", HEADERS, b"{}", Timeouts())
        assert response.status == 429
        assert response.headers.get("retry-after") == "7"
        assert response.headers["RETRY-AFTER"] == "7"
        assert "x-missing" not in response.headers
        assert response.content_type == "text/event-stream"
        assert response.content_length == 2
        response.release()
        await client.close()


async def test_a_stream_is_yielded_as_it_arrives() -> None:
    go_on = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        ex.answer(b"%x\r\ndata: one\n\n\r\n" % len(b"data: one\n\n"))
        await go_on.wait()  # the second event only once the client has read the first
        ex.answer(b"%x\r\ndata: two\n\n\r\n0\r\n\r\n" % len(b"data: two\n\n"))

    async with upstream(handler) as up:
        client = Client(1)
        response = await client.post(f"http://127.0.0.1:{up.port}/", HEADERS, b"{}", Timeouts())
        chunks = []
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            go_on.set()
        response.release()
        assert chunks == [b"data: one\n\n", b"data: two\n\n"]
        await call(up.port, client=client)
        assert up.connections == 1  # read to the end: the connection was reused
        await client.close()


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate", b"raw-deflate"])
async def test_a_compressed_body_is_decoded(encoding: bytes) -> None:
    text = b'{"text": "' + b"compressible " * 200 + b'"}'
    if encoding == b"gzip":
        body = gzip.compress(text)
    elif encoding == b"deflate":
        body = zlib.compress(text)
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = packer.compress(text) + packer.flush()
        encoding = b"deflate"

    async def handler(ex: Exchange) -> None:
        ex.answer(answer(body, headers=b"Content-Encoding: " + encoding + b"\r\n"))

    async with upstream(handler) as up:
        assert await call(up.port) == (200, text)
    assert b"accept-encoding" not in up.requests[0][2]  # only what the caller's headers say (providers ask for it)


async def test_an_encoding_it_cannot_decode_fails_clearly() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(answer(b"\x0b\x02\x80hi\x03", headers=b"content-encoding: br\r\n"))

    async with upstream(handler) as up:
        with pytest.raises(ClientPayloadError, match="content-encoding: br"):
            await call(up.port)


async def test_broken_gzip_fails_as_a_payload_error() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(answer(b"not gzip at all", headers=b"content-encoding: gzip\r\n"))

    async with upstream(handler) as up:
        with pytest.raises(ClientPayloadError):
            await call(up.port)


async def test_a_garbage_status_line_is_not_http() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HELLO WORLD\r\n\r\n")

    async with upstream(handler) as up:
        with pytest.raises(ClientResponseError):
            await call(up.port)


async def test_a_head_past_the_cap_is_refused() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\n")
        for _ in range(MAX_HEAD_BYTES // 1000 + 1):
            ex.answer(b"x-filler: " + b"a" * 1000 + b"\r\n")
            await ex.writer.drain()
        ex.answer(b"content-length: 0\r\n\r\n")

    async with upstream(handler) as up:
        with pytest.raises(ClientResponseError, match="larger than"):
            await call(up.port)


async def test_a_body_cut_short_is_a_payload_error() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
        ex.close()

    async with upstream(handler) as up:
        with pytest.raises(ClientPayloadError):
            await call(up.port)


async def test_a_chunked_stream_cut_short_yields_what_came_then_fails() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await ex.writer.drain()
        await asyncio.sleep(0)
        ex.close()

    async with upstream(handler) as up:
        assert await stream_until_it_fails(up.port, ClientPayloadError, Timeouts()) == [b"first"]


async def test_a_connection_closed_before_the_head_is_a_disconnect() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\ncontent-le")
        ex.close()

    async with upstream(handler) as up:
        with pytest.raises(ServerDisconnectedError):
            await call(up.port)
    assert up.connections == 1  # a new connection's failure is not retried


async def test_a_connection_reset_before_the_head_is_an_os_error() -> None:
    async def handler(ex: Exchange) -> None:
        ex.writer.transport.abort()  # RST

    async with upstream(handler) as up:
        with pytest.raises((ClientOSError, ServerDisconnectedError)):
            await call(up.port)


async def test_a_server_that_never_answers_times_out_at_the_first_byte_bound() -> None:
    async def handler(ex: Exchange) -> None:
        if ex.connection == 1:
            await ex.hang()
        ex.answer(answer(b"late"))

    async with upstream(handler) as up:
        client = Client(1)
        with pytest.raises(ReadTimeout, match="No answer within 0.2 s") as raised:
            await call(up.port, Timeouts(first_byte_s=0.2), client)
        assert isinstance(raised.value, TimeoutError)
        assert await call(up.port, client=client) == (200, b"late")
        assert up.connections == 2  # the timed-out connection was closed, not reused
        await client.close()


async def test_a_stream_that_goes_silent_times_out_at_the_first_byte_bound() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await ex.hang()

    async with upstream(handler) as up:
        # The head must come within the same bound that the silence then exceeds: 1 s, not a tight 0.2, so that
        # a busy machine's slow head is never taken for the silence.
        assert await stream_until_it_fails(up.port, ReadTimeout, Timeouts(first_byte_s=1.0)) == [b"one"]


async def test_a_stream_that_trickles_past_the_total_times_out() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while not ex.stopping.is_set():  # a byte well within every read's bound, for ever
            ex.answer(b"1\r\n.\r\n")
            await asyncio.sleep(0.02)

    async with upstream(handler) as up:
        # total_s leaves a busy machine's head time to come (it counts from the call), then the trickle outlasts it.
        timeouts = Timeouts(first_byte_s=5, total_s=1.0)
        assert await stream_until_it_fails(up.port, ReadTimeout, timeouts, match="longer than 1 s")


async def test_a_large_body_in_the_heads_packet_is_not_a_large_head() -> None:
    body = b"x" * (4 * MAX_HEAD_BYTES)

    async def handler(ex: Exchange) -> None:
        ex.answer(answer(body))  # one write: head and body reach the client together

    async with upstream(handler) as up:
        assert await call(up.port) == (200, body)
