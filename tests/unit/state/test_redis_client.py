"""The limiter's pipelined Redis connection: order under concurrency, scripts reloaded, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest

from gateway.state.redis_client import RedisUnavailable, RespClient, Script
from tests.services import free_port, require_redis

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Let the loop run until the condition holds: no fixed wait that a busy machine could outlast."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


async def test_concurrent_calls_get_their_own_replies_in_order() -> None:
    client = RespClient(require_redis(), timeout_s=1.0)
    try:
        await client.call("DEL", "resp:test:n")
        replies = await asyncio.gather(*(client.call("INCR", "resp:test:n") for _ in range(200)))
        assert sorted(replies) == list(range(1, 201))
        echoed = await asyncio.gather(*(client.call("ECHO", f"m{i}") for i in range(50)))
        assert echoed == [f"m{i}".encode() for i in range(50)]
    finally:
        await client.close()


async def test_selects_the_database_of_the_url() -> None:
    url = require_redis()
    base = url.rsplit("/", 1)[0]
    first, second = RespClient(f"{base}/13", timeout_s=1.0), RespClient(f"{base}/12", timeout_s=1.0)
    key = f"resp:test:db:{os.getpid()}:{time.monotonic_ns()}"  # its own: other runs may share these databases
    try:
        await first.call("SET", key, "13", "EX", "60")
        await second.call("DEL", key)
        assert await first.call("GET", key) == b"13"
        assert await second.call("GET", key) is None
    finally:
        await first.close()
        await second.close()


async def test_error_replies_raise_with_redis_message() -> None:
    client = RespClient(require_redis(), timeout_s=1.0)
    try:
        with pytest.raises(RedisUnavailable, match="wrong number of arguments"):
            await client.call("GET")
        assert await client.call("PING") == b"PONG"  # the connection survives an error reply
    finally:
        await client.close()


async def test_script_is_loaded_again_after_a_flush() -> None:
    client = RespClient(require_redis(), timeout_s=1.0)
    script = Script(client, "return tonumber(ARGV[1]) + #KEYS")
    try:
        await client.call("SCRIPT", "FLUSH")
        assert await script(["a", "b"], [40]) == 42  # NOSCRIPT, then EVAL
        assert await client.call("SCRIPT", "EXISTS", script.sha) == [1]
        assert await script([], [1.5]) == 1  # Lua truncates numbers in replies; EVALSHA this time
    finally:
        await client.close()


async def test_a_silent_server_times_out_every_waiting_call_and_the_next_call_reconnects() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout_s=0.1)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await asyncio.gather(*(client.call("PING") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisUnavailable) and "no answer within 100 ms" in str(r) for r in results)
        assert loop.time() - start < 0.5
        with pytest.raises(RedisUnavailable):
            await client.call("PING")
        assert len(accepted) == 2  # the timed-out connection was dropped and a new one made
    finally:
        await client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_nothing_listening_is_unavailable_not_a_crash() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await client.call("PING")


async def test_a_lost_connection_fails_its_calls_and_recovers() -> None:
    client = RespClient(require_redis(), timeout_s=1.0)
    try:
        assert await client.call("PING") == b"PONG"
        own_id = await client.call("CLIENT", "ID")
        killer = RespClient(require_redis(), timeout_s=1.0)
        await killer.call("CLIENT", "KILL", "ID", own_id)
        await killer.close()
        await until(lambda: client._protocol is not None and client._protocol.lost is not None)
        assert await client.call("PING") == b"PONG"  # noticed the loss, reconnected
        assert await client.call("CLIENT", "ID") != own_id
    finally:
        await client.close()


async def test_a_cancelled_connect_leaves_no_stale_failure_behind() -> None:
    async def slow_then_refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(slow_then_refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens now: connecting fails
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    waiter = asyncio.ensure_future(client.call("PING"))
    await asyncio.sleep(0)
    waiter.cancel()
    await until(lambda: client._connecting is None)  # the attempt ends with nobody waiting
