"""The semantic index shared across replicas through real Redis: what one replica adds, another finds; purges
travel too; Redis cut or hung leaves lookups untouched and the writes waiting, bounded, until it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from gateway.cache.semantic import SemanticIndex, build_semantic_index
from gateway.cache.semantic_embed import LocalTurnEmbedder
from gateway.config.cache_semantic import SemanticCacheConfig
from gateway.state.redis_client import RespClient
from tests.clock import FakeClock
from tests.faults import FaultyProxy
from tests.services import require_redis

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
Q = "What's the weather going to be in Paris on Friday?"
PARAPHRASE = "On Friday, what will the weather be like in Paris?"
STREAM = f"gateway:semcache:{LocalTurnEmbedder().name}"


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Let the loop run until the condition holds: no fixed wait that a busy machine could outlast."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
async def redis_url() -> str:
    url = require_redis()
    client = RespClient(url, timeout_s=2.0)
    await client.call("DEL", STREAM)
    await client.close()
    return url


def replica(
    url: str, clock: FakeClock | None = None, registry: CollectorRegistry | None = None, **overrides: object
) -> SemanticIndex:
    settings: dict[str, object] = {"backend": "redis", "redis_url": url, "sync_interval_s": 0.01, "timeout_s": 0.3}
    config = SemanticCacheConfig(**{**settings, **overrides})  # type: ignore[arg-type]
    return build_semantic_index(config, clock=(clock or FakeClock()).time, registry=registry)


def sync_of(index: SemanticIndex):  # type: ignore[no-untyped-def]
    assert index.sync is not None
    return index.sync


async def test_a_replica_finds_what_another_cached(redis_url: str) -> None:
    one, two = replica(redis_url), replica(redis_url)
    try:
        assert await two.lookup("p1", "s", PARAPHRASE, 0.5) is None  # starts two's sync
        await one.add("p1", "s", Q, key="k1", ttl_s=60)
        await until(lambda: sync_of(two).received >= 1)
        match = await two.lookup("p1", "s", PARAPHRASE, 0.5)
        assert match is not None
        assert match.key == "k1"
        assert await two.lookup("p2", "s", PARAPHRASE, 0.5) is None  # still per project
        assert await two.lookup("p1", "s", Q.replace("Paris", "Rome"), 0.5) is None  # the veto travels too
        assert sync_of(one).received == 0  # its own row is not applied twice
    finally:
        await one.close()
        await two.close()


async def test_a_purge_reaches_every_replica(redis_url: str) -> None:
    one, two = replica(redis_url), replica(redis_url)
    try:
        await two.lookup("p1", "s", Q, 0.5)
        await one.add("p1", "s", Q, key="k1", ttl_s=60)
        await one.add("p1", "other", Q, key="k2", ttl_s=60)
        await until(lambda: two.index.entries("p1") == 2)
        assert await one.purge("p1", "s") == 1
        await until(lambda: two.index.entries("p1") == 1)
        assert await two.lookup("p1", "s", Q, 0.5) is None
        assert await one.purge("p1") == 1
        await until(lambda: two.index.entries("p1") == 0)
    finally:
        await one.close()
        await two.close()


async def test_a_replica_that_starts_later_reads_what_is_live(redis_url: str) -> None:
    clock = FakeClock()
    one = replica(redis_url, clock)
    try:
        await one.add("p1", "s", Q, key="short", ttl_s=5)
        await one.add("p1", "s", "How many calories are in 3 eggs?", key="long", ttl_s=600)
        await until(lambda: sync_of(one).written == 2)
    finally:
        await one.close()
    clock.advance(10)  # "short" has expired meanwhile: not loaded
    late = replica(redis_url, clock)
    try:
        await late.lookup("p1", "s", Q, 0.5)
        await until(lambda: sync_of(late).rounds >= 2)
        assert late.index.entries("p1") == 1
        assert await late.lookup("p1", "s", "How many calories are there in 3 eggs?", 0.5) is not None
    finally:
        await late.close()


async def test_redis_cut_lookups_go_on_and_writes_wait_for_its_return(redis_url: str) -> None:
    registry = CollectorRegistry()
    with FaultyProxy.before(redis_url) as proxy:
        one, two = replica(proxy.url(redis_url), registry=registry), replica(redis_url)
        try:
            await two.lookup("p1", "s", Q, 0.5)
            assert one.health() == ""
            proxy.cut()
            await one.add("p1", "s", Q, key="k1", ttl_s=60)
            assert await one.lookup("p1", "s", PARAPHRASE, 0.5) is not None  # its own copy serves
            await until(lambda: sync_of(one).errors >= 1)
            assert not sync_of(one).healthy
            assert one.health().startswith("semantic index not shared: Redis unavailable")  # /health/ready's words
            assert (registry.get_sample_value("gateway_cache_semantic_sync_errors_total") or 0) >= 1
            assert two.index.entries("p1") == 0
            proxy.restore()
            await until(lambda: two.index.entries("p1") == 1)
            assert sync_of(one).healthy
            assert one.health() == ""
        finally:
            await one.close()
            await two.close()


async def test_redis_hung_costs_a_lookup_nothing_and_the_sync_gives_up_in_time(redis_url: str) -> None:
    with FaultyProxy.before(redis_url) as proxy:
        one = replica(proxy.url(redis_url), queue_max=2)
        try:
            await one.add("p1", "s", Q, key="k0", ttl_s=60)
            await until(lambda: sync_of(one).written == 1)
            proxy.freeze()
            errors = sync_of(one).errors
            for i in range(1, 4):
                await one.add("p1", "s", f"How many calories are in {i + 1} eggs?", key=f"k{i}", ttl_s=60)
            loop = asyncio.get_running_loop()
            start = loop.time()
            assert await one.lookup("p1", "s", PARAPHRASE, 0.5) is not None
            assert loop.time() - start < 0.25  # no call to Redis on the way (its timeout is 0.3 s)
            await until(lambda: sync_of(one).errors > errors)  # the round in flight failed after timeout_s
            assert sync_of(one).dropped == 1  # the queue holds queue_max rows; the third was not kept
            proxy.thaw()
            await until(lambda: sync_of(one).written == 3)
        finally:
            await one.close()


async def test_a_malformed_stream_entry_is_skipped(redis_url: str) -> None:
    one, two = replica(redis_url), replica(redis_url)
    try:
        await two.lookup("p1", "s", Q, 0.5)
        client = RespClient(redis_url, timeout_s=2.0)
        await client.call("XADD", STREAM, "*", "o", "someone", "t", "a", "p", "p1", "f", "not json")
        await client.close()
        await one.add("p1", "s", Q, key="k1", ttl_s=60)
        await until(lambda: two.index.entries("p1") == 1)
        assert sync_of(two).received == 2
    finally:
        await one.close()
        await two.close()


async def test_a_replica_that_closes_writes_what_it_still_had_queued(redis_url: str) -> None:
    one = replica(redis_url, sync_interval_s=60.0)  # its loop would not write again for a minute
    await one.lookup("p1", "s", Q, 0.5)
    await until(lambda: sync_of(one).rounds >= 1)  # now waiting out its interval
    await one.add("p1", "s", Q, key="k1", ttl_s=60)
    await one.close()
    two = replica(redis_url)
    try:
        await two.lookup("p1", "s", Q, 0.5)
        await until(lambda: two.index.entries("p1") == 1)
    finally:
        await two.close()
