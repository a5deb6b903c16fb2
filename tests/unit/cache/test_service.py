"""ResponseCache's guard: a backend that fails is a miss, skipped for retry_interval_s, tried again after; the
writer keeps answers after the request, bounded."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache.backends import MemoryBackend
from gateway.cache.entry import Entry
from gateway.cache.service import ResponseCache
from gateway.config.cache import CacheConfig
from gateway.telemetry.metrics import Metrics
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio
ENTRY = Entry(b"{}", "rec1", 1.0, "p1", "demo", "demo-1", 1, 1, None)


class FlakyBackend:
    name = "flaky"

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.entries: dict[str, Entry] = {}

    async def get(self, project: str, model: str, key: str) -> Entry | None:
        self.calls += 1
        if self.down:
            raise ConnectionError("refused")
        return self.entries.get(key)

    async def put(self, key: str, entry: Entry, ttl_s: float) -> None:
        if self.down:
            raise ConnectionError("refused")
        self.entries[key] = entry

    async def purge(self, project: str | None, model: str | None, key: str | None) -> int:
        return 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def make(backend: FlakyBackend, clock: FakeClock, **config: float) -> ResponseCache:
    return ResponseCache(
        CacheConfig(backend="redis://unused", **config),  # type: ignore[arg-type]
        Metrics(),
        backend=backend,
        clock=clock.monotonic,
    )


async def test_a_failing_backend_is_a_miss_then_skipped_until_the_retry_interval_passes():
    backend, clock = FlakyBackend(), FakeClock()
    cache = make(backend, clock, retry_interval_s=5)
    backend.entries["k"] = ENTRY
    assert await cache.get("p1", "demo", "k") == ENTRY
    backend.down = True
    assert await cache.get("p1", "demo", "k") is None
    assert cache.status().startswith("skipped: ConnectionError")
    calls = backend.calls
    clock.advance(4.9)
    assert await cache.get("p1", "demo", "k") is None
    assert backend.calls == calls  # skipped: not asked
    backend.down = False
    clock.advance(0.1)
    assert await cache.get("p1", "demo", "k") == ENTRY
    assert cache.status() == "ok"


async def test_another_projects_entry_is_never_served_even_under_a_colliding_key():
    backend, clock = FlakyBackend(), FakeClock()
    cache = make(backend, clock)
    backend.entries["k"] = ENTRY
    assert await cache.get("p2", "demo", "k") is None


async def test_the_memory_backend_never_serves_another_projects_entry_either():
    memory = MemoryBackend(1 << 20)
    cache = ResponseCache(CacheConfig(), Metrics(), backend=memory)
    memory.put_now("k", ENTRY, 60)
    assert cache.get_now("p1", "k") == ENTRY
    assert cache.get_now("p2", "k") is None
    assert await cache.get("p2", "demo", "k") is None


async def test_answers_are_written_after_the_request_and_a_full_queue_drops_them():
    backend, clock = FlakyBackend(), FakeClock()
    cache = make(backend, clock, write_queue_size=1)
    cache.start()
    try:
        cache.keep("a", ENTRY, 60, None)
        cache.keep("b", ENTRY, 60, None)  # the queue holds one: dropped
        assert backend.entries == {}  # nothing written while the request runs
        for _ in range(10):
            await asyncio.sleep(0)
        assert list(backend.entries) == ["a"]
        cache.keep("c", ENTRY, 60, None)
        big = ENTRY._replace(body=b"x" * 2_000_000)
        cache.keep("d", big, 60, None)  # past max_entry_kb: never queued
        for _ in range(10):
            await asyncio.sleep(0)
        assert list(backend.entries) == ["a", "c"]
    finally:
        await cache.close()


class UnsharedIndex:
    """A semantic index whose sharing through Redis is down (SemanticIndex.health's words)."""

    def __init__(self) -> None:
        self.problem = "semantic index not shared: Redis unavailable, lookups from this copy (3 failed rounds)"

    async def lookup(self, project: str, scope: str, text: str, min_score: float) -> None:
        return None

    async def add(self, project: str, scope: str, text: str, key: str, ttl_s: float) -> None:
        return None

    async def purge(self, project: str, scope: str | None = None) -> int:
        return 0

    async def close(self) -> None:
        return None

    def health(self) -> str:
        return self.problem


async def test_the_status_says_when_the_semantic_index_is_not_shared_and_the_backend_first():
    backend, index = FlakyBackend(), UnsharedIndex()
    cache = ResponseCache(CacheConfig(backend="redis://unused"), Metrics(), backend=backend, semantic=index)
    assert cache.status() == index.problem
    index.problem = ""
    assert cache.status() == "ok"
    backend.down = True
    assert await cache.get("p1", "demo", "k") is None
    assert cache.status().startswith("skipped: ConnectionError")  # the backend's outage is the greater news
