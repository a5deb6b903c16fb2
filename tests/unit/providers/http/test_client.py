"""Client.post: connections kept alive and reused, closed when the server says so or when an answer was left
half-read, the one retry on a kept-alive connection the server had closed (and none once a byte came), TLS with
SNI, and the timing of a new connection."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from gateway.config import Timeouts
from gateway.providers.http import Client, ClientPayloadError, ConnectError, ServerDisconnectedError
from tests.services import free_port
from tests.unit.providers.http.upstreams import Exchange, answer, self_signed, until, upstream

pytestmark = pytest.mark.anyio

HEADERS = b"content-type: application/json\r\n"


class Timing:
    upstream_connect: tuple[int, int] | None = None


async def post(client: Client, url: str, timing: Timing | None = None) -> tuple[int, bytes]:
    response = await client.post(url, HEADERS, b'{"n": 1}', Timeouts(), timing)
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def echo(ex: Exchange) -> None:
    ex.answer(answer(b"%d:%d" % (ex.connection, ex.index)))


async def test_calls_reuse_a_kept_alive_connection_and_note_only_a_new_ones_timing() -> None:
    async with upstream(echo) as up:
        client = Client(10)
        first, second = Timing(), Timing()
        assert await post(client, f"http://127.0.0.1:{up.port}/a", first) == (200, b"1:0")
        assert await post(client, f"http://127.0.0.1:{up.port}/b", second) == (200, b"1:1")
        await client.close()
    assert up.connections == 1
    assert first.upstream_connect is not None
    assert first.upstream_connect[0] <= first.upstream_connect[1]
    assert second.upstream_connect is None


async def test_connection_close_from_the_server_is_honoured() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(answer(b"bye", headers=b"Connection: close\r\n"))

    async with upstream(handler) as up:
        client = Client(10)
        await post(client, f"http://127.0.0.1:{up.port}/")
        await post(client, f"http://127.0.0.1:{up.port}/")
        await client.close()
    assert up.connections == 2


async def test_a_stream_left_half_read_closes_its_connection() -> None:
    async def handler(ex: Exchange) -> None:
        if ex.connection == 1:
            ex.answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await ex.hang()
        else:
            ex.answer(answer(b"fresh"))

    async with upstream(handler) as up:
        client = Client(10)
        response = await client.post(f"http://127.0.0.1:{up.port}/", HEADERS, b"{}", Timeouts())
        async for chunk in response.content.iter_any():
            assert chunk == b"first"
            break
        response.release()  # left mid-stream: closed, not returned
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"fresh")
        await client.close()
    assert up.connections == 2


async def test_a_whole_answer_released_unread_keeps_its_connection() -> None:
    async with upstream(echo) as up:
        client = Client(10)
        response = await client.post(f"http://127.0.0.1:{up.port}/", HEADERS, b"{}", Timeouts())
        await until(lambda: response._connection is not None and response._connection.complete, "the whole answer")
        response.release()  # all of it arrived: the connection is clean
        with pytest.raises(ClientPayloadError):
            await response.read()
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"1:1")
        await client.close()


async def test_a_kept_alive_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    async def handler(ex: Exchange) -> None:
        if ex.connection == 1 and ex.index == 1:
            ex.close()  # its keep-alive time ran out as the request came: nothing answered
            return
        await echo(ex)

    async with upstream(handler) as up:
        client = Client(10)
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"1:0")
        timing = Timing()
        assert await post(client, f"http://127.0.0.1:{up.port}/", timing) == (200, b"2:0")
        assert timing.upstream_connect is not None  # the retry's new connection
        await client.close()
    assert [(c, i) for c, i, _ in up.requests] == [(1, 0), (1, 1), (2, 0)]


async def test_a_kept_alive_connection_idle_closed_by_the_server_is_not_lent() -> None:
    async def handler(ex: Exchange) -> None:
        await echo(ex)
        ex.close()  # without saying Connection: close

    async with upstream(handler) as up:
        client = Client(10)
        await post(client, f"http://127.0.0.1:{up.port}/")
        pool = next(iter(client._pools.values()))
        await until(lambda: not pool.idle, "the closed connection to leave the idle stack")
        assert pool.size == 0
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"2:0")
        await client.close()
    assert len(up.requests) == 2


async def test_no_retry_once_a_byte_of_the_answer_came() -> None:
    async def handler(ex: Exchange) -> None:
        if ex.connection == 1 and ex.index == 1:
            ex.answer(b"HTTP/1.1 200 OK\r\ncontent-")
            ex.close()
            return
        await echo(ex)

    async with upstream(handler) as up:
        client = Client(10)
        await post(client, f"http://127.0.0.1:{up.port}/")
        with pytest.raises(ServerDisconnectedError):
            await post(client, f"http://127.0.0.1:{up.port}/")
        await client.close()
    assert len(up.requests) == 2


async def test_a_fresh_connection_is_never_retried() -> None:
    async def handler(ex: Exchange) -> None:
        ex.close()

    async with upstream(handler) as up:
        client = Client(10)
        with pytest.raises(ServerDisconnectedError):
            await post(client, f"http://127.0.0.1:{up.port}/")
        await client.close()
    assert len(up.requests) == 1


async def test_a_refused_connection_is_a_connect_error_with_its_timing() -> None:
    client = Client(10)
    timing = Timing()
    with pytest.raises(ConnectError, match="Cannot connect"):
        await post(client, f"http://127.0.0.1:{free_port()}/", timing)
    assert timing.upstream_connect is not None  # the trace shows the failed connect too
    assert next(iter(client._pools.values())).size == 0  # the failed attempt's slot is free again
    await client.close()


async def test_bytes_on_an_idle_connection_close_it() -> None:
    client = Client(10)

    async def handler(ex: Exchange) -> None:
        await echo(ex)
        if ex.connection == 1:
            pool = next(iter(client._pools.values()))
            await until(lambda: bool(pool.idle), "the answer to be read and its connection idle")
            ex.answer(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")  # out of turn

    async with upstream(handler) as up:
        await post(client, f"http://127.0.0.1:{up.port}/")
        pool = next(iter(client._pools.values()))
        await until(lambda: pool.size == 0, "the connection that spoke out of turn to be dropped")
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"2:0")
        await client.close()


async def test_bytes_past_the_answer_in_its_packet_are_ignored_and_the_connection_dropped() -> None:
    async def handler(ex: Exchange) -> None:
        extra = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 4\r\n\r\nnope" if ex.connection == 1 else b""
        ex.answer(answer(b"%d:%d" % (ex.connection, ex.index)) + extra)  # one write, one packet

    async with upstream(handler) as up:
        client = Client(10)
        response = await client.post(f"http://127.0.0.1:{up.port}/", HEADERS, b"{}", Timeouts())
        assert (response.status, await response.read(), len(response.headers)) == (200, b"1:0", 1)
        response.release()
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"2:0")
        await client.close()


async def test_tls_with_sni_against_a_certificate_made_here(tmp_path: Path) -> None:
    server_tls, client_tls, names = self_signed(tmp_path)
    async with upstream(echo, tls=server_tls) as up:
        client = Client(10, ssl_context=client_tls)
        assert await post(client, f"https://localhost:{up.port}/v1/chat") == (200, b"1:0")
        assert await post(client, f"https://localhost:{up.port}/v1/chat") == (200, b"1:1")
        await client.close()
    assert names == ["localhost"]
    assert up.requests[0][2].startswith(b"POST /v1/chat HTTP/1.1\r\nhost: localhost:")


async def test_tls_refuses_a_certificate_the_system_does_not_trust(tmp_path: Path) -> None:
    server_tls, _, _ = self_signed(tmp_path)
    async with upstream(echo, tls=server_tls) as up:
        client = Client(10)  # the default context: the system's CAs
        with pytest.raises(ConnectError, match="TLS"):
            await post(client, f"https://localhost:{up.port}/")
        await client.close()
    assert up.requests == []


async def test_a_client_gone_while_waiting_closes_the_connection() -> None:
    arrived = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        if ex.connection == 1:
            arrived.set()
            await ex.hang()
        await echo(ex)

    async with upstream(handler) as up:
        client = Client(1)
        task = asyncio.ensure_future(post(client, f"http://127.0.0.1:{up.port}/"))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"2:0")  # the slot is free again
        await client.close()


def test_the_default_context_checks_hostnames() -> None:
    from gateway.providers.http import default_ssl_context

    context = default_ssl_context()
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


async def test_an_answer_dropped_unreleased_frees_its_slot() -> None:
    async with upstream(echo) as up:
        client = Client(1)
        response = await client.post(f"http://127.0.0.1:{up.port}/", HEADERS, b"{}", Timeouts())
        del response  # a stream nobody iterated: never released nor closed
        assert await post(client, f"http://127.0.0.1:{up.port}/") == (200, b"2:0")
        await client.close()
