"""The cluster client keeps the one-server client's bounds: a cluster that refuses or hangs fails each call with
RedisUnavailable within the timeout, and the limits degrade as configured (no cluster needed to show it)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import LimitRule, LimitsConfig
from gateway.state.base import StateUnavailable
from gateway.state.ratelimits import RateLimits
from gateway.state.redis import RedisState
from gateway.state.redis_client import RedisUnavailable, connect
from gateway.state.redis_cluster import ClusterClient
from tests.services import free_port

pytestmark = pytest.mark.anyio


async def test_a_cluster_url_gets_the_cluster_client() -> None:
    client = connect(f"redis+cluster://127.0.0.1:{free_port()}", timeout_s=0.2)
    assert isinstance(client, ClusterClient)
    assert client.cluster
    assert not connect("redis://127.0.0.1:6379/0", timeout_s=0.2).cluster
    await client.close()


async def test_a_refusing_cluster_is_unavailable_not_a_crash() -> None:
    client = connect(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}", timeout_s=0.3)
    try:
        with pytest.raises(RedisUnavailable, match="redis cluster"):
            await client.call("GET", "k")
    finally:
        await client.close()
    state = RedisState(f"redis+cluster://127.0.0.1:{free_port()}")
    with pytest.raises(StateUnavailable):
        await state.ping()
    await state.close()


async def test_a_hung_cluster_fails_the_call_after_its_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, writes nothing: a node that hangs

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis+cluster://127.0.0.1:{port}", timeout_s=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="no answer within 300 ms"):
            await client.call("GET", "k")
        assert time.monotonic() - started < 30  # bounded (by the timeout, however slow the machine)
        assert accepted  # it did connect: the hang, not a refusal, was cut short
    finally:
        await client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_limits_on_an_unreachable_cluster_degrade_as_with_one_redis() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    registry = CollectorRegistry()
    config = LimitsConfig(backend=url, rules=[LimitRule(scope="key", rpm=2)], timeout_ms=300)
    limits = RateLimits(config, lease_ms=90_000, registry=registry)
    try:
        found: dict = {}
        limits.add(found, "key", "k1", limits.rules[0])
        outcomes = [(await limits.reserve(list(found.values())))[0].ok for _ in range(3)]
        assert outcomes == [True, True, False]  # per-process limits, the same arithmetic
        assert limits.failover.degraded
        assert registry.get_sample_value("gateway_ratelimit_degraded") == 1
        assert (registry.get_sample_value("gateway_ratelimit_backend_errors_total") or 0) >= 1
    finally:
        await limits.close()


async def test_a_cancellation_that_redis_py_swallows_is_raised_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py 8.2 was seen answering an XREAD normally after the task awaiting it had been cancelled: the
    # semantic index's sync loop then never stopped at shutdown. A stand-in that does the same, on purpose.
    from redis.asyncio.cluster import RedisCluster

    started = asyncio.Event()

    async def swallowing(self: RedisCluster, *args: object, **options: object) -> bytes:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return b"answered anyway"
        return b"answered"

    monkeypatch.setattr(RedisCluster, "execute_command", swallowing)
    client = ClusterClient(f"redis+cluster://127.0.0.1:{free_port()}", timeout_s=30)
    call = asyncio.ensure_future(client.call("GET", "k"))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    # Its own deadline, swallowed the same way: the answer stands and the task is not left "cancelling".
    quick = ClusterClient(f"redis+cluster://127.0.0.1:{free_port()}", timeout_s=0.05)
    assert await quick.call("GET", "k") == b"answered anyway"
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
