"""The pool of one origin: at most `limit` connections, calls beyond it served first come first served as
connections come back, a wait past the connect timeout failing, and idle connections closed after the keep-alive
time."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import Timeouts
from gateway.providers.http import Client, ConnectTimeout
from gateway.providers.http.pool import Resolver
from tests.unit.providers.http.upstreams import Exchange, answer, until, upstream

pytestmark = pytest.mark.anyio

HEADERS = b"content-type: application/json\r\n"


async def test_calls_beyond_the_limit_wait_their_turn_in_order_on_the_same_connections() -> None:
    release = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        if ex.body == b"first":
            await release.wait()
        ex.answer(answer(ex.body))

    async with upstream(handler) as up:
        client = Client(1)
        url = f"http://127.0.0.1:{up.port}/"
        done: list[bytes] = []

        async def call(body: bytes) -> None:
            response = await client.post(url, HEADERS, body, Timeouts())
            done.append(await response.read())
            response.release()

        tasks = [asyncio.ensure_future(call(b"first"))]
        await until(lambda: len(up.requests) == 1, "the first call to hold the only connection")
        pool = next(iter(client._pools.values()))
        for waiting, body in enumerate((b"second", b"third", b"fourth"), 1):
            tasks.append(asyncio.ensure_future(call(body)))
            await until(lambda n=waiting: len(pool.waiters) == n, "the call to queue")  # type: ignore[misc]
        release.set()
        await asyncio.gather(*tasks)
        await client.close()
    assert done == [b"first", b"second", b"third", b"fourth"]
    assert up.connections == 1


async def test_a_wait_for_a_turn_is_bounded_by_the_connect_timeout() -> None:
    async def handler(ex: Exchange) -> None:
        if ex.body == b"hold":
            await ex.hang()
        ex.answer(answer(b"ok"))

    async with upstream(handler) as up:
        client = Client(1)
        url = f"http://127.0.0.1:{up.port}/"
        holder = asyncio.ensure_future(client.post(url, HEADERS, b"hold", Timeouts()))
        await until(lambda: len(up.requests) == 1, "the only connection to be taken")
        with pytest.raises(ConnectTimeout) as raised:
            await client.post(url, HEADERS, b"wait", Timeouts(connect_s=0.2))
        assert isinstance(raised.value, TimeoutError)
        pool = next(iter(client._pools.values()))
        assert not pool.waiters
        assert pool.size == 1
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        assert pool.size == 0
        await client.close()


async def test_idle_connections_are_closed_after_the_keep_alive_time() -> None:
    async def handler(ex: Exchange) -> None:
        ex.answer(answer(b"ok"))

    async with upstream(handler) as up:
        client = Client(4, keep_alive_s=0.2)
        url = f"http://127.0.0.1:{up.port}/"
        responses = [await client.post(url, HEADERS, b"{}", Timeouts()) for _ in range(3)]
        for response in responses:
            await response.read()
            response.release()
        assert up.connections == 3
        await until(lambda: up.ended == 3, "the idle connections to be closed")
        pool = next(iter(client._pools.values()))
        assert pool.size == 0
        assert not pool.idle
        response = await client.post(url, HEADERS, b"{}", Timeouts())
        response.release()
        assert up.connections == 4
        await client.close()


async def test_addresses_are_resolved_once_within_their_time() -> None:
    resolver = Resolver(ttl_s=300)
    calls = 0
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    loop.getaddrinfo = counting  # type: ignore[method-assign]
    try:
        first = await resolver.resolve("localhost", 80)
        second = await resolver.resolve("localhost", 80)
    finally:
        del loop.getaddrinfo
    assert first == second
    assert calls == 1
