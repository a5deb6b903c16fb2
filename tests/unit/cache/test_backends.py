"""The memory backend (bounded by bytes, LRU, TTL on an injectable clock) and the entry's bytes for Redis."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given, strategies as st

from gateway.cache.backends import MemoryBackend, redis_key
from gateway.cache.entry import Entry
from gateway.cache.service import ResponseCache
from gateway.config.cache import CacheConfig
from gateway.telemetry.metrics import Metrics
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


entry_fields = st.tuples(
    st.binary(max_size=64),
    st.text(max_size=8),
    st.floats(0, 2e9),
    st.text(max_size=8),
    st.text(max_size=8),
    st.text(max_size=8),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.none() | st.floats(0, 10, allow_nan=False),
)


@given(fields=entry_fields, ttl_s=st.floats(1, 1e6))
def test_an_answer_kept_from_its_plain_fields_reads_back_as_the_entry_kept_from_an_entry(fields, ttl_s):
    """What the cache filter keeps (the fields as a plain tuple, put_now's common case written out in keep) and what
    put_now keeps from an Entry read back the same, and hold the same bytes."""
    clock = FakeClock()
    from_entry = MemoryBackend(1 << 20, clock=clock.time)
    from_entry.put_now("k", Entry(*fields), ttl_s)
    cache = ResponseCache(CacheConfig(), Metrics())
    memory = cache.memory
    assert memory is not None
    memory.clock = clock.time
    cache.keep("k", fields, ttl_s, None)
    assert memory.get_now("k") == from_entry.get_now("k") == Entry(*fields)
    assert type(memory.get_now("k")) is Entry
    assert memory.bytes == from_entry.bytes == Entry(*fields).size


def test_the_memory_backend_holds_plain_tuples_the_collector_stops_tracking():
    """An Entry (a tuple subclass) stays tracked by the garbage collector, and every full collection would walk every
    answer kept; plain tuples of plain values are untracked at the collector's first pass."""
    backend = MemoryBackend(1 << 20)
    backend.put_now("a", entry(), 60)
    cache = ResponseCache(CacheConfig(), Metrics())
    assert cache.memory is not None
    cache.keep("b", tuple(entry()), 60, None)  # type: ignore[arg-type]
    gc.collect()
    gc.collect()  # (fields, expiry) goes at the first pass that finds its fields untracked
    for stored in (backend.entries["a"], cache.memory.entries["b"]):
        assert type(stored[0]) is tuple
        assert not gc.is_tracked(stored[0])
        assert not gc.is_tracked(stored)
