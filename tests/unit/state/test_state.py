from __future__ import annotations

import asyncio
import os

import pytest

from gateway.state.base import StateUnavailable, open_state
from gateway.state.memory import MemoryState
from tests.clock import FakeClock
from tests.services import free_port, require_redis


async def exercise(state, prefix: str, advance) -> None:
    """`advance(s)` lets s seconds pass: a fake clock's step, or a real wait for a backend on its own clock."""
    assert await state.incr(f"{prefix}:c", 2, ttl_s=0.3) == 2
    assert await state.incr(f"{prefix}:c", 3, ttl_s=0.3) == 5
    await state.set(f"{prefix}:k", "v")
    assert await state.get(f"{prefix}:k") == "v"
    await state.hset(f"{prefix}:h", {"a": "1"}, ttl_s=0.3)
    assert await state.hgetall(f"{prefix}:h") == {"a": "1"}
    fields, left = await state.hgetall_ttl(f"{prefix}:h")
    assert fields == {"a": "1"}
    assert left is not None
    assert 0 < left <= 0.3
    await state.hset(f"{prefix}:d", {"a": "1", "b": "2", "c": "3"})
    await state.hdel(f"{prefix}:d", ["a", "c", "missing"])
    assert await state.hgetall_ttl(f"{prefix}:d") == ({"b": "2"}, None)  # no TTL
    assert await state.hgetall_ttl(f"{prefix}:none") == ({}, None)
    await advance(0.4)
    assert await state.incr(f"{prefix}:c", 1, ttl_s=0.3) == 1  # expired, so a fresh counter
    assert await state.hgetall(f"{prefix}:h") == {}
    assert await state.get(f"{prefix}:k") == "v"  # no ttl: kept


@pytest.mark.anyio
async def test_memory_backend():
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    await state.open()
    await state.ping()

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    assert await state.incr("m:edge", 1, ttl_s=0.3) == 1
    clock.advance(0.29)
    assert await state.incr("m:edge", 1, ttl_s=0.3) == 2  # not a moment early
    clock.advance(0.01)
    assert await state.incr("m:edge", 1, ttl_s=0.3) == 1
    await exercise(state, "m", advance)


@pytest.mark.anyio
@pytest.mark.redis
async def test_redis_backend_on_a_real_server():
    state = open_state(require_redis())
    await state.open()
    await state.ping()
    prefix = f"test:{os.getpid()}"
    # Redis counts the ttl on its own clock: the increments must come within it, so here it is long, and the
    # expiry is checked on a counter of a short ttl by waiting (a wait lasts at least its time, however busy).
    assert await state.incr(f"{prefix}:long", 2, ttl_s=60) == 2
    assert await state.incr(f"{prefix}:long", 3, ttl_s=60) == 5
    await state.delete(f"{prefix}:long")

    async def advance(seconds: float) -> None:
        await asyncio.sleep(seconds)

    await state.set(f"{prefix}:k", "v")
    await state.incr(f"{prefix}:c", 1, ttl_s=0.05)
    await advance(0.1)
    assert await state.incr(f"{prefix}:c", 1, ttl_s=0.05) == 1
    await state.hset(f"{prefix}:h", {"a": "1"}, ttl_s=0.05)
    await advance(0.1)
    assert await state.hgetall(f"{prefix}:h") == {}
    assert await state.get(f"{prefix}:k") == "v"
    await state.delete(f"{prefix}:k")
    await state.close()


@pytest.mark.anyio
async def test_redis_down_is_reported_as_unavailable():
    state = open_state(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StateUnavailable):
        await state.ping()
    with pytest.raises(StateUnavailable):
        await state.incr("x")
    await state.close()
