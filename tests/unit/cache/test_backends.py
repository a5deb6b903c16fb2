"""The memory backend (bounded by bytes, LRU, TTL on an injectable clock) and the entry's bytes for Redis."""

from __future__ import annotations

import pytest

from gateway.cache.backends import MemoryBackend, redis_key
from gateway.cache.entry import Entry
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio


def entry(body: bytes = b'{"id": "x"}', project: str = "p1", model: str = "demo") -> Entry:
    return Entry(body, "rec1", 1.0, project, model, "demo-1", 11, 3, 0.0042)


def test_an_entry_reads_back_from_its_bytes_and_damaged_bytes_are_no_entry():
    original = entry(b'{"a":\n1}')
    assert Entry.decode(original.encode()) == original
    assert Entry.decode(b"garbage") is None
    assert Entry.decode(b'["too", "short"]\n{}') is None


async def test_an_entry_expires_after_its_ttl():
    clock = FakeClock()
    backend = MemoryBackend(1 << 20, clock=clock.time)
    await backend.put("k", entry(), ttl_s=10)
    clock.advance(9.9)
    assert await backend.get("p1", "demo", "k") == entry()
    clock.advance(0.1)
    assert await backend.get("p1", "demo", "k") is None
    assert backend.bytes == 0
    assert len(backend) == 0


async def test_the_least_recently_used_entries_leave_when_the_bytes_run_out():
    size = entry().size
    backend = MemoryBackend(size * 3)
    for k in ("a", "b", "c"):
        await backend.put(k, entry(), ttl_s=60)
    assert await backend.get("p1", "demo", "a") is not None  # a is used: b is now the oldest
    await backend.put("d", entry(), ttl_s=60)
    assert [k for k in "abcd" if backend.get_now(k) is not None] == ["a", "c", "d"]
    assert backend.bytes == size * 3
    await backend.put("huge", entry(b"x" * size * 4), ttl_s=60)  # bigger than the whole bound: not kept
    assert backend.get_now("huge") is None
    assert len(backend) == 3


async def test_purge_by_project_model_or_key_removes_only_those():
    backend = MemoryBackend(1 << 20)
    await backend.put("k1", entry(project="p1", model="m1"), 60)
    await backend.put("k2", entry(project="p1", model="m2"), 60)
    await backend.put("k3", entry(project="p2", model="m1"), 60)
    assert await backend.purge(None, "m1", "k9") == 0
    assert await backend.purge("p1", "m1", None) == 1
    assert await backend.purge(None, None, "k3") == 1
    assert [k for k in ("k1", "k2", "k3") if backend.get_now(k)] == ["k2"]


def test_redis_keys_file_an_entry_under_digests_of_its_project_and_model():
    key = redis_key("p1:*", "m", "abc")
    assert key.startswith("gw:cache:")
    assert "*" not in key
    assert key.endswith(":abc")
    assert redis_key("p1", "m", "abc") != redis_key("p2", "m", "abc")
