from __future__ import annotations

import asyncio
import os

import pytest

from gateway.state.base import StateUnavailable, open_state
from tests.services import free_port, require_redis


async def exercise(state, prefix: str) -> None:
    assert await state.incr(f"{prefix}:c", 2, ttl_s=0.3) == 2
    assert await state.incr(f"{prefix}:c", 3, ttl_s=0.3) == 5
    await state.set(f"{prefix}:k", "v")
    assert await state.get(f"{prefix}:k") == "v"
    await asyncio.sleep(0.4)
    assert await state.incr(f"{prefix}:c", 1, ttl_s=0.3) == 1  # expired, so a fresh counter


@pytest.mark.anyio
async def test_memory_backend():
    state = open_state("memory")
    await state.open()
    await state.ping()
    await exercise(state, "m")


@pytest.mark.anyio
@pytest.mark.redis
async def test_redis_backend_on_a_real_server():
    state = open_state(require_redis())
    await state.open()
    await state.ping()
    await exercise(state, f"test:{os.getpid()}")
    await state.close()


@pytest.mark.anyio
async def test_redis_down_is_reported_as_unavailable():
    state = open_state(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StateUnavailable):
        await state.ping()
    with pytest.raises(StateUnavailable):
        await state.incr("x")
    await state.close()
